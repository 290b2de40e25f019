"""The list form of the functional API (`fastopt/_multi.py`, `kernels/multi_*.py`).

* The oracle is fastopt's own one-tensor path, already checked against Keras
  and torch: the list path must give bit-for-bit the same params and state as
  one call per tensor, on the CPU and under the CUDA simulator, for every rule,
  float32, float64 and mixed lists, with sizes 0, 1, odd, and around the chunk
  size (shrunk to 8 here so that chunk boundaries fall inside tensors).
* One kernel call per dtype group, counted.
* Bad input: a clear error naming the argument and index, and nothing written.
* CPU: the many-tensor loop vectorizes (LLVM IR) and is served from Numba's
  on-disk cache in a fresh process.
"""
import re
import subprocess
import sys
from dataclasses import dataclass, field

import numba
import numpy as np
import pytest

import fastopt.functional as F
from conftest import CPU, CUDA, read_only, targets_slow_beyond, to_host
from optimizer_db import DB, state_args
from fastopt import _multi
from fastopt.bench_shapes import MODELS
from fastopt.kernels import PRE, RULES, cpu, multi_cpu, multi_cuda, variant

SMALL_CHUNK = 8
SIZES = (0, 1, 5, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, 2 * SMALL_CHUNK + 3)
SHAPES = [(s,) for s in SIZES] + [(3, 3)]          # a 2-D tensor too
DTYPE_SETS = {
    "float32": [np.float32] * len(SHAPES),
    "float64": [np.float64] * len(SHAPES),
    "mixed": [np.float32, np.float64] * (len(SHAPES) // 2),
}


@dataclass
class Case:
    """fn(params, grads, *positional states, **keyword states, **kwargs)."""
    id: str
    rule: str                  # the kernel rule this option set must select
    fn: object
    positional: tuple = ()
    keyword: tuple = ()
    kwargs: dict = field(default_factory=dict)
    init: float = 0.0          # initial state value (Adagrad's accumulator)

    def states(self):
        return self.positional + self.keyword


def _case(info, row):
    """`optimizer_db`'s list row as a call: its state split as the signature takes it."""
    positional, keyword = state_args(info.spec, row.hyper, row.convention)
    return Case(row.id, row.rule, getattr(F, info.name), positional, keyword,
                {**row.hyper, "convention": row.convention}, row.init)


CASES = [_case(info, row) for info in DB for row in info.lists]
_BY_ID = {case.id: case for case in CASES}
ADAM_CASE = _BY_ID["adam-torch-amsgrad-l2"]


def test_every_rule_is_covered():
    assert {c.rule for c in CASES} == set(RULES)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunk boundaries inside the test tensors, and on the CPU parts of
    several chunks each (one part per thread)."""
    monkeypatch.setattr(_multi, "CHUNK", SMALL_CHUNK)
    monkeypatch.setattr(_multi, "PARTS_PER_THREAD", 1)


@pytest.fixture
def seen_rules(monkeypatch):
    """The rules `update_many` ran, to check each case selects its rule."""
    seen = []
    original = _multi.update_many

    def spy(fn, which, *args):
        seen.append(which.rule)
        return original(fn, which, *args)

    monkeypatch.setattr(_multi, "update_many", spy)
    return seen


def _tensors(case, dtypes, seed=0):
    """Host arrays by argument name, each a list over the tensors."""
    rng = np.random.default_rng(seed)
    arrays = {"param": [], "grad": []}
    for shape, dtype in zip(SHAPES, dtypes):
        arrays["param"].append(rng.standard_normal(shape).astype(dtype))
        arrays["grad"].append(rng.standard_normal(shape).astype(dtype))
    for name in case.states():
        arrays[name] = [np.full(p.shape, case.init, p.dtype) for p in arrays["param"]]
    return arrays


def _call(case, arrays, k=None, **extra):
    """Run case on every tensor (k=None: the list form) or on tensor k alone."""
    pick = (lambda v: v) if k is None else (lambda v: v[k])
    args = [pick(arrays[n]) for n in ("param", "grad") + case.positional]
    kwargs = {n: pick(arrays[n]) for n in case.keyword}
    case.fn(*args, **kwargs, **case.kwargs, **extra)


def _put(target, arrays):
    return {n: [target.put(a) for a in v] for n, v in arrays.items()}


def _get(target, arrays):
    return {n: [target.get(a) for a in v] for n, v in arrays.items()}


def _assert_same(got, want):
    """Bit for bit: both paths run the same element step on the same values
    (kernels/cpu.py keeps FMA contraction off so position does not matter)."""
    for name in want:
        for k, (g, w) in enumerate(zip(got[name], want[name])):
            assert g.dtype == w.dtype and g.shape == w.shape, (name, k)
            np.testing.assert_array_equal(g, w, err_msg=f"{name}[{k}]", strict=True)


# A few rules with the most state, flags and transforms stand for all where
# what is tested is the loop or the grouping around the element step, the
# same for every rule: the parallel loops, lists of mixed dtypes. (Each case
# compiles kernels of its own, seconds of CI.)
_REPRESENTATIVE = [c for c in CASES if c.id in (
    "sgd-keras-nesterov", "rmsprop-keras-centered-momentum", "adam-torch-amsgrad-l2",
    "adamw-keras-clip", "schedule-free-adamw-keras", "rprop-torch-maximize")]
assert len(_REPRESENTATIVE) == 6
_LISTS = [pytest.param(case, dtypes, id=f"{case.id}-{dtypes}") for case in CASES
          for dtypes in DTYPE_SETS if dtypes != "mixed" or case in _REPRESENTATIVE]


@pytest.mark.parametrize("target", targets_slow_beyond(CPU))
@pytest.mark.parametrize("case, dtypes", _LISTS)
def test_list_equals_one_call_per_tensor(target, case, dtypes, small_chunks,
                                         seen_rules):
    host = _tensors(case, DTYPE_SETS[dtypes])
    many, single = _put(target, host), _put(target, host)
    for step in (1, 2, 3):       # torch SGD's first step differs from the rest
        _call(case, many, step=step)
        for k in range(len(SHAPES)):
            _call(case, single, k, step=step)
    assert set(seen_rules) == {case.rule}
    _assert_same(_get(target, many), _get(target, single))


@pytest.mark.parametrize("case", _REPRESENTATIVE, ids=[c.id for c in _REPRESENTATIVE])
def test_serial_and_parallel_loops_agree(case):
    """Below `kernels.cpu.SERIAL_BELOW` elements a CPU loop runs on the
    calling thread, from there in parallel (kernels of their own): the same
    results, bit for bit. Reference: every tensor updated in pieces too small
    to go parallel."""
    below = cpu.SERIAL_BELOW
    shapes = [(below + 3,), (below // 2 + 7,), (below // 2 + 11,)]
    rng = np.random.default_rng(5)
    host = {"param": [rng.standard_normal(s).astype(np.float32) for s in shapes]}
    host["grad"] = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    for name in case.states():
        host[name] = [np.full(s, case.init, np.float32) for s in shapes]
    listed, single, pieces = ({n: [a.copy() for a in v] for n, v in host.items()}
                              for _ in range(3))
    cuts = [(t, start, min(start + below // 2, shapes[t][0]))
            for t in range(len(shapes)) for start in range(0, shapes[t][0], below // 2)]
    small = {n: [v[t][a:b] for t, a, b in cuts] for n, v in pieces.items()}
    for step in (1, 2, 3):
        _call(case, listed, step=step)                 # parallel parts
        _call(case, single, 0, step=step)              # a parallel single loop
        for k in range(1, len(shapes)):
            _call(case, single, k, step=step)
        for k in range(len(cuts)):
            _call(case, small, k, step=step)
    _assert_same(listed, pieces)
    _assert_same(single, pieces)


class _Counter:
    """Wraps the kernel getters of both targets to count calls and launches."""

    def __init__(self, monkeypatch):
        self.calls = 0
        for module in (multi_cpu, multi_cuda):
            monkeypatch.setattr(module, "kernel", self._wrap(module.kernel))

    def _wrap(self, get):
        counter = self

        class Launch:
            def __init__(self, kern):
                self.kern = kern

            def __getitem__(self, config):
                launch = self.kern[config]

                def run(*args):
                    counter.calls += 1
                    return launch(*args)
                return run

            def __call__(self, *args):
                counter.calls += 1
                return self.kern(*args)

        return lambda *args: Launch(get(*args))


def test_one_kernel_call_per_dtype_group(target, small_chunks, monkeypatch):
    case = ADAM_CASE
    for dtypes, groups in (("float32", 1), ("mixed", 2)):
        arrays = _put(target, _tensors(case, DTYPE_SETS[dtypes]))
        counter = _Counter(monkeypatch)
        _call(case, arrays, step=1)
        assert counter.calls == groups


@pytest.mark.parametrize("model", ["resnet50", "200x1000"])
def test_cpu_parts_cut_chunks_into_equal_work(model):
    """Threads take equal numbers of parts; each part holds consecutive
    chunks, every chunk is in one, and parts differ by at most a chunk."""
    sizes = np.array([int(np.prod(s)) for s in MODELS[model]()])
    chunks = _multi._build_table(np.zeros((5, len(sizes)), np.int64), sizes,
                                 list(range(5)), np.arange(len(sizes)))["chunks"]
    parts = _multi._parts(chunks)
    assert parts[0] == 0 and parts[-1] == len(chunks) and np.all(np.diff(parts) >= 0)
    work = np.array([chunks[a:b, 2].sum() for a, b in zip(parts[:-1], parts[1:])])
    assert len(work) == min(len(chunks), _multi.PARTS_PER_THREAD
                            * numba.config.NUMBA_NUM_THREADS)
    assert work.max() - work.min() <= 2 * _multi.CHUNK   # a chunk at either end


def test_empty_list_and_all_empty_tensors(target):
    F.sgd([], [], step=1, lr=0.1)
    p = [target.put(np.zeros(0, np.float32)) for _ in range(2)]
    g = [target.put(np.zeros(0, np.float32)) for _ in range(2)]
    F.sgd(p, g, step=1, lr=0.1)


def test_tensors_added_and_removed_between_steps(target, small_chunks):
    """The table is cached by address and size; a different list gets its own."""
    case = ADAM_CASE
    host = _tensors(case, DTYPE_SETS["mixed"])
    many, single = _put(target, host), _put(target, host)
    for step, keep in ((1, 8), (2, 8), (3, 5), (4, 8), (5, 3)):
        _call(case, {n: v[:keep] for n, v in many.items()}, step=step)
        for k in range(keep):
            _call(case, single, k, step=step)
    _assert_same(_get(target, many), _get(target, single))


def _sgd_sets(count):
    """`count` list sets of SGD momentum (two small tensors each)."""
    return [{"p": [np.ones(n, np.float32) for n in (3, 5)],
             "g": [np.full(n, 0.5, np.float32) for n in (3, 5)],
             "b": [np.zeros(n, np.float32) for n in (3, 5)]} for _ in range(count)]


def _sgd_step(s, step):
    F.sgd(s["p"], s["g"], s["b"], step=step, lr=0.1, momentum=0.9)


def test_list_sets_used_in_turn_keep_their_tables(monkeypatch):
    """Models trained in turn, or a benchmark's rotating buffers, cycle over
    many layouts: each is checked and tabled once, then found again (a cache
    of 64 entries, less than the cycle, missed on every call)."""
    built = []
    layout_entry = _multi._layout_entry
    monkeypatch.setattr(_multi, "_layout_entry",
                        lambda *a: built.append(1) or layout_entry(*a))
    sets = _sgd_sets(100)
    for s in sets:
        _sgd_step(s, 1)
    first = len(built)
    assert 0 < first <= 100
    for step in (2, 3):
        for s in sets:
            _sgd_step(s, step)
    assert len(built) == first
    want = _sgd_sets(1)[0]
    for step in (1, 2, 3):
        _sgd_step(want, step)
    for s in sets:
        _assert_same(s, want)


def test_table_cache_keeps_to_its_byte_budget(monkeypatch):
    """Past `CACHE_BYTES` the least recently used tables go (the newest one
    stays whatever its size); the steps still run, on rebuilt tables."""
    monkeypatch.setattr(_multi, "_layouts", _multi._Cache())
    monkeypatch.setattr(_multi, "_last_layout", {})
    sets = _sgd_sets(4)
    _sgd_step(sets[0], 1)
    (entry,) = _multi._layouts.values()
    monkeypatch.setattr(_multi, "CACHE_BYTES", 2 * entry["nbytes"])
    for step in (1, 2):
        for s in sets[1:] if step == 1 else sets:
            _sgd_step(s, step)
            assert len(_multi._layouts) <= 2
            assert _multi._layouts.nbytes == sum(
                e["nbytes"] for e in _multi._layouts.values()) <= 2 * entry["nbytes"]
    want = _sgd_sets(1)[0]
    for step in (1, 2):
        _sgd_step(want, step)
    for s in sets:
        _assert_same(s, want)


def test_torch_cpu_tensors_and_tuples():
    torch = pytest.importorskip("torch")
    case = ADAM_CASE
    host = _tensors(case, DTYPE_SETS["mixed"])
    ref = {n: [a.copy() for a in v] for n, v in host.items()}
    tensors = {n: tuple(torch.from_numpy(a) for a in v) for n, v in host.items()}
    _call(case, tensors, step=1)
    _call(case, ref, step=1)
    _assert_same(host, ref)   # the same kernel on the same arrays: bitwise


TORCH_BAD = {
    "shape": (lambda t, lists: lists["exp_avg"].__setitem__(2, t.zeros(4)),
              ValueError, r"exp_avg\[2\] has shape \(4,\), expected \(5,\)"),
    "dtype": (lambda t, lists: lists["grad"].__setitem__(1, t.zeros(5, dtype=t.float64)),
              TypeError, r"grad\[1\] has dtype float64, expected float32"),
    "int32": (lambda t, lists: [lists[n].__setitem__(0, lists[n][0].to(t.int32))
                                for n in lists], TypeError, r"param\[0\] must be float32"),
    "strided": (lambda t, lists: lists["exp_avg_sq"].__setitem__(3, t.zeros(10)[::2]),
                ValueError, r"exp_avg_sq\[3\] must be C-contiguous"),
    "overlap": (lambda t, lists: lists["exp_avg"].__setitem__(0, lists["exp_avg_sq"][0]),
                ValueError, r"exp_avg_sq\[0\] shares memory with exp_avg\[0\]"),
}


@pytest.mark.parametrize("bad", list(TORCH_BAD), ids=list(TORCH_BAD))
def test_torch_cpu_lists_checked_in_bulk_name_the_culprit(bad):
    """torch CPU tensors are read in bulk; whatever that bulk read refuses is
    named by the per-tensor checks, with nothing written."""
    torch = pytest.importorskip("torch")
    edit, error, message = TORCH_BAD[bad]
    lists = {n: [torch.from_numpy(a) for a in v]
             for n, v in _adam_lists(CPU).items()}
    edit(torch, lists)
    before = {n: [t.clone() for t in v] for n, v in lists.items()}
    with pytest.raises(error, match=message):
        F.adam(lists["param"], lists["grad"], lists["exp_avg"], lists["exp_avg_sq"],
               **ADAM)
    for n, v in lists.items():
        for t, b in zip(v, before[n]):
            assert torch.equal(t, b)


UNUSABLE_TORCH = {   # tensors with no dense host memory, and what they are called
    "meta": (lambda t: t.new_empty(t.shape, device="meta"), "a torch tensor on meta"),
    "sparse": (lambda t: t.to_sparse(), r"a torch tensor with layout torch.sparse_coo"),
}


@pytest.mark.parametrize("kind", list(UNUSABLE_TORCH))
@pytest.mark.parametrize("column", ["param", "grad", "exp_avg"])
@pytest.mark.parametrize("listed", [True, False], ids=["list", "single"])
def test_torch_tensor_without_dense_host_memory_is_refused(kind, column, listed):
    """A tensor on a device that is neither the CPU nor CUDA (meta here; mps,
    xpu alike) has no host address, a sparse one no dense buffer: refused by
    name, never handed to a kernel (a meta param among CPU tensors used to
    reach one, at address 0)."""
    torch = pytest.importorskip("torch")
    make, called = UNUSABLE_TORCH[kind]
    lists = {n: [torch.from_numpy(a) for a in v] for n, v in _adam_lists(CPU).items()}
    lists[column][1] = make(lists[column][1])

    def dense(column):   # the tensors that can be compared afterwards
        return [t for t in column if t.is_cpu and t.layout == torch.strided]

    before = {n: [t.clone() for t in dense(v)] for n, v in lists.items()}
    args = [lists[n] if listed else lists[n][1]
            for n in ("param", "grad", "exp_avg", "exp_avg_sq")]
    label = rf"{column}\[1\]" if listed else column
    with pytest.raises(TypeError, match=label + r" must be a NumPy array or a CUDA array "
                       r"\(CuPy, Numba, torch\), got " + called):
        F.adam(*args, **ADAM)
    for n, v in lists.items():
        for t, b in zip(dense(v), before[n]):
            assert torch.equal(t, b)


@pytest.mark.parametrize("listed", [True, False], ids=["list", "single"])
def test_torch_tensors_written_have_their_version_bumped(listed):
    """As torch's in-place ops do: a graph that saved a param's old value
    must raise at backward rather than use the updated one. Grads are only
    read: their versions stay."""
    torch = pytest.importorskip("torch")
    lists = {n: [torch.from_numpy(a) for a in v] for n, v in _adam_lists(CPU).items()}
    names = ("param", "grad", "exp_avg", "exp_avg_sq")
    before = {n: [t._version for t in lists[n]] for n in names}
    args = [lists[n] if listed else lists[n][0] for n in names]
    F.adam(*args, **ADAM)
    touched = slice(None) if listed else slice(0, 1)
    for n in names:
        now = [t._version for t in lists[n]]
        bumped = [a > b for a, b in zip(now, before[n])][touched]
        assert all(bumped) if n != "grad" else not any(bumped), n

    w = torch.ones(3, requires_grad=True)
    p = torch.ones(3)
    loss = (w * p).sum()        # saves p for backward
    F.sgd(p, torch.ones(3), step=1, lr=0.1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_masked_arrays_are_refused():
    """A masked array's mask would be ignored by the kernels: refused, by name."""
    p, g = np.ma.masked_array(np.ones(4), mask=[0, 1, 0, 0]), np.ones(4)
    for args in ((p, g), ([np.ones(4), p], [g, g])):
        with pytest.raises(TypeError, match=r"got a masked array \(its mask would be ignored"):
            F.sgd(*args, step=1, lr=0.1)
    np.testing.assert_array_equal(p.data, np.ones(4))


def test_grads_may_share_memory():
    """Grads are only read: one gradient buffer may serve several tensors."""
    p = [np.ones(4, np.float32), np.ones(4, np.float32)]
    g = np.full(8, 0.5, np.float32)
    F.sgd(p, [g[:4], g[:4]], step=1, lr=0.1)
    np.testing.assert_array_equal(p[0], np.full(4, 0.95, np.float32))
    np.testing.assert_array_equal(p[1], p[0])


# ---- bad input ---------------------------------------------------------------

ADAM = dict(step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7)
N = 4


def _adam_lists(target, dtype=np.float32):
    rng = np.random.default_rng(1)
    lists = {n: [target.put(rng.standard_normal(5).astype(dtype))
                 for k in range(N)]
             for n in ("param", "grad", "exp_avg", "exp_avg_sq")}
    return lists


def _edit(name, k, make):
    def edit(lists, target):
        lists[name][k] = make(lists, target)
    return edit


def _shared_buffer(name_a, ka, name_b, kb):
    """Make name_b[kb] a view of the same memory as name_a[ka]."""
    def edit(lists, target):
        lists[name_b][kb] = lists[name_a][ka]
    return edit


def _partial_overlap(lists, target):
    """grad[0] and exp_avg[3]: two views of one buffer, 2 elements in common."""
    buffer = target.put(np.zeros(8, np.float32))
    lists["exp_avg"][3], lists["grad"][0] = buffer[0:5], buffer[3:8]


BAD = [
    ("length", ValueError, r"adam\(\): grad has 3 arrays, expected 4 like param",
     lambda lists, target: lists["grad"].pop()),
    ("not-a-list", TypeError, r"adam\(\): param is a list, so exp_avg must be a list",
     lambda lists, target: lists.__setitem__("exp_avg", lists["exp_avg"][0])),
    ("shape", ValueError,
     re.escape("adam(): exp_avg[3] has shape (4,), expected (5,) like param[3]"),
     _edit("exp_avg", 3, lambda lists, t: t.put(np.zeros(4, np.float32)))),
    ("dtype", TypeError,
     r"adam\(\): grad\[2\] has dtype float64, expected float32 like param\[2\]",
     _edit("grad", 2, lambda lists, t: t.put(np.zeros(5, np.float64)))),
    ("param-dtype", TypeError, r"adam\(\): param\[1\] must be float32 or float64",
     _edit("param", 1, lambda lists, t: t.put(np.zeros(3, np.int32)))),
    ("not-an-array", TypeError, r"adam\(\): grad\[1\] must be a NumPy array or a CUDA",
     _edit("grad", 1, lambda lists, t: [1.0, 2.0, 3.0])),
    ("strided", ValueError, r"adam\(\): exp_avg_sq\[2\] must be C-contiguous",
     _edit("exp_avg_sq", 2, lambda lists, t: t.put(np.zeros(10, np.float32))[::2])),
    ("same-param-twice", ValueError,
     r"adam\(\): param\[3\] shares memory with param\[0\]",
     _shared_buffer("param", 0, "param", 3)),
    ("state-is-other-grad", ValueError,
     r"adam\(\): exp_avg\[1\] shares memory with grad\[1\]",
     _shared_buffer("grad", 1, "exp_avg", 1)),
    ("state-is-other-tensors-state", ValueError,
     r"adam\(\): exp_avg_sq\[2\] shares memory with exp_avg\[2\]",
     _shared_buffer("exp_avg", 2, "exp_avg_sq", 2)),
    ("overlap-across-tensors", ValueError,
     r"adam\(\): exp_avg\[3\] shares memory with grad\[0\]",
     _partial_overlap),
    ("host-device-mix", TypeError, r"mixed between host memory and a GPU",
     None),
]


@pytest.mark.parametrize("bad", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_argument_and_writes_nothing(target, bad):
    _, error, message, edit = bad
    lists = _adam_lists(target)
    if edit is None:     # put one array in the other place
        other = CUDA if target is CPU else CPU
        lists["exp_avg_sq"][2] = other.put(np.zeros(5, np.float32))
    else:
        edit(lists, target)
    arrays = [a for v in lists.values() for a in (v if isinstance(v, list) else [v])]
    before = [_snapshot(a) for a in arrays]
    with pytest.raises(error, match=message):
        F.adam(lists["param"], lists["grad"], lists["exp_avg"], lists["exp_avg_sq"],
               **ADAM)
    for a, b in zip(arrays, before):
        if b is not None:
            np.testing.assert_array_equal(_snapshot(a), b)


def _snapshot(a):
    """A host copy of any array of the call (None for what is not one)."""
    return None if isinstance(a, list) else to_host(a)


def test_read_only_state_named(target):
    lists = _adam_lists(target)
    lists["exp_avg"][1] = read_only(lists["exp_avg"][1])
    with pytest.raises(ValueError, match=r"adam\(\): exp_avg\[1\] is read-only"):
        F.adam(lists["param"], lists["grad"], lists["exp_avg"], lists["exp_avg_sq"],
               **ADAM)


def test_missing_state_list():
    lists = _adam_lists(CPU)
    with pytest.raises(ValueError, match=r"adam\(\): max_exp_avg_sq is required "
                                         r"when amsgrad=True"):
        F.adam(lists["param"], lists["grad"], lists["exp_avg"], lists["exp_avg_sq"],
               amsgrad=True, **ADAM)


# ---- CPU code shape and caching ----------------------------------------------

def _pick(rule, clip=False, l2=False, **flags):
    """The variant of `rule` with these flags on (the others off)."""
    names = RULES[rule].flags
    return variant(rule, tuple(flags.get(n, False) for n in names), clip, l2)


VECTOR_VARIANTS = [_pick("sgd"), _pick("adam", True, True, amsgrad=True),
                   _pick("rmsprop_keras", centered=True, momentum=True)]


@pytest.mark.slow   # uncached compiles
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("which", VECTOR_VARIANTS, ids=lambda v: v.key.rsplit("-", 1)[0])
def test_cpu_loop_vectorizes(which, dtype):
    """Vector stores of the dtype in the optimized IR (an uncached twin:
    Numba cannot inspect code loaded from its cache)."""
    from numba.core import types

    from fastopt.kernels.cpu import _steps
    from fastopt.kernels.variants import element_step

    _steps.setdefault(which.key, element_step(which))
    kern = multi_cpu._loop(which.key, cache=False)
    dt = getattr(types, dtype)
    table = types.int64[:, ::1]
    kern.compile((table, table, types.int64[::1], dt, types.UniTuple(types.float64, len(PRE)),
                  types.UniTuple(types.float64, len(RULES[which.rule].hyper))))
    ir = "\n".join(kern.inspect_llvm().values())
    llvm_type = "float" if dtype == "float32" else "double"
    assert re.search(rf"store <\d+ x {llvm_type}>", ir), "element loop not vectorized"
    assert "llvm.prefetch" in ir, "the next chunk is not prefetched"


_CACHE_PROBE = """
import numpy as np
import fastopt.functional as F
from fastopt import _accel
from fastopt.kernels import multi_cpu
p = [np.ones(5, np.float32), np.ones(3, np.float32)]
g = [np.full(5, .5, np.float32), np.full(3, .5, np.float32)]
m = [np.zeros_like(a) for a in p]
v = [np.zeros_like(a) for a in p]
for step in (1, 2):    # a new layout, then the same again: both compiled entries
    F.adam(p, g, m, v, step=step, lr=1e-3, beta1=.9, beta2=.999, eps=1e-7)
(kern,) = multi_cpu._serial.values()
runs = {loops: run for (_, loops), run in _accel.MANY.items()}   # check only; run
for d in (kern, runs[(0, 0)].func, runs[(1, 0)].func):
    print(sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values()))
"""


@pytest.mark.slow   # fresh processes
def test_cpu_kernel_is_served_from_disk_cache():
    runs = [subprocess.run([sys.executable, "-c", _CACHE_PROBE], capture_output=True,
                           text=True, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    assert runs[1].stdout.split() == ["1", "0"] * 3   # kernel, walk, walk-and-run

