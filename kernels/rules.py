"""Per-element update rules: the one source of each optimizer's math.

Every rule is a pure function of scalars, compiled inline into both the CPU
loop (``kernels/cpu.py``) and the CUDA kernel (``kernels/cuda.py``)::

    new_param, new_state = rule(param, grad, state, hyper, flags)

* ``state`` is always a 3-tuple (the optimizer's state slots, in the order
  its `declare` gives them); a slot the variant does not use holds a
  placeholder that the rule must ignore and return unchanged.
* ``hyper`` holds this step's scalars, already in the array's dtype: the host
  computes them (bias corrections included) so that a step never recompiles
  and no float64 arithmetic leaks into a float32 kernel.
* ``flags`` are compile-time booleans (``nesterov``, ``centered``, ...): each
  combination is its own compiled kernel, so no flag is tested per element.

The gradient transforms every optimizer shares (scaling, clipping, weight
decay) live in ``kernels/variants.py``; a rule sees the final gradient.

No rule may contain a float literal: a Python float is a float64 and would
turn float32 arithmetic into float64 on the GPU.
"""
import math
from dataclasses import dataclass

from .inlining import helper

rule = helper   # a helper of the rules (`kernels.inlining`)


@dataclass(frozen=True)
class RuleSpec:
    """What a rule needs besides its math.

    hyper: the names of its per-step scalars, in the order it unpacks them.
    slots: its state slots in order, each ``(name, flag)``: the slot holds an
           array only when `flag` is set (None: always).
    flags: the names of its compile-time flags, in the order it unpacks them.
    """

    hyper: tuple
    slots: tuple = ()
    flags: tuple = ()
    # A rule declared outside this module (`fastopt.custom`): its jitted
    # function in this calling form, its plain-Python twin (the simulator),
    # a hash of its own source (part of its kernels' cache key), the name
    # messages use, and a check run once before its first kernel is built.
    fn: object = None
    python: object = None
    fingerprint: str = None
    label: str = None
    validate: object = None


RULES = {}   # rule name -> its RuleSpec, in the order the rules are declared
# Rules declared through `fastopt.custom` (name -> RuleSpec). Kept apart from
# RULES, which lists the rules of this module (every built-in variant).
USER_RULES = {}


def spec_of(name):
    """The `RuleSpec` of the rule `name`, built in or declared by a user."""
    spec = RULES.get(name)
    return spec if spec is not None else USER_RULES.get(name)


def register(name, spec):
    """Register a rule declared outside this module under `name` (which must
    name its source: a rule whose source changes takes another name, so no
    kernel compiled from the old source is ever looked up for it)."""
    if name in RULES:
        raise ValueError(f"rule {name!r} is a built-in rule")
    known = USER_RULES.setdefault(name, spec)
    if known.fingerprint != spec.fingerprint:
        raise ValueError(f"rule {name!r} is already registered with another source")
    return known


def declare(hyper, slots=(), flags=()):
    """Declare the decorated function a rule (inlined where it is called),
    with its scalars, slots and flags (`RuleSpec`)."""
    def register(fn):
        RULES[fn.__name__] = RuleSpec(tuple(hyper), tuple(slots), tuple(flags))
        return rule(fn)
    return register


_MOMENTUM = (("momentum_buffer", None),)
_STATE_SUM = (("state_sum", None),)
_RMSPROP_SLOTS = (("square_avg", None), ("grad_avg", "centered"),
                  ("momentum_buffer", "momentum"))
_RMSPROP_FLAGS = ("centered", "momentum")


@rule
def nan_max(a, b):
    """max(a, b) that returns NaN if either is NaN, like torch.maximum."""
    if a != a or a > b:
        return a
    return b


@rule
def lerp(a, b, w, one_minus_w):
    """torch.lerp(a, b, w), formula for formula: a + w·(b − a) if w < 0.5,
    else b − (b − a)·(1 − w). The form decides how Inf becomes NaN (once a is
    infinite, a + w·(b − a) is NaN), so torch-convention rules use it where
    torch does. The host passes 1 − w (no float literal here); w < 1 − w is
    w < 0.5.
    """
    if w < one_minus_w:
        return a + w * (b - a)
    return b - (b - a) * one_minus_w


