"""The per-element formulas of the program passes: one source, inlined into
the CPU skeletons (`kernels.passes`) and the CUDA ones (`kernels.passes_cuda`),
as `kernels.rules` is for the elementwise rules.

Each formula follows its oracle's operation order and holds no float
literal (the host passes every constant, and `cast` makes the few integers
the kernel's dtype), so float32 arithmetic stays float32 on both targets.
Numba's CUDA simulator runs no intrinsic and cannot call jitted functions
with its arrays: it runs `python()`'s twins, the same bodies as plain
Python whose primitives keep NumPy scalars in their dtype.

A pass is a formula per element plus a skeleton per target that walks the
arrays; the tables at the end give each pass its formula and shape:

* `ELEMENTWISE`: ``elem(i, v0, v1, v2, v3, pre, hyper, k0, k1, a, b) -> (a, b)``:
  element i of the chunk's column views v0..v3 (a pass of fewer columns
  sees its last one repeated), the tensor's env scalars k0, k1 and the
  running sums a, b (the skeleton's accumulators: float64 on the CPU, the
  dtype on a GPU).
* `TILED`: ``elem(e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s) -> s``:
  element e (row i, column j) of rows of a matrix, with its row and column
  factors and the mean of its row factor.
* the factor passes' pieces (`factor_term`, `factor_update`), whose
  reductions each skeleton lays out for its target.
"""
import hashlib
import math
import pathlib
import types
from fractions import Fraction

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.core.extending import intrinsic

from .cpu import as_dtype_of
from .inlining import helper

formula = helper     # `kernels.inlining`


# -- primitives (their Python twins: `_PRIMITIVES`) ------------------------------
@intrinsic
def fma(typingctx, a, b, c):
    """``a·b + c`` rounded once (LLVM's fma), in the arguments' (one) float
    type. No kernel contracts on its own (`kernels.cpu`: no fastmath); where
    an oracle's CPU kernel computes with a fused multiply-add (torch's
    vectorized ``lerp`` and ``add(alpha=)``), a formula asks for one by name.
    The CUDA target lowers it to ``fma.rn``."""
    def codegen(context, builder, sig, args):
        ty = context.get_value_type(sig.return_type)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty, ty, ty]),
            f"llvm.fma.{'f32' if sig.return_type.bitwidth == 32 else 'f64'}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


@formula
def cast(x, like):
    """`x` in the dtype of scalar `like`."""
    return as_dtype_of((x,), like)[0]


@formula
def sqrt(x):
    return math.sqrt(x)


def _fma_py(a, b, c):
    """``a·b + c`` rounded once, to float32 if any of them is a NumPy
    float32 (else float64: the host passes float64 scalars as Python
    floats): the simulator's twin of the GPU's ``fma.rn``."""
    single = any(type(x) is np.float32 for x in (a, b, c))
    kind = np.float32 if single else np.float64
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        return kind(a) * kind(b) + kind(c)
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    if not single:
        return np.float64(float(exact))     # int / int: correctly rounded
    x = np.float32(float(exact))            # within one float32 ulp of the exact value
    up, down = np.float32(np.inf), np.float32(-np.inf)
    best = None
    for y in (x, np.nextafter(x, up), np.nextafter(x, down)):
        if not math.isfinite(y):
            continue
        key = (abs(Fraction(float(y)) - exact), int(np.array(y).view(np.int32)) & 1)
        if best is None or key < best[0]:
            best = (key, y)
    return best[1] if best is not None else x


def _cast_py(x, like):
    """`cast`'s twin: `like` is a NumPy scalar, or a Python float (float64)."""
    return getattr(like, "dtype", np.dtype(np.float64)).type(x)


_PRIMITIVES = {"fma": _fma_py,
               "cast": _cast_py,
               "sqrt": lambda x: type(x)(math.sqrt(x))}   # math.sqrt gives a Python float


