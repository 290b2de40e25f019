"""The list form's compiled layout scan (`fastopt/_hostscan.py`).

It reads NumPy's and CPython's structs directly, so every fact it reports is
compared here with what Python says of the same arrays, and every kind of
array it must not accept is shown to send the call to the Python path (which
names the problem: tests/test_multi_tensor.py).
"""
import numpy as np
import pytest

import fastopt.functional as F
from fastopt import _accel, _hostscan, _multi

ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7)


def _columns(n=5, ncols=4, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3,), (2, 5), (0,), (1,), (4, 1, 3)][:n]
    dtypes = [np.float32, np.float64, np.float32, np.float64, np.float32][:n]
    return [[rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
            for _ in range(ncols)]


def test_layout_is_enabled_here():
    assert _hostscan.enabled()


def test_scan_reports_what_python_reads():
    columns = _columns()
    columns[1][2] = _read_only(columns[1][2])       # grads may be read-only
    layout, digest = _hostscan.scan(columns, read_only=1)
    ncols, n = len(columns), len(columns[0])
    want_addr = [a.ctypes.data for column in columns for a in column]
    want_size = [a.size for a in columns[0]]
    want_code = [_hostscan.FLOAT_DTYPES.index(a.dtype) for a in columns[0]]
    assert list(layout) == want_addr + want_size + want_code
    assert len(layout) == (ncols + 2) * n
    again, digest_again = _hostscan.scan([list(c) for c in columns], read_only=1)
    assert digest == digest_again and _hostscan.same(layout, again)
    assert _hostscan.scan(columns, 1, expect=again) == (again, None)   # unchanged
    changed = again.copy()
    changed[0] += 4
    assert _hostscan.same(_hostscan.scan(columns, 1, expect=changed)[0], layout)


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


class _Sub(np.ndarray):
    pass


UNUSUAL = {
    "tuple": lambda cols: cols.__setitem__(2, tuple(cols[2])),
    "subclass": lambda cols: cols[0].__setitem__(1, cols[0][1].view(_Sub)),
    "byte-swapped": lambda cols: cols[3].__setitem__(0, cols[3][0].astype(">f4")),
    "int-dtype": lambda cols: cols[0].__setitem__(0, np.zeros(3, np.int32)),
    "other-dtype-than-param": lambda cols: cols[2].__setitem__(1, cols[2][1].astype(np.float32)),
    "strided": lambda cols: cols[1].__setitem__(0, np.zeros(6, np.float32)[::2]),
    "fortran": lambda cols: cols[2].__setitem__(1, np.asfortranarray(cols[2][1])),
    "read-only-written": lambda cols: cols[3].__setitem__(4, _read_only(cols[3][4])),
    "other-shape": lambda cols: cols[1].__setitem__(1, cols[1][1].reshape(5, 2)),
    "other-ndim": lambda cols: cols[3].__setitem__(1, cols[3][1].reshape(10)),
    "shorter-list": lambda cols: cols[2].pop(),
    "not-an-array": lambda cols: cols[1].__setitem__(3, [1.0]),
}


@pytest.mark.parametrize("edit", list(UNUSUAL), ids=list(UNUSUAL))
def test_scan_declines_what_it_does_not_check_itself(edit):
    columns = _columns()
    assert _hostscan.scan(columns, read_only=1) is not None
    UNUSUAL[edit](columns)
    assert _hostscan.scan(columns, read_only=1) is None


def test_scan_of_many_blocks_reports_and_declines_alike():
    """The walk runs a block of tensors per thread: the last block's arrays
    are read and checked like the first's."""
    n = 2 * _hostscan._BLOCK + 3
    rng = np.random.default_rng(1)
    columns = [[rng.standard_normal(k % 4 + 1).astype([np.float32, np.float64][k % 2])
                for k in range(n)] for _ in range(4)]
    layout, _ = _hostscan.scan(columns, read_only=1)
    assert list(layout) == ([a.ctypes.data for column in columns for a in column]
                            + [a.size for a in columns[0]]
                            + [k % 2 for k in range(n)])
    last = n - 1
    for edit in (lambda: _read_only(columns[2][last]), lambda: columns[2][last][:1],
                 lambda: columns[2][last].astype(np.float16), lambda: [0.0]):
        kept = columns[2][last]
        columns[2][last] = edit()
        assert _hostscan.scan(columns, read_only=1) is None
        columns[2][last] = kept
    assert _hostscan.scan(columns, read_only=1) is not None


def _one(arrays, used=(True,) * 5):
    """check_one over param, grad and 3 slots (None: an unused slot)."""
    ids = tuple(id(a if a is not None else arrays[0]) for a in arrays)
    return _hostscan.check_one(ids, tuple(a is not None for a in arrays))


def test_check_one_reports_what_python_reads():
    rng = np.random.default_rng(0)
    p, g, m = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3))
    ok, code, n, addrs = _one([p, _read_only(g), m, None, None])
    assert (ok, code, n) == (True, 0, 12)
    assert addrs[0] == p.ctypes.data and addrs[2] == m.ctypes.data
    assert addrs[3] == addrs[4] == p.ctypes.data      # unused slots repeat param
    assert _one([np.zeros(0), np.zeros(0), None, None, None])[:3] == (True, 1, 0)


