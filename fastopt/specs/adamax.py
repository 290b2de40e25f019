"""Adamax: Adam with an exponentially weighted infinity norm."""
from ..spec import Front, Hyper, Slot, Spec, StepScalars


def _scalars(h, convention, step):
    c1 = 1.0 - h.beta1 ** step
    lr = h.lr / c1 if convention == "torch" else h.lr
    return lr, h.beta1, 1.0 - h.beta1, h.beta2, h.eps, c1


def _device(t, lr, c):
    # `_scalars` from a device step and lr, in the kernel's dtype (capturable).
    one, beta1, one_minus_beta1, beta2, eps, torch_form = c
    c1 = one - beta1 ** t
    return (lr / c1 if torch_form else lr), beta1, one_minus_beta1, beta2, eps, c1


_BETAS = {"betas": ("beta1", "beta2")}

ADAMAX = Spec(
    name="adamax",
    doc="""One in-place Adamax step: updates `param`, `exp_avg` and `exp_inf`.

    With ``c₁ = 1 − β₁ᵗ`` (t = `step`):

    * ``"keras"``: ``m ← β₁·m + (1 − β₁)·g;  u ← max(β₂·u, |g|);
      p ← p − lr·m / (c₁·(u + ε))``
    * ``"torch"``: ``m ← lerp(m, g, 1 − β₁);  u ← max(β₂·u, |g| + ε);
      p ← p − (lr/c₁)·m / u``

    exp_avg, exp_inf: the first moment and the infinity norm (Keras's
    ``momentum`` and ``norm``), zeros at first.""",
    hypers=(Hyper("lr"), Hyper("beta1", high=1.0, high_open=True),
            Hyper("beta2", high=1.0, high_open=True), Hyper("eps")),
    slots=(Slot("exp_avg", keras="momentum", torch="exp_avg"),
           Slot("exp_inf", keras="norm", torch="exp_inf")),
    plan=lambda h, convention: ("adamax", (convention == "torch",)),
    scalars=_scalars,
    device=StepScalars(lambda h, convention: (1.0, h.beta1, 1.0 - h.beta1, h.beta2, h.eps,
                                              float(convention == "torch")), _device),
    keras=Front("Adamax", "learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7"),
    torch=Front("Adamax", "lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, "
                "foreach=None, *, maximize=False, differentiable=False, capturable=False",
                names=_BETAS),
)