# -- shared pieces -------------------------------------------------------------
@formula
def grad_in(g, p, pre):
    """The shared gradient transforms (`kernels.variants.element_step`):
    scale (maximize, loss scale), value clipping, coupled decay."""
    scale, bound, wd, decay, clip, l2 = pre
    g = g * scale
    if clip:
        if g > bound:
            g = bound
        elif g < -bound:
            g = -bound
    if l2:
        g = g + wd * p
    return g


@formula
def lerp(a, b, w, one_minus_w):
    """torch.lerp's formula (`kernels.rules.lerp`)."""
    if w < one_minus_w:
        return a + w * (b - a)
    return b - (b - a) * one_minus_w


@formula
def lerp_fma(a, b, w, w_minus_one, half):
    """torch's vectorized CPU lerp: ``fma(w, b − a, a)`` if |w| < ½, else
    ``fma(w − 1, b − a, b)`` (ATen's ``lerp_vec``)."""
    if abs(w) < half:
        return fma(w, b - a, a)
    return fma(w_minus_one, b - a, b)


# -- Lamb (Keras's `Lamb`; Apex FusedLAMB's two passes) -----------------------
# hyper, Keras: (lr, β₁, 1 − β₁, β₂, 1 − β₂, c₁, c₂, ε)

@formula
def lamb_update(m, v, hyper):
    """u = (m / c1) / (sqrt(v / c2) + eps), Keras's order."""
    lr, beta1, one_minus_beta1, beta2, one_minus_beta2, c1, c2, eps = hyper
    return (m / c1) / (sqrt(v / c2) + eps)


@formula
def moments(i, g, mom, vel, one_minus_beta1, one_minus_beta2):
    """Element i's Adam moments, Keras's lerp forms, stored and returned:
    ``m ← m + (g − m)·(1 − β₁)``, ``v ← v + (g² − v)·(1 − β₂)``."""
    m = mom[i]
    m = m + (g - m) * one_minus_beta1
    v = vel[i]
    v = v + (g * g - v) * one_minus_beta2
    mom[i] = m
    vel[i] = v
    return m, v


@formula
def lamb_moments(i, param, grad, mom, vel, pre, hyper, k0, k1, a, b):
    """Pass 1: ``p ← decay·p`` (read, not written), g transformed,
    ``m ← m + (g − m)·(1 − β₁)``, ``v ← v + (g² − v)·(1 − β₂)``; sums of p²
    and of u² (u as `lamb_update`)."""
    lr, beta1, one_minus_beta1, beta2, one_minus_beta2, c1, c2, eps = hyper
    p = param[i] * pre[3]
    m, v = moments(i, grad_in(grad[i], p, pre), mom, vel, one_minus_beta1, one_minus_beta2)
    u = lamb_update(m, v, hyper)
    return a + p * p, b + u * u


@formula
def lamb_apply(i, param, mom, vel, unused, pre, hyper, k0, k1, a, b):
    """Pass 2: ``p ← decay·p − k·u`` with the tensor's ``k = ratio·lr``."""
    param[i] = param[i] * pre[3] - k0 * lamb_update(mom[i], vel[i], hyper)
    return a, b


# Apex FusedLAMB's form (convention "torch"): hyper (lr, β₁, β₃, β₂, 1 − β₂,
# c₁, c₂, ε, decoupled wd); the shared decay factor is not applied (Apex adds
# wd·p to the update instead).

@formula
def lamb_update_torch(m, v, p, hyper):
    """Apex: ``(m / c₁) / (sqrt(v / c₂) + ε) + wd·p``."""
    lr, beta1, beta3, beta2, one_minus_beta2, c1, c2, eps, wd = hyper
    return (m / c1) / (sqrt(v / c2) + eps) + wd * p


@formula
def lamb_moments_torch(i, param, grad, mom, vel, pre, hyper, k0, k1, a, b):
    """Apex, pass 1: g transformed (grad_scale: the global clip; coupled
    decay), ``m ← β₁·m + β₃·g``, ``v ← β₂·v + (1 − β₂)·g·g``; sums of p² and
    u² (u as `lamb_update_torch`)."""
    lr, beta1, beta3, beta2, one_minus_beta2, c1, c2, eps, wd = hyper
    p = param[i]
    g = grad_in(grad[i], p, pre)
    m = mom[i] * beta1 + beta3 * g
    v = vel[i] * beta2 + one_minus_beta2 * g * g
    mom[i] = m
    vel[i] = v
    u = lamb_update_torch(m, v, p, hyper)
    return a + p * p, b + u * u


