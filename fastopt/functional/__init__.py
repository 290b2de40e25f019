"""In-place functional optimizers: one fused kernel call per step.

Each function updates `param` and its state arrays in place, on the CPU for
NumPy arrays and on the GPU for CUDA arrays, and checks all its arguments
before writing anything. Each is made from its optimizer's spec
(`fastopt.specs`); ``help(fastopt.functional.adam)`` shows its formula.
"""
from ..specs import PROGRAMS, SPECS
from ._make import make

for _spec in SPECS + PROGRAMS:
    globals()[_spec.name] = make(_spec)

__all__ = [spec.name for spec in SPECS + PROGRAMS]
