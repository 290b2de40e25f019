"""Adafactor: a factored second moment (row and column means of g² for each
matrix; a full one for vectors) and an RMS-clipped, RMS-scaled update
(Keras's ``Adafactor``, torch.optim.Adafactor).

A program of passes (`fastopt.spec.Program`), each over every tensor of
its kind in one parallel region: the row and column reductions of g² and
the factor updates in one pass per matrix (Keras: then the velocity it
keeps and the update's norm; torch: the update's norm from the factors),
the vectors' moment and norms in one elementwise pass, host arithmetic per
tensor (α and the clipping denominator), then the apply.
"""
import math

import numpy as np

from ..spec import Elementwise, Factored, Front, Hyper, PerTensor, Program, Slot, Spec


def _matrix(shape, h, convention):
    return len(shape) >= 2


def _vector(shape, h, convention):
    return len(shape) < 2


def _row_shape(shape, convention):
    if len(shape) < 2:
        return None     # Keras: a 0-d placeholder variable; torch: none
    return shape[:-1] if convention == "keras" else shape[:-1] + (1,)


def _col_shape(shape, convention):
    if len(shape) < 2:
        return None
    return (shape[:-2] + shape[-1:] if convention == "keras"
            else shape[:-2] + (1,) + shape[-1:])


def _variance_shape(shape, convention):
    # Keras keeps a full-size velocity for every variable; torch for vectors only.
    return shape if convention == "keras" or len(shape) < 2 else None


def _scalars(h, convention, step):
    """(rho, beta2_t, 1 − beta2_t, eps1, eps1²)."""
    t = float(step)
    if convention == "keras":
        lr = min(h.lr, 1.0 / math.sqrt(t)) if h.relative_step else h.lr
        rho = min(lr, 1.0 / math.sqrt(t))
        beta = 1.0 - t ** h.beta2_decay
        return (rho, beta, 1.0 - beta, h.eps1, 0.0)
    w = t ** h.beta2_decay
    rho = min(h.lr, 1.0 / (t ** 0.5))
    eps1 = -1.0 if h.eps1 is None else h.eps1      # -1: the dtype's eps (below)
    return (rho, 1.0 - w, w, eps1, eps1 * eps1)


def _dtype_scalars(hyper, dtype):
    if hyper[3] == -1.0:     # torch: eps1=None is the dtype's eps
        eps1 = float(np.finfo(dtype).eps)
        return hyper[:3] + (eps1, eps1 * eps1)
    return hyper


def _scale(env, info):
    """α and the clipping denominator of each tensor, as each library
    computes them (Keras in the variable's dtype; torch in Python floats
    from norms computed in the dtype)."""
    h, dtype, n = info.h, info.dtype, info.sizes.astype(np.float64)
    rho = info.hyper[0]
    if info.convention == "keras":
        one = dtype.type(1)
        rms_p = np.sqrt((env["w2"].astype(dtype) / n.astype(dtype)).astype(dtype))
        alpha = np.maximum(dtype.type(h.eps2), rms_p) * dtype.type(rho)
        rms_u = np.sqrt((env["u2"].astype(dtype) / n.astype(dtype)).astype(dtype))
        env["alpha"] = alpha.astype(dtype)
        env["denom"] = np.maximum(one, rms_u / dtype.type(h.clip_threshold)).astype(dtype)
    else:
        norm_p = np.sqrt(env["w2"].astype(dtype)).astype(np.float64)
        alpha = np.maximum(h.eps2, norm_p / np.sqrt(n)) * rho
        norm_u = np.sqrt(env["u2"].astype(dtype)).astype(np.float64)
        denom = np.maximum(1.0, norm_u / (np.sqrt(n) * h.clip_threshold))
        env["alpha"] = -alpha / denom


_KERAS_NAMES = {"beta_2_decay": "beta2_decay", "epsilon_1": "eps1", "epsilon_2": "eps2"}