@formula
def lamb_apply_torch(i, param, mom, vel, unused, pre, hyper, k0, k1, a, b):
    """Apex, pass 2: ``p ← p − k·u`` with the tensor's k (lr, times the
    trust ratio)."""
    p = param[i]
    param[i] = p - k0 * lamb_update_torch(mom[i], vel[i], p, hyper)
    return a, b


# -- Adafactor (Keras's `Adafactor`, torch.optim.Adafactor) --------------------
# hyper, both conventions: (rho, beta2_t, one_minus_beta2_t, eps1, eps1_sq)
# (Keras: v ← β·v + (1 − β)·x with β = beta2_t; torch: lerp(v, x, w) with
# w = one_minus_beta2_t, and 1 − w = beta2_t.)

@formula
def factor_term(g, eps1, keras):
    """What a factor averages per element: g² + ε₁ (Keras), g² (torch)."""
    if keras:
        return g * g + eps1
    return g * g


@formula
def factor_update(f, total, n, hyper, keras):
    """A row or column factor from the `total` of its n terms: Keras
    ``β·f + (1 − β)·(total / n)``; torch ``lerp(f, ‖g‖²/n, w)``, ‖g‖² taken
    as the square of the norm (torch's ``norm(dim)``, then ``square``)."""
    rho, beta, one_minus_beta, eps1, eps1_sq = hyper
    if keras:
        return beta * f + one_minus_beta * (total / n)
    norm = sqrt(total)
    return lerp(f, norm * norm / n, one_minus_beta, beta)


@formula
def rsqrt_at_least(v, floor, g):
    """torch: ``rsqrt(max(v, ε₁²))·g``."""
    if v < floor:
        v = floor
    return (cast(1, g) / sqrt(v)) * g


@formula
def torch_estimate(ri, cj, mean_r, eps1_sq, g):
    """torch: ``rsqrt(max((r_i·c_j) / mean_r, ε₁²))·g``."""
    return rsqrt_at_least((ri * cj) / mean_r, eps1_sq, g)


@formula
def adafactor_vector(i, param, grad, vel, pre, hyper, a, b, keras):
    """Pass 1 of a vector: Keras ``v ← β·v + (1 − β)·(g² + ε₁)``,
    ``u = g / sqrt(v)``; torch ``v ← lerp(v, g², w)``,
    ``u = rsqrt(max(v, ε₁²))·g``; sums p² and u²."""
    rho, beta, one_minus_beta, eps1, eps1_sq = hyper
    p = param[i] * pre[3]
    g = grad_in(grad[i], p, pre)
    if keras:
        v = beta * vel[i] + one_minus_beta * (g * g + eps1)
        u = g / sqrt(v)
    else:
        v = lerp(vel[i], g * g, one_minus_beta, beta)
        u = rsqrt_at_least(v, eps1_sq, g)
    vel[i] = v
    if not keras:   # torch's alpha reads the param before its decay
        p = param[i]
    return a + p * p, b + u * u


@formula
def adafactor_vector_keras(i, param, grad, vel, unused, pre, hyper, k0, k1, a, b):
    return adafactor_vector(i, param, grad, vel, pre, hyper, a, b, True)


@formula
def adafactor_vector_torch(i, param, grad, vel, unused, pre, hyper, k0, k1, a, b):
    return adafactor_vector(i, param, grad, vel, pre, hyper, a, b, False)


@formula
def adafactor_apply_vector_torch(i, param, grad, vel, unused, pre, hyper, k0, k1, a, b):
    """torch, last pass of a vector: ``p ← decay·p + k·u``."""
    p = param[i] * pre[3]
    g = grad_in(grad[i], p, pre)
    param[i] = p + k0 * rsqrt_at_least(vel[i], hyper[4], g)
    return a, b


