"""natten-kernels: compiled kernels and the op registry behind natten."""
