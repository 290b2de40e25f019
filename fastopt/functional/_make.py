"""The functional function of a `fastopt.spec.Spec`, with a real signature.

``make(spec)`` writes the function's ``def`` from the spec (as `dataclasses`
writes ``__init__``): its arguments are the spec's state slots and
hyperparameters in plain keyword form, so ``help()``, ``inspect`` and a
misspelt keyword behave as for a hand-written function, and a call runs no
argument parsing of its own. Its body is one line, into `_call`.
"""
import operator

from .. import _capture, _dispatch, _hostscalars, _precision, _program, _rounding
from ..spec import MAX_STEP, PARAM, REQUIRED, SHARED_DOC, SHARED_SLOTS, check_step

_PLAIN = frozenset([float, int, bool, str, type(None)])


def remember_last(settings):
    """`settings` (a pure function of a call's hyperparameters: checks them,
    returns what the kernel call needs), remembering the last arguments it
    accepted and what it returned for them.

    A training loop passes the same hyperparameter objects every step, and
    checking them anew costs ~9 µs with cold caches, as every update between
    two training steps runs (measured on a whole `adam()` call). Arguments are
    compared by identity, not equality (``True == 1 == 1.0``, and only the
    very objects are known good), and remembered only when all are of plain
    immutable types; holding them keeps their ids from being reused. One
    tuple holds both, so that concurrent callers never pair one call's
    arguments with another's result.
    """
    last = ((), None)

    def settings_of(values):
        nonlocal last
        known, result = last
        if len(values) == len(known) and all(map(operator.is_, values, known)):
            return result
        result = settings(values)        # raises on a bad value: nothing kept
        if all([type(a) in _PLAIN for a in values]):
            last = (values, result)
        return result

    return settings_of


def make(spec, step_default=None, module="fastopt.functional"):
    """The functional function of `spec` (see the module docstring).
    step_default: the default of ``step`` (None: required), for a rule whose
    scalars do not depend on the step (`fastopt.custom`)."""
    name = spec.name

    def checked(values):
        which, pre, h, convention = spec.settings(name, values)
        # Whether the call's constants fit float32; a step's scalars are
        # compared each call (`_precision`).
        fits = _precision.fits(spec, h) and _precision.scalars_fit(pre)
        return which, pre, h, convention, fits

    settings = remember_last(checked)
    scalars, update, fit = spec.scalars, _dispatch.update, _precision.scalars_fit
    resolve, run_after = _hostscalars.resolve, _hostscalars.run_after

    if spec.program is not None:   # a step of several passes (`fastopt._program`)
        program_settings = remember_last(lambda values: spec.settings(name, values))

        def call(param, grad, states, step, values, host=None, sr=False, seed=0):
            if type(step) is not int or step < 1 or step > MAX_STEP:
                check_step(name, step)
            if sr is not False or states.get("model") is not None:
                raise ValueError(
                    f"{name}(): model= and stochastic_rounding= are options of the "
                    f"elementwise optimizers; {name} takes float32 and float64 arrays")
            plan, pre, h, convention = program_settings(values)
            _program.run(name, spec, h, convention, plan, param, grad, states, pre,
                         scalars(h, convention, step))
        return _source(spec, call, step_default, module)

    def call(param, grad, states, step, values, host=None, sr=False, seed=0,
             found_inf=None, loss_scale=None):
        if type(step) is not int or step < 1 or step > MAX_STEP:
            if _capture.is_array(step):    # a capturable step (`fastopt._capture`)
                return _capture.call(name, spec, param, grad, states, step, values, host, sr,
                                     found_inf, loss_scale)
            check_step(name, step)
        if found_inf is not None or loss_scale is not None:
            _amp_refused(name, step)
        which, pre, h, convention, fits = settings(values)
        if states["model"] is not None:    # fp32 master weights, a 16-bit copy
            try:
                which = which.with_model
            except ValueError:
                raise ValueError(
                    f"{name}(): model needs a free state slot for the copy, and "
                    f"{name} with these options uses all of them") from None
        if host is None:
            hyper, write = scalars(h, convention, step), None
        else:   # scalars of state kept on the host (`fastopt._hostscalars`)
            before, after, write = resolve(name, spec, h, convention, step, host)
            hyper = scalars(h, convention, step, before, after)
        if not (fits and fit(hyper)):    # refused if any param is float32
            _precision.check(name, spec, h, which, pre, hyper, param)
        if sr is not False:    # stochastic rounding: its key after the scalars
            if sr is not True:
                raise TypeError(f"{name}(): stochastic_rounding must be True or False, "
                                f"got {sr!r}")
            which, pre = which.with_sr, (*pre, *_rounding.key(name, seed, step))
        update(name, which, param, grad, states, pre, hyper)
        run_after(write)      # the caller's host scalars, once the kernels have run

    return _source(spec, call, step_default, module)