ONE_UNUSUAL = {
    "grad-is-param": lambda p, g, m: [p, p, m, None, None],
    "state-is-grad": lambda p, g, m: [p, g, g, None, None],
    "partial-overlap": lambda p, g, m: _partial(p, g),
    "read-only-state": lambda p, g, m: [p, g, _read_only(m), None, None],
    "read-only-param": lambda p, g, m: [_read_only(p), g, m, None, None],
    "other-shape": lambda p, g, m: [p, g.reshape(4, 3), m, None, None],
    "other-dtype": lambda p, g, m: [p, g, m.astype(np.float64), None, None],
    "int-param": lambda p, g, m: [p.astype(np.int32), g, m, None, None],
    "subclass": lambda p, g, m: [p, g.view(_Sub), m, None, None],
    "not-an-array": lambda p, g, m: [p, 1.5, m, None, None],
    "transposed": lambda p, g, m: [p, g, np.ascontiguousarray(m.T).T, None, None],
}


def _partial(p, g):
    buffer = np.zeros(20, np.float32)
    return [p, buffer[:12].reshape(3, 4), buffer[8:].reshape(3, 4), None, None]


@pytest.mark.parametrize("edit", list(ONE_UNUSUAL), ids=list(ONE_UNUSUAL))
def test_check_one_declines_what_the_python_path_must_name(edit):
    p, g, m = (np.ones((3, 4), np.float32) for _ in range(3))
    assert _one([p, g, m, None, None])[0]
    assert not _one(ONE_UNUSUAL[edit](p, g, m))[0]


def test_checks_run_again_after_the_layout_is_cached():
    """A cached layout skips the overlap check and the table build, never the
    per-array checks: an array made read-only (or reshaped) after a step is
    refused on the next one, and nothing is written."""
    p, g, m, v = _columns(n=2)
    for step in (1, 2):
        F.adam(p, g, m, v, step=step, **ADAM)
    before = [a.copy() for a in p + m + v]
    m[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"adam\(\): exp_avg\[1\] is read-only"):
        F.adam(p, g, m, v, step=3, **ADAM)
    m[1].flags.writeable = True
    v[0].shape = (3, 1)
    with pytest.raises(ValueError, match=r"exp_avg_sq\[0\] has shape \(3, 1\)"):
        F.adam(p, g, m, v, step=3, **ADAM)
    for a, b in zip(p + m + v, before):
        np.testing.assert_array_equal(a.reshape(b.shape), b)


def test_fast_and_python_paths_agree_bitwise(monkeypatch):
    """The same step through the scan and with the scan turned off."""
    fast = _columns(n=5)
    slow = [[a.copy() for a in c] for c in fast]
    calls = []
    original = _multi._update_scanned

    def spy(*args):
        taken = original(*args)
        calls.append(taken)
        return taken

    monkeypatch.setattr(_multi, "_update_scanned", spy)
    kernels = []    # calls into the kernel outside the walk's compiled call

    def observer(kind, variant, fn):
        if kind != "multi_cpu":
            return fn
        return lambda *a: kernels.append(variant) or fn(*a)

    with _accel.observe(observer):
        for step in (1, 2, 3):
            F.adam(*fast, step=step, **ADAM)
            if step == 1:     # a new layout: one run per dtype (float32, float64)
                assert len(kernels) <= 2
                kernels.clear()
    assert calls == [True] * 3
    assert kernels == [], "a known layout runs its kernel in the walk's call"
    monkeypatch.setenv("FASTOPT_ACCELERATORS", "0")
    with _accel.observe(lambda kind, variant, fn: fn):   # forgets the built ones
        for step in (1, 2, 3):
            F.adam(*slow, step=step, **ADAM)
    assert calls == [True] * 3 + [False] * 3
    for got, want in zip(fast, slow):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b, strict=True)


