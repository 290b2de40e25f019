"""Kernel variants: which rule, which compile-time flags, which state slots.

A `Variant` names everything that changes the compiled code; everything that
changes per step (learning rate, bias corrections, ...) is a runtime scalar.
`element_step(variant)` builds the per-element step both skeletons run: the
gradient transforms shared by all optimizers, then the variant's rule, reading
each array once and writing each written array once.
"""
import functools
import hashlib
import itertools
import pathlib
from dataclasses import dataclass

import numba
import numpy as np

from . import rules, storage as _storage
from .rules import RULES, spec_of

PRE = ("scale", "bound", "wd", "decay", "ema_keep", "ema_take")   # see element_step
assert len(PRE) == _storage.NUM_PRE    # a stochastic-rounding key follows them
NUM_SLOTS = 3
# Every kernel takes its arrays as these columns: param, grad, then the state
# slots (an unused slot repeats param's address and is never touched).
NUM_ARRAYS = 2 + NUM_SLOTS


def _source_fingerprint(folder=pathlib.Path(__file__).parent):
    """Hash of every kernel source (each ``*.py`` of this package, by name
    and content): part of every CPU kernel's cache key.

    Numba's cache notices edits to the file that defines a jitted function
    but not to the functions it calls or inlines (the rules, the element
    step, the loops of `kernels.cpu` and `kernels.multi_cpu` that
    `fastopt._hostscan` inlines), so without this an edited source could be
    served from a stale cache. Hashing the whole package, not a list of
    files, means a new source file cannot be left out.
    """
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


FINGERPRINT = _source_fingerprint()


