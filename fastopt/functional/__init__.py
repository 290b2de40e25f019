"""In-place functional optimizers: one fused kernel call per step.

Each function updates `param` and its state arrays in place, on the CPU for
NumPy arrays and on the GPU for CUDA arrays, and checks all its arguments
before writing anything.
"""
from .adagrad import adagrad
from .adam import adam, adamw
from .rmsprop import rmsprop
from .sgd import sgd

__all__ = ["adagrad", "adam", "adamw", "rmsprop", "sgd"]
