"""Every CUDA kernel specialisation compiles to sm_90 PTX with no GPU, cleanly.

The simulator runs kernels as plain Python, so it cannot catch typing errors
of the real CUDA target, float64 creeping into float32 code, or local-memory
spills. Here each variant x dtype is compiled with `numba.cuda.compile_ptx`
(needs numba-cuda's cu12 extra, not a GPU) in a subprocess with the simulator
off, and its PTX is read (tests/ptx_probe.py):

* no ``.local`` (no spills, no stack arrays);
* no arithmetic in the other float precision;
* 64-bit indexing: the thread index is widened before use (``mul.wide``);
* exactly one global load per array the variant reads and one store per array
  it writes, per (unrolled) iteration: a fused single pass.
* 128-bit loads and stores (``ld.global.v4.f32``; float64: ``.v2.f64``) of
  every array in the main loop, the scalar loop kept for the tail;
* the launcher's packed parameters (`kernels.launch`) byte for byte against
  the kernel's ``.entry`` parameters.
"""
import pytest

import ptx_probe
from fastopt.kernels import NUM_SLOTS, RULES
from ptx_probe import DTYPES, VARIANTS, variant_id

# The probe compiles every variant to PTX in a fresh process (minutes).
pytestmark = pytest.mark.slow


def _arrays(dt):
    from numba import types
    return types.UniTuple(types.int64, 2 + NUM_SLOTS), types.int64   # addresses, n


@pytest.fixture(scope="module")
def ptx_records(tmp_path_factory):
    return ptx_probe.records(__file__, tmp_path_factory)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_ptx_is_clean(ptx_records, variant, dtype):
    rec = ptx_records[(variant.key, dtype)]
    ptx_probe.assert_clean(rec, variant)
    ptx_probe.assert_vector(rec, variant)
    assert rec["wide_index"], "thread index not widened to 64 bits"


def test_every_rule_is_covered():
    assert {v.rule for v in VARIANTS} == set(RULES)


def test_packed_parameters_match_entry(ptx_records):
    """The launcher's packing (`kernels.launch`) of every variant and dtype,
    byte for byte against the parameters of its compiled ``.entry``."""
    for variant in VARIANTS:
        for dtype in DTYPES:
            ptx_probe.assert_packing(ptx_records[(variant.key, dtype)], variant, dtype,
                                     multi=False)


if __name__ == "__main__":
    from fastopt.kernels.cuda import kernel_function
    ptx_probe.probe(kernel_function, _arrays,
                    lambda ptx: {"wide_index": "mul.wide" in ptx})
