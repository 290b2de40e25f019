"""Adam, AMSGrad and AdamW: one rule for both conventions."""
import math

from ..spec import REQUIRED, Front, Hyper, Slot, Spec, StepScalars


def _scalars(h, convention, step):
    # Bias corrections in float64 on the host; the kernel gets the products.
    c1 = 1.0 - h.beta1 ** step
    sqrt_c2 = math.sqrt(1.0 - h.beta2 ** step)
    eps = h.eps if convention == "keras" else h.eps * sqrt_c2
    return (h.lr * sqrt_c2 / c1, h.beta1, 1.0 - h.beta1, h.beta2, 1.0 - h.beta2, eps)


def _device(t, lr, c):
    # `_scalars` from a device step and lr, in the kernel's dtype (capturable).
    one, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, torch_form = c
    c1 = one - beta1 ** t
    sqrt_c2 = math.sqrt(one - beta2 ** t)
    eps = eps * sqrt_c2 if torch_form else eps
    return (lr * sqrt_c2 / c1, beta1, one_minus_beta1, beta2, one_minus_beta2, eps)


_DEVICE = StepScalars(
    lambda h, convention: (1.0, h.beta1, 1.0 - h.beta1, h.beta2, 1.0 - h.beta2, h.eps,
                           float(convention == "torch")),
    _device)

_BETAS = {"betas": ("beta1", "beta2")}

ADAM = Spec(
    name="adam",
    doc="""One in-place Adam step: updates `param`, `exp_avg`, `exp_avg_sq` (and
    `max_exp_avg_sq` with AMSGrad).

    ``m ← β₁·m + (1 − β₁)·g;  v ← β₂·v + (1 − β₂)·g²``; AMSGrad:
    ``v̂ ← max(v̂, v)`` replaces v below. With bias corrections
    ``c₁ = 1 − β₁ᵗ, c₂ = 1 − β₂ᵗ`` (t = `step`):

    * ``"keras"``: ``p ← p − (lr·sqrt(c₂)/c₁)·m / (sqrt(v) + ε)``
    * ``"torch"``: ``p ← p − (lr/c₁)·m / (sqrt(v)/sqrt(c₂) + ε)``

    exp_avg, exp_avg_sq: first and second moments (Keras's ``momentum`` and
    ``velocity``), zeros at first; max_exp_avg_sq: required when ``amsgrad``.""",
    hypers=(Hyper("lr"), Hyper("beta1", high=1.0, high_open=True),
            Hyper("beta2", high=1.0, high_open=True),
            Hyper("eps", low_open=True, why="fastopt needs eps > 0"),
            Hyper("amsgrad", False, kind="flag")),
    slots=(Slot("exp_avg", keras="momentum", torch="exp_avg"),
           Slot("exp_avg_sq", keras="velocity", torch="exp_avg_sq"),
           Slot("max_exp_avg_sq", keras="velocity_hat", torch="max_exp_avg_sq",
                when=lambda h: h.amsgrad, arg="keyword")),
    plan=lambda h, convention: ("adam", (h.amsgrad, convention == "torch")),
    scalars=_scalars,
    device=_DEVICE,
    keras=Front("Adam", "learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, "
                "amsgrad=False"),
    torch=Front("Adam", "lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, "
                "amsgrad=False, *, foreach=None, maximize=False, capturable=False, "
                "differentiable=False, fused=None, decoupled_weight_decay=False",
                names=_BETAS),
)

ADAMW = ADAM.derive(
    name="adamw",
    doc="""One in-place AdamW step: `adam` with decoupled weight decay,
    ``p ← p·(1 − lr·wd)`` before the Adam update, in both conventions.""",
    fixed={"decoupled_weight_decay": True},
    defaults={"weight_decay": REQUIRED},
    keras=Front("AdamW", "learning_rate=0.001, weight_decay=0.004, beta_1=0.9, "
                "beta_2=0.999, epsilon=1e-7, amsgrad=False"),
    torch=Front("AdamW", "lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, "
                "amsgrad=False, *, maximize=False, foreach=None, capturable=False, "
                "differentiable=False, fused=None", names=_BETAS),
)
