"""kernels/norms.py: sums of squares on the GPU (simulator) and the CPU.

The oracle is NumPy's float64 dot product. The CUDA kernel also compiles to
sm_90 PTX with no GPU (in a subprocess with the simulator off), and the module
never imports fastopt's public API.
"""
import ast
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from fastopt.kernels import norms

NORMS_PY = pathlib.Path(norms.__file__)
# sizes around the simulator's grid (2 blocks x 32 threads = 64)
SIZES = [0, 1, 31, 64, 65, 1000]
DTYPES = ["float32", "float64"]


def _want(x):
    x = x.astype(np.float64)
    return float(np.dot(x, x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_device_sums_match_numpy(dtype):
    from numba import cuda

    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    got = norms.sum_squares_device([cuda.to_device(x) for x in xs])
    assert got.dtype == np.float64 and got.shape == (len(xs),)
    np.testing.assert_allclose(got, [_want(x) for x in xs], rtol=1e-13, atol=0)


def test_device_sums_propagate_nan_and_inf():
    from numba import cuda

    xs = [np.array([1.0, np.nan, 2.0]), np.array([np.inf, 1.0]), np.ones(3)]
    got = norms.sum_squares_device([cuda.to_device(x) for x in xs])
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == 3.0


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_sums_match_numpy(dtype, n):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    got = norms.sum_squares_host(x)
    assert isinstance(got, float)
    assert got == pytest.approx(_want(x), rel=1e-13, abs=0)


def test_host_sum_repeats_bit_for_bit():
    x = np.random.default_rng(1).standard_normal(100_001)
    assert norms.sum_squares_host(x) == norms.sum_squares_host(x.copy())


def test_norms_does_not_import_the_api():
    tree = ast.parse(NORMS_PY.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 1 or not (node.module or "").startswith("fastopt")
            assert not (node.level == 2)      # nothing from fastopt's package
        elif isinstance(node, ast.Import):
            assert all(not a.name.startswith("fastopt") for a in node.names)


def _probe():
    from numba import cuda

    for dtype in DTYPES:
        ptx, _ = cuda.compile_ptx(norms.kernel_function(),
                                  f"void({dtype}[::1], float64[::1], int64)",
                                  cc=(9, 0))
        print(json.dumps({"dtype": dtype, "local": ".local" in ptx,
                          "atomics": ptx.count("atom.global.add.f64"),
                          "barriers": ptx.count("bar.sync"),
                          "loads": ptx.count("ld.global")}), flush=True)


@pytest.mark.slow   # a fresh process compiles to PTX
def test_kernel_compiles_to_ptx_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, __file__], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["dtype"] for r in records] == DTYPES
    for r in records:
        assert not r["local"], r                 # no spills
        assert r["atomics"] == 1, r              # one atomic add per block
        assert r["barriers"] >= 2 and r["loads"] >= 1, r


if __name__ == "__main__":
    _probe()