def _amp_refused(name, step):
    """found_inf= and loss_scale= outside a capturable step."""
    raise ValueError(f"{name}(): found_inf and loss_scale (torch.amp.GradScaler's, read on "
                     "the device) need a capturable step: step as a one-element float32 "
                     f"array, got {type(step).__name__}; with an int step, skip the call "
                     "on an overflow and pass grad_scale=1/scale")


def _source(spec, call, step_default=None, module="fastopt.functional"):
    """The function of `spec`, written from it, whose body calls `call`
    (`make`'s other arguments)."""
    name = spec.name
    positional = [s.name if s.arg == "required" else f"{s.name}=None"
                  for s in spec.slots if s.arg != "keyword"]
    keyword = ["step: int" if step_default is None else f"step: int = {step_default!r}"]
    for h, default in spec.arguments:
        keyword.append(h.name if default is REQUIRED else f"{h.name}={default!r}")
    slots = spec.slots + SHARED_SLOTS
    keyword += [f"{s.name}=None" for s in slots if s.arg == "keyword"]
    keyword += [f"{s.name}=None" for s in spec.host]
    keyword += ["stochastic_rounding=False", "seed=0"]
    if spec.program is None:    # GradScaler's, for capturable steps (`fastopt._capture`)
        keyword += ["found_inf=None", "loss_scale=None"]
    # The default convention is Keras's, or torch's for an optimizer only torch has.
    keyword.append(f"convention: str = {'keras' if spec.keras else 'torch'!r}")
    states = ", ".join(f"{s.name!r}: {s.name}" for s in slots)
    values = ", ".join([h.name for h, _ in spec.arguments] + ["convention"])
    host = (", {" + ", ".join(f"{s.name!r}: {s.name}" for s in spec.host) + "}"
            if spec.host else "")
    host = host or ", None"
    amp = ", found_inf, loss_scale" if spec.program is None else ""
    source = (f"def {name}(param, grad, {', '.join(positional + ['*'] + keyword)}) -> None:\n"
              f"    _call(param, grad, {{{states}}}, step, ({values},){host}, "
              f"stochastic_rounding, seed{amp})\n")
    scope = {"_call": call}
    exec(source, scope)     # noqa: S102 - the source is built from the spec above
    fn = scope[name]
    fn.__module__ = module
    fn.__qualname__ = name
    fn.__doc__ = _doc(spec)
    return fn


def _doc(spec):
    own = [h.name for h, _ in spec.arguments if h.name not in _SHARED_NAMES]
    slots = [s for s in spec.slots if s.arg == "required"]
    states = [s.name for s in slots]
    # The example's values: the Keras front end's defaults (torch's if none).
    defaults = (spec.keras or spec.torch).defaults()
    required = ", ".join(f"{h.name}={defaults[h.name]!r}" for h, d in spec.arguments
                         if d is REQUIRED and h.name in defaults)
    zeros = "".join(f"\n        >>> {s.name} = {_initial(s, defaults)}" for s in slots)
    call = ", ".join(["p", "g", *states, "step=1", required])
    return f"""{spec.doc}

    Args:
        param, grad: arrays of one shape and dtype (float32/float64),
            C-contiguous; or lists of such arrays (one kernel call per dtype).
        the state arrays: updated in place, like param (lists with lists).
        step: this update's 1-based count t.
        {", ".join(own)}: the hyperparameters.
{SHARED_DOC}
    Example::

        >>> p, g = np.ones(3, np.float32), np.full(3, 0.5, np.float32){zeros}
        >>> fastopt.functional.{spec.name}({call})
"""


def _initial(slot, defaults):
    """How the example makes `slot`'s array before the first step."""
    if slot.init is PARAM:
        return "p.copy()"
    value = defaults.get(slot.init, 0.0) if isinstance(slot.init, str) else slot.init
    return f"np.full_like(p, {value!r})" if value else "np.zeros_like(p)"


_SHARED_NAMES = frozenset(["weight_decay", "decoupled_weight_decay", "maximize",
                           "grad_scale", "clip_value", "ema_momentum"])