ADAFACTOR = Spec(
    name="adafactor",
    doc="""One in-place Adafactor step: updates `param` and its second
    moment: `row_var` and `col_var` for params of 2 or more dimensions
    (the last two factored), `variance` otherwise (Keras also keeps a
    full-size `variance`, its ``velocity``, for every param).

    With t = `step`, ``ρ = min(lr, 1/√t)``, ``β = 1 − t^beta2_decay``:

    * ``"keras"``: ``r ← β·r + (1 − β)·mean_C(g² + ε₁)``, ``c`` likewise over
      rows, ``v = (r / mean(r))·c`` (vectors: ``v ← β·v + (1 − β)·(g² + ε₁)``);
      ``u = g / √v``, ``p ← p − max(ε₂, rms(p))·ρ · u / max(1, rms(u)/clip_threshold)``
      (``relative_step``: lr first capped at 1/√t).
    * ``"torch"``: ``r ← lerp(r, ‖g_row‖²/C, 1 − β)``, ``c`` likewise,
      ``v = r·c / max(mean(r), ε₁)`` (vectors: ``v ← lerp(v, g², 1 − β)``);
      ``u = g / √max(v, ε₁²)``, ``p ← p − max(ε₂, ‖p‖/√n)·ρ · u /
      max(1, ‖u‖/(√n·d))``, α from the param before the decay
      (``clip_threshold`` is torch's ``d``; ``eps1=None``: the dtype's eps).

    Weight decay is decoupled in both (``p ← p·(1 − lr·wd)``).""",
    hypers=(Hyper("lr"), Hyper("beta2_decay", -0.8, low=None, high=0.0),
            Hyper("eps1", optional=True), Hyper("eps2"),
            Hyper("clip_threshold", 1.0, low_open=True, bounds={"torch": {"low": 1.0, "low_open": False}}),
            Hyper("relative_step", True, kind="flag", only="keras")),
    slots=(Slot("row_var", keras="_r", torch="row_var", shape=_row_shape),
           Slot("col_var", keras="_c", torch="col_var", shape=_col_shape),
           Slot("variance", keras="velocity", torch="variance", shape=_variance_shape)),
    plan=lambda h, convention: ("adafactor", ()),
    scalars=_scalars,
    fixed={"decoupled_weight_decay": True},
    program=Program(
        passes=(
            # Keras
            Factored("adafactor_factor_keras", ("param", "grad", "row_var", "col_var"),
                     sums=("w2",), select=lambda s, h, c: c == "keras" and len(s) >= 2),
            Factored("adafactor_velocity_keras",
                     ("param", "grad", "row_var", "col_var", "variance"), sums=("u2",),
                     select=lambda s, h, c: c == "keras" and len(s) >= 2),
            Elementwise("adafactor_vector_keras", ("param", "grad", "variance"),
                        sums=("w2", "u2"), select=lambda s, h, c: c == "keras" and len(s) < 2),
            # torch
            Factored("adafactor_factor_torch", ("param", "grad", "row_var", "col_var"),
                     sums=("w2",), select=lambda s, h, c: c == "torch" and len(s) >= 2),
            Factored("adafactor_rms_torch", ("param", "grad", "row_var", "col_var"),
                     sums=("u2",), select=lambda s, h, c: c == "torch" and len(s) >= 2),
            Elementwise("adafactor_vector_torch", ("param", "grad", "variance"),
                        sums=("w2", "u2"), select=lambda s, h, c: c == "torch" and len(s) < 2),
            PerTensor(_scale),
            Elementwise("adafactor_apply_keras", ("param", "grad", "variance"),
                        reads=("alpha", "denom"), select=lambda s, h, c: c == "keras"),
            Factored("adafactor_apply_torch", ("param", "grad", "row_var", "col_var"),
                     reads=("alpha",), select=lambda s, h, c: c == "torch" and len(s) >= 2),
            Elementwise("adafactor_apply_vector_torch", ("param", "grad", "variance"),
                        reads=("alpha",), select=lambda s, h, c: c == "torch" and len(s) < 2)),
        env=("w2", "u2", "alpha", "denom"),
        dtype_scalars=_dtype_scalars),
    keras=Front("Adafactor", "learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, "
                "epsilon_2=1e-3, clip_threshold=1.0, relative_step=True",
                names=_KERAS_NAMES, options={"state_lists": {"row_var": "_r",
                                                             "col_var": "_c"}}),
    torch=Front("Adafactor", "lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, "
                "weight_decay=0.0, *, foreach=None, maximize=False",
                names={"eps": ("eps1", "eps2"), "d": "clip_threshold"},
                options={"messages": {   # torch's own words
                    "lr": "Learning rate should be >= 0 but is: {}",
                    "beta2_decay": "beta2_decay should be <= 0 but is: {}",
                    "eps1": "epsilon1 should be >= 0 but is: {}",
                    "eps2": "epsilon2 should be >= 0 but is: {}",
                    "clip_threshold": "Clipping threshold d should be >= 1 but is: {}",
                    "weight_decay": "weight_decay should be >= 0 but is: {}"}}),
)
