"""Every many-tensor CUDA kernel compiles to sm_90 PTX with no GPU, cleanly.

Like tests/test_ptx.py, for `kernels.multi_cuda` (each rule with its flags off, and
with them on under the transforms; `MULTI_VARIANTS`): each variant x dtype is
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
* 128-bit loads and stores (``ld.global.v4.f32``; float64: ``.v2.f64``) of
  every array in the main loop, the scalar loop kept for the tail;
* the launcher's packed parameters (`kernels.launch`) byte for byte against
  the kernel's ``.entry`` parameters.
"""
import re

import pytest

import ptx_probe
from ptx_probe import DTYPES, VARIANTS, variant_id

# The probe compiles every variant to PTX in a fresh process (minutes).
pytestmark = pytest.mark.slow


# The element step (rule, transforms, average) is `tests/test_ptx.py`'s to
# probe in every combination; here, the skeleton around it: every rule with
# its flags all off, plain, and with every flag on under the transforms (the
# most arrays and registers). A rule with every flag on and no transform
# reads and writes the same arrays, with the same parameters, as under the
# clip and coupled decay, whose code it is a part of: its own kernels (18
# compiles, ~20 s of CI) showed nothing more.
MULTI_VARIANTS = [v for v in VARIANTS if len(set(v.flags)) <= 1
                  and (not any(v.flags) if not (v.clip or v.l2 or v.ema) else all(v.flags))]


def _arrays(dt):
    from numba import types
    table = types.int64[:, ::1]
    return table, table


def _table_facts(ptx):
    return {"wide_address": bool(re.search(r"shl\.b64|mul\.wide", ptx)),
            "table_loads": len(re.findall(r"ld\.global\.(?:[us]64|b64|nc\.[us]64)", ptx))}


@pytest.fixture(scope="module")
def ptx_records(tmp_path_factory):
    return ptx_probe.records(__file__, tmp_path_factory)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", MULTI_VARIANTS, ids=variant_id)
def test_multi_ptx_is_clean(ptx_records, variant, dtype):
    rec = ptx_records[(variant.key, dtype)]
    ptx_probe.assert_clean(rec, variant)
    ptx_probe.assert_vector(rec, variant)
    assert rec["wide_address"], "element addresses not computed in 64 bits"
    # 3 chunk fields + up to 5 addresses per copy of the chunk loop (the
    # optimizer may emit two, e.g. unswitched on the chunk's length).
    assert 1 <= rec["table_loads"] <= 2 * (3 + 5), rec


def test_packed_parameters_match_entry(ptx_records):
    """The launcher's packing (`kernels.launch`) of every variant and dtype,
    byte for byte against the parameters of its compiled ``.entry``."""
    for variant in MULTI_VARIANTS:
        for dtype in DTYPES:
            ptx_probe.assert_packing(ptx_records[(variant.key, dtype)], variant, dtype,
                                     multi=True)


if __name__ == "__main__":
    from fastopt.kernels.multi_cuda import kernel_function
    ptx_probe.probe(kernel_function, _arrays, _table_facts, MULTI_VARIANTS)