@formula
def adafactor_apply_keras(i, param, grad, vel, unused, pre, hyper, k0, k1, a, b):
    """Keras, last pass (every tensor): ``p ← decay·p − α·((g / sqrt(v)) / denom)``
    with the tensor's α (k0) and denom (k1)."""
    p = param[i] * pre[3]
    g = grad_in(grad[i], p, pre)
    param[i] = p - k0 * ((g / sqrt(vel[i])) / k1)
    return a, b


@formula
def adafactor_velocity_keras(e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s):
    """Keras, pass 2 of a matrix: ``v ← (r_i / mean(r))·c_j`` (written, as
    Keras keeps it) and the sum of u² with ``u = g / sqrt(v)``."""
    v = (row[i] / mean_r) * col[j]
    vel[e] = v
    g = grad_in(grad[e], param[e] * pre[3], pre)
    u = g / sqrt(v)
    return s + u * u


@formula
def adafactor_rms_torch(e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s):
    """torch, pass 2 of a matrix: the sum of u² (u from the factors)."""
    g = grad_in(grad[e], param[e] * pre[3], pre)
    u = torch_estimate(row[i], col[j], mean_r, hyper[4], g)
    return s + u * u


@formula
def adafactor_apply_torch(e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s):
    """torch, pass 3 of a matrix: ``p ← decay·p + k·u`` with the tensor's
    ``k = −α/denom``."""
    p = param[e] * pre[3]
    g = grad_in(grad[e], p, pre)
    param[e] = p + k0 * torch_estimate(row[i], col[j], mean_r, hyper[4], g)
    return s


# -- Muon (torch.optim.Muon): the elementwise parts around Newton-Schulz -------
# hyper: (w, w − 1, momentum, momentum − 1, nesterov, ½) with w = 1 − momentum
# (the buffer's lerp weight). torch's CPU lerp and add(alpha=) fuse their
# multiply-adds, and Newton-Schulz in bfloat16 turns a one-ulp difference in
# its input into a bfloat16 rounding of its own: these passes fuse them too.

@formula
def muon_momentum(i, param, grad, buf, out, pre, hyper, k0, k1, a, b):
    """Pass 1: ``B ← lerp(B, g, 1 − μ)`` and the matrix to orthogonalize,
    ``lerp(g, B, μ)`` (Nesterov) or B, into the scratch array."""
    w, w_minus_one, mu, mu_minus_one, nesterov, half = hyper
    g = grad_in(grad[i], param[i] * pre[3], pre)
    m = lerp_fma(buf[i], g, w, w_minus_one, half)
    buf[i] = m
    if nesterov:
        out[i] = lerp_fma(g, m, mu, mu_minus_one, half)
    else:
        out[i] = m
    return a, b


@formula
def scaled_add(i, param, upd, unused0, unused1, pre, hyper, k0, k1, a, b):
    """The apply of a computed update: ``p ← fma(k, u, decay·p)``, torch's
    ``mul_(decay)`` then ``add_(u, alpha=k)``."""
    param[i] = fma(k0, upd[i], param[i] * pre[3])
    return a, b


# Keras's Muon: hyper (μ, μ − 1, nesterov, lr, rms_rate, β₁, 1 − β₁, β₂,
# 1 − β₂, α, ε, AdamW's decay 1 − lr·adam_wd); Keras's ops, no fma

@formula
def muon_momentum_keras(i, param, grad, buf, out, pre, hyper, k0, k1, a, b):
    """Keras, pass 1 of a Muon param: ``m ← m + (g + m·(μ − 1))`` and the
    matrix to orthogonalize, ``g + μ·m`` (Nesterov) or m."""
    mu, mu_minus_one, nesterov = hyper[0], hyper[1], hyper[2]
    g = grad_in(grad[i], param[i] * pre[3], pre)
    m = buf[i]
    m = m + (g + m * mu_minus_one)
    buf[i] = m
    if nesterov:
        out[i] = g + mu * m
    else:
        out[i] = m
    return a, b


