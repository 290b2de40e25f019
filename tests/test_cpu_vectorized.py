"""The CPU loop vectorizes: packed SIMD arithmetic in every rule's kernel.

Speed on the CPU depends on LLVM vectorizing the parallel loop (a scalar loop
is ~3x slower), and small changes to the skeleton or a rule can silently stop
it. This reads the generated assembly for one variant of each rule.
"""
import inspect
import platform
import re

import numba
import numpy as np
import pytest

from fastopt.kernels import PRE, RULES, cpu, rules, variant

pytestmark = [pytest.mark.slow,   # an uncached compile per rule, dtype and loop kind
              pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                 reason="reads x86-64 assembly")]

PACKED_ARITH = re.compile(r"\bv?(?:mul|add|sub|f[n]?m(?:add|sub)\d*)p[sd]\b")
PACKED_SQRT = re.compile(r"\bv?sqrtp[sd]\b")


def _all_flags_on(rule):
    return variant(rule, (True,) * len(RULES[rule].flags))


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "serial-only"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_cpu_kernel_uses_packed_simd(rule, dtype, parallel):
    """The serial loop (below `cpu.SERIAL_BELOW`) must vectorize as well as
    the parallel one: compiled with ``parallel=False`` the twin holds only
    serial loops (Numba's default error model, for one, keeps them scalar)."""
    v = _all_flags_on(rule)
    # A kernel loaded from the disk cache (another process may have written it)
    # has no assembly to show: compile an uncached twin with the same options.
    cached = cpu.kernel(v)
    options = {k: o for k, o in cached.targetoptions.items()
               if k not in ("cache", "nopython")}
    kern = numba.njit(**{**options, "parallel": parallel})(cached.py_func)
    n = 64
    param, grad = np.ones(n, dtype), np.ones(n, dtype)
    arrays = [np.ones(n, dtype) for _ in range(3)]
    state = [a if used else param for a, used in zip(arrays, v.used)]
    addrs = tuple(a.ctypes.data for a in [param, grad, *state])
    pre = (1.0, 0.0, 0.0, 1.0, 0.0, 1.0)
    assert len(pre) == len(PRE)
    hyper = tuple(0.5 for _ in RULES[rule].hyper)
    kern(addrs, n, dtype(0), pre, hyper)
    asm = kern.inspect_asm(kern.signatures[0])
    assert PACKED_ARITH.search(asm), "no packed arithmetic: the loop did not vectorize"
    if "math.sqrt" in inspect.getsource(getattr(rules, rule)):
        assert PACKED_SQRT.search(asm), "sqrt is not vectorized"
