"""The machinery every fastopt.torch optimizer shares, written once.

A subclass is torch's shape: a constructor that builds torch's `defaults`
(same keys, same defaults), `_hyper` (torch's checks of one param group,
returning the keyword arguments of its `fastopt.functional` function),
`_slots` (the state tensors it keeps, by torch's key names, with their
initial fill) and `_update` (one `fastopt.functional` call, on lists or on
a flat layout's buffers, ``convention="torch"``). torch.optim.Optimizer
itself keeps param_groups, state, ``state_dict``/``load_state_dict``,
``zero_grad`` and the step hooks.
What lives here:

* ``step(closure=None)``: all or nothing. It checks every group's
  hyperparameters and every param that has a gradient; then per group
  creates missing state, buckets the params by (device, step number) and
  plans one fused kernel call per bucket (per dtype inside it), every call
  checked before the first runs (`fastopt._batch`); a refused step leaves
  params, state and step counters as they were; a bucket the bulk
  check passed is marked checked (`fastopt._front.call`), so that its
  tensors' properties are read once a step, not twice;
* the tensors go to the kernels as they are: CPU tensors as zero-copy NumPy
  views, CUDA tensors through ``__cuda_array_interface__`` on torch's current
  stream; complex tensors as ``torch.view_as_real`` views (what torch itself
  does, so each real and imaginary part is updated as its own element);
  DTensors (FSDP2's params) as their local tensors, after a check that param,
  grad and state are placed alike (`_dtensor`);
* with ``flat=True``, a group's params, grads and state laid out as views of
  one buffer per (device, dtype) after its first full step, and a step that
  finds the layout intact is one kernel call per buffer (`_flat`);
* state in torch's layout: ``state["step"]`` a float scalar tensor on the CPU
  (torch's non-capturable, non-fused layout), the per-element state as
  tensors like the param, and a spec's host scalars (`fastopt.spec.Scalar`:
  NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``) as 0-d CPU tensors of
  torch's scalar dtype, advanced as torch advances them; params are bucketed
  by their values too, one value per kernel call. Checkpoints move both ways between torch.optim and
  fastopt.torch; ``load_state_dict`` refuses, before changing anything, one
  whose groups lack this optimizer's hyperparameters or hold bad values, or
  whose state has keys this optimizer does not keep or tensors shaped unlike
  their param (another optimizer's checkpoint);
* threads: a step and a state load run one at a time per optimizer (a lock
  per instance); a param's ``.grad`` is shared by every thread, so which
  gradients a step sees is the caller's to arrange.
"""
import functools
import itertools
import math
import numbers
import operator
import threading
from typing import NamedTuple

import numpy as np
import torch

from .. import _batch, _dlpack, _front, _hostscalars, _threads
from ..kernels.dlpack import KDL_CPU, KDL_CUDA, read_columns
from ..functional._make import _PLAIN
from . import _dtensor, _flat, _steps

try:   # torch's own rule for the dtype of state["step"]
    from torch.optim.optimizer import _get_scalar_dtype
except ImportError:   # pragma: no cover - older torch
    def _get_scalar_dtype():
        return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32

_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128,
           torch.float16, torch.bfloat16)   # 16-bit: float32 math, as torch's fused
_HALF = frozenset({torch.float16, torch.bfloat16})
MASTER = "master_param"     # the state key of a 16-bit param's float32 master
_STATE_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16)
_DEVICES = ("cpu", "cuda")
# torch's implementation switches: accepted at torch's values so that torch's
# checkpoints load and ``torch.optim.X(...)`` call sites work unchanged.
_REJECTED = {"capturable": "CUDA-graph capture of the step",
             "differentiable": "differentiating through the step"}


_TENSOR_NAMES = {"learning rate": "lr"}


def check(value, label, low=0.0, high=None, *, low_open=False, high_open=False):
    """A hyperparameter as a float, with torch's message when out of range.

    A one-element tensor is read with ``.item()`` (torch accepts tensor lr).

    Example::

        >>> check(1e-3, "learning rate")
        0.001
        >>> check(-1.0, "learning rate")
        ValueError: Invalid learning rate: -1.0
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:   # torch's words: "Tensor lr must be 1-element"
            raise ValueError(f"Tensor {_TENSOR_NAMES.get(label, label)} must be 1-element")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{label} must be a real number, got {type(value).__name__}")
    value = float(value)
    bad = (not math.isfinite(value)
           or (low is not None and (value <= low if low_open else value < low))
           or (high is not None and (value >= high if high_open else value > high)))
    if bad:
        raise ValueError(f"Invalid {label}: {value}")
    return value


def flag(value, name):
    """A boolean option, checked."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _real(t):
    return torch.view_as_real(t) if t.is_complex() else t


