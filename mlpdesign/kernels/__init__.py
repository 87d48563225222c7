"""GAP kernels between configurations: terms, KernelData and its block API."""