@dataclass(frozen=True, eq=False)
class Variant:
    """One compiled specialisation of the update.

    Made by `variant()`, which returns one object per set of fields, so that
    equality is identity and hashing is C's: a variant keys every kernel
    cache, and a generated ``__hash__`` would run Python code on every call.

    rule:  name of a function in `kernels.rules` (a key of `RULES`).
    flags: the rule's compile-time flags, in `RULES[rule].flags` order.
    clip:  clip the gradient to [−c, c] (Keras ``clipvalue``).
    l2:    add ``wd·p`` to the gradient (torch's coupled weight decay).
    ema:   keep a moving average of the updated param (Keras's ``use_ema``)
           in the first state slot the rule leaves free.
    storage: () for arrays of one float dtype, the math's; else the
           ``(param, grad, state)`` formats of `kernels.storage` (float32
           math, 16-bit columns converted at each load and store), and with
           `model` a fourth, the model copy's.
    model: fp32 master weights (Apex's and DeepSpeed's): param is the
           float32 master, and the updated param is also written, rounded
           to nearest, to a 16-bit model copy in the first state slot left
           free (after the moving average's, if any), in the same pass.
    sr:    stochastic rounding of every bfloat16 store (`kernels.storage`;
           the call appends its key to ``pre``).
    capture: None, or a capturable step's scalar function
           (`fastopt.spec.StepScalars`, ``fn(t, lr, consts) -> hyper``): the
           CUDA kernel reads the step count and the learning rate from
           device memory, computes the rule's scalars itself and advances
           the count in the same launch (`kernels.capture`).
    unscale: torch's fused loss-scale undo (``torch.amp.GradScaler``): the
           gradient divided by one more ``pre`` scalar (the scale; the
           capturable CUDA kernel puts it there from device memory), in
           the math's dtype as torch's fused kernels divide, before every
           other transform, and written back so divided (torch's fused
           steps leave ``.grad`` unscaled).
    """

    rule: str
    flags: tuple = ()
    clip: bool = False
    l2: bool = False
    ema: bool = False
    storage: tuple = ()
    model: bool = False
    sr: bool = False
    capture: object = None
    unscale: bool = False

    def __post_init__(self):
        if self.storage and (len(self.storage) != 3 + self.model
                             or not set(self.storage) <= set(_storage.FORMATS)
                             or (self.model and not _storage.is16(self.storage[3]))):
            raise ValueError(f"storage {self.storage!r}: expected (param, grad, state"
                             f"{', model' if self.model else ''}) formats of "
                             f"{_storage.FORMATS}{' (model 16-bit)' if self.model else ''}")
        spec = spec_of(self.rule)
        if spec is None:
            raise ValueError(f"unknown rule {self.rule!r}")
        if len(self.flags) != len(spec.flags):
            raise ValueError(f"rule {self.rule!r} takes flags {spec.flags}, "
                             f"got {self.flags!r}")
        if self.ema and None not in self.rule_slots:
            raise ValueError(f"rule {self.rule!r} with flags {self.flags} uses all "
                             f"{NUM_SLOTS} state slots: none is left for a moving "
                             "average")
        if self.model and self.rule_slots.count(None) < 1 + self.ema:
            raise ValueError(f"rule {self.rule!r} with flags {self.flags} leaves no "
                             "state slot free for the model copy")

    def __reduce__(self):   # unpickled as the interned object, not a twin of it
        return variant, (self.rule, self.flags, self.clip, self.l2, self.ema,
                         self.storage, self.model, self.sr, self.capture, self.unscale)

    def stored(self, storage):
        """This variant with arrays stored in `storage` (() for native)."""
        return variant(self.rule, self.flags, self.clip, self.l2, self.ema,
                       tuple(storage), self.model, self.sr, self.capture, self.unscale)

    @functools.cached_property
    def with_model(self):
        """This variant writing a 16-bit model copy (`model`); ValueError
        if no state slot is free for it."""
        return variant(self.rule, self.flags, self.clip, self.l2, self.ema,
                       self.storage, True, self.sr, self.capture, self.unscale)

    @functools.cached_property
    def with_sr(self):
        """This variant rounding its bfloat16 stores stochastically (`sr`)."""
        return variant(self.rule, self.flags, self.clip, self.l2, self.ema,
                       self.storage, self.model, True, self.capture, self.unscale)

    def captured(self, fn):
        """This variant with its scalars computed in the kernel by `fn`
        (`capture`)."""
        return variant(self.rule, self.flags, self.clip, self.l2, self.ema,
                       self.storage, self.model, self.sr, fn, self.unscale)

    @functools.cached_property
    def with_unscale(self):
        """This variant dividing the gradient by a loss scale (`unscale`)."""
        return variant(self.rule, self.flags, self.clip, self.l2, self.ema,
                       self.storage, self.model, self.sr, self.capture, True)

    @functools.cached_property
    def num_pre(self):
        """How many ``pre`` scalars the kernel takes from the host: `PRE`'s,
        then a stochastic-rounding key's two, then `unscale`'s divisor."""
        return len(PRE) + 2 * self.sr + self.unscale

    @functools.cached_property
    def spec(self):
        """The rule's `kernels.rules.RuleSpec` (built in or a user's)."""
        return spec_of(self.rule)

    @functools.cached_property
    def rule_slots(self):
        """The names of the rule's state slots holding arrays, None for the others."""
        spec = self.spec
        on = dict(zip(spec.flags, self.flags))
        names = [name if flag is None or on[flag] else None
                 for name, flag in spec.slots]
        return tuple(names + [None] * (NUM_SLOTS - len(names)))

    @functools.cached_property
    def ema_slot(self):
        """The slot holding the moving average (the rule's first free one), or -1."""
        return self.rule_slots.index(None) if self.ema else -1

    @functools.cached_property
    def model_slot(self):
        """The slot holding the 16-bit model copy (the first free one after
        the moving average's), or -1."""
        if not self.model:
            return -1
        names = list(self.rule_slots)
        if self.ema:
            names[self.ema_slot] = "ema"
        return names.index(None)

    @functools.cached_property
    def slots(self):
        """The names of the kernel's state slots holding arrays (the rule's,
        ``"ema"`` and ``"model"``), None for the others."""
        names = list(self.rule_slots)
        if self.ema:
            names[self.ema_slot] = "ema"
        if self.model:
            names[self.model_slot] = "model"
        return tuple(names)

    @functools.cached_property
    def columns(self):
        """The `kernels.storage` format of each kernel column (param, grad,
        the three slots), () for a native variant: a slot holds the state's
        format, the model copy's its own."""
        if not self.storage:
            return ()
        cols = [*self.storage[:2], *[self.storage[2]] * NUM_SLOTS]
        if self.model:
            cols[2 + self.model_slot] = self.storage[3]
        return tuple(cols)

    @functools.cached_property
    def slot_reasons(self):
        """Why each used slot is needed, for messages: " when amsgrad=True"."""
        reasons = [f" when {flag}=True" if flag else ""
                   for _, flag in self.spec.slots]
        reasons += [""] * (NUM_SLOTS - len(reasons))
        if self.ema:
            reasons[self.ema_slot] = " when ema_momentum is set"
        if self.model:
            reasons[self.model_slot] = " for master weights"
        return tuple(reasons)

    @functools.cached_property
    def used(self):
        return tuple(name is not None for name in self.slots)

    @functools.cached_property
    def key(self):
        """A string naming this variant and the kernel sources it comes from."""
        flags = "".join("1" if f else "0" for f in self.flags)
        # A user's rule adds the hash of its own source (`RuleSpec.fingerprint`).
        own = self.spec.fingerprint
        return (f"{self.rule}-f{flags}-c{int(self.clip)}-l{int(self.l2)}"
                f"{'-ema' if self.ema else ''}{'-model' if self.model else ''}{'-sr' if self.sr else ''}"
                f"{'-s' + '.'.join(self.storage) if self.storage else ''}"
                f"{'-cap.' + self.capture.__module__ + '.' + self.capture.__qualname__ if self.capture else ''}"
                f"{'-unscale' if self.unscale else ''}"
                f"{'-' + own if own else ''}-{FINGERPRINT}")