@declare(("lr",))
def sgd(p, g, s, h, f):
    """Plain SGD (both conventions): p ← p − lr·g.   h = (lr,)"""
    (lr,) = h
    return p - lr * g, s


@declare(("lr", "momentum"), _MOMENTUM, ("nesterov",))
def sgd_momentum_keras(p, g, s, h, f):
    """Keras SGD with momentum; slot 0 is the velocity m.

    m ← μ·m − lr·g;   p ← p + m   (Nesterov: p ← p + μ·m − lr·g)
    h = (lr, μ);  f = (nesterov,)
    """
    m, s1, s2 = s
    lr, mu = h
    (nesterov,) = f
    m = m * mu - g * lr
    if nesterov:
        p = p + (m * mu - g * lr)
    else:
        p = p + m
    return p, (m, s1, s2)


@declare(("lr", "buffer_decay", "buffer_grad", "momentum"), _MOMENTUM,
         ("nesterov",))
def sgd_momentum_torch(p, g, s, h, f):
    """torch SGD with momentum; slot 0 is the momentum buffer b.

    b ← c·b + d·g;   p ← p − lr·b   (Nesterov: p ← p − lr·(g + μ·b))
    with c = μ, d = 1 − dampening, except on the first step where torch sets
    b = g: the host passes c = 0, d = 1 then.
    h = (lr, c, d, μ);  f = (nesterov,)
    """
    b, s1, s2 = s
    lr, c, d, mu = h
    (nesterov,) = f
    b = c * b + d * g
    if nesterov:
        p = p - lr * (g + mu * b)
    else:
        p = p - lr * b
    return p, (b, s1, s2)


@declare(("lr", "eps"), _STATE_SUM)
def adagrad_keras(p, g, s, h, f):
    """Keras Adagrad; slot 0 is the accumulator a.

    a ← a + g²;   p ← p − lr·g / sqrt(a + ε)      h = (lr, ε)
    """
    a, s1, s2 = s
    lr, eps = h
    a = a + g * g
    p = p - (lr * g) / math.sqrt(a + eps)
    return p, (a, s1, s2)


@declare(("clr", "eps"), _STATE_SUM)
def adagrad_torch(p, g, s, h, f):
    """torch Adagrad; slot 0 is state_sum a.

    a ← a + g²;   p ← p − clr·g / (sqrt(a) + ε)
    h = (clr, ε) with clr = lr / (1 + (t − 1)·lr_decay) from the host.
    """
    a, s1, s2 = s
    clr, eps = h
    a = a + g * g
    p = p - clr * (g / (math.sqrt(a) + eps))
    return p, (a, s1, s2)


@declare(("lr", "rho", "one_minus_rho", "eps", "momentum"), _RMSPROP_SLOTS,
         _RMSPROP_FLAGS)
def rmsprop_keras(p, g, s, h, f):
    """Keras RMSprop; slots (velocity s, average gradient ḡ, momentum buf).

    s ← ρ·s + (1−ρ)·g²
    centered: ḡ ← ρ·ḡ + (1−ρ)·g;  inc = lr·g / sqrt(s − ḡ² + ε)
    else:                          inc = lr·g / sqrt(s + ε)
    momentum: buf ← μ·buf + inc;  p ← p − buf      else: p ← p − inc
    h = (lr, ρ, 1−ρ, ε, μ);  f = (centered, momentum)
    """
    sq, avg, buf = s
    lr, rho, one_minus_rho, eps, mu = h
    centered, momentum = f
    sq = rho * sq + one_minus_rho * (g * g)
    if centered:
        avg = rho * avg + one_minus_rho * g
        inc = (lr * g) / math.sqrt(sq - avg * avg + eps)
    else:
        inc = (lr * g) / math.sqrt(sq + eps)
    if momentum:
        buf = mu * buf + inc
        p = p - buf
    else:
        p = p - inc
    return p, (sq, avg, buf)


@declare(("lr", "alpha", "one_minus_alpha", "eps", "momentum"), _RMSPROP_SLOTS,
         _RMSPROP_FLAGS)
