"""Stochastic rounding's per-call key, and its checks.

A call with ``stochastic_rounding=True`` appends to the kernel's ``pre``
scalars a 32-bit key, a hash of its `seed` and `step`, as two 16-bit halves
(exact in float32, the scalars' dtype); the kernels derive each element's
random bits from the key, the tensor's number and the element's index
(`kernels.storage.rnd_base`), so the same seed gives the same bits on the
CPU and the GPU, whatever the threads or chunks.
"""
import numbers

from .kernels.storage import _py_mix32

_M32 = 0xFFFFFFFF


def key(fn, seed, step):
    """The ``pre`` suffix of a call: ``(high, low)`` 16-bit halves of the key."""
    if type(seed) is not int and (isinstance(seed, bool)
                                  or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"{fn}(): seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    k = int(_py_mix32((int(_py_mix32(seed & _M32)) ^ (seed >> 32 & _M32)) & _M32))
    k = int(_py_mix32((k + step) & _M32)) ^ int(_py_mix32(step >> 32 & _M32))
    return float(k >> 16), float(k & 0xFFFF)


def check(fn, labels, variant, stored):
    """Stochastic rounding rounds bfloat16 stores: each tensor needs one."""
    if not variant.sr:
        return
    for k, st in enumerate(stored):
        if "bf16" not in (st or ()):
            raise TypeError(f"{fn}(): stochastic_rounding=True rounds bfloat16 params, "
                            f"state or model copies, and {labels.at(0, k)} has none "
                            "(its arrays are float16, float32 or float64)")
