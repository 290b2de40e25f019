"""NaN and Inf propagate exactly as in torch.optim and Keras.

fastmath excludes ``nnan``/``ninf``, AMSGrad's max propagates NaN like
``torch.maximum``, and each convention updates its averages in its library's
form (torch's ``lerp`` turns an infinite average into NaN where ``β·m +
(1−β)·g`` keeps it infinite). A gradient holding NaN or ±Inf at some elements
must give NaN/Inf at exactly the same elements as the oracle, and agree
elsewhere. Every torch case runs on the CPU and the CUDA path; the Keras cases
(slower oracle) on the CPU.
"""
import numpy as np
import pytest

import oracles
from conftest import CPU, CUDA
from optimizer_table import CASES, TORCH, fastopt_step, make_state, oracle

PLACES = [pytest.param(case, target, id=f"{case.id}-{target!r}")
          for case in CASES for target in (CPU, CUDA)
          if case.convention == TORCH or target is CPU]
N, STEPS = 12, 4


def _inputs(dtype):
    rng = np.random.default_rng(7)
    param = rng.standard_normal(N).astype(dtype)
    grads = [rng.standard_normal(N).astype(dtype) for _ in range(STEPS)]
    grads[1][2] = np.nan
    grads[1][5] = np.inf
    grads[2][8] = -np.inf
    return param, grads


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case, target", PLACES)
def test_nan_and_inf_propagate_like_the_oracle(case, dtype, target):
    param, grads = _inputs(dtype)
    want, want_state = oracles.run(oracle(case), param, grads)
    p = target.put(param)
    state = {k: target.put(v) for k, v in make_state(case, param).items()}
    for step, g in enumerate(grads, start=1):
        fastopt_step(case, p, target.put(g), state, step)
    got = {"param": target.get(p), **{k: target.get(v) for k, v in state.items()}}
    for name, expected in {"param": want, **want_state}.items():
        actual = got[name]
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=name)
        np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected), err_msg=name)
        np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected), err_msg=name)
        finite = np.isfinite(expected)
        np.testing.assert_allclose(actual[finite], expected[finite],
                                   rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-6 if dtype == np.float32 else 1e-13,
                                   err_msg=name)
