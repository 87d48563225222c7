"""The describe stage: QUIP descriptors of a pool into a store (chunked, resumable, MPI)."""