def test_overlap_found_on_the_fast_path_and_not_cached():
    p, g, m, v = _columns(n=3)
    m[1] = v[1]
    for _ in range(2):      # the failed layout must not be remembered as checked
        with pytest.raises(ValueError, match=r"exp_avg_sq\[1\] shares memory with "
                                             r"exp_avg\[1\]"):
            F.adam(p, g, m, v, step=1, **ADAM)


def test_single_array_fast_and_python_paths_agree_bitwise(monkeypatch):
    rng = np.random.default_rng(3)
    fast = [rng.standard_normal((5, 7)).astype(np.float32) for _ in range(4)]
    slow = [a.copy() for a in fast]
    start = fast[0].copy()
    F.adam(*[a.copy() for a in fast], step=1, amsgrad=False, **ADAM)   # builds the plan
    python_path = []    # the Python path is the one that calls the kernel itself

    def observer(kind, variant, fn):
        if kind != "cpu":
            return fn
        return lambda *a: python_path.append(variant) or fn(*a)

    with _accel.observe(observer):
        for step in (1, 2):
            F.adam(*fast, step=step, amsgrad=False, **ADAM)
        assert python_path == []
        monkeypatch.setenv("FASTOPT_ACCELERATORS", "0")
        _accel.SINGLE.clear()
        for step in (1, 2):
            F.adam(*slow, step=step, amsgrad=False, **ADAM)
    assert len(python_path) == 2
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b, strict=True)
    assert not np.array_equal(fast[0], start)


def _bf16_call(kind):
    """Arrays and options of a single-array 16-bit call: bfloat16 throughout
    (with stochastic rounding), or master weights (float32 master and
    state, bfloat16 grad and model copy)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16, rng = ml_dtypes.bfloat16, np.random.default_rng(5)
    p, g, m, v = (rng.standard_normal(7).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    if kind == "master":
        return [p, g.astype(bf16), m, v], dict(model=p.astype(bf16))
    return [a.astype(bf16) for a in (p, g, m, v)], dict(stochastic_rounding=True, seed=3)


@pytest.mark.parametrize("kind", ["bf16-sr", "master"])
def test_16bit_single_arrays_take_the_accelerator(kind, monkeypatch):
    """After a checked call, 16-bit single-array calls (a model copy,
    stochastic rounding) run in the accelerator's one compiled call, as
    float32's do, bit for bit as the Python path."""
    fast, options = _bf16_call(kind)
    slow = [a.copy() for a in fast]
    slow_options = {k: (a.copy() if k == "model" else a) for k, a in options.items()}
    F.adam(*[a.copy() for a in fast], step=1, **ADAM,
           **{k: (a.copy() if k == "model" else a) for k, a in options.items()})
    python_path = []

    def observer(kind, variant, fn):
        if kind != "cpu":
            return fn
        return lambda *a: python_path.append(variant) or fn(*a)

    with _accel.observe(observer):
        for step in (1, 2, 3):
            F.adam(*fast, step=step, **ADAM, **options)
        assert len(python_path) == 1, "the first call checks in Python, the others not"
        monkeypatch.setenv("FASTOPT_ACCELERATORS", "0")
        _accel.SINGLE.clear()
        _accel.STORED.clear()
        for step in (1, 2, 3):
            F.adam(*slow, step=step, **ADAM, **slow_options)
    assert len(python_path) == 4
    for a, b in zip(fast + list(options.values())[:1], slow + list(slow_options.values())[:1]):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), strict=True)


@pytest.mark.parametrize("edit, match", [
    ("readonly", r"param is read-only"),
    ("overlap", r"exp_avg_sq shares memory with exp_avg"),
    ("shape", r"grad has shape \(8,\), expected \(7,\)"),
    ("dtype", r"grad has dtype float64, expected bfloat16"),
])
def test_16bit_fast_path_declines_what_python_must_name(edit, match):
    """A known 16-bit call's accelerator declines anything its check does not
    vouch for; the Python path names it, and nothing is written."""
    arrays, options = _bf16_call("bf16-sr")
    F.adam(*arrays, step=1, **ADAM, **options)      # remembered
    p, g, m, v = arrays
    if edit == "readonly":
        p.flags.writeable = False
    elif edit == "overlap":
        v = m
    elif edit == "shape":
        g = np.zeros(8, g.dtype)
    else:
        g = g.astype(np.float64)
    before = [a.copy() for a in (p, m, v)]
    with pytest.raises((ValueError, TypeError), match=match):
        F.adam(p, g, m, v, step=2, **ADAM, **options)
    for a, b in zip((p, m, v), before):
        np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))
