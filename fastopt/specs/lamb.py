"""Lamb: Adam's update scaled per tensor by a trust ratio ‖p‖ / ‖u‖ (Keras's
``Lamb``; on the torch side, Apex's ``FusedLAMB``, the common torch form).

A program of two passes (`fastopt.spec.Program`), Apex FusedLAMB's layout:
the moments and both norms in one pass, the trust-ratio apply in the next,
each over the whole list in one parallel region. The apply pass recomputes
the update from the moments (Apex stores it in the gradient's memory).
"""
import numpy as np

from ..spec import Elementwise, Front, Hyper, PerTensor, Program, Slot, Spec, only


def _scalars(h, convention, step):
    if convention == "torch":
        # (lr, β₁, β₃, β₂, 1 − β₂, c₁, c₂, ε, decoupled wd) as Apex's kernel:
        # β₃ = 1 − β₁ with grad_averaging, else 1; c = 1 without bias_correction
        c1, c2 = ((1.0 - h.beta1 ** step, 1.0 - h.beta2 ** step) if h.bias_correction
                  else (1.0, 1.0))
        decoupled = bool(h.decoupled_weight_decay)
        return (h.lr, h.beta1, 1.0 - h.beta1 if h.grad_averaging else 1.0, h.beta2,
                1.0 - h.beta2, c1, c2, h.eps, h.weight_decay if decoupled else 0.0)
    return (h.lr, h.beta1, 1.0 - h.beta1, h.beta2, 1.0 - h.beta2,
            1.0 - h.beta1 ** step, 1.0 - h.beta2 ** step, h.eps)


def _trust_ratio(env, info):
    """``ratio = ‖p‖ / ‖u‖`` (1 where either norm is 0), as Keras computes
    it in the variable's dtype; ``k = ratio·lr``, the apply pass's scale."""
    dtype = info.dtype
    w = np.sqrt(env["w2"].astype(dtype))
    u = np.sqrt(env["u2"].astype(dtype))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(w > 0, np.where(u > 0, w / u, dtype.type(1)), dtype.type(1))
    env["k"] = ratio.astype(dtype) * dtype.type(info.h.lr)


def _trust_ratio_torch(env, info):
    """Apex's stage 2: ``k = lr·‖p‖/‖u‖`` where the tensor's weight decay is
    not 0 or `use_nvlamb` (lr where either norm is 0), else ``k = lr``;
    norms in the tensors' dtype (Apex: float32)."""
    h, dtype = info.h, info.dtype
    lr = dtype.type(h.lr)
    if not (h.use_nvlamb or h.weight_decay != 0.0):
        env["k"] = np.full(len(info.sizes), float(lr))
        return
    w = np.sqrt(env["w2"].astype(dtype))
    u = np.sqrt(env["u2"].astype(dtype))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where((w != 0) & (u != 0), lr * (w / u), lr)
    env["k"] = k.astype(dtype)


def _keras(shape, h, convention):
    return convention == "keras"


def _torch(shape, h, convention):
    return convention == "torch"


LAMB = Spec(
    name="lamb",
    doc="""One in-place Lamb step: updates `param`, `exp_avg`, `exp_avg_sq`.

    ``u = (m / c₁) / (sqrt(v / c₂) + ε)`` with ``c₁ = 1 − β₁ᵗ, c₂ = 1 − β₂ᵗ``,
    and per tensor a trust ratio ``r = ‖p‖ / ‖u‖`` (1 if either norm is 0):

    * ``"keras"`` (Keras's ``Lamb``): ``m ← m + (g − m)·(1 − β₁);
      v ← v + (g² − v)·(1 − β₂)``; decoupled decay first (``p ← p·(1 − lr·wd)``),
      then ``p ← p − r·lr·u``.
    * ``"torch"`` (Apex's ``FusedLAMB``): ``m ← β₁·m + β₃·g`` (β₃ = 1 − β₁,
      or 1 without `grad_averaging`); ``v ← β₂·v + (1 − β₂)·g²``; c₁ = c₂ = 1
      without `bias_correction`; decoupled decay (Apex's ``adam_w_mode``) adds
      ``wd·p`` to u, coupled adds it to g; ``p ← p − r·lr·u``, with r = 1
      where weight_decay is 0 unless `use_nvlamb`. Apex's global gradient-norm
      clip (``max_grad_norm``) is the torch class's: it passes the factor as
      `grad_scale`.

    Two passes over memory: the moments and both norms, then the apply.

    exp_avg, exp_avg_sq: the moments (Keras's ``momentum``, ``velocity``),
    zeros at first.""",
    hypers=(Hyper("lr"), Hyper("beta1", high=1.0, high_open=True),
            Hyper("beta2", high=1.0, high_open=True),
            Hyper("eps", low_open=True, why="fastopt needs eps > 0"),
            Hyper("bias_correction", True, kind="flag", only="torch"),
            Hyper("grad_averaging", True, kind="flag", only="torch"),
            Hyper("use_nvlamb", False, kind="flag", only="torch"),
            # the torch class's own options (Apex's constructor)
            Hyper("amsgrad", False, kind="flag", functional=False, only="torch"),
            Hyper("set_grad_none", True, kind="flag", functional=False, only="torch"),
            Hyper("max_grad_norm", 1.0, optional=True, low_open=True, functional=False,
                  only="torch")),
    slots=(Slot("exp_avg", keras="momentum", torch="exp_avg"),
           Slot("exp_avg_sq", keras="velocity", torch="exp_avg_sq")),
    plan=lambda h, convention: ("lamb", ()),
    scalars=_scalars,
    program=Program(
        passes=(Elementwise("lamb_moments", ("param", "grad", "exp_avg", "exp_avg_sq"),
                            sums=("w2", "u2"), select=_keras),
                Elementwise("lamb_moments_torch", ("param", "grad", "exp_avg", "exp_avg_sq"),
                            sums=("w2", "u2"), select=_torch),
                PerTensor(_trust_ratio, select=_keras),
                PerTensor(_trust_ratio_torch, select=_torch),
                Elementwise("lamb_apply", ("param", "exp_avg", "exp_avg_sq"),
                            reads=("k",), select=_keras),
                Elementwise("lamb_apply_torch", ("param", "exp_avg", "exp_avg_sq"),
                            reads=("k",), select=_torch)),
        env=("w2", "u2", "k")),
    keras=Front("Lamb", "learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7"),
    torch=Front("Lamb", "lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6, "
                "weight_decay=0.01, amsgrad=False, adam_w_mode=True, grad_averaging=True, "
                "set_grad_none=True, max_grad_norm=1.0, use_nvlamb=False",
                names={"betas": ("beta1", "beta2"), "adam_w_mode": "decoupled_weight_decay"},
                options={
                    # Apex keeps these on the optimizer, not in its param groups
                    "attributes": ("amsgrad", "adam_w_mode", "set_grad_none", "use_nvlamb"),
                    "group_step": True,            # Apex counts steps per group
                    "global_clip": "max_grad_norm",
                    "zero_grad_none": "set_grad_none",
                    "refuse": {"amsgrad": (True, "FusedLAMB does not support the AMSGrad "
                                                 "variant.")}}),
)
