"""Keras-style optimizers: ``opt.apply_gradients(zip(grads, params))``.

Keras 3's argument names, defaults and update rules over NumPy arrays (CPU)
and CuPy / Numba / torch CUDA arrays (GPU), each step one fused kernel call
per dtype. Each class is made from its optimizer's spec (`fastopt.specs`);
`fastopt.optimizers.base` holds what they share.
"""
from ..specs import PROGRAMS, SPECS
from ._make import make
from .base import Optimizer

for _spec in SPECS + PROGRAMS:   # PROGRAMS: steps of several passes (host arrays)
    if _spec.keras is not None:
        globals()[_spec.keras.cls] = make(_spec)

__all__ = [spec.keras.cls for spec in SPECS + PROGRAMS if spec.keras is not None] + ["Optimizer"]
