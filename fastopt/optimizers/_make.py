"""The Keras-style class of a `fastopt.spec.Spec`.

The class is Keras's shape (constructor, state slots, update step, config),
all of it read off the spec: the constructor's arguments and defaults are the
spec's Keras `Front` signature (written as a real ``def``, so ``help()`` and
misspelt keywords behave as for a hand-written class), the state slots its
`Slot`s under their Keras names, and the update step one call of the spec's
functional function with ``convention="keras"``. The machinery every
optimizer shares is `fastopt.optimizers.base.Optimizer`.
"""
import functools
import numbers
from types import SimpleNamespace

import numpy as np

from .. import _batch, _capture, _hostscalars, functional
from ..spec import PARAM, outside
from .base import BASE_OPTIONS, MASTER, Optimizer


def _host_array(a):
    return isinstance(a, np.ndarray) or (type(a).__module__.startswith("torch")
                                         and not getattr(a, "is_cuda", False))


class SpecOptimizer(Optimizer):
    """A Keras-style optimizer made from a spec (`make`)."""

    spec = None

    def _init_from_spec(self, own, kwargs):
        """The constructor's body: `own` holds the signature's arguments by
        Keras name, `kwargs` the base options passed beyond it."""
        front, spec = self.spec.keras, self.spec
        base = {k: v for k, v in own.items() if k in BASE_OPTIONS}
        for key, value in base.items():
            if value is None:   # Keras's AdamW: a default it declares must stay a number
                raise ValueError(f"{front.cls}(): {key} must be a float, got None")
        super().__init__(own["learning_rate"], **base, **kwargs)
        self._keras_names = [k for k in own if k not in BASE_OPTIONS
                             and k != "learning_rate"]
        hyper = {}
        for key in self._keras_names:
            name = front.canonical(key)
            value = self._check_hyper(spec.hyper(name), key, own[key])
            setattr(self, key, value)
            hyper[name] = value
        self._h = SimpleNamespace(**hyper)
        for key, value in own.items():   # options that need names the arrays lack
            if key in front.options.get("names_only", ()) and value:
                raise ValueError(
                    f"{front.cls}(): {key} picks variables by name, which arrays do not "
                    f"have; fastopt.keras.{front.cls} (a Keras optimizer) has it")
        self._call = functional.of(spec)
        self._call_kwargs = {name: value for name, value in hyper.items()
                             if spec.hyper(name).functional}
        # Scalars of state kept on the host (Keras's Nadam u_product): one
        # value per optimizer, in the dtype of the first param, as Keras keeps
        # its variable; `_host_at` is the iteration the values are after.
        self._host_h = SimpleNamespace(**{**{h.name: d for h, d in spec.arguments}, **hyper})
        self._host_values = {s.name: s.initial(self._host_h) for s in spec.host}
        self._host_at, self._host_dtype = 0, None

    def _check_hyper(self, hyper, key, value):
        """`value` of the argument `key` checked; where Keras checks it
        itself (the Keras front's ``messages``) and the value fails that
        check, Keras's own message."""
        if hyper.optional and value is None:
            return None
        try:
            return hyper.check(type(self).__name__, value, "keras", label=key)
        except ValueError:
            message = self.spec.keras.options.get("messages", {}).get(key)
            # Keras's message where Keras's own comparison fails (a real
            # number out of range; NaN never is, as in Keras).
            if (message is not None and isinstance(value, numbers.Real)
                    and not isinstance(value, bool)
                    and outside(value, **hyper.range("keras"))):
                raise ValueError(message.format(value=value)) from None
            raise

    def _spec_learning_rate(self, value):
        # The base class takes any lr >= 0; a spec may ask more (Ftrl: > 0).
        value = super()._check_learning_rate(value)
        if not callable(value):
            self.spec.hyper("lr").check(type(self).__name__, value, "keras",
                                        label="learning_rate")
        return value

    def state_slots(self):
        slots = tuple((s.keras, getattr(self._h, s.init) if isinstance(s.init, str)
                       else s.init) for s in self.spec.slots if s.used(self._h))
        if self.master_weights:     # fp32 masters of 16-bit params (base.py)
            slots = ((MASTER, PARAM),) + slots
        return slots

    # Capturable steps (`fastopt._capture`): with ``opt.capturable = True``
    # (set before a step; Keras has no such option), the step count lives in
    # a one-element float32 array beside the params (`device_iterations`,
    # made at the first step in the params' array library and device, from
    # `iterations`), and `learning_rate` may be a one-element float32 array
    # too: the kernels read both on the device, compute the bias corrections
    # there and advance the count in the same launch, so a step can be
    # captured in a CUDA graph and replayed (each replay advances
    # `device_iterations`; `iterations` reads it). On host arrays the same
    # semantics run on the CPU.
    capturable = False
    device_iterations = None

    def _check_learning_rate(self, value):
        if self.capturable and _capture.is_array(value) and not callable(value):
            return value    # read on the device at each step
        return self._spec_learning_rate(value)

    @property
    def iterations(self) -> int:
        """The number of steps applied so far (Keras's ``iterations``); with
        `capturable`, read from `device_iterations` (a step replayed in a
        CUDA graph advances it, not this object)."""
        counts = self.device_iterations
        if counts is not None:
            return int(_hostscalars.read([counts])[0]) if _host_array(counts) else \
                int(float(counts[0].item() if hasattr(counts[0], "item") else counts[0]))
        return self._iterations

    def _counts(self, param):
        """`device_iterations`, made at the first capturable step like `param`."""
        if not (self.spec.device is not None and self.spec.program is None
                and not self.spec.host):
            raise ValueError(f"{self._fn}: capturable=True is not supported by "
                             f"{type(self).__name__}: its per-step scalars are "
                             "computed on the host")
        if self.device_iterations is None:
            self.device_iterations = _capture.counter_like(param[0], self._iterations)
        return self.device_iterations

    def _slot(self, name):
        # looked up, not kept: a Slot's functions do not pickle
        return next(s for s in self.spec.slots if s.keras == name)

    def state_shape(self, name, i, shape):
        # a program's slots may have shapes of their own, or none for a param
        if name == MASTER:
            return shape
        return self._slot(name).shape_for(shape, "keras")

    def _some_absent(self, name, count):
        return name != MASTER and self._slot(name).shape is not None

    def update_step(self, grad, param, state, lr, options):
        if self.capturable:
            self._call(param, grad, **{s.name: state.get(s.keras) for s in self.spec.slots},
                       step=self._counts(param), lr=lr, convention="keras",
                       **self._call_kwargs, **options)
            return
        step = self.iterations + 1
        host = self._host_before(param) if self.spec.host else {}
        # Each value as a one-element array of Keras's dtype (a copy: the call
        # advances it, and a step of several calls, clip groups, sees one value).
        masters, model = state.get(MASTER), None
        if masters is not None:     # the kernel updates the masters, writes the params
            param, model = masters, param
        self._call(param, grad, **{s.name: state.get(s.keras) for s in self.spec.slots},
                   model=model,
                   **{name: np.array(v, self._host_dtype) for name, v in host.items()},
                   step=step, lr=lr, convention="keras", **self._call_kwargs, **options)
        if host:   # kept once the step's kernels have run
            after = {s.name: s.advance(self._host_h, "keras", step, host[s.name],
                                       self._host_dtype) for s in self.spec.host}
            _batch.run(functools.partial(self._host_advanced, step, after))

    def _host_before(self, param):
        """The host scalars' values before this step (`fastopt.spec.Scalar`)."""
        if self._host_dtype is None:
            self._host_dtype = _hostscalars.param_dtype(param)
        if self._host_at != self.iterations:   # iterations set by a load without them
            self._host_values = self._host_derived(self._host_dtype)
            self._host_at = self.iterations
        return dict(self._host_values)

    def _host_derived(self, dtype):
        """The host scalars' values before the next step, derived from
        `iterations` (no values kept for it)."""
        return {s.name: _hostscalars.derived(s, self._host_h, "keras", self.iterations + 1,
                                             dtype) for s in self.spec.host}

    def _host_advanced(self, step, after):
        # Idempotent: several calls of one step (clip groups) write the same values.
        self._host_values, self._host_at = after, step

    def _host_state(self):
        if not self.spec.host:
            return {}
        dtype = self._host_dtype or np.dtype(np.float64)
        values = (self._host_values if self._host_at == self.iterations
                  else self._host_derived(dtype))
        return {s.keras: np.array(values[s.name], dtype) for s in self.spec.host}

    def _load_host_state(self, values, iterations):
        names = {s.keras: s.name for s in self.spec.host}
        if set(values) == set(names):
            self._host_values = {names[k]: float(v) for k, v in values.items()}
            self._host_at = iterations
        else:   # derived from iterations at the next step
            self._host_at = -1

    def get_config(self):
        return {**super().get_config(),
                **{key: getattr(self, key) for key in self._keras_names}}


