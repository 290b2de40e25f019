"""One definition per optimizer: what every front end and test row derive from.

An optimizer is a `Spec` (one file per family in `fastopt/specs/`): its
hyperparameters with their bounds (`Hyper`), its state slots with each
library's names and initial value (`Slot`), how a convention picks its rule
and flags (``plan``) and derives a step's host scalars (``scalars``), and
each front end's signature (`Front`). From it come:

* the functional function (`fastopt.functional._make`), with a real signature;
* the Keras-style class (`fastopt.optimizers.base.from_spec`);
* the torch class (`fastopt.torch._base.from_spec`);
* the test-table rows (`tests/optimizer_table.py` names a spec and options).

Hyperparameters are named once, in fastopt's words (``lr``, ``beta1``,
``eps``); a `Front` maps its library's names onto them (Keras's
``learning_rate``, torch's ``betas`` pair).
"""
import functools
import inspect
import math
import numbers
from dataclasses import dataclass, field
from types import SimpleNamespace

REQUIRED = object()    # a Hyper default: the functional call must pass it
CONVENTIONS = ("keras", "torch")


class _Param:
    """`PARAM`'s type: a slot's initial value that is a copy of its param."""

    def __repr__(self):
        return "PARAM"


PARAM = _Param()   # a Slot's init: a copy of the param (Keras's ScheduleFreeAdamW)


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter, in fastopt's name.

    default: the functional default (`REQUIRED`: none). kind: "float",
    "int" (a count, kept an int), "flag" or "any" (a front end's option,
    not functional, that front end checks: Keras's Muon ``exclude_layers``). low/high (and whether open): the
    range every front end checks; `bounds` overrides them per convention
    ({"keras": {"high": 1.0}}).
    only: the one convention that has it; the other refuses any value but
    the default. why: said where a library's own check would accept more
    ("fastopt needs eps > 0"). functional: False for a front-end-only option (an initial
    state value, which the functional caller sets in its arrays).
    """

    name: str
    default: object = REQUIRED
    kind: str = "float"
    low: float = 0.0
    high: float = None
    low_open: bool = False
    high_open: bool = False
    bounds: dict = field(default_factory=dict)
    only: str = None
    functional: bool = True
    why: str = None      # why fastopt's range is narrower than a library's
    optional: bool = False   # None is a value (torch's Adafactor eps[0]: the dtype's eps)


    def check(self, fn, value, convention, label=None):
        """`value` checked for `convention` (a float, or a bool for a flag);
        messages name it `label` (default: its name) and say `fn`."""
        label = label or self.name
        if self.kind == "flag":
            return check_flag(fn, label, value)
        if self.kind == "any":    # a front end's option it checks itself
            return value
        if self.kind == "int":
            return check_int(fn, label, value, **self.range(convention))
        return check_float(fn, label, value, **self.range(convention))

    def range(self, convention):
        """``{low, high, low_open, high_open}`` under `convention`."""
        return {"low": self.low, "high": self.high, "low_open": self.low_open,
                "high_open": self.high_open, **self.bounds.get(convention, {})}


@dataclass(frozen=True)
class Slot:
    """One state array.

    name: the functional argument and kernel slot (the rule's name for it);
    keras / torch: Keras's variable name and torch's state key (None where
    that library has no such optimizer);
    init: its initial fill: a number, the name of a Hyper holding it, or
    `PARAM` (a copy of the param when the state is made);
    when: ``when(h) -> bool`` over the checked hyperparameters (None: always);
    arg: how the functional takes it: "required" (positional), "optional"
    (positional, default None) or "keyword" (keyword-only, default None).
    """

    name: str
    keras: str = None
    torch: str = None
    init: object = 0.0
    when: object = None
    arg: str = "required"
    shape: object = None
    optional: tuple = ()

    # optional: conventions under which a param whose `shape_for` is None
    # may still have an array of its own shape, the front end's choice that
    # the program routes by (Keras's Muon: a velocity for a matrix it
    # excludes, stepped with AdamW); see the passes' `having`.

    def used(self, h):
        return self.when is None or bool(self.when(h))

    def shape_for(self, param_shape, convention):
        """This slot's array shape for a param of `param_shape` (a tuple):
        the param's, unless `shape` (a program's slot:
        ``shape(param_shape, convention) -> tuple or None``, Adafactor's row
        and column factors) says otherwise. None: that param has no array in
        this slot (its entry is None, or a placeholder left untouched)."""
        if self.shape is None:
            return tuple(param_shape)
        shape = self.shape(tuple(param_shape), convention)
        return None if shape is None else tuple(shape)


@dataclass(frozen=True)
class Scalar:
    """One scalar of state kept on the host, beside the state arrays: a
    running value the step's scalars are derived from (torch's NAdam
    ``mu_product``, ASGD's ``eta`` and ``mu``; Keras's Nadam ``u_product``).

    name: the functional keyword and fastopt's name;
    keras / torch: Keras's optimizer variable (one per optimizer) and torch's
    per-param state key (a 0-d tensor of torch's scalar dtype, on the CPU);
    None where that library keeps no such value;
    init: the value before the first step: a number, or the name of a Hyper
    (ASGD's ``eta`` starts at ``lr``);
    advance: ``advance(h, convention, step, value, dtype) -> value``: the value
    after update `step` (1-based), from the value before it, computed as the
    library computes it and rounded to `dtype` (the NumPy dtype it is kept
    in: torch's state tensor's, Keras's variable's);
    memoryless: `advance` ignores `value` (a function of the step alone);
    depends: the hyperparameters `advance` reads (a derived value is
    remembered per their values);
    bounds: the range a value passed in must be in (`Hyper`'s keywords).

    The step's kernel scalars are derived from the value before the step and
    the value after it (`Spec.scalars` takes both), and the value after it is
    what the library keeps; `fastopt._hostscalars` does the bookkeeping for
    every front end.
    """

    name: str
    keras: str = None
    torch: str = None
    init: object = 1.0
    advance: object = None
    memoryless: bool = False
    depends: tuple = ()
    bounds: dict = field(default_factory=dict)

    def initial(self, h):
        """The value before the first step, under hyperparameters `h` (a
        namespace or a dict)."""
        if not isinstance(self.init, str):
            return float(self.init)
        return float(h[self.init] if isinstance(h, dict) else getattr(h, self.init))


@dataclass(frozen=True)
class StepScalars:
    """A step's scalars as a function of a step count and a learning rate
    kept in device memory: what a capturable step computes in the kernel.

    consts(h, convention) -> tuple: the floats the formula needs besides
    t and lr, from the checked hyperparameters (host, float64; cast to the
    kernel's dtype, as ``hyper`` is): the betas, eps, and any number the
    formula uses (a 1, a 2: the formula may hold no float literal, which would
    be a float64 in a float32 kernel, the rules' own constraint).
    fn(t, lr, c) -> tuple: the rule's scalars, in `Spec.scalars`'s order, for
    update t (a float of the kernel's dtype, 1-based), learning rate lr and
    c = consts(...). Written in the subset Numba compiles for both targets
    (``math.sqrt``, ``**``, ``if``); it runs as plain Python in float64 on
    the host (`host`, which the tests compare with `Spec.scalars`), compiled
    for the CPU in the arrays' dtype (a capturable call on host arrays) and
    inlined into the CUDA kernel (`kernels.capture`). One function for both
    conventions: a convention's difference is a constant.
    """

    consts: object
    fn: object

    def host(self, h, convention, step):
        """fn in float64 on the host: what `Spec.scalars` gives for `step`."""
        return tuple(self.fn(float(step), float(h.lr), self.consts(h, convention)))


def lr_then(t, lr, c):
    """`StepScalars.fn` of a step-independent rule whose scalars are lr and
    then constants (RMSprop, Adadelta)."""
    return (lr,) + c


def constants(t, lr, c):
    """`StepScalars.fn` of a rule whose scalars are all constants (Rprop:
    capturable only for its step count)."""
    return c


@dataclass(frozen=True)
class Front:
    """A front end's class: its name, its constructor's arguments after
    ``params`` (a Python signature, torch's order and defaults, or Keras's),
    and names that differ from fastopt's: ``{"learning_rate": "lr"}``, or a
    pair ``{"betas": ("beta1", "beta2")}``. Options a library has besides
    the spec's hyperparameters (torch's ``foreach``, Keras's ``weight_decay``)
    are handled by that front end's base class."""

    cls: str
    signature: str
    names: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)   # front-end specifics (see each base)

    def parameters(self):
        """The signature's `inspect.Parameter`s, in order."""
        return list(_parameters(self.signature))

    def caller_names(self):
        """fastopt's name -> this front end's, for each of its arguments
        (a pair's halves as ``betas[0]``, ``betas[1]``)."""
        out = {}
        for p in self.parameters():
            name = self.canonical(p.name)
            if isinstance(name, tuple):
                out.update({part: f"{p.name}[{i}]" for i, part in enumerate(name)})
            else:
                out[name] = p.name
        return out

    def canonical(self, name):
        """fastopt's name for this library's argument `name` (a tuple for a pair)."""
        return self.names.get(name, _COMMON_NAMES.get(name, name))

    def defaults(self):
        """This front end's defaults, by fastopt name (a pair split in two)."""
        out = {}
        for p in self.parameters():
            name = self.canonical(p.name)
            if isinstance(name, tuple):
                out.update(zip(name, p.default))
            else:
                out[name] = p.default
        return out


@functools.lru_cache(maxsize=None)
def _parameters(signature):
    """`Front.parameters` of `signature`, parsed once (a torch optimizer
    reads them at every step: parsing took ~0.1 ms of it)."""
    scope = {}
    exec(f"def f({signature}): pass", scope)   # noqa: S102 - the spec's own text
    return tuple(inspect.signature(scope["f"]).parameters.values())


# Keras's names for hyperparameters that fastopt names as torch does.
_COMMON_NAMES = {"learning_rate": "lr", "epsilon": "eps", "beta_1": "beta1",
                 "beta_2": "beta2"}


@dataclass(frozen=True)
class Spec:
    """One optimizer (see the module docstring).

    plan(h, convention) -> (rule, flags): the kernel rule of `kernels.rules`
    and its flags, from the checked hyperparameters `h` (a namespace); it
    raises ValueError for combinations the convention refuses.
    scalars(h, convention, step) -> tuple: the rule's per-step scalars, as
    Python floats, in the rule's order (computed on the host in float64); with
    host scalars (`host`), ``scalars(h, convention, step, before, after)``,
    their values before and after this step by name.
    host: the `Scalar`s of state kept on the host.
    fixed: hyperparameters this optimizer sets itself (AdamW's decoupled
    decay); they leave its signatures.
    defaults: functional defaults of the shared options that differ here
    (AdamW: weight_decay is required).
    device: a `StepScalars`: the same scalars computed in the kernel from a
    step count and learning rate in device memory (capturable steps); None
    where the optimizer has none (no capturable form).
    """

    name: str
    doc: str
    hypers: tuple
    slots: tuple
    plan: object
    scalars: object
    keras: Front = None
    torch: Front = None
    fixed: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    host: tuple = ()
    program: "Program" = None
    device: StepScalars = None

    def derive(self, **changes):
        """A spec like this one with `changes` (AdamW from Adam)."""
        return Spec(**{**self.__dict__, **changes})

    def hyper(self, name):
        for h in self.hypers + SHARED:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def arguments(self):
        """The functional's hyperparameter arguments, in signature order,
        with their defaults: the spec's own, then the shared options."""
        own = [h for h in self.hypers if h.functional]
        shared = [h for h in SHARED if h.name not in self.fixed]
        return [(h, self.defaults.get(h.name, h.default)) for h in own + shared]

    def settings(self, fn, values):
        """Check a call's hyperparameters (`values` in `arguments` order,
        then the convention): ``(variant, pre, h, convention)``, with `h` the
        checked values as a namespace. Pure: raises on a bad value."""
        from .kernels import variant

        *values, convention = values
        if convention not in CONVENTIONS:
            raise ValueError(
                f"{fn}(): convention must be 'keras' or 'torch', got {convention!r}")
        given = dict(zip([h.name for h, _ in self.arguments], values), **self.fixed)
        checked = {}
        for name, value in given.items():
            h = self.hyper(name)
            if (name in _OPTIONAL or h.optional) and value is None:
                checked[name] = None
                continue
            checked[name] = h.check(fn, value, convention)
            if h.only is not None and h.only != convention and value != h.default:
                raise ValueError(
                    f"{fn}(): {name} is a {h.only} option; use convention='{h.only}'")
        h = SimpleNamespace(**checked)
        try:
            rule, flags = self.plan(h, convention)
        except ValueError as e:
            raise ValueError(f"{fn}(): {e}") from None
        clip, l2, ema, pre = gradient_transforms(h, convention)
        if self.program is not None:   # a program's passes take the flags at run time
            if ema:
                raise ValueError(f"{fn}(): ema_momentum is not fused into {self.name}'s "
                                 "passes; keep the moving average outside the call")
            return (rule, flags), pre[:4] + (float(clip), float(l2)), h, convention
        try:
            which = variant(rule, flags, clip, l2, ema)
        except ValueError:    # a rule whose flags fill every state slot
            raise ValueError(
                f"{fn}(): ema_momentum needs a free state slot for the average, and "
                f"{self.name} with these options uses all of them") from None
        return which, pre, h, convention

    def state_names(self, h):
        """The slots `h` uses, by fastopt name."""
        return [s.name for s in self.slots if s.used(h)]


# -- programs: a step of several passes ----------------------------------------
@dataclass(frozen=True)
class Elementwise:
    """A pass over every element of the selected tensors, in one parallel
    region over the whole list (`kernels.passes`, "elementwise" shape).

    kernel: its name in `kernels.passes.ELEMENTWISE`;
    arrays: the arrays it reads and writes, in its columns' order ("param",
    "grad", or a slot's name);
    sums: the per-tensor scalars it returns (names in `Program.env`);
    reads: the per-tensor scalars it reads, the columns of its ``env``;
    select: ``select(shape, h, convention) -> bool``: the tensors it runs on
    (None: all); having: ``(slot, present)``: only the tensors that have
    (present True) or lack an array of that slot (a `Slot.optional` one)."""

    kernel: str
    arrays: tuple
    sums: tuple = ()
    reads: tuple = ()
    select: object = None
    having: tuple = None


@dataclass(frozen=True)
class Factored(Elementwise):
    """A pass over the selected tensors seen as stacks of matrices
    (..., R, C); a 1-D tensor is one 1 x n matrix. Its kernel
    (`kernels.passes.FACTORED`) reduces over rows and columns into state
    arrays of those shapes, one parallel region over every matrix of the
    list."""


@dataclass(frozen=True)
class PerTensor:
    """Host arithmetic over a list's per-tensor scalars, vectorized over the
    tensors (NumPy), between two passes: ``fn(env, info)`` reads and writes
    `env` (name -> float64 array, one entry per selected tensor); `info` has
    ``h``, ``convention``, ``hyper``, ``dtype``, ``sizes``, ``shapes``."""

    fn: object
    select: object = None
    having: tuple = None


@dataclass(frozen=True)
class MatrixFunction:
    """A matrix function of each selected tensor through its own array
    library's matmul (NumPy/BLAS on the host, torch or CuPy where the arrays
    are theirs): ``fn(xp, arrays, info)``, with `xp` the library's namespace
    (`fastopt._program.Ops`), `arrays` the tensor's arrays by name (as that
    library's arrays) and `info` as `PerTensor`'s plus ``env`` (the tensor's
    per-tensor scalars). Muon's Newton-Schulz iterations."""

    fn: object
    select: object = None
    having: tuple = None


@dataclass(frozen=True)
class Program:
    """A step that is a short program of passes (`Elementwise`, `Factored`,
    `PerTensor`, `MatrixFunction`), run over a whole list per pass by
    `fastopt._program`. env: the names of the per-tensor scalars the passes
    exchange (a float64 column each). A `Spec` with a program still has its
    ``plan`` (its flags, and the combinations a convention refuses) and
    ``scalars`` (the step's host scalars, which every pass receives;
    `dtype_scalars` finishes those that depend on the arrays' dtype, torch's
    Adafactor ε₁ = the dtype's eps). scratch: arrays the passes exchange
    besides the state (Muon's matrix to orthogonalize), made per call like
    the param, by its own library; select / refuse: the params the program
    takes at all, and the message for any other (torch's Muon: 2-D only)."""

    passes: tuple
    env: tuple = ()
    dtype_scalars: object = None   # (hyper, dtype) -> hyper: scalars that depend on it
    scratch: tuple = ()    # per-call arrays shaped as the param, in its library
    select: object = None  # (shape, h, convention) -> bool: the params it takes
    refuse: str = None     # the message for another ("{shape}": the param's)


def selected(step, shapes, info, index):
    """The positions j of `shapes` a program pass `step` runs on (the host's
    plan and the GPU's): by its `select` (``info.h``, ``info.convention``),
    and by its `having` (whether tensor ``index[j]`` of the call has an array
    of a slot: ``info.has``, a set of slot names per tensor)."""
    sel = [j for j, s in enumerate(shapes)
           if step.select is None or step.select(s, info.h, info.convention)]
    if getattr(step, "having", None) is not None:
        slot, present = step.having
        sel = [j for j in sel if (slot in info.has[index[j]]) == present]
    return sel


def only(convention, rule, flags=lambda h: ()):
    """A `Spec.plan` for an optimizer one library has: `rule` with
    ``flags(h)`` under `convention`, and under the other a ValueError that
    says whose optimizer it is."""
    library, other = (("torch", "Keras") if convention == "torch"
                      else ("Keras", "torch.optim"))

    def plan(h, given):
        if given != convention:
            raise ValueError(f"{rule} is {library}'s optimizer ({other} has none); "
                             f"use convention={convention!r}")
        return rule, flags(h)

    return plan


# -- the options every optimizer shares ---------------------------------------
SHARED = (
    Hyper("weight_decay", 0.0),
    Hyper("decoupled_weight_decay", None, kind="flag"),
    Hyper("maximize", False, kind="flag"),
    Hyper("grad_scale", 1.0),
    Hyper("clip_value", None),
    Hyper("ema_momentum", None, high=1.0),
)
_OPTIONAL = frozenset(["decoupled_weight_decay", "clip_value", "ema_momentum"])   # None: unset

# State every optimizer can keep besides its own: the moving average of the
# updated param (Keras's ``use_ema``), a keyword argument of every function.
SHARED_SLOTS = (Slot("ema", keras="average", arg="keyword"),
                Slot("model", arg="keyword"))

SHARED_DOC = """
    weight_decay: decay rate (>= 0). Decoupled (``p ← p·(1 − lr·wd)`` before
        the update, as Keras and torch's AdamW do) or coupled (``g ← g + wd·p``,
        torch's L2), per `decoupled_weight_decay`.
    decoupled_weight_decay: None picks the convention's own: True for
        ``"keras"``, False for ``"torch"``.
    maximize: ascend instead of descend (torch's ``maximize``): ``g ← −g``.
    grad_scale: multiplies the gradient first (loss-scale undo, norm clipping);
        >= 0 (use `maximize` to ascend).
    clip_value: if given, clip each gradient element to [−clip_value, clip_value]
        (Keras ``clipvalue``), after `grad_scale`.
    ema, ema_momentum: with both, ``ema ← μ·ema + (1 − μ)·param`` from the
        updated param in the same pass (Keras's ``use_ema``; μ = 0 copies the
        param, as Keras does at its first step); needs a state slot the update
        leaves free (not Adam's amsgrad, nor RMSprop centered with momentum).
    model: fp32 master weights: with a float16 or bfloat16 array (lists
        with lists), param (float32) is the master, and the updated param is
        also written, rounded to nearest, to `model` in the same pass
        (Apex's and DeepSpeed's master weights); needs a free state slot,
        like `ema`.
    stochastic_rounding, seed: round every bfloat16 store (param, state,
        model copy) stochastically instead of to nearest: unbiased, so that
        updates below bfloat16's resolution still move the param on average;
        the random bits are a hash of `seed`, `step`, the tensor's number in
        the call and the element's index: the same on the CPU and the GPU.
    found_inf, loss_scale: ``torch.amp.GradScaler``'s, for a capturable step
        (``step`` a one-element float32 array; not the multi-pass
        optimizers): one-element float32 arrays beside the params. found_inf
        nonzero: nothing is written and the count stays; loss_scale: each
        gradient divided by it first (as torch's fused kernels divide) and
        written back so divided. On a GPU the kernel reads both: no host
        synchronisation (`fastopt._capture`).
    convention: ``"keras"`` or ``"torch"``: whose update rule to follow where
        they differ.
"""


def gradient_transforms(h, convention):
    """The shared options as `kernels.variants.element_step` takes them:
    ``(clip, l2, ema, pre)``, the compile-time flags and the runtime scalars
    ``(scale, bound, wd, decay, ema_keep, ema_take)``."""
    decoupled = h.decoupled_weight_decay
    if decoupled is None:
        decoupled = convention == "keras"
    clip = h.clip_value is not None
    l2 = h.weight_decay != 0.0 and not decoupled
    decay = 1.0 - h.lr * h.weight_decay if decoupled else 1.0
    scale = -h.grad_scale if h.maximize else h.grad_scale
    ema = h.ema_momentum is not None
    keep = h.ema_momentum if ema else 0.0
    return clip, l2, ema, (scale, h.clip_value if clip else 0.0,
                           h.weight_decay if l2 else 0.0, decay, keep, 1.0 - keep)


# -- checks, one message style -------------------------------------------------
# Steps are counted in float64 by torch (state["step"]), and the host's bias
# corrections take float powers of them: past 2**53 a count is no longer exact.
MAX_STEP = 2 ** 53


def check_step(fn, step):
    if type(step) is not int and (isinstance(step, bool)
                                  or not isinstance(step, numbers.Integral)):
        raise TypeError(f"{fn}(): step must be an int, got {type(step).__name__}")
    if step < 1:
        raise ValueError(f"{fn}(): step must be >= 1 (the 1-based update count), got {step}")
    if step > MAX_STEP:
        shown = str(step) if step < 10**20 else f"an integer of {len(str(step))} digits"
        raise ValueError(f"{fn}(): step must be <= 2**53, got {shown}")


def check_flag(fn, name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{fn}(): {name} must be True or False, got {value!r}")
    return value


def check_int(fn, name, value, **bounds):
    """`value` must be an integer (not a bool) in the range; returns it as int."""
    if type(value) is not int and (isinstance(value, bool)
                                   or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{fn}(): {name} must be an int, got {type(value).__name__}")
    _check_range(fn, name, int(value), **bounds)
    return int(value)


def check_float(fn, name, value, **bounds):
    """`value` must be a finite real number in the given range; returns it as float."""
    if type(value) is not float:   # the common case skips the slow ABC check
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"{fn}(): {name} must be a real number, got {type(value).__name__}")
        value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{fn}(): {name} must be finite, got {value}")
    _check_range(fn, name, value, **bounds)
    return value


def outside(value, *, low=None, high=None, low_open=False, high_open=False):
    """Whether the number `value` is outside the range (`Hyper.range`'s
    keywords); NaN is never outside (every comparison with it is false)."""
    return ((low is not None and (value <= low if low_open else value < low))
            or (high is not None and (value >= high if high_open else value > high)))


def _check_range(fn, name, value, *, low=None, high=None, low_open=False,
                 high_open=False):
    if outside(value, low=low, high=high, low_open=low_open, high_open=high_open):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        bounds = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise ValueError(f"{fn}(): {name} must be in {bounds}, got {value}")
