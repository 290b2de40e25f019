"""Kernel variants: which rule, which compile-time flags, which state slots.

A `Variant` names everything that changes the compiled code; everything that
changes per step (learning rate, bias corrections, ...) is a runtime scalar.
`element_step(variant)` builds the per-element step both skeletons run: the
gradient transforms shared by all optimizers, then the variant's rule, reading
each array once and writing each written array once.
"""
import hashlib
import pathlib
from dataclasses import dataclass

import numba

from . import rules

# The rules' state slots, in the order a rule's state tuple holds them.
SLOTS = {
    "sgd": (),
    "sgd_momentum_keras": ("momentum_buffer",),
    "sgd_momentum_torch": ("momentum_buffer",),
    "adagrad_keras": ("state_sum",),
    "adagrad_torch": ("state_sum",),
    "rmsprop_keras": ("square_avg", "grad_avg", "momentum_buffer"),
    "rmsprop_torch": ("square_avg", "grad_avg", "momentum_buffer"),
    "adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
}
NUM_SLOTS = 3


def _source_fingerprint():
    """Hash of this package's sources: part of every CPU kernel's cache key.

    Numba's cache notices edits to the file that defines a jitted function but
    not to the functions it calls, so without this an edited rule could be
    served from a stale cache.
    """
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


FINGERPRINT = _source_fingerprint()


@dataclass(frozen=True)
class Variant:
    """One compiled specialisation of the update.

    rule:  name of a function in `kernels.rules`.
    flags: the rule's compile-time flags, e.g. ``(nesterov,)``.
    used:  which of the three state slots hold real arrays (others are
           neither read nor written).
    clip:  clip the gradient to [−c, c] (Keras ``clipvalue``).
    l2:    add ``wd·p`` to the gradient (torch's coupled weight decay).
    """

    rule: str
    flags: tuple = ()
    used: tuple = (False, False, False)
    clip: bool = False
    l2: bool = False

    def __post_init__(self):
        if self.rule not in SLOTS:
            raise ValueError(f"unknown rule {self.rule!r}")
        if len(self.used) != NUM_SLOTS:
            raise ValueError("used must have one entry per state slot")

    @property
    def key(self):
        """A string naming this variant and the kernel sources it comes from."""
        flags = "".join("1" if f else "0" for f in self.flags)
        used = "".join("1" if u else "0" for u in self.used)
        return (f"{self.rule}-f{flags}-u{used}-c{int(self.clip)}"
                f"-l{int(self.l2)}-{FINGERPRINT}")


def element_step(variant, python=False):
    """The per-element step of `variant`: ``step(i, param, grad, state, pre, hyper)``.

    ``pre = (scale, bound, wd, decay)`` drives the shared gradient transforms,
    in Keras's and torch's order::

        g ← scale·g            (loss scaling, norm clipping, torch's maximize)
        g ← clip(g, −bound, bound)         if variant.clip
        g ← g + wd·p                       if variant.l2 (coupled decay)
        p ← decay·p            (decoupled decay: decay = 1 − lr·wd, else 1)

    Multiplying by 1 is exact, so `scale` and `decay` need no flag; ``g + 0·p``
    is not (inf·0 is NaN), so coupled decay has one.

    With ``python=True`` the step and rule are plain Python, for Numba's CUDA
    simulator, which cannot call jitted functions with its device arrays.
    """
    rule = getattr(rules, variant.rule)
    if python:
        rule, jit = rule.py_func, (lambda fn: fn)
    else:
        jit = rules.rule
    flags, clip, l2 = variant.flags, variant.clip, variant.l2
    used0, used1, used2 = variant.used

    @jit
    def step(i, param, grad, state, pre, hyper):
        scale, bound, wd, decay = pre
        p = param[i]
        g = grad[i] * scale
        if clip:
            if g > bound:
                g = bound
            elif g < -bound:
                g = -bound
        if l2:
            g = g + wd * p
        p = p * decay
        # An unused slot is never loaded; the rule gets p there and ignores it.
        s0 = state[0][i] if used0 else p
        s1 = state[1][i] if used1 else p
        s2 = state[2][i] if used2 else p
        p, (s0, s1, s2) = rule(p, g, (s0, s1, s2), hyper, flags)
        param[i] = p
        if used0:
            state[0][i] = s0
        if used1:
            state[1][i] = s1
        if used2:
            state[2][i] = s2

    return step
