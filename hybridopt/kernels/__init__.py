"""C++ sources of hybridopt's compiled kernels, built on first use by :mod:`hybridopt.counter`."""
