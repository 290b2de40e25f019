"""Bad input: a clear error naming the argument, and nothing written.

Valid base calls (`optimizer_db`'s ``calls``: an optimizer with all its state
in use, per convention) are broken one thing at a time: by the array
mutations below, and by each of `optimizer_db`'s error inputs (bad
hyperparameter values) that the call has. Every applicable pair is tested, on
the CPU and on the CUDA path (simulator), and every test checks that params
and state are bit-for-bit what they were.
"""
import re
from dataclasses import dataclass, field

import numpy as np
import pytest

import fastopt.functional as F
from conftest import CPU, CUDA, read_only, to_host
from optimizer_db import DB, functional_names, state_args


@dataclass
class Base:
    """A valid call: fn(param, grad, *positional states, **states, **kwargs)."""
    id: str
    fn: object
    positional: tuple          # names of states passed positionally
    keyword: tuple = ()        # names of states passed by keyword
    kwargs: dict = field(default_factory=dict)

    def states(self):
        return self.positional + self.keyword


def _base(info, convention, call):
    positional, keyword = state_args(info.spec, call, convention)
    return Base(f"{info.name}-{convention}", getattr(F, info.name), positional, keyword,
                {**call, "convention": convention})


BASES = [_base(info, convention, call) for info in DB for convention, call in info.calls.items()]
_BASE = {(base.fn.__name__, base.kwargs["convention"]): base for base in BASES}


@dataclass
class Mutation:
    id: str
    error: type
    message: str               # regex the error message must match
    arrays: object             # f(arrays, target, first_state) edits the arrays dict
    applies: object = None     # f(base) -> bool


def _replace(name, make):
    def edit(arrays, target, first_state):
        arrays[name] = make(arrays, target)
    return edit


def _replace_state(make):
    def edit(arrays, target, first_state):
        arrays[first_state] = make(arrays, target)
    return edit


def _host(shape=(5, 4), dtype=np.float64, value=0.0):
    return np.full(shape, value, dtype)


def _has(name):
    return lambda base: name in base.states()


def _readonly(arrays, target):
    return read_only(target.put(_host()))


def _strided(arrays, target):
    return target.put(_host((5, 8)))[:, ::2]


MUTATIONS = [
    Mutation("grad-shape", ValueError, r"grad has shape \(4, 5\)",
             arrays=_replace("grad", lambda a, t: t.put(_host((4, 5))))),
    Mutation("state-shape", ValueError, r"has shape \(20,\), expected \(5, 4\)",
             arrays=_replace_state(lambda a, t: t.put(_host((20,))))),
    Mutation("grad-dtype", TypeError, r"grad has dtype float32, expected float64",
             arrays=_replace("grad", lambda a, t: t.put(_host(dtype=np.float32)))),
    Mutation("param-int", TypeError, r"param must be float32 or float64, got int64",
             arrays=_replace("param", lambda a, t: t.put(_host(dtype=np.int64)))),
    # (A list is the functional API's list form: tests/test_multi_tensor.py.)
    Mutation("param-not-array", TypeError, r"param must be a NumPy array or a CUDA array",
             arrays=_replace("param", lambda a, t: 0.5)),
    Mutation("grad-not-contiguous", ValueError, r"grad must be C-contiguous",
             arrays=_replace("grad", _strided)),
    Mutation("param-read-only", ValueError, r"param is read-only",
             arrays=_replace("param", _readonly)),
    Mutation("state-read-only", ValueError, r"is read-only",
             arrays=_replace_state(_readonly)),
    Mutation("state-aliases-param", ValueError, r"shares memory with param",
             arrays=_replace_state(lambda a, t: a["param"])),
    Mutation("state-aliases-grad", ValueError, r"shares memory with grad",
             arrays=_replace_state(lambda a, t: a["grad"])),
    Mutation("grad-aliases-param", ValueError, r"grad shares memory with param",
             arrays=_replace("grad", lambda a, t: a["param"])),
    Mutation("mixed-host-device", TypeError, r"mixed between host memory",
             arrays=_replace("grad", lambda a, t: (CUDA if t is CPU else CPU).put(_host()))),
    Mutation("missing-momentum-buffer", ValueError,
             r"momentum_buffer is required", arrays=_replace("momentum_buffer", lambda a, t: None),
             applies=_has("momentum_buffer")),
    Mutation("missing-amsgrad-buffer", ValueError,
             r"max_exp_avg_sq is required when amsgrad=True",
             arrays=_replace("max_exp_avg_sq", lambda a, t: None), applies=_has("max_exp_avg_sq")),
    Mutation("missing-grad-avg", ValueError, r"grad_avg is required when centered=True",
             arrays=_replace("grad_avg", lambda a, t: None), applies=_has("grad_avg")),
]
def _cases():
    for base in BASES:
        for mutation in MUTATIONS:
            if mutation.applies is None or mutation.applies(base):
                yield pytest.param(base, mutation, id=f"{base.id}-{mutation.id}")


