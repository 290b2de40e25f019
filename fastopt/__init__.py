"""fastopt: fused optimizer update kernels for NumPy and CUDA arrays."""
from . import functional, optimizers
from .optimizers import *  # noqa: F401,F403 - the Keras-style classes, one per spec

__version__ = "0.1.0"

__all__ = ["functional", *optimizers.__all__[:-1]]
