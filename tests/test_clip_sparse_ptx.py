"""The CUDA kernels of clip_grad_norm_ (kernels/multi_norms) and of sparse
gradients (kernels/rows) compile to sm_90 PTX with no GPU (a subprocess,
the simulator off): no local memory (spills), and the float32 rows kernel
does no float64 arithmetic."""
import json
import os
import re
import subprocess
import sys

import pytest


def _probe():
    from numba import cuda, types

    from fastopt.kernels import multi_norms, rows, variant

    for dtype in ("float32", "float64"):
        ptx, _ = cuda.compile_ptx(multi_norms.norms_kernel_function(),
                                  f"void(int64[::1], int64[:, ::1], {dtype}, int64, float64, "
                                  "float64[::1])", cc=(9, 0))
        print(json.dumps({"kernel": f"norms-{dtype}", "local": ".local" in ptx,
                          "f64": 0}), flush=True)
        ptx, _ = cuda.compile_ptx(multi_norms.scale_kernel_function(),
                                  f"void(int64[::1], int64[:, ::1], {dtype})", cc=(9, 0))
        print(json.dumps({"kernel": f"scale-{dtype}", "local": ".local" in ptx,
                          "f64": 0}), flush=True)
        dt = getattr(types, dtype)
        arr = types.Array(dt, 1, "C")
        sig = types.void(arr, arr, arr, arr, arr, types.Array(types.int64, 1, "C"),
                         types.int64, types.UniTuple(dt, 6), types.UniTuple(dt, 6))
        ptx, _ = cuda.compile_ptx(rows.kernel_function(variant("adam", (False, False))),
                                  sig, cc=(9, 0))
        f64 = len(re.findall(r"\.f64\s", ptx)) if dtype == "float32" else 0
        print(json.dumps({"kernel": f"rows-{dtype}", "local": ".local" in ptx,
                          "f64": f64}), flush=True)


def test_kernels_compile_to_ptx_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, __file__], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == 6
    for r in records:
        assert not r["local"] and r["f64"] == 0, r


if __name__ == "__main__":
    _probe()