def _arrays(base, target):
    rng = np.random.default_rng(0)
    return {name: target.put(rng.standard_normal((5, 4)))
            for name in ("param", "grad") + base.states()}


def _call(base, arrays, **overrides):
    positional = [arrays[n] for n in base.positional]
    keyword = {n: arrays[n] for n in base.keyword}
    base.fn(arrays["param"], arrays["grad"], *positional, **keyword,
            **{**base.kwargs, **overrides})


def _snapshot(value):
    """A host copy of an array argument; None for anything else (nothing to compare)."""
    value = getattr(value, "array", value)   # conftest's read-only CAI wrapper
    return to_host(value) if hasattr(value, "shape") else None


def _assert_refused(base, arrays, error, message, **overrides):
    """The call raises `error` matching `message`, after ``fn(): ``, and
    leaves every array as it was."""
    before = {name: _snapshot(a) for name, a in arrays.items()}
    with pytest.raises(error, match=message) as info:
        _call(base, arrays, **overrides)
    assert re.match(rf"{base.fn.__name__}\(\): ", str(info.value)), str(info.value)
    for name, a in arrays.items():
        if before[name] is not None:
            np.testing.assert_array_equal(_snapshot(a), before[name],
                                          err_msg=f"{name} was modified")


@pytest.mark.parametrize("base, mutation", list(_cases()))
def test_bad_input_raises_and_writes_nothing(base, mutation, target):
    arrays = _arrays(base, target)
    mutation.arrays(arrays, target, base.states()[0])
    _assert_refused(base, arrays, mutation.error, mutation.message)


def _error_inputs():
    """Each optimizer's error inputs that its functional function has, under
    each convention that refuses them."""
    for info in DB:
        names = functional_names(info.spec)
        for error in info.all_errors():
            if set(error.kwargs) <= names:
                for convention in [c for c in error.conventions if c in info.calls]:
                    yield pytest.param(_BASE[info.name, convention], error,
                                       id=f"{info.name}-{convention}-{error.id}")


@pytest.mark.parametrize("base, error", list(_error_inputs()))
def test_error_input_raises_and_writes_nothing(base, error, target):
    _assert_refused(base, _arrays(base, target), error.error,
                    rf"^{base.fn.__name__}\(\): {error.arg} {error.match}", **error.kwargs)


@pytest.mark.parametrize("base", BASES, ids=lambda b: b.id)
def test_base_calls_are_valid(base, target):
    """Each mutation breaks exactly one thing of a call that works."""
    arrays = _arrays(base, target)
    # State starts at zeros, as in real use (a random square average could be
    # negative, and the simulator's math.sqrt raises where a GPU gives NaN).
    for name in base.states():
        arrays[name] = target.put(np.zeros((5, 4)))
    before = _snapshot(arrays["param"])
    _call(base, arrays)
    assert not np.array_equal(_snapshot(arrays["param"]), before)