_COMPLEX = frozenset({torch.complex64, torch.complex128})
# The tensors `Optimizer._read_kinds` reads through DLPack: torch's own type
# and Parameter (a plain tensor; torch's exchange API reads it as one).
_PLAIN_TENSORS = frozenset({torch.Tensor, torch.nn.Parameter})
# From this many params a group's bulk check reads through DLPack: the read
# costs ~20 µs of NumPy and dispatch whatever the count, the Python reads
# ~1.8 µs a param with two state slots (1 param: 22 against 9.5 µs; 32: 46
# against 69; 150: 130 against 267).
_READ_FROM = 16
# Bulk reads: map() with a C getter is ~1.5x a comprehension's attribute read.
_GRAD, _DTYPE, _DEVICE, _SHAPE, _LAYOUT, _VERSION = map(
    operator.attrgetter, ("grad", "dtype", "device", "shape", "layout", "_version"))


_CAPTURABLE_DEVICES = ["cpu", "cuda"]


def _capture_steps(params, states):
    """The check torch makes of a capturable step's counts (its words: an
    AssertionError), before anything is written; fastopt takes CPU params
    too, with the same semantics (`fastopt._capture`)."""
    for p, s in zip(params, states):
        t = s["step"]
        if not (torch.is_tensor(t) and p.device.type == t.device.type
                and p.device.type in _CAPTURABLE_DEVICES):
            raise AssertionError("If capturable=True, params and state_steps must be on "
                                 f"supported devices: {_CAPTURABLE_DEVICES}.")
    return None


def _dense(tensors):
    """Whether all of `tensors` are dense, contiguous torch tensors."""
    return (all([isinstance(t, torch.Tensor) for t in tensors])
            and list(map(_LAYOUT, tensors)).count(torch.strided) == len(tensors)
            and all(map(torch.Tensor.is_contiguous, tensors)))


def _like(tensors, dtypes, devices, shapes):
    """Whether `tensors` are dense and contiguous, with these dtypes, devices
    and shapes (one of each per tensor)."""
    return (_dense(tensors) and list(map(_DTYPE, tensors)) == dtypes
            and list(map(_DEVICE, tensors)) == devices
            and list(map(_SHAPE, tensors)) == shapes)



def _plain(value):
    """Whether `value` is of a plain immutable type, or a tuple of them."""
    if type(value) is tuple:
        return all([type(v) in _PLAIN for v in value])
    return type(value) in _PLAIN

class _Found(NamedTuple):
    """A param group's params that have a gradient, as a step's checks found them."""

    params: list
    grads: list
    states: list    # each param's state dict; None before its first step
    keys: list      # the state slots the update uses
    kinds: tuple    # (dtypes, devices) per param if the bulk check passed, else None
    dtensor: bool = False   # some are DTensors: the kernels get their local tensors


