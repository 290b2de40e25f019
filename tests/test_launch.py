"""The packed launcher (`kernels.launch`) end to end, with its recorder.

The functional API on GPU-like arrays (host buffers behind a CUDA array
interface, `fastopt.bench.host_cost.RecordedArray`), every launch recorded
instead of made: what the driver would have been given (function, grid,
stream, each parameter's bytes) is read back and compared with the call's
arrays and scalars. The layout itself is checked against every variant's
PTX ``.entry`` in tests/test_ptx.py and tests/test_multi_ptx.py.
"""
import numpy as np
import pytest

from fastopt import _multi, _repeat
from fastopt.bench.host_cost import RecordedArray
from fastopt.functional import adam
from fastopt.kernels import PRE, launch

HYPERS = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


@pytest.fixture
def recorder():
    rec = launch.Recorder()
    old = launch.use(rec)
    _repeat.FIXED[RecordedArray] = None
    yield rec
    launch.use(old)
    _repeat.FIXED.pop(RecordedArray, None)
    _repeat.clear()


def _arrays(n, k=4):
    return [RecordedArray(np.zeros(n, np.float32)) for _ in range(k)]


def _ptr(a):
    return a.host.ctypes.data


def _f32(x):
    return float(np.float32(x))


def test_single_call_parameters(recorder):
    p, g, m, v = arrs = _arrays(37)
    for step in (1, 2):
        adam(*arrs, step=step, **HYPERS, convention="torch")
    assert recorder.count == 2
    first, second = recorder.launches
    # param, grad, exp_avg, exp_avg_sq, the unused slot repeating param; n
    assert first.values[:6] == [_ptr(p), _ptr(g), _ptr(m), _ptr(v), _ptr(p), 37]
    assert second.values[:6 + len(PRE)] == first.values[:6 + len(PRE)]
    # this step's scalars, float32: lr·sqrt(1-β₂ᵗ)/(1-β₁ᵗ) first
    for rec, step in ((first, 1), (second, 2)):
        alpha = 1e-3 * np.sqrt(1 - 0.999 ** step) / (1 - 0.9 ** step)
        assert rec.values[6 + len(PRE)] == _f32(alpha)
    assert second.ptx_types[6:] == [".f32"] * (len(second.ptx_types) - 6)


def test_stream_read_at_each_call(recorder):
    class StreamArray(RecordedArray):
        pass

    current = {"stream": 11}
    _repeat.FIXED[StreamArray] = lambda info: current["stream"]
    try:
        arrs = [StreamArray(np.zeros(8, np.float32)) for _ in range(4)]
        adam(*arrs, step=1, **HYPERS)
        current["stream"] = 22
        adam(*arrs, step=2, **HYPERS)
    finally:
        del _repeat.FIXED[StreamArray]
    assert [r.stream for r in recorder.launches] == [11, 22]


def _table_rows(record):
    """The (param, grad, slots) addresses the recorded many-tensor launch's
    table holds (its "device" copy is host memory under the recorder)."""
    table_ptr, rows, cols = record.values[4], record.values[5], record.values[6]
    import ctypes
    raw = ctypes.string_at(table_ptr, rows * cols * 8)
    return np.frombuffer(raw, np.int64).reshape(rows, cols)


def test_list_repeats_and_never_serves_a_stale_table(recorder):
    n = 5
    lists = [[RecordedArray(np.zeros(s, np.float32)) for s in (3, 70_000, 1)]
             for _ in range(4)]
    adam(*lists, step=1, **HYPERS)
    adam(*lists, step=2, **HYPERS)
    one, two = recorder.launches
    assert (_table_rows(one) == _table_rows(two)).all()
    assert _table_rows(one)[:, 0].tolist() == [_ptr(a) for a in lists[0]]
    assert len(_repeat._lists) == 1    # the second call was the kept launch
    # A tensor replaced in place in the list: a new layout, a new table.
    lists[1][2] = RecordedArray(np.zeros(1, np.float32))
    adam(*lists, step=3, **HYPERS)
    assert _table_rows(recorder.launches[2])[2, 1] == _ptr(lists[1][2])
    # 70,000 elements in chunks of CHUNK: the chunk table
    chunks_ptr, nchunks = recorder.launches[2].values[13], recorder.launches[2].values[14]
    import ctypes
    chunks = np.frombuffer(ctypes.string_at(chunks_ptr, nchunks * 24), np.int64)
    assert chunks.reshape(-1, 3)[:, 2].sum() == 3 + 70_000 + 1
    assert nchunks == 2 + -(-70_000 // _multi.CHUNK)
    del n


def test_bad_arrays_still_checked_after_a_kept_call(recorder):
    arrs = _arrays(16)
    adam(*arrs, step=1, **HYPERS)
    other = _arrays(16)
    other[1] = RecordedArray(np.zeros(15, np.float32))
    with pytest.raises(ValueError, match="grad"):
        adam(*other, step=1, **HYPERS)
    assert recorder.count == 1


def test_backend_choice(monkeypatch):
    """Numba's launcher under the simulator and with FASTOPT_LAUNCHER=numba;
    the driver's where cuda.bindings imports (it does here, with no GPU)."""
    from numba import config
    # A state of its own, which teardown puts back whole: choosing writes
    # the module's state directly, so patching its items one by one would
    # leave the driver's backend chosen for the tests after this one.
    monkeypatch.setattr(launch, "_state", {"backend": None, "chosen": False})
    for sim, env, want in ((1, "driver", None), (0, "numba", None), (0, "driver", "driver")):
        launch._state["chosen"] = False
        monkeypatch.setattr(config, "ENABLE_CUDASIM", sim)
        monkeypatch.setenv("FASTOPT_LAUNCHER", env)
        chosen = launch.backend()
        assert (chosen and chosen.name) == want
