"""The CUDA skeleton's 128-bit main loop (`kernels.vector`), run on the CPU.

The simulator runs no intrinsic, so the vector loop's logic (which arrays
it loads and stores, the groups of 4, the scalar tail) is checked here: the
same `quad_loop`, built with CPU intrinsics (generic pointers instead of
global ones), then the scalar loop over the tail, against the scalar loop
alone, bit for bit. The PTX tests check the CUDA build's code: 128-bit
loads in every float32 variant, no local memory.
"""
import numba
import numpy as np
import pytest
from numba.extending import intrinsic

from fastopt.kernels import PRE, RULES, variant
from fastopt.kernels.variants import element_step
from fastopt.kernels import vector

CPU = vector.intrinsics(intrinsic, None)

# a rule with three slots, one with an unused slot and the moving average,
# and one reading a slot it never writes back differently
VARIANTS = [variant("adam", (True, True)), variant("sgd_momentum_torch", (False,), ema=True),
            variant("rmsprop_torch", (True, True))]


RND = (numba.uint64(0), numba.int64(0))   # no random bits: no stochastic rounding


def _runners(v):
    step = element_step(v)
    quads = vector.quad_loop(v, step, CPU)

    @numba.njit
    def vectorized(arrays, n, first, pre, hyper):
        """Elements first.. by the quad loop and the tail (a chunk starting
        `first` elements into its tensor, as in the many-tensor kernel), the
        elements before it by the scalar loop."""
        p, g, s0, s1, s2 = arrays
        done = quads(p.ctypes.data, g.ctypes.data, s0.ctypes.data, s1.ctypes.data,
                     s2.ctypes.data, first, n - first, 0, 1, pre, hyper)
        for i in range(first):
            step(i, p, g, (s0, s1, s2), pre, hyper, RND)
        for i in range(first + done, n):
            step(i, p, g, (s0, s1, s2), pre, hyper, RND)
        return done

    @numba.njit
    def scalar(arrays, n, pre, hyper):
        p, g, s0, s1, s2 = arrays
        for i in range(n):
            step(i, p, g, (s0, s1, s2), pre, hyper, RND)

    return vectorized, scalar


@pytest.mark.parametrize("v", VARIANTS, ids=lambda v: v.key.rsplit("-", 1)[0])
def test_quad_loop_equals_scalar_loop(v):
    vectorized, scalar = _runners(v)
    rng = np.random.default_rng(0)
    nhyper = len(RULES[v.rule].hyper)
    for dtype in (np.float32, np.float64):
        pre = tuple(dtype(x) for x in (1.0, 0.0, 0.0, 1.0, 0.5, 0.5)[:len(PRE)])
        hyper = tuple(dtype(x) for x in rng.uniform(0.01, 0.9, nhyper))
        for n, first in ((3, 0), (16, 0), (37, 0), (45, 8)):
            base = [np.abs(rng.standard_normal(n + 4)).astype(dtype) for _ in range(5)]
            a, b = [x.copy() for x in base], [x.copy() for x in base]
            # 16-byte aligned buffers (NumPy's allocations are)
            assert all(x.ctypes.data % 16 == 0 for x in a)
            for _ in range(3):
                done = vectorized(tuple(x[:n] for x in a), n, first, pre, hyper)
                scalar(tuple(x[:n] for x in b), n, pre, hyper)
            assert done == (n - first) // 4 * 4
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)