def rmsprop_torch(p, g, s, h, f):
    """torch RMSprop; slots (square_avg s, grad_avg ḡ, momentum_buffer buf).

    s ← α·s + ((1−α)·g)·g    (the product rounded as torch's addcmul does)
    centered: ḡ ← lerp(ḡ, g, 1−α);    d = sqrt(s − ḡ²) + ε
    else:                              d = sqrt(s) + ε
    momentum: buf ← μ·buf + g/d;  p ← p − lr·buf     else: p ← p − lr·g/d
    h = (lr, α, 1−α, ε, μ);  f = (centered, momentum)
    """
    sq, avg, buf = s
    lr, alpha, one_minus_alpha, eps, mu = h
    centered, momentum = f
    sq = alpha * sq + one_minus_alpha * g * g
    if centered:
        avg = lerp(avg, g, one_minus_alpha, alpha)
        d = math.sqrt(sq - avg * avg) + eps
    else:
        d = math.sqrt(sq) + eps
    if momentum:
        buf = mu * buf + g / d
        p = p - lr * buf
    else:
        p = p - lr * (g / d)
    return p, (sq, avg, buf)


@declare(("alpha", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "eps"),
         (("exp_avg", None), ("exp_avg_sq", None), ("max_exp_avg_sq", "amsgrad")),
         ("amsgrad", "torch_form"))
def adam(p, g, s, h, f):
    """Adam / AMSGrad / AdamW, both conventions; slots (m, v, v̂).

    m ← β₁·m + (1−β₁)·g;   v ← β₂·v + (1−β₂)·g²
    torch_form: torch's own forms, m ← lerp(m, g, 1−β₁) and v's product as
    torch's addcmul rounds it, ((1−β₂)·g)·g
    AMSGrad: v̂ ← max(v̂, v) and v̂ replaces v below
    p ← p − α·m / (sqrt(v) + ε′)

    The host passes α = lr·sqrt(1−β₂ᵗ)/(1−β₁ᵗ). Keras uses ε′ = ε; torch's
    form p − lr/(1−β₁ᵗ)·m / (sqrt(v)/sqrt(1−β₂ᵗ) + ε) is the same rule with
    ε′ = ε·sqrt(1−β₂ᵗ). AdamW's decoupled decay is applied before the rule.
    h = (α, β₁, 1−β₁, β₂, 1−β₂, ε′);  f = (amsgrad, torch_form)
    """
    m, v, vmax = s
    alpha, beta1, one_minus_beta1, beta2, one_minus_beta2, eps = h
    amsgrad, torch_form = f
    if torch_form:
        m = lerp(m, g, one_minus_beta1, beta1)
        v = beta2 * v + one_minus_beta2 * g * g
    else:
        m = beta1 * m + one_minus_beta1 * g
        v = beta2 * v + one_minus_beta2 * (g * g)
    if amsgrad:
        vmax = nan_max(vmax, v)
        p = p - alpha * m / (math.sqrt(vmax) + eps)
    else:
        p = p - alpha * m / (math.sqrt(v) + eps)
    return p, (m, v, vmax)


@declare(("lr", "beta1", "one_minus_beta1", "beta2", "eps", "c1"),
         (("exp_avg", None), ("exp_inf", None)), ("torch_form",))
def adamax(p, g, s, h, f):
    """Adamax, both conventions; slots (m, u): the first moment and the
    exponentially weighted infinity norm.

    keras:       m ← β₁·m + (1−β₁)·g;     u ← max(β₂·u, |g|);
                 p ← p − lr·m / (c₁·(u + ε))
    torch_form:  m ← lerp(m, g, 1−β₁);    u ← max(β₂·u, |g| + ε);
                 p ← p − lr·(m / u)      (the host passes lr/c₁ as lr)
    c₁ = 1 − β₁ᵗ. The max propagates NaN, as torch.maximum does. Keras's
    moment is written m + (g − m)(1−β₁), but its oracle keeps an infinite
    moment infinite where that form would make it NaN: it behaves as the
    form used here (the same holds for `adam`'s Keras form).
    h = (lr, β₁, 1−β₁, β₂, ε, c₁);  f = (torch_form,)
    """
    m, u, s2 = s
    lr, beta1, one_minus_beta1, beta2, eps, c1 = h
    (torch_form,) = f
    if torch_form:
        m = lerp(m, g, one_minus_beta1, beta1)
        u = nan_max(u * beta2, abs(g) + eps)
        p = p - lr * (m / u)
    else:
        m = beta1 * m + one_minus_beta1 * g
        u = nan_max(beta2 * u, abs(g))
        p = p - (lr * m) / (c1 * (u + eps))
    return p, (m, u, s2)


