"""The machinery every Keras-style optimizer shares, written once.

An optimizer subclass is Keras's shape: a constructor, `state_slots` (which
state arrays it keeps, and their initial value) and an `update_step` that
calls one `fastopt.functional` function with ``convention="keras"``; every
one of fastopt's is made from its spec (`fastopt.optimizers._make`).
Everything else lives here:

* ``apply_gradients(zip(grads, params))``: checks the whole call before any
  array is written, builds the state on the first call, skips None
  gradients (as Keras does), and counts `iterations`;
* the learning rate: a float (settable between steps) or a schedule
  ``step -> lr`` called with `iterations`, as Keras calls a
  ``LearningRateSchedule``; it is a runtime scalar, so nothing recompiles;
* Keras's gradient handling, in Keras's order: ``loss_scale_factor``, then one
  of ``clipnorm`` / ``global_clipnorm`` / ``clipvalue``, then decoupled
  ``weight_decay`` (``p ← p − p·wd·lr``), then the update. Scaling, clipping
  and decay are fused into the update kernel (the functional API's
  `grad_scale`, `clip_value`, `weight_decay`); norms are reduced where the
  gradients live and only the sums come to the host;
* ``get_config`` / ``from_config`` with Keras's keys, ``state_dict`` /
  ``load_state_dict`` and ``save_state`` / ``load_state`` (``.npz``);
* threads: a step, a build and a state load or save run one at a time per
  optimizer (a lock per instance), so two threads may step one optimizer;
  separate optimizers share nothing and run in parallel.
"""
import contextlib
import inspect
import itertools
import math
import operator
import re
import sys
import threading
import warnings
import zipfile
import zlib

import numpy as np

from .. import _batch, _checks, _facts, _front, _tensorflow, _threads
from ..spec import check_flag, check_float
from . import _arrays, _variables

_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)

# Keras base-optimizer options fastopt accepts only at their "off" value, so
# that a Keras config (``keras_opt.get_config()``) loads when it uses none.
_KERAS_OFF = {"use_ema": False, "ema_overwrite_frequency": None,
              "gradient_accumulation_steps": None}
_KERAS_IGNORED = ("ema_momentum",)   # meaningful only with use_ema
# The options this base class takes (an optimizer's signature may give one
# its own default: Keras's AdamW's weight_decay=0.004).
BASE_OPTIONS = frozenset(["weight_decay", "clipnorm", "clipvalue", "global_clipnorm",
                          "loss_scale_factor", "name"])