@formula
def muon_apply_keras(i, param, upd, unused0, unused1, pre, hyper, k0, k1, a, b):
    """Keras, last pass of a Muon param: ``p ← decay·p − ((lr·O)·s)·rms_rate``
    with the tensor's ``s = sqrt(max(rows, cols))`` (s and rms_rate 1
    without rms scaling)."""
    lr, rms_rate = hyper[3], hyper[4]
    param[i] = param[i] * pre[3] - ((lr * upd[i]) * k0) * rms_rate
    return a, b


@formula
def muon_adamw_keras(i, param, grad, mom, vel, pre, hyper, k0, k1, a, b):
    """Keras, the AdamW step of the params Muon excludes:
    ``p ← (1 − lr·adam_wd)·p``, ``m ← m + (g − m)·(1 − β₁)``,
    ``v ← v + (g² − v)·(1 − β₂)``, ``p ← p − (m·α) / (sqrt(v) + ε)`` with
    ``α = lr·adam_lr_ratio·sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ)``."""
    one_minus_beta1, one_minus_beta2 = hyper[6], hyper[8]
    alpha, eps, decay = hyper[9], hyper[10], hyper[11]
    p = param[i] * decay
    m, v = moments(i, grad_in(grad[i], p, pre), mom, vel, one_minus_beta1, one_minus_beta2)
    param[i] = p - (m * alpha) / (sqrt(v) + eps)
    return a, b


# -- the passes -----------------------------------------------------------------
# name: (columns, sums, env columns read); the formula is the function of
# that name. Columns, in the order a spec's pass lists its arrays:
# lamb_moments* param, grad, m, v; lamb_apply* param, m, v; adafactor_vector_*
# and adafactor_apply_* param, grad, velocity; muon_momentum* param, grad,
# buffer, scratch; scaled_add and muon_apply_keras param, update;
# muon_adamw_keras param, grad, momentum, velocity.
ELEMENTWISE = {"lamb_moments": (4, 2, 0), "lamb_apply": (3, 0, 1),
               "lamb_moments_torch": (4, 2, 0), "lamb_apply_torch": (3, 0, 1),
               "adafactor_vector_keras": (3, 2, 0), "adafactor_vector_torch": (3, 2, 0),
               "adafactor_apply_vector_torch": (3, 0, 1), "adafactor_apply_keras": (3, 0, 2),
               "muon_momentum": (4, 0, 0), "scaled_add": (2, 0, 1),
               "muon_momentum_keras": (4, 0, 0), "muon_apply_keras": (2, 0, 1),
               "muon_adamw_keras": (4, 0, 0)}
# name: (the velocity column or -1, sums, torch's mean: at least ε₁).
# Columns: param, grad, row factor, column factor (and Keras's velocity).
TILED = {"adafactor_velocity_keras": (4, 1, False),
         "adafactor_rms_torch": (-1, 1, True),
         "adafactor_apply_torch": (-1, 0, True)}
# The factor passes (name: Keras's form), columns param, grad, row, col.
FACTOR = {"adafactor_factor_keras": True, "adafactor_factor_torch": False}

# This module's source: part of the CPU kernels' cache keys (`kernels.passes`),
# as Numba's cache checks the caller's file alone.
FINGERPRINT = hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:16]

_python = None


def python():
    """The formulas as plain Python (for the simulator): each one's body,
    its primitives and the formulas it calls replaced by their twins."""
    global _python
    if _python is None:
        space = dict(globals())
        space.update(_PRIMITIVES)
        for name, obj in globals().items():
            if isinstance(obj, numba.core.registry.CPUDispatcher) and name not in _PRIMITIVES:
                f = obj.py_func
                space[name] = types.FunctionType(f.__code__, space, f.__name__, f.__defaults__,
                                                 f.__closure__)
        _python = types.SimpleNamespace(**space)
    return _python


def jitted():
    """The formulas as Numba compiles them (either target)."""
    return types.SimpleNamespace(**globals())
