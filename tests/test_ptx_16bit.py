"""16-bit storage variants compile to clean sm_90 PTX with no GPU: no
``.local``, no ``.f64``, 64-bit indexing, 16-bit global loads and stores
(each rule in bfloat16, Adam also with float16 params and grads over float32
state, with fp32 master weights writing a bfloat16 model copy, and with
stochastic rounding). Compiled in a subprocess with the simulator off (tests/ptx_probe.py)."""
import re

import pytest

import ptx_probe
from fastopt.kernels import RULES, variant

pytestmark = pytest.mark.slow


def _variants():
    out = [variant(rule, (False,) * len(spec.flags), storage=("bf16",) * 3)
           for rule, spec in RULES.items()]
    out.append(variant("adam", (False, True), storage=("f16", "f16", "f32")))
    # fp32 master weights: float32 param and state, bf16 grad and model copy
    out.append(variant("adam", (False, True), storage=("f32", "bf16", "f32", "bf16"),
                       model=True))
    # stochastic rounding of bf16 params and state (its key after the scalars)
    out.append(variant("adam", (False, True), storage=("bf16",) * 3, sr=True))
    return out


@pytest.fixture(scope="module")
def ptx_records(tmp_path_factory):
    return ptx_probe.records(__file__, tmp_path_factory)


@pytest.mark.parametrize("v", _variants(), ids=ptx_probe.variant_id)
def test_16bit_ptx_is_clean(ptx_records, v):
    rec = ptx_records[v.key]
    assert not rec["local"] and not rec["f64"] and rec["wide_index"], rec
    assert rec["loads16"] >= 1 and rec["stores16"] >= 1, rec
    if v.storage == ("bf16",) * 3:
        assert rec["loads32"] == 0 and rec["stores32"] == 0, rec


if __name__ == "__main__":
    from numba import cuda, types

    from fastopt.kernels import NUM_SLOTS, PRE
    from fastopt.kernels.cuda import kernel_function

    def compile_one(v):
        sig = (types.UniTuple(types.int64, 2 + NUM_SLOTS), types.int64,
               types.UniTuple(types.float32, len(PRE) + 2 * v.sr),
               types.UniTuple(types.float32, len(RULES[v.rule].hyper)))
        ptx, _ = cuda.compile_ptx(kernel_function(v), sig, cc=(9, 0))
        return {
            "key": v.key, "local": ".local" in ptx,
            "f64": bool(re.search(r"\.f64\b", ptx)), "wide_index": "mul.wide" in ptx,
            "loads16": len(re.findall(r"ld\.global(?:\.nc)?\.(?:u16|b16)", ptx)),
            "stores16": len(re.findall(r"st\.global\.(?:u16|b16)", ptx)),
            "loads32": len(re.findall(r"ld\.global(?:\.nc)?\.f32", ptx)),
            "stores32": len(re.findall(r"st\.global\.f32", ptx))}

    ptx_probe.run_jobs(_variants(), compile_one)
