"""fastopt.functional against the real libraries, for every row of the table.

Each case of `optimizer_table.CASES`, in each of its optimizer's dtypes, runs a multi-step trajectory with random
gradients through fastopt and through its oracle (torch.optim for the torch
convention, Keras 3 on the torch backend for the Keras convention); the final
param and every state array must agree. On the CPU path and on the CUDA path
(Numba's simulator unless FASTOPT_REAL_GPU=1), in float32 and float64.

Shapes: sizes 0, 1 (also 0-d) and sizes that are no multiple of any block or
vector width (91, 300, 1005) on the CPU; two small ones on the device targets,
where the simulator pays ~7 ms of CPU per launch for its 64 simulated threads;
on a real GPU (FASTOPT_REAL_GPU=1) also sizes that need many blocks and more
than one pass of the grid-stride loop.
"""
import functools
import zlib

import numpy as np
import pytest

import oracles
from oracles import max_rel_error
from conftest import CPU, REAL_GPU, TARGETS, slow_unless
from optimizer_db import BY_NAME, SPECS
from optimizer_table import CASES, KERAS, TORCH, fastopt_step, make_state, oracle

CPU_SHAPES = [(), (0,), (1,), (7, 13), (300,), (3, 5, 67)]
DEVICE_SHAPES = [(1,), (7, 13)]
if REAL_GPU:   # many blocks, a grid-stride tail, and an array larger than one grid
    DEVICE_SHAPES += [(300_007,), (1 << 18, 3)]
CPU_STEPS = 25
DEVICE_STEPS = 20   # the simulator: ~7 ms of CPU per launch, ~25 s for the table
TOL = {np.float32: 1e-5, np.float64: 1e-12}
_BY_ID = {case.id: case for case in CASES}


def _seed(*parts):
    return zlib.crc32(repr(parts).encode())


@functools.lru_cache(maxsize=None)
def _inputs(case_id, shape, dtype, steps):
    """Initial param and `steps` gradients, reproducible per case and shape."""
    rng = np.random.default_rng(_seed(case_id, shape, dtype.__name__))
    param = np.asarray(rng.standard_normal(shape), dtype)   # shape (): a scalar
    grads = tuple(np.asarray(rng.standard_normal(shape), dtype) for _ in range(steps))
    return param, grads


@functools.lru_cache(maxsize=None)
def _expected(case_id, shape, dtype, steps):
    """The oracle's final (param, states); shared by the CPU and CUDA tests."""
    case = _BY_ID[case_id]
    param, grads = _inputs(case_id, shape, dtype, steps)
    return oracles.run(oracle(case), param, list(grads))


def _fastopt(case, target, shape, dtype, steps):
    param, grads = _inputs(case.id, shape, dtype, steps)
    p = _put(target, param)
    state = {k: _put(target, v) for k, v in make_state(case, param).items()}
    for step, g in enumerate(grads, start=1):
        fastopt_step(case, p, _put(target, g), state, step)
    return target.get(p), {k: target.get(v) for k, v in state.items()}


def _put(target, array):
    # conftest's put goes through np.ascontiguousarray, which turns 0-d into (1,).
    return target.put(array).reshape(array.shape)


def _max_abs(a):
    return float(np.abs(a).max(initial=0.0))


def _shape_id(shape):
    return "x".join(map(str, shape)) or "0d"


# The inner loop (-m "not slow") runs every row at one shape per target (on
# the simulator the smallest: it pays per simulated thread).
PLACES = [slow_unless(s == ((7, 13) if t is CPU else (1,)), t, s, id=f"{t!r}-{_shape_id(s)}")
          for t in TARGETS for s in (CPU_SHAPES if t is CPU else DEVICE_SHAPES)]


ROWS = [pytest.param(case, dtype, id=f"{case.id}-f{np.dtype(dtype).itemsize * 8}")
        for case in CASES for dtype in BY_NAME[case.fn].dtypes]


@pytest.mark.parametrize("target, shape", PLACES)
@pytest.mark.parametrize("case, dtype", ROWS)
def test_trajectory_matches_oracle(case, dtype, target, shape):
    steps = CPU_STEPS if target is CPU else DEVICE_STEPS
    param, states = _fastopt(case, target, shape, dtype, steps)
    want_param, want_states = _expected(case.id, shape, dtype, steps)
    assert set(states) == set(want_states)
    p0 = _inputs(case.id, shape, dtype, steps)[0]
    tol = TOL[dtype]
    for name, got, want, scale in [("param", param, want_param, _max_abs(p0))] + [
            (k, states[k], want_states[k], 0.0) for k in sorted(states)]:
        assert got.dtype == want.dtype == dtype and got.shape == want.shape == shape
        err = max_rel_error(got, want, scale)
        assert err <= tol, f"{name}: error {err:.3g} > {tol:g} after {steps} steps"


def test_table_covers_every_function_in_its_conventions():
    """Both conventions, but for an optimizer only one library has."""
    covered = {(c.fn, c.convention) for c in CASES}
    assert covered == {(spec.name, conv) for spec in SPECS.values()
                       for conv, front in ((TORCH, spec.torch), (KERAS, spec.keras)) if front}
    assert len(_BY_ID) == len(CASES), "case ids must be unique"


def test_error_measure_is_relative_with_a_floor():
    b = np.array([2.0, 1e-9, -4.0])
    assert max_rel_error(b, b) == 0.0
    assert max_rel_error(b * (1 + 1e-6), b) == pytest.approx(1e-6)
    # Near zero the absolute error counts against FLOOR * max|b| = 0.25.
    assert max_rel_error(b + [0, 1e-3, 0], b) == pytest.approx(4e-3)
    one = np.array([1e-3])
    assert max_rel_error(one * 1.5, one) == pytest.approx(0.5)
    assert max_rel_error(one * 1.5, one, scale=2.0) == pytest.approx(4e-3)
