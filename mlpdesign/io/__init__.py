"""Files: atomic writes, the descriptor store (HDF5), selection files, pool frames."""