class Optimizer:
    """Base class of fastopt's Keras-style optimizers (see the module docstring).

    Subclasses define `state_slots`, `update_step` and `get_config` (adding
    their own hyperparameters), and check those in their constructor.
    """

    _hyper_names = {}   # fastopt's hyperparameter names -> Keras's, for messages

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, loss_scale_factor=None,
                 name=None, **kwargs):
        fn = f"{type(self).__name__}()"
        for key, off in _KERAS_OFF.items():
            if key in kwargs and kwargs.pop(key) != off:
                raise ValueError(f"{fn}: {key} is a Keras option these framework-free "
                                 f"classes accept only as {key}={off!r}; fastopt.keras."
                                 f"{type(self).__name__} (a Keras optimizer) has it")
        for key in _KERAS_IGNORED:
            kwargs.pop(key, None)
        if kwargs:
            raise ValueError(f"{fn}: unknown argument(s) {sorted(kwargs)}")
        self._fn = fn
        self._learning_rate = self._check_learning_rate(learning_rate)
        self.weight_decay = self._optional(weight_decay, "weight_decay", low=0.0)
        self.clipnorm = self._optional(clipnorm, "clipnorm", positive=True)
        self.clipvalue = self._optional(clipvalue, "clipvalue", positive=True)
        self.global_clipnorm = self._optional(global_clipnorm, "global_clipnorm",
                                              positive=True)
        self.loss_scale_factor = self._optional(loss_scale_factor,
                                                "loss_scale_factor", positive=True)
        clips = [k for k in ("clipnorm", "clipvalue", "global_clipnorm")
                 if getattr(self, k) is not None]
        if len(clips) > 1:
            raise ValueError(f"{fn}: only one of clipnorm, clipvalue and "
                             f"global_clipnorm can be set, got {', '.join(clips)}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{fn}: name must be a string, got {type(name).__name__}")
        self.name = name or _snake_case(type(self).__name__)
        self._iterations = 0
        self._specs = None      # per param: the `_arrays.Spec` later calls must match
        self._state = None      # per param: {slot name: array}
        self._pending = None    # state loaded before build: {slot name: [host arrays]}
        self._pending_count = 0
        self._params = None     # the params of the last call, for apply(grads)
        self._columns = None    # the state by slot name, a list per param
        self._layout = _front.Layout()   # `_fast_step`'s lists' last checked layout
        self._lock = threading.RLock()   # `_threads.serialised`: one step at a time

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]      # a lock does not pickle; a copy gets its own
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # -- what subclasses define ---------------------------------------------
    def state_slots(self):
        """``((name, initial value), ...)``: the state kept per param (Keras's names)."""
        return ()

    def state_shape(self, name, i, shape):
        """The shape of state `name` of params[i] (a param of `shape`), or
        None where that param keeps no array of it; the param's own shape
        unless a subclass says otherwise."""
        return shape

    def update_step(self, grad, param, state, lr, options):
        """Update params in place with one fused functional call.

        grad, param: lists of arrays (the functional API's list form).
        state:   the state arrays by slot name, a list per slot.
        lr:      this step's learning rate (a float).
        options: keyword arguments for the functional call: ``grad_scale``,
                 ``clip_value``, ``weight_decay``.
        """
        raise NotImplementedError

    def _host_state(self):
        """{name: 0-d NumPy array}: scalar state of the whole optimizer kept
        on the host (Keras's Nadam ``u_product``), in `state_dict` beside the
        headers; none here."""
        return {}

    def _load_host_state(self, values, iterations):
        """Restore `_host_state`'s values ({name: float}, checked) at
        `iterations`; a name absent from `values` is derived from it."""

    def get_config(self):
        """This optimizer's constructor arguments, with Keras's keys.

        A float learning rate is stored as a float; a schedule as the callable
        itself (serialise it yourself if it must go to JSON).

        Example::

            >>> cfg = fastopt.Adam(learning_rate=1e-3).get_config()
            >>> fastopt.Adam.from_config(cfg).get_config() == cfg
            True
        """
        return {"name": self.name, "learning_rate": self._learning_rate,
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                "global_clipnorm": self.global_clipnorm,
                "clipvalue": self.clipvalue,
                "loss_scale_factor": self.loss_scale_factor}

    @classmethod
    def from_config(cls, config):
        """A new optimizer (no state) from `get_config`'s dict, or from a Keras
        optimizer's config that uses no option fastopt lacks.

        Unknown keys raise ValueError. A Keras schedule serialised as a dict must
        be deserialised first (``keras.optimizers.schedules.deserialize``).
        """
        if not isinstance(config, dict):
            raise TypeError(f"{cls.__name__}.from_config(): config must be a dict, "
                            f"got {type(config).__name__}")
        if isinstance(config.get("learning_rate"), dict):
            raise ValueError(
                f"{cls.__name__}.from_config(): learning_rate is a serialised "
                "schedule; deserialise it (keras.optimizers.schedules.deserialize) "
                "and pass the object")
        return cls(**config)

    # -- checks -------------------------------------------------------------
    # The checks write "{name}(): ...", so they get the class's bare name.
    def _optional(self, value, name, *, low=None, positive=False):
        if value is None:
            return None
        return check_float(type(self).__name__, name, value,
                           low=0.0 if positive else low, low_open=positive)

    def _check(self, name, value, **bounds):
        return check_float(type(self).__name__, name, value, **bounds)

    def _flag(self, name, value):
        check_flag(type(self).__name__, name, value)
        return value

    def _check_learning_rate(self, value):
        if callable(value):
            self._lr_takes_step = _takes_step(value)
            return value
        return check_float(type(self).__name__, "learning_rate", value, low=0.0)

    # -- learning rate and iterations ----------------------------------------
    @property
    def iterations(self) -> int:
        """The number of steps applied so far (Keras's ``iterations``)."""
        return self._iterations

    @property
    def learning_rate(self) -> float:
        """The learning rate of the next step: the float, or the schedule's value."""
        return self._current_lr()

    @learning_rate.setter
    def learning_rate(self, value):
        self._learning_rate = self._check_learning_rate(value)

    def _current_lr(self):
        lr = self._learning_rate
        if not callable(lr):
            return lr
        value = lr(self._iterations) if self._lr_takes_step else lr()
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{self._fn}: the learning-rate schedule returned "
                            f"{type(value).__name__}, not a number") from None
        if not math.isfinite(value) or value < 0.0:
            raise ValueError(f"{self._fn}: the learning-rate schedule returned "
                             f"{value} at step {self._iterations}; it must be "
                             "finite and >= 0")
        return value

    # -- applying gradients ---------------------------------------------------
    @property
    def built(self) -> bool:
        return self._specs is not None

    @_threads.serialised
    def build(self, params) -> None:
        """Create the state for `params` (done by the first `apply_gradients`).

        Example::

            >>> opt = fastopt.Adam()
            >>> opt.build([np.zeros(3)])
        """
        params = _variables.keras_values(self._fn, list(params), "params")
        if self.built:
            raise ValueError(f"{self._fn}: already built")
        if _uses_tensorflow(params):
            with _tensorflow.host_arrays(params, self._fn) as params:
                self._build(params, [d.spec for d in self._describe_params(params)])
            return
        self._build(params, [d.spec for d in self._describe_params(params)])

    def _describe_params(self, params):
        described = []
        for i, p in enumerate(params):
            d = _arrays.describe(self._fn, f"params[{i}]", p)
            half = _facts.storage_format(d.spec.dtype) in ("f16", "bf16")
            if d.spec.dtype not in _facts.FLOAT_DTYPES and not half:
                raise TypeError(f"{self._fn}: params[{i}] must be float32, float64, "
                                f"float16 or bfloat16, got {d.spec.dtype}")
            if self.master_weights and not half:
                raise TypeError(f"{self._fn}: master_weights keeps float32 masters of "
                                f"float16 or bfloat16 params; params[{i}] is "
                                f"{d.spec.dtype}")
            if not d.contiguous:
                raise ValueError(f"{self._fn}: params[{i}] must be C-contiguous")
            if d.readonly:
                raise ValueError(f"{self._fn}: params[{i}] is read-only; it is "
                                 "updated in place")
            described.append(d)
        return described

    def _build(self, params, specs):
        slots = self.state_slots()
        pending = self._pending
        if pending is not None:
            self._check_loaded(pending, specs)
        state = []
        for i, p in enumerate(params):
            arrays = {}
            # float32 state (master weights, or state_dtype) starts from a
            # float32 copy of the param; else the state is the param's dtype,
            # as Keras's (`add_variable_from_reference`).
            like = (_arrays.float32_copy(p) if self._float32_state(specs[i].dtype)
                    else p)
            for name, init in slots:
                if name == MASTER:
                    arrays[name] = like
                else:
                    shape = self.state_shape(name, i, specs[i].shape)
                    if shape is None:     # no array of this slot for this param
                        arrays[name] = None
                        continue
                    arrays[name] = _arrays.initial(like, init, shape)
                if pending is not None:
                    _arrays.copy_from_host(arrays[name], pending[name][i])
            state.append(arrays)
        self._specs, self._state, self._pending = specs, state, None
        # The same state as lists per slot, for `_fast_step` (loading a
        # checkpoint copies into these arrays, so the lists stay valid).
        self._columns = {name: [s[name] for s in state] for name, _ in slots}

    def apply_gradients(self, grads_and_vars) -> int:
        """Apply one step: ``opt.apply_gradients(zip(grads, params))``.

        Updates each param in place (NumPy arrays on the CPU; CuPy, Numba or
        torch CUDA arrays on their GPU) and returns the new `iterations`. The
        first call creates the state; later calls must pass params of the same
        count, shapes, dtypes and devices, in the same order. A None gradient
        skips its param for this step (Keras does the same, with a warning;
        so does fastopt); all-None raises. Any error is raised before any
        array is written.

        Example::

            >>> w = np.ones(3)
            >>> opt = fastopt.SGD(learning_rate=0.1, momentum=0.9)
            >>> opt.apply_gradients(zip([np.full(3, 0.5)], [w]))
            1
        """
        pairs = list(grads_and_vars)
        # In bulk first (a model's hundreds of pairs), one by one for the message.
        if not (set(map(type, pairs)) <= {tuple} and set(map(len, pairs)) <= {2}):
            for k, pair in enumerate(pairs):
                if not (isinstance(pair, tuple) and len(pair) == 2):
                    raise TypeError(f"{self._fn}: apply_gradients() takes (grad, "
                                    f"param) pairs, e.g. zip(grads, params); item {k} "
                                    f"is {type(pair).__name__}")
        return self.apply(list(map(_FIRST, pairs)), list(map(_SECOND, pairs)))

    @_threads.serialised
    def apply(self, grads, trainable_variables=None, *, params=None) -> int:
        """`apply_gradients` with separate lists (Keras's ``apply``); the
        variables (or ``params=``) may be omitted once built."""
        grads = list(grads)
        if trainable_variables is not None and params is not None:
            raise TypeError(f"{self._fn}: apply() takes trainable_variables or "
                            "params, not both")
        params = trainable_variables if params is None else params
        if params is None:
            if not self.built:
                raise ValueError(f"{self._fn}: params are required until the "
                                 "optimizer is built")
            params = self._params
        params = _variables.keras_values(self._fn, list(params), "params")
        if len(grads) != len(params):
            raise ValueError(f"{self._fn}: got {len(grads)} gradients for "
                             f"{len(params)} params")
        if not grads:
            return self._iterations        # Keras: an empty call is a no-op
        # As Keras does on its torch backend: the step is no part of a graph
        # (torch refuses in-place updates of leaves that require grad).
        with _autograd_off():
            if _uses_tensorflow(params):
                return self._apply_tensorflow(grads, params)
            return self._apply(grads, params)

    def _apply_tensorflow(self, grads, params):
        """`_apply` on this step's host arrays of TensorFlow variables and
        tensors (`fastopt._tensorflow`, docs/tensorflow.md)."""
        with _tensorflow.host_arrays(params, self._fn) as arrays, \
                _tensorflow.host_arrays(grads, self._fn, "grads", writable=False) as views:
            iterations = self._apply(views, arrays)
        self._params = params   # the variables: TensorFlow may move their buffers
        return iterations

    def _apply(self, grads, params):
        if self._fast_step(grads, params):
            return self._iterations
        described_params = self._match_params(params)
        present = [i for i, g in enumerate(grads) if g is not None]
        if not present:
            raise ValueError(f"{self._fn}: no gradients provided for any param "
                             "(all are None)")
        described = {i: self._check_grad(i, grads[i], described_params[i])
                     for i in present}
        lr = self._current_lr()
        scales = self._grad_scales(described)
        if len(present) < len(grads):
            skipped = [i for i, g in enumerate(grads) if g is None]
            warnings.warn(f"{self._fn}: gradients are None for params {skipped}; "
                          "those params are not updated this step (as in Keras)",
                          stacklevel=3)
        # Each kernel call checks its own arrays, in the list form's words;
        # this one spans all of them (clip groups), in the caller's words.
        _check_apart(type(self).__name__, present, described_params, described)
        groups = _same_scale_groups(present, scales)
        built = self.built
        if not built:
            pending = self._pending
            self._build(params, [d.spec for d in described_params])
        try:
            # Every group checked before any runs, and named in Keras's words.
            with _batch.all_or_nothing(), _front.call(
                    self._fn, lambda arg, k: self._name(arg, group[k]),
                    hypers=self._hyper_names):
                for group in groups:
                    # One list-form call per group: the kernels run once per
                    # dtype, not once per param.
                    state = {name: [self._state[i][name] for i in group]
                             for name in self._state[group[0]]}
                    self.update_step([grads[i] for i in group],
                                     [params[i] for i in group],
                                     state, lr, self._options(scales[group[0]]))
        except BaseException:
            if not built:   # a refused first step leaves the optimizer unbuilt
                self._specs = self._state = self._columns = None
                self._pending = pending
            raise
        self._params = params
        self._iterations += 1
        return self._iterations

    def _name(self, argument, i):
        """The caller's name of a functional call's `argument` of params[i]."""
        if argument in ("param", "grad"):
            return f"{argument}s[{i}]"
        spec = getattr(self, "spec", None)
        slots = {} if spec is None else {s.name: s.keras for s in spec.slots}
        return f"the {slots.get(argument, argument)} of params[{i}]"

    def _fast_step(self, grads, params):
        """The common step as one list-form call, with no Python per array.

        Taken once built, when every gradient is present and no norm is
        clipped. The functional call checks every array before writing any,
        and the state has each param's build-time shape, dtype and place, so
        it refuses whatever the checks in `apply` would; when it does, nothing
        is written and `apply` runs those checks to raise its own message.
        """
        if (not self.built or self.clipnorm is not None
                or self.global_clipnorm is not None or len(params) != len(self._specs)
                or any(map(operator.is_, grads, itertools.repeat(None)))):
            return False
        # The list form compares the arrays with last step's checked layout,
        # which this optimizer holds, and when they match checks and updates
        # in one compiled call.
        try:
            with _front.call(layout=self._layout):
                self.update_step(grads, params, self._columns, self._current_lr(),
                                 self._options(self._unscale()))
        except (TypeError, ValueError):
            return False
        self._params = params
        self._iterations += 1
        return True

    def _unscale(self):
        """The factor undoing ``loss_scale_factor`` (1 without one)."""
        return 1.0 if self.loss_scale_factor is None else 1.0 / self.loss_scale_factor

    def _options(self, grad_scale):
        """The functional call's keyword arguments for gradients scaled by
        `grad_scale` (see `update_step`)."""
        return {"weight_decay": self.weight_decay or 0.0, "clip_value": self.clipvalue,
                "grad_scale": grad_scale}

    def _match_params(self, params):
        if self.built and len(params) != len(self._specs):
            raise ValueError(f"{self._fn}: got {len(params)} params, but the "
                             f"optimizer was built for {len(self._specs)}")
        described = self._describe_params(params)
        if self.built:
            for i, (d, want) in enumerate(zip(described, self._specs)):
                _check_same(self._fn, f"params[{i}]", d.spec, want, "at build")
        return described

    def _check_grad(self, i, grad, param):
        d = _arrays.describe(self._fn, f"grads[{i}]", grad)
        _check_same(self._fn, f"grads[{i}]", d.spec, param.spec, f"as params[{i}]")
        if not d.contiguous:
            raise ValueError(f"{self._fn}: grads[{i}] must be C-contiguous")
        if d.nbytes and abs(d.ptr - param.ptr) < d.nbytes:
            raise ValueError(f"{self._fn}: grads[{i}] shares memory with params[{i}]")
        return d

    def _grad_scales(self, described):
        """Each gradient's factor: 1/loss_scale_factor times its norm-clip factor."""
        base = self._unscale()
        scales = dict.fromkeys(described, base)
        clip = self.clipnorm if self.clipnorm is not None else self.global_clipnorm
        if clip is None:
            return scales
        keys = list(described)
        sums = _arrays.sum_squares([described[k] for k in keys])
        if self.clipnorm is not None:
            norms = [math.sqrt(s) * base for s in sums]
        else:
            norms = [math.sqrt(math.fsum(sums)) * base] * len(keys)
        for k, norm in zip(keys, norms):
            if not math.isfinite(norm):
                # Keras would write NaN into the params; fastopt refuses, unchanged.
                which = (f"the norm of grads[{k}]" if self.clipnorm is not None
                         else "the global norm of the gradients")
                raise ValueError(f"{self._fn}: {which} is {norm}; norm clipping "
                                 "needs finite gradients")
            scales[k] = base * (clip / max(norm, clip))
        return scales

    # -- state ------------------------------------------------------------------
    @_threads.serialised
    def state_dict(self) -> dict:
        """The optimizer's state as a flat dict of NumPy values (host copies).

        Keys: ``optimizer`` (class name), ``iterations``, ``num_params``,
        ``learning_rate`` (when a float), ``"<slot>/<i>"`` per state array.
        `load_state_dict` into a fresh optimizer of the same config continues
        the run bit for bit.
        """
        out = {"optimizer": np.array(type(self).__name__),
               "iterations": np.array(self.iterations, np.int64)}
        if not callable(self._learning_rate):
            out["learning_rate"] = np.array(self._learning_rate, np.float64)
        out.update(self._host_state())
        if self._pending is not None:
            arrays = self._pending
            out["num_params"] = np.array(self._pending_count, np.int64)
        elif self.built:
            arrays = {name: [s[name] for s in self._state]
                      for name, _ in self.state_slots()}
            out["num_params"] = np.array(len(self._specs), np.int64)
        else:
            arrays = {}
        for name, values in arrays.items():
            for i, a in enumerate(values):
                if a is not None:    # a param without this slot
                    out[f"{name}/{i}"] = _arrays.to_host(a)
        return out

    @_threads.serialised
    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`'s output (checked fully before anything changes).

        Built: the state arrays are overwritten in place. Not built yet: the
        state is kept and placed on the params' device by the first
        `apply_gradients` (which checks it against the params first).
        `iterations` is restored, and so is a float learning rate (a schedule
        is config, not state: it stays the one this optimizer was made with).
        Every key is checked: a key this optimizer does not keep, a missing
        or extra ``"<slot>/<i>"``, a header of the wrong kind, or a state
        that has stepped but holds no state arrays raises ValueError naming
        the key, and leaves the optimizer as it was.

        Example::

            >>> fresh = fastopt.Adam.from_config(opt.get_config())
            >>> fresh.load_state_dict(opt.state_dict())
        """
        fn = f"{type(self).__name__}.load_state_dict()"
        if not isinstance(state, dict):
            raise TypeError(f"{fn}: state must be a dict, got {type(state).__name__}")
        missing = {"optimizer", "iterations"} - set(state)
        if missing:
            raise ValueError(f"{fn}: state lacks {sorted(missing)}")
        kind = _header(fn, state, "optimizer", "US", "a class name")
        if kind != type(self).__name__:
            raise ValueError(f"{fn}: state is from a {kind}, not a {type(self).__name__}")
        iterations = _header(fn, state, "iterations", "iu", "an integer >= 0")
        names = [name for name, _ in self.state_slots()]
        host = {key: _header(fn, state, key, "iuf", "a real number")
                for key in self._host_state() if key in state}
        indices = _slot_indices(fn, state, names, type(self).__name__, host)
        if "num_params" in state:
            count = _header(fn, state, "num_params", "iu", "an integer >= 0")
        else:
            count = max([max(found, default=-1) + 1 for found in indices.values()],
                        default=0)
        arrays = {}
        for name in names:
            extra = sorted(i for i in indices[name] if i >= count)
            if extra:
                raise ValueError(f"{fn}: unexpected key {f'{name}/{extra[0]}'!r}: the "
                                 f"state has {count} params")
            if len(indices[name]) != count and not self._some_absent(name, count):
                lack = min(set(range(count)) - indices[name])
                raise ValueError(f"{fn}: {len(indices[name])} arrays for {name}, "
                                 f"expected {count} (no {f'{name}/{lack}'!r})")
            arrays[name] = [np.array(state[f"{name}/{i}"], copy=True)
                            if f"{name}/{i}" in state else None for i in range(count)]
        if names and count == 0 and iterations > 0:
            # Resuming would run step iterations + 1 on fresh zero state.
            raise ValueError(f"{fn}: state is at iterations={iterations} but holds no "
                             f"{'/'.join(names)} arrays ({names[0]}/0, ...)")
        lr = None
        if "learning_rate" in state and not callable(self._learning_rate):
            lr = _header(fn, state, "learning_rate", "iuf", "a real number")
            lr = check_float(fn.removesuffix("()"), "learning_rate", lr, low=0.0)
        if self.built and count != len(self._specs) and (names or "num_params" in state):
            raise ValueError(f"{fn}: state has {count} params, the optimizer "
                             f"{len(self._specs)}")
        if self.built and names:
            self._check_loaded(arrays, self._specs, fn)
        # Everything checked: now change things.
        if self.built:
            for i, s in enumerate(self._state):
                for name in names:
                    if s[name] is not None:
                        _arrays.copy_from_host(s[name], arrays[name][i])
        elif names and count > 0:
            self._pending, self._pending_count = arrays, count
        else:
            self._pending, self._pending_count = None, 0
        self._iterations = iterations
        if getattr(self, "device_iterations", None) is not None:   # made again from it
            self.device_iterations = None
        self._load_host_state(host, iterations)
        if lr is not None:
            self._learning_rate = lr

    def _some_absent(self, name, count):
        """Whether some param may keep no array of state `name` (a subclass's
        `state_shape` says None for some shapes): the load's count of its
        arrays is checked against the params at build."""
        return False

    def _check_loaded(self, arrays, specs, fn=None):
        fn = fn or self._fn
        for name, values in arrays.items():
            if len(values) != len(specs):
                raise ValueError(f"{fn}: the loaded state has {len(values)} params, "
                                 f"got {len(specs)}")
            for i, (a, spec) in enumerate(zip(values, specs)):
                shape = self.state_shape(name, i, spec.shape)
                if (a is None) != (shape is None):
                    raise ValueError(
                        f"{fn}: loaded state {'lacks' if a is None else 'has'} "
                        f"{name}/{i}, but params[{i}] ({spec.dtype}{list(spec.shape)}) "
                        f"{'keeps' if a is None else 'keeps no'} such array")
                if a is None:
                    continue
                want = (np.dtype(np.float32) if self._float32_state(spec.dtype)
                        else spec.dtype)
                if tuple(a.shape) != tuple(shape) or a.dtype != want:
                    state_of = ("" if tuple(shape) == tuple(spec.shape)
                                else f" (its {name}: {list(shape)})")
                    kept = "" if want == spec.dtype else f" (its state is {want})"
                    raise ValueError(
                        f"{fn}: loaded {name}/{i} is {a.dtype}{list(a.shape)}, but "
                        f"params[{i}] is {spec.dtype}{list(spec.shape)}{state_of}{kept}")

    # -- 16-bit params ---------------------------------------------------------
    # Params in float16 or bfloat16 (Keras's "float16"/"bfloat16" dtype
    # policies) are updated with float32 math, each result rounded once
    # (`kernels.storage`). Their state is kept in the param's dtype, as
    # Keras keeps it, unless one of these is set before the first step:
    #
    # ``opt.state_dtype = "float32"``: float32 state.
    # ``opt.master_weights = True``: a float32 master of each param in the
    # state (``"master/<i>"`` in `state_dict`), float32 state, and the 16-bit
    # param written from the master, rounded to nearest, in the same pass:
    # the master's trajectory is float32 training's on the same gradients.
    # Under Keras's "mixed_bfloat16"/"mixed_float16" policies the variables
    # (and their gradients) are float32 already: neither applies.
    state_dtype = None
    master_weights = False

    def _float32_state(self, dtype):
        """Whether the state of a param of `dtype` is kept in float32."""
        if _facts.storage_format(dtype) not in ("f16", "bf16"):
            return False
        if self.master_weights:
            return True
        choice = self.state_dtype
        if choice is None:
            return False
        if np.dtype(choice) != np.float32 and np.dtype(choice) != dtype:
            raise TypeError(f"{self._fn}: state_dtype must be None (the param's "
                            f"dtype) or 'float32', got {choice!r}")
        return np.dtype(choice) == np.float32

    def save_state(self, path) -> None:
        """Write `state_dict` to a ``.npz`` file.

        Example::

            >>> opt.save_state("opt.npz")
            >>> fresh = fastopt.Adam.from_config(opt.get_config())
            >>> fresh.load_state("opt.npz")
        """
        np.savez(path, **self.state_dict())

    def load_state(self, path) -> None:
        """Read a ``.npz`` file written by `save_state` (see `load_state_dict`).

        A file that is not such an archive (truncated, a single ``.npy``
        array, pickled objects) raises ValueError naming it, and changes nothing.
        """
        fn = f"{type(self).__name__}.load_state()"
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError(f"{fn}: {path!s} holds a single array (.npy), not "
                                 "the .npz archive save_state writes")
            with data:
                state = {k: data[k] for k in data.files}
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise ValueError(f"{fn}: {path!s} is not a readable .npz archive "
                             f"({type(e).__name__}: {e})") from e
        except ValueError as e:
            if str(e).startswith(fn):
                raise
            raise ValueError(f"{fn}: {path!s} is not a .npz archive of arrays "
                             f"({e})") from e
        self.load_state_dict(state)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()
                         if k != "name" and v is not None)
        return f"{type(self).__name__}({args})"


MASTER = "master"   # the state slot of fp32 master weights


def _snake_case(name):
    """Keras's default name of an optimizer class: ``AdamW`` -> ``adam_w``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _takes_step(schedule):
    """Whether Keras would call `schedule` with the step: a
    ``LearningRateSchedule`` or any callable taking an argument (``lambda
    step: ...``); a callable of no arguments is called with none, as Keras
    calls ``lambda: 0.1``."""
    try:
        parameters = inspect.signature(schedule).parameters.values()
    except (TypeError, ValueError):    # a builtin without a signature
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in parameters)


def _uses_tensorflow(params):
    return "tensorflow" in sys.modules and _tensorflow.any_tensorflow(params)


def _autograd_off():
    torch = sys.modules.get("torch")
    return contextlib.nullcontext() if torch is None else torch.no_grad()


def _check_apart(fn, present, params, grads):
    """No param of the step may share memory with another param or grad
    (`present`: their indices; `params`, `grads`: their descriptions)."""
    labels = _checks.Labels(["params", "grads"], len(present), index=present)
    arrays = [params[i] for i in present] + [grads[i] for i in present]
    _checks.no_overlap(fn, labels, [d.ptr for d in arrays], [d.nbytes for d in arrays])


def _same_scale_groups(present, scales):
    """The params to update, grouped by gradient scale: one group unless
    per-variable ``clipnorm`` gives each gradient its own factor."""
    groups = {}
    for i in present:
        groups.setdefault(scales[i], []).append(i)
    return list(groups.values())


def _header(fn, state, key, kinds, what):
    """`state[key]` as a Python scalar, if it is a scalar of a dtype kind in
    `kinds` (a NumPy kind code string); else ValueError naming `key`."""
    value = state[key]
    try:
        a = np.asarray(value)
    except Exception:   # any object NumPy cannot read is just as bad
        a = np.asarray(None)
    if a.shape != () or a.dtype.kind not in kinds or (a.dtype.kind in "iu" and a < 0):
        raise ValueError(f"{fn}: {key} must be {what}, got {_brief(value)}")
    return str(a) if a.dtype.kind in "US" else a.item()


def _brief(value):
    """A short description of a bad state value, for a message."""
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def _slot_indices(fn, state, names, cls, headers=()):
    """{slot name: set of indices} of the ``"<slot>/<i>"`` keys of `state`;
    ValueError for any other key but the headers, and for an index not in
    `state_dict`'s form (``momentum/01``)."""
    indices = {name: set() for name in names}
    for key in state:
        if key in _HEADERS or key in headers:
            continue
        name, _, index = key.rpartition("/") if isinstance(key, str) else ("", "", "")
        if (name not in indices or not (index.isascii() and index.isdigit())
                or str(int(index)) != index):
            raise ValueError(f"{fn}: unexpected key {key!r}; this {cls} keeps "
                             f"{names or 'no state arrays'} as '<name>/<index>' "
                             "(is its config the same?)")
        indices[name].add(int(index))
    return indices


_HEADERS = frozenset(["optimizer", "iterations", "learning_rate", "num_params"])


def _check_same(fn, name, got, want, where):
    if got.place != want.place or got.device != want.device:
        error = TypeError if got.place != want.place else ValueError
        raise error(f"{fn}: {name} is in {got.where()}, expected {want.where()} "
                    f"{where}")
    if got.dtype != want.dtype:
        raise TypeError(f"{fn}: {name} has dtype {got.dtype}, expected "
                        f"{want.dtype} {where}")
    if got.shape != want.shape:
        raise ValueError(f"{fn}: {name} has shape {got.shape}, expected "
                         f"{want.shape} {where}")