def make(spec):
    """The Keras-style class of `spec` (see the module docstring)."""
    front = spec.keras
    names = [p.name for p in front.parameters()]
    source = (f"def __init__(self, {front.signature}, **kwargs):\n"
              f"    self._init_from_spec({{{', '.join(f'{n!r}: {n}' for n in names)}}},"
              " kwargs)\n")
    scope = {}
    exec(source, scope)     # noqa: S102 - the source is built from the spec above
    init = scope["__init__"]
    init.__qualname__ = f"{front.cls}.__init__"
    doc = (f"Keras 3's ``{front.cls}`` over NumPy and CUDA arrays, one fused kernel "
           f"call per step.\n\n    Arguments: ``{front.signature}``, and the base "
           "options of `fastopt.optimizers.base` (weight_decay, clipnorm, clipvalue,\n"
           "    global_clipnorm, loss_scale_factor, name). The update, in fastopt's "
           f"names (`fastopt.functional.{spec.name}`, convention \"keras\"):\n\n    "
           + spec.doc + f"""

    Example::

        >>> w, g = np.ones(3), np.full(3, 0.5)
        >>> opt = fastopt.{front.cls}()
        >>> opt.apply_gradients(zip([g], [w]))
        1
""")
    return type(front.cls, (SpecOptimizer,), {
        "__init__": init, "spec": spec, "__doc__": doc,
        "__module__": "fastopt.optimizers",
        "_hyper_names": {**front.caller_names(), "clip_value": "clipvalue"}})