def test_arrays_on_different_gpus_are_rejected(monkeypatch):
    """The simulator has one GPU: pretend grad lives on another one."""
    from fastopt import _device
    describe = _device.describe

    def on_gpu_one_for_grad(name, x):
        info = describe(name, x)
        if name == "grad":
            info.device = 1
        return info

    monkeypatch.setattr(_device, "describe", on_gpu_one_for_grad)
    p, g = CUDA.put(np.ones(4)), CUDA.put(np.ones(4))
    with pytest.raises(ValueError, match=r"sgd\(\): grad is on GPU 1 but param is on GPU 0"):
        F.sgd(p, g, step=1, lr=0.1)
    np.testing.assert_array_equal(CUDA.get(p), np.ones(4))


@pytest.mark.parametrize("listed", [False, True], ids=["single", "list"])
def test_misaligned_gpu_array_is_rejected(monkeypatch, listed):
    """A GPU array off its element boundary (a raw CAI pointer can be) is
    refused before launch: the load would fault and end the CUDA context.
    The pointer is shifted only in what the checks see."""
    from fastopt import _device
    describe = _device.describe

    def grad_off_by_one_byte(name, x):
        info = describe(name, x)
        if name.startswith("grad"):
            info.ptr += 1
        return info

    monkeypatch.setattr(_device, "describe", grad_off_by_one_byte)
    p, g = CUDA.put(np.ones(4)), CUDA.put(np.ones(4))
    label = r"grad\[0\]" if listed else "grad"
    with pytest.raises(ValueError, match=rf"sgd\(\): {label} starts at 0x[0-9a-f]+, "
                       r"not on a 8-byte boundary"):
        F.sgd([p] if listed else p, [g] if listed else g, step=1, lr=0.1)
    np.testing.assert_array_equal(CUDA.get(p), np.ones(4))


def test_partial_overlap_is_rejected():
    """Two views of one buffer, offset by one element, overlap."""
    buf = np.zeros(9)
    p, m = buf[:8], buf[1:]
    g = np.ones(8)
    with pytest.raises(ValueError, match=r"state_sum shares memory with param"):
        F.adagrad(p, g, m, step=1, lr=0.1, eps=1e-7)
    np.testing.assert_array_equal(buf, np.zeros(9))


def test_adjacent_buffers_are_accepted():
    """Views that touch but do not overlap are separate buffers."""
    buf = np.zeros(8)
    p, m = buf[:4], buf[4:]
    F.adagrad(p, np.ones(4), m, step=1, lr=0.1, eps=1e-7)
    np.testing.assert_array_equal(m, np.ones(4))


def test_read_only_grad_is_accepted(target):
    """grad is only read: a read-only gradient (e.g. a broadcast source) is fine."""
    g = np.full(4, 0.5)
    g.flags.writeable = False
    p = target.put(np.ones(4))
    F.sgd(p, g if target is CPU else target.put(g), step=1, lr=0.1)
    np.testing.assert_allclose(target.get(p), np.full(4, 0.95))


def test_remembered_checks_see_every_new_value():
    """A call's checked hyperparameters are remembered by identity: an equal
    value of a refused type is still refused, and a new value takes effect."""
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(8), rng.standard_normal(8)
    m, v = np.zeros(8), np.zeros(8)
    kwargs = dict(step=1, lr=1.0, beta1=0.0, beta2=0.5, eps=1.0, amsgrad=False)
    F.adam(p, g, m, v, **kwargs)
    F.adam(p, g, m, v, **kwargs)                      # remembered
    before = p.copy()
    with pytest.raises(TypeError, match=r"adam\(\): lr must be a real number, got bool"):
        F.adam(p, g, m, v, **{**kwargs, "lr": True})   # True == 1.0
    with pytest.raises(TypeError, match=r"adam\(\): amsgrad must be True or False"):
        F.adam(p, g, m, v, **{**kwargs, "amsgrad": 0})  # 0 == False
    F.adam(p, g, m, v, **{**kwargs, "lr": 0.0})      # moves the moments only
    np.testing.assert_array_equal(p, before)