@declare(("lr", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2"),
         (("momentum", None),))
def lion(p, g, s, h, f):
    """Lion (Keras); slot 0 is the momentum m.

    c ← β₁·m + (1−β₁)·g;   p ← p − lr·sign(c);   m ← β₂·m + (1−β₂)·g

    sign(c)·lr is written as a choice (no float literal for ±1): p − lr for
    c > 0, p + lr for c < 0, and p unchanged when c is 0 or NaN: sign(NaN)
    is 0 in torch.sign, which Keras's torch backend runs (a NaN gradient
    leaves the param, and stays in the momentum).
    h = (lr, β₁, 1−β₁, β₂, 1−β₂)
    """
    m, s1, s2 = s
    lr, beta1, one_minus_beta1, beta2, one_minus_beta2 = h
    c = m * beta1 + g * one_minus_beta1
    if c > -c:
        p = p - lr
    elif c < -c:
        p = p + lr
    m = m * beta2 + g * one_minus_beta2
    return p, (m, s1, s2)


@declare(("lr", "grad_coef", "avg_coef", "beta1", "one_minus_beta1", "beta2",
          "one_minus_beta2", "c2", "eps"),
         (("exp_avg", None), ("exp_avg_sq", None)), ("torch_form",))
def nadam(p, g, s, h, f):
    """NAdam (torch) / Nadam (Keras); slots (m, v).

    Both: v ← β₂·v + (1−β₂)·g²;  d = sqrt(v / c₂) + ε  with c₂ = 1 − β₂ᵗ.
    torch_form:  m ← lerp(m, g, 1−β₁);   p ← p − a·g/d;  p ← p − b·m/d
                 (two roundings, as torch's two addcdiv calls), with
                 a = lr·(1−μₜ)/(1−Πₜ), b = lr·μₜ₊₁/(1−Πₜ·μₜ₊₁) from the host
                 (lr unused: 1 is passed).
    keras:       m ← β₁·m + (1−β₁)·g;   p ← p − (lr·(b·m + a·g)) / d,
                 with a = (1−μₜ)/(1−Πₜ), b = μₜ₊₁/(1−Πₜ·μₜ₊₁).
    μₜ = β₁·(1 − ½·0.96^(t·ψ)) (Keras: ψ = 1) and Πₜ = μ₁···μₜ, the running
    product the host keeps (torch's ``mu_product``, Keras's ``u_product``).
    h = (lr, a, b, β₁, 1−β₁, β₂, 1−β₂, c₂, ε);  f = (torch_form,)
    """
    m, v, s2 = s
    lr, a, b, beta1, one_minus_beta1, beta2, one_minus_beta2, c2, eps = h
    (torch_form,) = f
    if torch_form:
        m = lerp(m, g, one_minus_beta1, beta1)
        v = beta2 * v + one_minus_beta2 * g * g
        d = math.sqrt(v / c2) + eps
        p = p - a * g / d
        p = p - b * m / d
    else:
        m = beta1 * m + one_minus_beta1 * g
        v = beta2 * v + one_minus_beta2 * (g * g)
        d = math.sqrt(v / c2) + eps
        p = p - (lr * (b * m + a * g)) / d
    return p, (m, v, s2)


@declare(("decay", "eta", "mu", "one"), (("ax", None),))
def asgd(p, g, s, h, f):
    """ASGD (torch); slot 0 is the average ax.

    p ← p·(1 − λ·η);   p ← p − η·g;
    ax ← p if μ = 1, else ax + (p − ax)·μ
    with η and μ the values torch's state holds before this step (the host
    advances them after it), decay = 1 − λ·η. torch copies p into ax while
    μ is 1 (before step t0), which ``ax + (p − ax)·1`` would not reproduce
    for every value; μ is one value per call, so the branch is uniform.
    h = (1 − λ·η, η, μ, 1)
    """
    ax, s1, s2 = s
    decay, eta, mu, one = h
    p = p * decay
    p = p - eta * g
    if mu == one:
        ax = p
    else:
        ax = ax + (p - ax) * mu
    return p, (ax, s1, s2)


@declare(("power", "lr", "l1", "two_l2", "two_l2_shrinkage"),
         (("accumulator", None), ("linear", None)), ("sqrt_power",))
def ftrl(p, g, s, h, f):
    """FTRL-Proximal (Keras's ``Ftrl``); slots (accumulator n, linear z).

    n′ ← n + g²;   q = −lr_power
    z ← z + ((g + 2λₛ·p) − ((n′^q − n^q) / lr)·p)
    p ← (clip(z, −λ₁, λ₁) − z) / (n′^q / lr + 2·(λ₂ + β/(2·lr)));   n ← n′

    Keras's formula, written as its ops are: the powers are powers of n′
    and n (it keeps no σ), the quadratic divides n′^q by lr. sqrt_power
    (q = 0.5, Keras's default) takes sqrt for the power: the same value
    within one rounding (torch.pow's own result), and a vector instruction
    where the general power is a libm call per element. The clip passes NaN
    through, as torch.clip does. λₛ is l2_shrinkage.
    h = (q, lr, λ₁, 2·(λ₂ + β/(2·lr)), 2λₛ);  f = (sqrt_power,)
    """
    n, z, s2 = s
    q, lr, l1, two_l2, two_l2_shrinkage = h
    (sqrt_power,) = f
    n_new = n + g * g
    if sqrt_power:
        pow_new = math.sqrt(n_new)
        pow_old = math.sqrt(n)
    else:
        pow_new = n_new ** q
        pow_old = n ** q
    z = z + ((g + two_l2_shrinkage * p) - ((pow_new - pow_old) / lr) * p)
    clipped = z
    if z > l1:
        clipped = l1
    elif z < -l1:
        clipped = -l1
    p = (clipped - z) / (pow_new / lr + two_l2)
    return p, (n_new, z, s2)


@declare(("lr", "one_minus_beta2", "bias_correction2", "eps", "beta1",
          "one_minus_beta1", "weight", "one_minus_weight"),
         (("momentum", None), ("velocity", None)))
def schedule_free_adamw(p, g, s, h, f):
    """Schedule-Free AdamW (Keras's ``ScheduleFreeAdamW``); slots (z, v):
    the sequence the steps are taken on (Keras's ``momentum``, the param at
    first) and the second moment. The param holds y.

    v ← v + (g² − v)·(1−β₂);   z′ ← z − lr·g / (sqrt(v / c₂) + ε)
    x ← (y − (1−β₁)·z′) / β₁;   x ← (1−w)·x + w·z′;   y ← (1−β₁)·z′ + β₁·x

    c₂ = 1 − β₂ᵗ, w = 1/t, lr warmed up by the host (lr·min(t/warmup, 1)).
    x is recovered from z′, the updated z, as Keras computes it on its torch
    backend (its ``momentum_old`` is the variable's own tensor, which the
    in-place update of z has already changed).
    h = (lr, 1−β₂, c₂, ε, β₁, 1−β₁, w, 1−w)
    """
    z, v, s2 = s
    lr, one_minus_beta2, bias_correction2, eps, beta1, one_minus_beta1, w, one_minus_w = h
    v = v + (g * g - v) * one_minus_beta2
    z = z - (lr * g) / (math.sqrt(v / bias_correction2) + eps)
    x = (p - one_minus_beta1 * z) / beta1
    x = one_minus_w * x + w * z
    p = one_minus_beta1 * z + beta1 * x
    return p, (z, v, s2)


@declare(("lr", "rho", "one_minus_rho", "eps"),
         (("square_avg", None), ("acc_delta", None)), ("torch_form",))
def adadelta(p, g, s, h, f):
    """Adadelta, both conventions; slots (s, d): the running averages of the
    squared gradient and of the squared update (Keras's accumulated_grad and
    accumulated_delta_var).

    s ← ρ·s + (1−ρ)·g²
    δ = sqrt(d + ε)·g / sqrt(s + ε)
    d ← ρ·d + (1−ρ)·δ²
    p ← p − lr·δ
    torch_form: torch's roundings, δ = (sqrt(d + ε) / sqrt(s + ε))·g and
    the products as its addcmul forms them, ((1−ρ)·g)·g and ((1−ρ)·δ)·δ;
    Keras's: (sqrt(d + ε)·g) / sqrt(s + ε), (1−ρ)·(g·g) and (1−ρ)·(δ·δ).
    h = (lr, ρ, 1−ρ, ε);  f = (torch_form,)
    """
    sq, acc, s2 = s
    lr, rho, one_minus_rho, eps = h
    (torch_form,) = f
    if torch_form:
        sq = rho * sq + one_minus_rho * g * g
        delta = math.sqrt(acc + eps) / math.sqrt(sq + eps) * g
        acc = rho * acc + one_minus_rho * delta * delta
    else:
        sq = rho * sq + one_minus_rho * (g * g)
        delta = (math.sqrt(acc + eps) * g) / math.sqrt(sq + eps)
        acc = rho * acc + one_minus_rho * (delta * delta)
    p = p - lr * delta
    return p, (sq, acc, s2)


@declare(("beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "alpha", "adaptive",
          "plain", "eps"),
         (("exp_avg", None), ("exp_avg_sq", None)))
def radam(p, g, s, h, f):
    """RAdam (torch); slots (m, v).

    m ← lerp(m, g, 1−β₁);   v ← β₂·v + ((1−β₂)·g)·g
    p ← p − (α·m)·(k / (sqrt(v) + ε) + r)

    The host decides each step whether the variance is rectified (torch's
    ρₜ > 5) and passes α = lr/(1−β₁ᵗ) with, rectified, k = sqrt(1−β₂ᵗ)·rectₜ
    and r = 0, else k = 0 and r = 1 (the un-adapted step p − α·m): a blend
    of scalars, so every element runs the same instructions. With k = 0 the
    quotient is 0 for every v (ε > 0), and adding 0 or multiplying by 1 is
    exact: the un-adapted branch is torch's to the rounding.
    h = (β₁, 1−β₁, β₂, 1−β₂, α, k, r, ε)
    """
    m, v, s2 = s
    beta1, one_minus_beta1, beta2, one_minus_beta2, alpha, k, r, eps = h
    m = lerp(m, g, one_minus_beta1, beta1)
    v = beta2 * v + one_minus_beta2 * g * g
    p = p - (alpha * m) * (k / (math.sqrt(v) + eps) + r)
    return p, (m, v, s2)


@declare(("etaminus", "etaplus", "step_size_min", "step_size_max", "zero"),
         (("prev", None), ("step_size", None)))
def rprop(p, g, s, h, f):
    """Rprop (torch); slots (prev, η): the last gradient used and the
    per-element step size.

    c = g·prev
    c > 0: η ← η·η₊;   c < 0: η ← η·η₋ and g ← 0;   else (0, NaN) η kept
    η ← clamp(η, η_min, η_max)    (min then max, as torch.clamp: NaN stays)
    p ← p − sign(g)·η;   prev ← g

    sign(g)·η is written as a choice (no float literal for ±1); for g = 0 or
    NaN torch's sign is 0 and the host's zero stands for it, 0·η (NaN for an
    infinite η, as in torch). The product, not the two signs, decides, as
    torch's sign(g·prev) does (an underflowing product counts as 0).
    h = (η₋, η₊, η_min, η_max, 0)
    """
    prev, size, s2 = s
    etaminus, etaplus, size_min, size_max, zero = h
    c = g * prev
    if c > -c:
        size = size * etaplus
    elif c < -c:
        size = size * etaminus
        g = zero
    if size < size_min:
        size = size_min
    if size > size_max:
        size = size_max
    if g > -g:
        p = p - size
    elif g < -g:
        p = p + size
    else:
        p = p - zero * size
    return p, (g, size, s2)
