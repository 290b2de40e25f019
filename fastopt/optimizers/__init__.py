"""Keras-style optimizers: ``opt.apply_gradients(zip(grads, params))``.

Keras 3's argument names, defaults and update rules over NumPy arrays (CPU)
and CuPy / Numba / torch CUDA arrays (GPU), each step one fused kernel per
param. See `fastopt.optimizers.base` for what they share.
"""
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .base import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Optimizer"]