class Optimizer(torch.optim.Optimizer):
    """Base class of fastopt.torch's optimizers (see the module docstring)."""

    _counts_steps = True   # keeps state["step"] (all but SGD)
    _capturable = False    # takes capturable=True (`fastopt._capture`)
    _host = {}             # torch key -> initial value (a number or a hyper's
                           # name) of the per-param 0-d state tensors kept on the
                           # host (NAdam's mu_product; `fastopt.spec.Scalar`)
    _hyper_names = {}      # fastopt's hyperparameter names -> torch's, for messages
    _fallbacks = {}        # group keys torch's __setstate__ fills in for old checkpoints

    def __init__(self, params, defaults, flat=False):
        for key, what in _REJECTED.items():
            if defaults.get(key) and not (key == "capturable" and self._capturable):
                raise ValueError(f"{key}=True ({what}) is not supported by "
                                 f"fastopt.torch.{type(self).__name__}")
        self._hyper(defaults)
        self._flat_mode = flag(flat, "flat")
        self._flat = {}     # param group index -> its _flat.FlatGroup
        self._lock = threading.RLock()   # `_threads.serialised`: one step at a time
        self._hyper_seen = {}   # group index -> (keys, values, checked hyper)
        super().__init__(params, defaults)

    # torch.amp.GradScaler hands `grad_scale` and `found_inf` to the step (see `step`).
    _step_supports_amp_scaling = True

    # -- what subclasses define -------------------------------------------
    def _hyper(self, group):
        """torch's checks of `group`; the functional's keyword arguments."""
        raise NotImplementedError

    def _slots(self, hyper, p):
        """State tensors `p` needs under `hyper`: {torch key: initial fill}."""
        raise NotImplementedError

    def _update(self, hyper, params, grads, state, step):
        """One `fastopt.functional` call over lists of real tensors, or over
        single arrays (a flat layout's buffers, `_step_flat`)."""
        raise NotImplementedError

    def _state_keys(self):
        """Every per-param state key this optimizer may keep, under any options."""
        raise NotImplementedError

    # -- torch.optim.Optimizer hooks --------------------------------------
    def add_param_group(self, param_group):
        if isinstance(param_group, dict):   # check before torch stores it
            self._hyper({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __getstate__(self):
        return {**super().__getstate__(), "_flat_mode": self._flat_mode}

    def __setstate__(self, state):
        super().__setstate__(state)
        # New state or groups (load_state_dict, unpickling): rebuilt at the next step.
        self._flat = {}
        self.__dict__.setdefault("_lock", threading.RLock())
        self.__dict__.setdefault("_flat_mode", False)
        for group in self.param_groups:
            for key, value in self._fallbacks.items():
                group.setdefault(key, value)
            for p in group["params"]:
                s = self.state.get(p)
                for key in ("step", *self._host):
                    if s and key in s and not torch.is_tensor(s[key]):
                        s[key] = torch.tensor(float(s[key]), dtype=_get_scalar_dtype())

    @_threads.serialised
    def load_state_dict(self, state_dict):
        """torch's ``load_state_dict``, after checking that `state_dict` is a
        checkpoint of this optimizer (see the module docstring): a
        ValueError names the group or state key, and nothing is changed."""
        self._check_checkpoint(state_dict)
        super().load_state_dict(state_dict)
        self._restore_state_dtypes(state_dict)

    def _restore_state_dtypes(self, state_dict):
        """torch's ``load_state_dict`` casts every floating state tensor to
        its param's dtype: the float32 masters of 16-bit params, and state
        kept in another dtype than the param's (`state_dtype`), are taken
        again from the checkpoint in their own dtype."""
        saved = state_dict["param_groups"]
        params = dict(zip(itertools.chain.from_iterable(g["params"] for g in saved),
                          itertools.chain.from_iterable(g["params"] for g in self.param_groups)))
        for k, entry in state_dict["state"].items():
            p = params.get(k)
            if p is None or p.dtype not in _HALF or not isinstance(entry, dict):
                continue
            mine = self.state.get(p)
            for key, value in entry.items():
                if (key == "step" or key in self._host or mine is None
                        or not isinstance(value, torch.Tensor)):
                    continue
                want = torch.float32 if key == MASTER else self._state_dtype_of(p.dtype)
                if mine[key].dtype != want:
                    mine[key] = value.to(dtype=want, device=p.device, copy=True)

    def _check_checkpoint(self, state_dict):
        name = f"fastopt.torch.{type(self).__name__}.load_state_dict()"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}: state_dict must be a dict, got "
                            f"{type(state_dict).__name__}")
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"{name}: state_dict lacks {key!r}")
        saved = state_dict["param_groups"]
        if (not isinstance(saved, (list, tuple)) or len(saved) != len(self.param_groups)
                or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                           and len(g["params"]) == len(own["params"])
                           for g, own in zip(saved, self.param_groups))):
            return   # torch's own checks name what is wrong
        # A numeric hyperparameter has been in every checkpoint torch ever
        # wrote; only switches (bools, foreach...) are filled in for old ones.
        required = [k for k, v in self.defaults.items() if isinstance(v, (numbers.Real, tuple))
                    and not isinstance(v, bool)]
        for i, group in enumerate(saved):
            lacking = [k for k in required if k not in group]
            if lacking:
                raise ValueError(
                    f"{name}: param_groups[{i}] lacks {lacking}: not a checkpoint of "
                    f"{type(self).__name__} (its groups have "
                    f"{sorted(k for k in group if k != 'params')})")
            self._checked_hyper(i, {**self._fallbacks, **group})
        state = state_dict["state"]
        if not isinstance(state, dict):
            raise ValueError(f"{name}: state_dict['state'] must be a dict, got "
                             f"{type(state).__name__}")
        keys = self._state_keys() | {MASTER}
        params = dict(zip(itertools.chain.from_iterable(g["params"] for g in saved),
                          itertools.chain.from_iterable(g["params"] for g in self.param_groups)))
        for k, entry in state.items():
            p = params.get(k)
            if p is None or not isinstance(entry, dict):
                continue    # torch ignores state of no param of the groups
            for key, value in entry.items():
                if key not in keys:
                    raise ValueError(
                        f"{name}: state[{k!r}] has key {key!r}, which "
                        f"{type(self).__name__} does not keep ({sorted(keys)}): a "
                        "checkpoint of another optimizer?")
                if (key != "step" and key not in self._host
                        and isinstance(value, torch.Tensor) and value.shape != p.shape):
                    raise ValueError(
                        f"{name}: state[{k!r}][{key!r}] has shape {tuple(value.shape)}, "
                        f"its param {tuple(p.shape)}")

    # -- the step ---------------------------------------------------------
    @_threads.serialised
    @torch.no_grad()
    def step(self, closure=None):
        """One update of every param that has a gradient; returns `closure()`'s loss.

        Example::

            >>> opt = fastopt.torch.Adam(model.parameters(), lr=1e-3)
            >>> loss_fn(model(x), y).backward()
            >>> opt.step()
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # torch.amp.GradScaler's contract with optimizers that set
        # _step_supports_amp_scaling: it sets `grad_scale` and `found_inf`
        # (0-d tensors) for the step. A step with found_inf writes nothing
        # (torch's fused kernels skip it, and its step count is taken back);
        # otherwise the gradient is unscaled in the kernel. Capturable
        # groups hand both tensors to the kernels, which read them on the
        # device (`fastopt._capture`: no host synchronisation; the kernel
        # divides by grad_scale as torch's fused kernels do and writes the
        # gradient back unscaled). Otherwise the step count is on the host
        # anyway, and so are they read: the shared transform's factor
        # 1/grad_scale (exact for GradScaler's powers of 2).
        found_inf = getattr(self, "found_inf", None)
        amp_scale = getattr(self, "grad_scale", None)
        amp = None
        if found_inf is not None or amp_scale is not None:
            if self._capturable and all([g.get("capturable") for g in self.param_groups]):
                amp = {"found_inf": found_inf, "loss_scale": amp_scale}
                found_inf = amp_scale = None
        if found_inf is not None and float(found_inf) != 0.0:
            self.__dict__.pop("_deferred_scale", None)
            return loss
        unscale = None if amp_scale is None else 1.0 / float(amp_scale)
        scale = self._pending_scale()   # a deferred clip (`fastopt.clip_grad_norm_`)
        if unscale is not None:
            scale = unscale if scale is None else scale * unscale
        if self.stochastic_rounding and not self._counts_steps:
            self._rounded_steps = self.__dict__.get("_rounded_steps", 0) + 1
        work = []
        for i, group in enumerate(self.param_groups):
            hyper = self._checked_hyper(i, group)
            if scale is not None:   # a deferred clip, GradScaler's unscale
                hyper = {**hyper, "grad_scale": hyper.get("grad_scale", 1.0) * scale}
            if amp is not None:     # GradScaler's tensors, read on the device
                hyper = {**hyper, **amp}
            layout, verdict = self._flat.get(i), None
            if layout is not None:
                verdict = layout.ready(group, list(self._slots(hyper, layout.members[0])))
                if verdict is _flat.READY:
                    work.append((i, group, hyper, layout, verdict))
                    continue
            found = self._params_with_grads(i, group, hyper)
            if found.params:
                work.append((i, group, hyper, found, verdict))
        # All or nothing: every group's calls are checked and planned before
        # the first runs, and state created for a refused step is taken back.
        self._created = []
        try:
            with _batch.all_or_nothing():
                for i, group, hyper, what, verdict in work:
                    if verdict is _flat.READY:
                        self._step_flat(hyper, what)
                        continue
                    self._step_group(i, group, hyper, what)
                    if self._flat_mode and not (self.master_weights
                                                or self.stochastic_rounding
                                                or group.get("capturable")):
                        _batch.run(functools.partial(self._relayout, i, group, hyper,
                                                     what.params, verdict))
        except BaseException:
            self._forget_created()
            raise
        finally:
            self._created = None
        self.__dict__.pop("_deferred_scale", None)
        if amp_scale is not None:
            # As torch's fused optimizers do: the step leaves each gradient
            # unscaled (grad / grad_scale, written back after the update read
            # it); a skipped step (found_inf) leaves them as they were.
            grads = [p.grad for group in self.param_groups for p in group["params"]
                     if p.grad is not None and not p.grad.is_sparse]
            if grads:
                torch._foreach_div_(grads, amp_scale)
        return loss

    def _defer_grad_scale(self, grads, coef, params=None):
        """`fastopt.clip_grad_norm_`'s hook: take the clip factor `coef` into
        the next step (each gradient multiplied by it as the update reads
        it) if `grads` are exactly the gradients that step will read; True
        if taken. The step refuses to run if they changed meanwhile.
        `params`: the list `grads` were just read from (the gradients of
        its params that have one, in order); when it lists this optimizer's
        params in their order, `grads` are theirs, with no second read."""
        held = [p for group in self.param_groups for p in group["params"]]
        if (params is not None and len(params) == len(held)
                and all(map(operator.is_, held, params))):
            mine = grads
        else:
            mine = [p.grad for p in held if p.grad is not None]
            if len(mine) != len(grads) or not (
                    all(map(operator.is_, mine, grads))
                    or set(map(id, mine)) == set(map(id, grads))):
                return False
        self._deferred_scale = (coef, mine, list(map(_VERSION, mine)))
        return True

    def _pending_scale(self):
        """The deferred clip factor of this step (None: none), after checking
        that the gradients are the ones it was computed over, unchanged."""
        deferred = self.__dict__.get("_deferred_scale")
        if deferred is None:
            return None
        coef, grads, versions = deferred
        now = [p.grad for group in self.param_groups for p in group["params"]
               if p.grad is not None]
        if (len(now) != len(grads) or not all(map(operator.is_, now, grads))
                or list(map(_VERSION, now)) != versions):
            del self._deferred_scale
            raise RuntimeError(
                f"fastopt.torch.{type(self).__name__}.step(): the gradients changed after "
                "fastopt.clip_grad_norm_(..., optimizer=...) deferred its scale into this "
                "step; clip again after the last backward()")
        return coef

    # The dtype of the state of 16-bit params: None, the param's (torch's
    # behaviour), or float32, bfloat16 or float16, per optimizer instance:
    # ``opt.state_dtype = torch.float32`` before its first step. float32 and
    # float64 params keep state of their own dtype.
    state_dtype = None

    # fp32 master weights for 16-bit params, per optimizer instance:
    # ``opt.master_weights = True`` before its first step. Each float16 or
    # bfloat16 param then gets a float32 master (``state["master_param"]``,
    # in ``state_dict``), and float32 state unless `state_dtype` says
    # otherwise; a step updates the master and writes the param, the master
    # rounded to nearest, in the same pass (`fastopt.functional`'s ``model=``).
    master_weights = False

    # Stochastic rounding of bfloat16 params (and of their state, when
    # bfloat16, and of the params written from masters), per optimizer
    # instance: ``opt.stochastic_rounding = True`` (and ``opt.seed``, an int):
    # the random bits are a hash of the seed, the step count, the param's
    # number in its kernel call and the element's index (`fastopt.functional`'s
    # ``stochastic_rounding=``). Optimizers that keep no step count (SGD) mix
    # the number of steps this instance has taken into the seed instead.
    stochastic_rounding = False
    seed = 0
    _rounded_steps = 0     # steps taken with it, for optimizers that count none

    def _state_dtype_of(self, dtype):
        choice = self.state_dtype
        if dtype not in _HALF:
            return dtype
        if choice is None:
            return torch.float32 if self.master_weights else dtype
        if choice not in _STATE_DTYPES:
            raise TypeError(f"fastopt.torch.{type(self).__name__}: state_dtype must be "
                            f"None, torch.float32, torch.bfloat16 or torch.float16, got "
                            f"{choice!r}")
        return choice

    def _forget_created(self):
        """Remove the state entries this step created (it was refused)."""
        for p, state, key in reversed(self._created):
            state.pop(key, None)
            if not state and self.state.get(p) is state:
                del self.state[p]

    def zero_grad(self, set_to_none=True):
        """torch's ``zero_grad``; with ``flat=True`` the grads of a flattened
        group are zeroed in place and stay views of its buffer, whatever
        `set_to_none` says (torch's ``set_to_none=False`` behaviour). A clip
        factor deferred into the next step is dropped."""
        self.__dict__.pop("_deferred_scale", None)
        if not self._flat:
            return super().zero_grad(set_to_none)
        for i, group in enumerate(self.param_groups):
            layout = self._flat.get(i)
            if layout is not None and layout.group is group:
                layout.zero_grad(set_to_none)
            else:
                for p in group["params"]:
                    _flat.zero_like_torch(p, set_to_none)

    def _step_flat(self, hyper, layout):
        """A READY flattened group: one kernel call per buffer (per run of
        equal step counts in it)."""
        for b in layout.buckets:
            for (first, _, arrays), host in zip(b.runs, b.host):
                if b.steps is not None:
                    step = int(b.steps[first]) + 1
                else:   # as _prepare: 2 once state exists
                    step = 2 if len(arrays) > 2 else 1
                if host:   # the run's params' host scalars (`fastopt.spec.Scalar`)
                    arrays = {**arrays, **host}
                self._update(hyper, arrays["param"], arrays["grad"], arrays, step)
            if b.steps is not None:
                _batch.run(functools.partial(b.steps.add_, 1))
        _batch.run(functools.partial(torch.autograd.graph.increment_version, layout.members))

    def _relayout(self, i, group, hyper, params, verdict):
        """After a per-tensor step of group `i` (params: those it updated):
        keep, drop or (re)build its flat layout."""
        if verdict is _flat.GRADS:
            self._flat[i].stepped_apart()
            return
        self._flat.pop(i, None)
        # Built once every trainable param has had its step (and so its state).
        if all([p.grad is not None for p in group["params"] if p.requires_grad]):
            layout = _flat.build(group, params, self.state,
                                 list(self._slots(hyper, params[0])), self._counts_steps,
                                 list(self._host))
            if layout is not None:
                self._flat[i] = layout

    def _checked_hyper(self, i, group):
        """Group `i`'s hyperparameters checked (`_hyper`), remembered while
        the group holds the very same values: a step then reads its values
        and compares them by identity (a µs), where checking them all is most
        of a small step's host time (measured: one 1,000-element Adam param,
        173 µs a step; about half was checking the group, then the
        functional call again on the fresh floats the check made). As
        `fastopt.functional`'s own memory (`_make.remember_last`), only plain
        immutable values (and tuples of them: ``betas``) are remembered: a
        tensor lr is checked every step."""
        keys, values = tuple(group), tuple(group.values())
        seen = self._hyper_seen.get(i)
        if (seen is not None and seen[0] == keys
                and all(map(operator.is_, values, seen[1]))):
            return seen[2]
        hyper = self._hyper_unseen(i, group)
        if all([_plain(v) for k, v in zip(keys, values) if k != "params"]):
            self._hyper_seen[i] = (keys, values, hyper)
        return hyper

    def _hyper_unseen(self, i, group):
        for key, what in _REJECTED.items():
            if group.get(key) and not (key == "capturable" and self._capturable):
                raise ValueError(f"param_groups[{i}]: {key}=True ({what}) is not "
                                 f"supported by fastopt.torch.{type(self).__name__}")
        try:
            return self._hyper(group)
        except (TypeError, ValueError) as e:
            raise type(e)(f"fastopt.torch.{type(self).__name__}: param_groups[{i}]: {e}") from None

    def _params_with_grads(self, i, group, hyper):
        """Group `i`'s params that have a gradient, checked (`_Found`). The
        bulk check (`_all_fine`) reads each property of each tensor once, in
        one pass over a list; if it fails, the params are checked one by one
        (`_check_param`) to name the culprit, and what that lets through is
        left to the functional call's own checks."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return _Found(params, [], [], [], None)
        keys = list(self._slots(hyper, params[0]))   # the same for all of a group
        grads = list(map(_GRAD, params))
        states = list(map(self.state.get, params))
        if (_dtensor.any_dtensor(params) or _dtensor.any_dtensor(grads)
                or _dtensor.in_states(states, keys)):
            return self._dtensors_with_grads(i, group, params, grads, states, keys)
        kinds = self._all_fine(params, grads, states, keys)
        if kinds is None:
            for j, p in enumerate(group["params"]):
                if p.grad is not None:
                    self._check_param(i, j, p, keys)
        return _Found(params, grads, states, keys, kinds)

    def _dtensors_with_grads(self, i, group, params, grads, states, keys):
        """`_params_with_grads` of a group holding DTensors (`_dtensor`): the
        placements checked, then the local tensors as plain ones."""
        name, local = type(self).__name__, _dtensor.local
        if self._flat_mode:
            raise ValueError(f"fastopt.torch.{name}: flat=True cannot lay out DTensor "
                             f"params (param_groups[{i}]); their memory is the sharding's "
                             "(FSDP2's shard buffers): use flat=False")
        index = {id(p): j for j, p in enumerate(group["params"])}
        for p, g, s in zip(params, grads, states):
            _dtensor.check(name, f"param_groups[{i}]['params'][{index[id(p)]}]",
                           p, g, s or {}, keys)
        local_states = [None if s is None else {key: local(s.get(key)) for key in keys}
                        for s in states]
        kinds = self._all_fine(list(map(local, params)), list(map(local, grads)),
                               local_states, keys)
        if kinds is None:
            for p, g, s in zip(params, grads, local_states):
                self._check_param(i, index[id(p)], local(p), keys, local(g), s or {})
        return _Found(params, grads, states, keys, kinds, True)

    def _all_fine(self, params, grads, states, keys):
        """``(dtypes, devices)`` of `params` if every one of them, its grad
        and its existing state under `keys` can be updated (the conditions
        `_check_param` raises on, checked in bulk), else None. Plain tensors
        with all their state are read in one compiled loop (`_read_kinds`);
        anything else property by property from Python."""
        kinds = self._read_kinds(params, grads, states, keys)
        if kinds is not None:
            return kinds
        dtypes, devices, shapes = (list(map(get, params)) for get in (_DTYPE, _DEVICE, _SHAPE))
        if not (all(map(_DTYPES.__contains__, dtypes))
                and all([p.is_cpu or p.is_cuda for p in params])
                and _dense(params) and _like(grads, dtypes, devices, shapes)):
            return None
        for key in keys:
            column = [None if s is None else s.get(key) for s in states]
            have = [k for k, t in enumerate(column) if t is not None]
            sdtypes = dtypes if self.state_dtype is None else [
                self._state_dtype_of(d) for d in dtypes]
            if len(have) < len(column):    # before a param's first step
                column = [column[k] for k in have]
                want = [[got[k] for k in have] for got in (sdtypes, devices, shapes)]
            else:
                want = sdtypes, devices, shapes
            if not _like(column, *want):
                return None
        return dtypes, devices

    def _read_kinds(self, params, grads, states, keys):
        """`_all_fine`'s answer when it is yes and every tensor is a plain one
        (`_PLAIN_TENSORS`) with all its state, read through torch's DLPack
        exchange API in one compiled loop (`kernels.dlpack.read_columns`):
        2,000 params with two state slots in 1.9 ms, where reading dtype,
        device, shape and contiguity from Python took 4.2 (`_READ_FROM`:
        from 16 params). None otherwise (a first step, a small group, a
        subclass, a refusal or a mismatch), for `_all_fine` to read from
        Python."""
        api = _dlpack.reader(torch.Tensor)
        if api is None or len(params) < _READ_FROM:
            return None
        columns = [params, grads] + [[None if s is None else s.get(key) for s in states]
                                     for key in keys]
        if not all([set(map(type, column)) <= _PLAIN_TENSORS for column in columns]):
            return None     # None (a slot not made yet) is not a plain tensor either
        refused, dtypes, devices, fine = read_columns(
            np.array([list(map(id, column)) for column in columns], np.int64), *api)
        if refused or not fine.all() or (devices != devices[0]).any() \
                or (dtypes[1] != dtypes[0]).any():
            return None
        of_word = _dlpack.torch_dtypes(torch)
        word_of = {dtype: word for word, dtype in of_word.items()}
        by_word, want = {}, dtypes[0].copy()    # want: each param's state dtype
        for word in np.unique(dtypes[0]).tolist():
            dtype = of_word.get(word)
            if dtype not in _DTYPES:
                return None
            by_word[word] = dtype
            state = dtype if self.state_dtype is None else self._state_dtype_of(dtype)
            if state != dtype:
                want[dtypes[0] == word] = word_of[state]
        if (dtypes[2:] != want).any():
            return None
        by_device = {}
        for word in np.unique(devices[0]).tolist():
            kind, index = word & 0xFFFFFFFF, word >> 32
            if kind not in (KDL_CPU, KDL_CUDA):
                return None
            by_device[word] = (torch.device("cpu") if kind == KDL_CPU
                               else torch.device("cuda", index))
        return (list(map(by_word.__getitem__, dtypes[0].tolist())),
                list(map(by_device.__getitem__, devices[0].tolist())))

    def _check_param(self, i, j, p, keys, g=None, state=None):
        """Raise, naming `p` and what is wrong with it, unless `_all_fine`
        would accept it; the checks one by one, for the message. `g` and
        `state`: `p`'s own unless given (a DTensor's local tensors)."""
        name = type(self).__name__
        where = f"param_groups[{i}]['params'][{j}]"
        g = p.grad if g is None else g
        if g.layout != torch.strided:
            raise TypeError(f"fastopt.torch.{name} does not support sparse gradients "
                            f"({where} has a {g.layout} gradient); use torch.optim's "
                            "sparse optimizers or a dense gradient")
        if p.layout != torch.strided:
            raise TypeError(f"fastopt.torch.{name}: {where} has layout {p.layout}; "
                            "fastopt updates dense tensors")
        if p.dtype not in _DTYPES:
            raise TypeError(f"fastopt.torch.{name}: {where} has dtype {p.dtype}; fastopt "
                            "updates float32, float64, complex64 and complex128 tensors, "
                            "and float16 and bfloat16 ones")
        if p.device.type not in _DEVICES:
            raise TypeError(f"fastopt.torch.{name}: {where} is on {p.device}; fastopt "
                            "runs on the CPU and on CUDA GPUs")
        if g.dtype != p.dtype or g.device != p.device or g.shape != p.shape:
            raise ValueError(f"fastopt.torch.{name}: the gradient of {where} is "
                             f"{g.dtype} {tuple(g.shape)} on {g.device}, the param "
                             f"{p.dtype} {tuple(p.shape)} on {p.device}")
        state = self.state.get(p, {}) if state is None else state
        tensors = [("param", p), ("grad", g)] + [
            (f"state[{key!r}]", state[key]) for key in keys if state.get(key) is not None]
        for what, t in tensors:
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"fastopt.torch.{name}: {what} of {where} is a "
                                f"{type(t).__name__}, expected a tensor")
            if t.layout != torch.strided:
                raise TypeError(f"fastopt.torch.{name}: {what} of {where} has layout "
                                f"{t.layout}, expected a dense tensor")
            if not t.is_contiguous():
                raise ValueError(f"fastopt.torch.{name}: {what} of {where} is not "
                                 "contiguous; fastopt's kernels need contiguous tensors")
            dtype = p.dtype if what in ("param", "grad") else self._state_dtype_of(p.dtype)
            if t.dtype != dtype or t.device != p.device or t.shape != p.shape:
                raise ValueError(f"fastopt.torch.{name}: {what} of {where} is {t.dtype} "
                                 f"{tuple(t.shape)} on {t.device}, expected it like the "
                                 "param")

    def _step_group(self, i, group, hyper, found):
        """One functional call per bucket of `found`'s params (same device and
        step) of param group `i`. A bucket the bulk check passed goes as
        checked (`fastopt._front.call`): every check of the functional call
        but reading addresses is done. A refusal names the param as torch users
        do (``param_groups[i]['params'][j]``)."""
        params, keys, kinds = found.params, found.keys, found.kinds
        capturable = bool(group.get("capturable"))
        prepared = self._prepare_all(hyper, found, capturable)
        states = [s for s, _ in prepared]
        counters = None
        if capturable:   # the counts stay where they are: each call advances them
            steps = [_capture_steps(params, states)] * len(params)
        elif self._counts_steps:
            counters = _steps.Counters([s["step"] for s in states])
            try:
                steps = counters.numbers()
            except ValueError as e:
                raise ValueError(f"fastopt.torch.{type(self).__name__}: {e}") from None
        else:
            steps = [n for _, n in prepared]
        dtypes, devices = kinds or ([p.dtype for p in params], [p.device for p in params])
        n = len(params)
        # Host scalars (NAdam's mu_product): one value per kernel call, so
        # the params are bucketed by their values too (equal after equal steps).
        host = {key: [s[key] for s in states] for key in self._host}
        values = list(zip(*[_hostscalars.read(column) for column in host.values()])
                      ) if host else [()] * n
        # fp32 master weights: the 16-bit params apart from the others.
        masters = ([d in _HALF for d in dtypes] if self.master_weights
                   else [False] * n)
        # Stochastic rounding: for bfloat16 params (their stores, or their
        # model copies'), apart from the others too.
        if self.stochastic_rounding:
            masters = [(m, d == torch.bfloat16) for m, d in zip(masters, dtypes)]
        if (steps.count(steps[0]) == n and devices.count(devices[0]) == n
                and values.count(values[0]) == n and masters.count(masters[0]) == n):
            buckets = {(devices[0], steps[0], values[0], masters[0]): None}   # every param
        else:
            buckets = {}
            for k, key in enumerate(zip(devices, steps, values, masters)):
                buckets.setdefault(key, []).append(k)
        # Grads and state are checked to have their param's dtype: one look
        # at the params tells whether any tensor needs its real view.
        real = None if _COMPLEX.isdisjoint(dtypes) else _real
        for (device, step, _, master), members in buckets.items():
            if type(master) is tuple:
                master, rounds = master
                if rounds:
                    seed = self.seed
                    if not self._counts_steps:   # no step count: the optimizer's steps
                        seed = int(seed) + (self._rounded_steps << 32)
                    hyper = {**hyper, "stochastic_rounding": True, "seed": seed}
                else:
                    hyper = {k: v for k, v in hyper.items()
                             if k not in ("stochastic_rounding", "seed")}
            if members is None:
                ps, grads, ss = params, found.grads, states
            else:
                ps, grads, ss = ([column[k] for k in members]
                                 for column in (params, found.grads, states))
            columns = [ps, grads] + [[s[key] for s in ss] for key in keys]
            if found.dtensor:   # each rank updates its shards (`_dtensor`); the
                # wrappers' versions are bumped as torch's in-place DTensor ops do
                written = [t for c, column in enumerate(columns) if c != 1 for t in column]
                _batch.run(functools.partial(torch.autograd.graph.increment_version,
                                             written))
                columns = [list(map(_dtensor.local, column)) for column in columns]
            if real is not None:
                columns = [[real(t) for t in column] for column in columns]
            arrays = dict(zip(keys, columns[2:]))
            if master:   # the float32 masters are updated, the params written
                arrays["model"] = columns[0]
                columns[0] = [s[MASTER] for s in ss]
            for key, column in host.items():
                arrays[key] = column if members is None else [column[k] for k in members]
            if capturable:   # this bucket's own count tensors (`fastopt._capture`)
                step = [s["step"] for s in ss]
            with _front.call(f"fastopt.torch.{type(self).__name__}",
                             functools.partial(self._name, i, group, ps),
                             checked=kinds is not None, hypers=self._hyper_names):
                self._update(hyper, columns[0], columns[1], arrays, step)
            if counters is not None:
                _batch.run(functools.partial(counters.advance, members))
        # Autograd is told of the writes by the functional call, which bumps
        # the version of every torch tensor it updated (params and state).

    @staticmethod
    def _name(i, group, params, argument, k):
        """torch's name of a functional call's `argument` of `params[k]`, a
        param of group `i`."""
        j = next(j for j, p in enumerate(group["params"]) if p is params[k])
        where = f"param_groups[{i}]['params'][{j}]"
        if argument == "param":
            return where
        if argument == "grad":
            return f"the gradient of {where}"
        return f"state[{argument!r}] of {where}"

    def _prepare_all(self, hyper, found, capturable=False):
        """`_prepare` of each of `found`'s params. After a first step every
        state exists: that is seen in bulk first, one comprehension per
        question instead of a call per param."""
        states, keys = found.states, found.keys
        if not keys and not self._counts_steps and not self.master_weights:
            return [(None, 1)] * len(states)    # no state: torch keeps none either
        if (None not in states and all([s.get(key) is not None
                                        for s in states for key in keys])
                and all([key in s for s in states for key in self._host])
                and (not self._counts_steps or all(["step" in s for s in states]))
                and (not self.master_weights or all([MASTER in s for s, p in
                                                     zip(states, found.params)
                                                     if p.dtype in _HALF]))):
            return [(s, 2) for s in states]
        return [self._prepare(hyper, p, capturable) for p in found.params]

    def _prepare(self, hyper, p, capturable=False):
        """`p`'s state, created where missing, and this update's 1-based step."""
        slots = self._slots(hyper, p)
        master = self.master_weights and p.dtype in _HALF
        if not slots and not self._counts_steps and not master:
            return None, 1   # no state: torch keeps none either
        state = self.state[p]
        created = False
        if master and state.get(MASTER) is None:
            state[MASTER] = p.detach().to(torch.float32, memory_format=torch.contiguous_format,
                                          copy=True)
            self._created.append((p, state, MASTER))
        if self._counts_steps and "step" not in state:
            # torch's layout: on the param's device when capturable
            state["step"] = (torch.zeros((), dtype=_get_scalar_dtype(), device=p.device)
                             if capturable else torch.tensor(0.0, dtype=_get_scalar_dtype()))
            self._created.append((p, state, "step"))
        for key, init in self._host.items():   # torch's CPU scalars of its scalar dtype
            if key not in state:
                value = hyper[init] if isinstance(init, str) else init
                state[key] = torch.tensor(float(value), dtype=_get_scalar_dtype())
                self._created.append((p, state, key))
        for key, fill in slots.items():
            if state.get(key) is None:
                dtype = self._state_dtype_of(p.dtype)
                state[key] = (torch.zeros_like(p, memory_format=torch.preserve_format,
                                               dtype=dtype)
                              if fill == 0 else
                              torch.full_like(p, fill, memory_format=torch.preserve_format,
                                              dtype=dtype))
                self._created.append((p, state, key))
                created = True
        return state, 1 if created else 2   # (counting optimizers: their counters decide)
