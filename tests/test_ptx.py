"""Every CUDA kernel specialisation compiles to sm_90 PTX with no GPU, cleanly.

The simulator runs kernels as plain Python, so it cannot catch typing errors
of the real CUDA target, float64 creeping into float32 code, or local-memory
spills. Here each variant x dtype is compiled with `numba.cuda.compile_ptx`
(needs numba-cuda's cu12 extra, not a GPU) in a subprocess with the simulator
off, and its PTX is read:

* no ``.local`` (no spills, no stack arrays);
* no arithmetic in the other float precision;
* 64-bit indexing: the thread index is widened before use (``mul.wide``);
* exactly one global load per array the variant reads and one store per array
  it writes, per (unrolled) iteration: a fused single pass.
"""
import json
import os
import subprocess
import sys

import pytest

from fastopt.kernels import NUM_SLOTS, PRE, RULES, all_variants

DTYPES = ("float32", "float64")


def _probe():
    """Compile every variant; print one JSON record per variant and dtype."""
    from numba import cuda, types

    from fastopt.kernels.cuda import kernel_function

    for variant in all_variants():
        for name in DTYPES:
            dt = getattr(types, name)
            arr = dt[::1]
            sig = (arr, arr, types.UniTuple(arr, NUM_SLOTS),
                   types.UniTuple(dt, len(PRE)),
                   types.UniTuple(dt, len(RULES[variant.rule].hyper)))
            ptx, _ = cuda.compile_ptx(kernel_function(variant), sig, cc=(9, 0))
            other = ".f64" if name == "float32" else ".f32"
            print(json.dumps({
                "key": variant.key, "dtype": name,
                "local": ".local" in ptx,
                "other_precision": other in ptx,
                "wide_index": "mul.wide" in ptx,
                "loads": ptx.count("ld.global"), "stores": ptx.count("st.global"),
            }), flush=True)


@pytest.fixture(scope="module")
def ptx_records():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, __file__], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    return {(r["key"], r["dtype"]): r for r in records}


VARIANTS = list(all_variants())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.key.rsplit("-", 1)[0])
def test_ptx_is_clean(ptx_records, variant, dtype):
    rec = ptx_records[(variant.key, dtype)]
    assert not rec["local"], "local memory in PTX (spill or stack array)"
    assert not rec["other_precision"], "arithmetic in the other float precision"
    assert rec["wide_index"], "thread index not widened to 64 bits"
    arrays = sum(variant.used)
    reads, writes = 2 + arrays, 1 + arrays
    assert rec["loads"] % reads == 0 and rec["stores"] % writes == 0, rec
    assert rec["loads"] // reads == rec["stores"] // writes >= 1, rec


def test_every_rule_is_covered():
    assert {v.rule for v in VARIANTS} == set(RULES)


if __name__ == "__main__":
    _probe()
