"""Bad input: a clear error naming the argument, and nothing written.

One table of valid base calls (an optimizer with all its state in use) and one
of mutations, each breaking one thing. Every applicable pair is tested, on the
CPU and on the CUDA path (simulator), and every test checks that params and
state are bit-for-bit what they were.
"""
import re
from dataclasses import dataclass, field

import numpy as np
import pytest

import fastopt.functional as F
from conftest import CPU, CUDA, read_only, to_host


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


BASES = [
    Base("sgd-keras", F.sgd, ("momentum_buffer",),
         kwargs=dict(step=1, lr=0.1, momentum=0.9, nesterov=True)),
    Base("sgd-torch", F.sgd, ("momentum_buffer",),
         kwargs=dict(step=2, lr=0.1, momentum=0.9, dampening=0.1,
                     weight_decay=0.01, convention="torch")),
    Base("adagrad-torch", F.adagrad, ("state_sum",),
         kwargs=dict(step=1, lr=0.1, eps=1e-10, lr_decay=0.01, convention="torch")),
    Base("rmsprop-keras", F.rmsprop, ("square_avg",), ("momentum_buffer", "grad_avg"),
         kwargs=dict(step=1, lr=1e-3, alpha=0.9, eps=1e-7, momentum=0.5, centered=True)),
    Base("adam-torch", F.adam, ("exp_avg", "exp_avg_sq"), ("max_exp_avg_sq",),
         kwargs=dict(step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=True,
                     convention="torch")),
    Base("adamw-keras", F.adamw, ("exp_avg", "exp_avg_sq"),
         kwargs=dict(step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7,
                     weight_decay=0.004, clip_value=1.0)),
]


@dataclass
class Mutation:
    id: str
    error: type
    message: str               # regex the error message must match
    kwargs: dict = field(default_factory=dict)          # hyperparameters to override
    arrays: object = None      # f(arrays, target, first_state) edits the arrays dict
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


def _has_kw(name):
    return lambda base: name in base.kwargs


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
    Mutation("step-zero", ValueError, r"step must be >= 1", kwargs=dict(step=0)),
    Mutation("step-float", TypeError, r"step must be an int", kwargs=dict(step=1.0)),
    Mutation("step-bool", TypeError, r"step must be an int", kwargs=dict(step=True)),
    Mutation("lr-negative", ValueError, r"lr must be in \[0.0, inf\]", kwargs=dict(lr=-1e-3)),
    Mutation("lr-nan", ValueError, r"lr must be finite", kwargs=dict(lr=float("nan"))),
    Mutation("lr-inf", ValueError, r"lr must be finite", kwargs=dict(lr=float("inf"))),
    Mutation("lr-string", TypeError, r"lr must be a real number", kwargs=dict(lr="0.1")),
    Mutation("weight-decay-negative", ValueError, r"weight_decay must be in",
             kwargs=dict(weight_decay=-0.1)),
    Mutation("clip-negative", ValueError, r"clip_value must be in", kwargs=dict(clip_value=-1.0)),
    Mutation("grad-scale-nan", ValueError, r"grad_scale must be finite",
             kwargs=dict(grad_scale=float("nan"))),
    Mutation("maximize-not-bool", TypeError, r"maximize must be True or False",
             kwargs=dict(maximize=1)),
    Mutation("convention-unknown", ValueError, r"convention must be 'keras' or 'torch'",
             kwargs=dict(convention="jax")),
    Mutation("eps-zero", ValueError, r"eps must be in \(0.0, inf\]", kwargs=dict(eps=0.0),
             applies=_has_kw("eps")),
    Mutation("beta1-one", ValueError, r"beta1 must be in \[0.0, 1.0\)", kwargs=dict(beta1=1.0),
             applies=_has_kw("beta1")),
    Mutation("beta2-negative", ValueError, r"beta2 must be in", kwargs=dict(beta2=-0.5),
             applies=_has_kw("beta2")),
    Mutation("alpha-above-one", ValueError, r"alpha must be in \[0.0, 1.0\]",
             kwargs=dict(alpha=1.5), applies=_has_kw("alpha")),
    Mutation("momentum-negative", ValueError, r"momentum must be in", kwargs=dict(momentum=-0.1),
             applies=_has_kw("momentum")),
    Mutation("dampening-in-keras", ValueError, r"dampening is a torch option",
             kwargs=dict(dampening=0.5, convention="keras", nesterov=False),
             applies=lambda b: b.fn is F.sgd),
    Mutation("nesterov-torch-without-momentum", ValueError, r"nesterov requires momentum > 0",
             kwargs=dict(nesterov=True, momentum=0.0, dampening=0.0, convention="torch"),
             applies=lambda b: b.fn is F.sgd),
    Mutation("keras-momentum-above-one", ValueError, r"momentum must be in \[0.0, 1.0\]",
             kwargs=dict(momentum=1.5, convention="keras", dampening=0.0),
             applies=lambda b: b.fn is F.sgd),
    Mutation("lr-decay-in-keras", ValueError, r"lr_decay is a torch option",
             kwargs=dict(convention="keras"), applies=_has_kw("lr_decay")),
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


@pytest.mark.parametrize("base, mutation", list(_cases()))
def test_bad_input_raises_and_writes_nothing(base, mutation, target):
    arrays = _arrays(base, target)
    if mutation.arrays is not None:
        mutation.arrays(arrays, target, base.states()[0])
    before = {name: _snapshot(a) for name, a in arrays.items()}
    with pytest.raises(mutation.error, match=mutation.message) as info:
        _call(base, arrays, **mutation.kwargs)
    assert re.match(rf"{base.fn.__name__}\(\): ", str(info.value)), str(info.value)
    for name, a in arrays.items():
        if before[name] is not None:
            np.testing.assert_array_equal(_snapshot(a), before[name],
                                          err_msg=f"{name} was modified")


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