@functools.lru_cache(maxsize=None)
def variant(rule, flags=(), clip=False, l2=False, ema=False, storage=(), model=False,
            sr=False, capture=None, unscale=False):
    """The one `Variant` object for these fields (its derived fields are cached).

    Cached twice: by the arguments as passed (the fast lookup every step
    makes), then by their normal form, so that ``variant("sgd")`` and
    ``variant("sgd", (), False, False, False)`` are the same object.
    """
    return _interned(rule, tuple(map(bool, flags)), bool(clip), bool(l2), bool(ema),
                     tuple(storage), bool(model), bool(sr), capture, bool(unscale))


_interned = functools.lru_cache(maxsize=None)(Variant)


def all_variants():
    """Every variant there is: each rule with each combination of its flags,
    gradient transforms and (where a slot is free) moving average."""
    for rule, spec in RULES.items():
        for flags in itertools.product((False, True), repeat=len(spec.flags)):
            for clip, l2 in itertools.product((False, True), repeat=2):
                yield variant(rule, flags, clip, l2)
                if None in variant(rule, flags).rule_slots:
                    yield variant(rule, flags, clip, l2, ema=True)


def element_step(variant, python=False, gathered=False, host=False):
    """The per-element step of `variant`: ``step(i, param, grad, state, pre, hyper)``.

    host=True: the step of a CPU kernel, whose 16-bit conversions may use
    the CPU's own instructions (`kernels.storage.codec`), the same bits.

    gathered=True: ``step(i, j, param, grad, state, pre, hyper)``, the same
    update of element i of param and state from element j of grad (the rows
    a sparse gradient touches, `kernels.rows`); the dense step is this one
    with j = i, inlined.

    ``pre`` (named in `PRE`) drives the shared gradient transforms,
    in Keras's and torch's order::

        g ← scale·g            (loss scaling, norm clipping, torch's maximize)
        g ← clip(g, −bound, bound)         if variant.clip
        g ← g + wd·p                       if variant.l2 (coupled decay)
        p ← decay·p            (decoupled decay: decay = 1 − lr·wd, else 1)

    then the rule, then, if variant.ema, the moving average of the new p in
    the slot `Variant.ema_slot` names: ``e ← keep·e + take·p`` (Keras:
    keep = μ, take = 1 − μ, and keep = 0, take = 1 at its first step).

    Multiplying by 1 is exact, so `scale` and `decay` need no flag; ``g + 0·p``
    is not (inf·0 is NaN), so coupled decay has one.

    Arrays stored in 16 bits (``variant.storage``) are converted at each
    load and store (`kernels.storage`); the math is float32. ``rnd`` (the
    last argument) is ``(base, start)``: the chunk's base of the random bits
    of stochastic rounding and the chunk's first index in its tensor
    (ignored unless ``variant.sr``).

    With ``python=True`` the step and rule are plain Python, for Numba's CUDA
    simulator, which cannot call jitted functions with its device arrays.
    """
    spec = variant.spec
    if spec.validate is not None:    # a user's rule: checked once, then built
        spec.validate()
    if spec.fn is not None:
        rule = spec.python if python else spec.fn
    else:
        rule = getattr(rules, variant.rule)
        rule = rule.py_func if python else rule
    jit = (lambda fn: fn) if python else rules.rule
    flags, clip, l2 = variant.flags, variant.clip, variant.l2
    used0, used1, used2 = (name is not None for name in variant.rule_slots)
    ema0, ema1, ema2 = (variant.ema_slot == k for k in range(NUM_SLOTS))
    model0, model1, model2 = (variant.model_slot == k for k in range(NUM_SLOTS))
    if variant.model and len(variant.storage) != 4:
        raise ValueError(f"variant {variant.key}: a model copy needs its storage")
    (lp, _), (lg, sg), (ls, ss) = (_storage.codec(f, python, host)
                                   for f in variant.storage[:3] or (None,) * 3)
    # Every store takes the value's random bits, ``(x, r) -> bits``: under
    # stochastic rounding bfloat16's rounds with them, any other store (and
    # every store without it, r = 0) ignores them, and LLVM drops their
    # computation.
    sr = variant.sr
    fmts = variant.storage or ("f32",) * 3
    rp, rs = (_storage.store_r(f, sr, python, host) for f in (fmts[0], fmts[2]))
    rm = _storage.store_r(fmts[3] if variant.model else None, sr, python, host)
    mix, u64 = _storage.mix(python), (np.uint64 if python else numba.uint64)
    low32 = _storage.to32(python)
    u32 = np.uint64 if python else numba.uint32
    # torch's fused GradScaler unscale (`Variant.unscale`): its divisor
    # follows the other pre scalars.
    unscale, divisor = variant.unscale, len(PRE) + 2 * variant.sr
    if unscale and gathered:
        raise ValueError(f"variant {variant.key}: a gathered step cannot write its "
                         "gradient back unscaled (its rows repeat)")

    @jit
    def at(i, j, param, grad, state, pre, hyper, rnd):
        # pre may carry a stochastic-rounding key after the `PRE` scalars.
        scale, bound, wd, decay, keep, take = pre[0], pre[1], pre[2], pre[3], pre[4], pre[5]
        p = lp(param[i])
        g = lg(grad[j])
        if unscale:   # torch's order: divided, stored, then maximize and the rest
            g = g / pre[divisor]
            grad[j] = sg(g)
        g = g * scale
        if clip:
            if g > bound:
                g = bound
            elif g < -bound:
                g = -bound
        if l2:
            g = g + wd * p
        p = p * decay
        # An unused slot is never loaded; the rule gets p there and ignores it.
        s0 = ls(state[0][i]) if used0 else p
        s1 = ls(state[1][i]) if used1 else p
        s2 = ls(state[2][i]) if used2 else p
        p, (s0, s1, s2) = rule(p, g, (s0, s1, s2), hyper, flags)
        # rnd: the chunk's base (`kernels.storage.rnd_base`) and where it
        # starts in its tensor: e = rnd[1] + i is the element's index. All in
        # 32 bits (`kernels.storage.mix32`).
        r = mix(low32(rnd[0] + u64(rnd[1] + i))) if sr else u32(0)
        param[i] = rp(p, r)
        if used0:
            state[0][i] = rs(s0, r >> u32(16))
        if used1:
            state[1][i] = rs(s1, mix(r ^ u32(1)))
        if used2:
            state[2][i] = rs(s2, mix(r ^ u32(2)))
        # The moving average of the updated param, from the value just
        # computed: the pass that wrote p reads no array again for it.
        if ema0:
            state[0][i] = ss(ls(state[0][i]) * keep + p * take)
        if ema1:
            state[1][i] = ss(ls(state[1][i]) * keep + p * take)
        if ema2:
            state[2][i] = ss(ls(state[2][i]) * keep + p * take)
        # Master weights: the 16-bit model copy of the float32 master just
        # written (stochastically rounded under `sr`); never read.
        if model0:
            state[0][i] = rm(p, mix(r ^ u32(3)))
        if model1:
            state[1][i] = rm(p, mix(r ^ u32(3)))
        if model2:
            state[2][i] = rm(p, mix(r ^ u32(3)))

    if gathered:
        return at

    @jit
    def step(i, param, grad, state, pre, hyper, rnd):
        at(i, i, param, grad, state, pre, hyper, rnd)

    return step
