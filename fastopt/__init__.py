"""fastopt: fused optimizer update kernels for NumPy and CUDA arrays."""
from . import functional
from .optimizers import SGD, Adagrad, Adam, AdamW, RMSprop

__version__ = "0.1.0"

__all__ = ["functional", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]
