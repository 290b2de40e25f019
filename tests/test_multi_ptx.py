"""Every many-tensor CUDA kernel compiles to sm_90 PTX with no GPU, cleanly.

Like tests/test_ptx.py, for `kernels.multi_cuda`: each variant x dtype is
compiled with `numba.cuda.compile_ptx` in a subprocess with the simulator off
(the simulator runs no intrinsic), and its PTX is read:

* no ``.local`` (no spills, no stack arrays) and no arithmetic in the other
  float precision;
* element addresses computed in 64 bits (``shl.b64``/``mul.wide`` of the
  widened index plus the int64 chunk start);
* the table is read once per chunk (3 chunk fields + up to 5 addresses, per
  copy of the chunk loop), not per element;
* one float load per array read and one store per array written, per
  (unrolled) iteration: a fused single pass.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from fastopt.kernels import PRE, RULES, all_variants

DTYPES = ("float32", "float64")


def _probe():
    from numba import cuda, types

    from fastopt.kernels.multi_cuda import kernel_function

    table = types.int64[:, ::1]
    for variant in all_variants():
        for name in DTYPES:
            dt = getattr(types, name)
            sig = (table, table, types.UniTuple(dt, len(PRE)),
                   types.UniTuple(dt, len(RULES[variant.rule].hyper)))
            ptx, _ = cuda.compile_ptx(kernel_function(variant), sig, cc=(9, 0))
            bits = name[-2:]
            other = ".f64" if name == "float32" else ".f32"
            print(json.dumps({
                "key": variant.key, "dtype": name,
                "local": ".local" in ptx,
                "other_precision": other in ptx,
                "wide_address": bool(re.search(r"shl\.b64|mul\.wide", ptx)),
                "table_loads": len(re.findall(r"ld\.global\.(?:[us]64|b64|nc\.[us]64)", ptx)),
                "loads": ptx.count(f"ld.global.f{bits}") + ptx.count(f"ld.global.nc.f{bits}"),
                "stores": ptx.count(f"st.global.f{bits}"),
            }), flush=True)


@pytest.fixture(scope="module")
def ptx_records():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, __file__], env=env, capture_output=True,
                         text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-4000:]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    return {(r["key"], r["dtype"]): r for r in records}


VARIANTS = list(all_variants())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.key.rsplit("-", 1)[0])
def test_multi_ptx_is_clean(ptx_records, variant, dtype):
    rec = ptx_records[(variant.key, dtype)]
    assert not rec["local"], "local memory in PTX (spill or stack array)"
    assert not rec["other_precision"], "arithmetic in the other float precision"
    assert rec["wide_address"], "element addresses not computed in 64 bits"
    arrays = sum(variant.used)
    # 3 chunk fields + up to 5 addresses per copy of the chunk loop (the
    # optimizer may emit two, e.g. unswitched on the chunk's length).
    assert 1 <= rec["table_loads"] <= 2 * (3 + 5), rec
    reads, writes = 2 + arrays, 1 + arrays
    assert rec["loads"] % reads == 0 and rec["stores"] % writes == 0, rec
    assert rec["loads"] // reads == rec["stores"] // writes >= 1, rec


if __name__ == "__main__":
    _probe()
