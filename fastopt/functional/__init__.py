"""In-place functional optimizers: one fused kernel call per step.

Each function updates `param` and its state arrays in place, on the CPU for
NumPy arrays and on the GPU for CUDA arrays, and checks all its arguments
before writing anything. Each is made from its optimizer's spec
(`fastopt.specs`); ``help(fastopt.functional.adam)`` shows its formula.
"""
from ..specs import PROGRAMS, SPECS
from ._make import make

_MADE = {}   # id(spec) -> (spec, its function): the specs `fastopt.custom` makes


def register(spec, function):
    """Record `function` as the functional function of `spec` (a spec made
    outside `SPECS`: `fastopt.custom`), for the front ends' `of`."""
    _MADE[id(spec)] = (spec, function)


def of(spec):
    """The functional function of `spec`: a built-in's from this module, a
    user's rule's from `register`."""
    made = _MADE.get(id(spec))
    return made[1] if made is not None else globals()[spec.name]


for _spec in SPECS + PROGRAMS:
    globals()[_spec.name] = make(_spec)

from .._sparse import sparse_adam  # noqa: E402 - from a COO gradient's rows

__all__ = [spec.name for spec in SPECS + PROGRAMS] + ["sparse_adam"]
