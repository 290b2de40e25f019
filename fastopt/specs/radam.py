"""RAdam: Adam with its variance rectified (torch)."""
import math

from ..spec import Front, Hyper, Slot, Spec, StepScalars, only


def _scalars(h, convention, step):
    # torch's own host arithmetic, in float64: the same ρₜ, so the same
    # steps are rectified.
    c1 = 1.0 - h.beta1 ** step
    c2 = 1.0 - h.beta2 ** step
    rho_inf = 2.0 / (1.0 - h.beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * (h.beta2 ** step) / c2
    if rho_t > 5.0:
        rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) ** 0.5
        adaptive, plain = math.sqrt(c2) * rect, 0.0
    else:
        adaptive, plain = 0.0, 1.0
    return (h.beta1, 1.0 - h.beta1, h.beta2, 1.0 - h.beta2, h.lr / c1, adaptive, plain,
            h.eps)


def _device(t, lr, c):
    # `_scalars` from a device step and lr, in the kernel's dtype (capturable).
    one, two, four, five, zero, beta1, one_minus_beta1, beta2, one_minus_beta2, rho_inf, \
        eps = c
    c1 = one - beta1 ** t
    beta2_t = beta2 ** t
    c2 = one - beta2_t
    rho_t = rho_inf - two * t * beta2_t / c2
    if rho_t > five:
        rect = math.sqrt((rho_t - four) * (rho_t - two) * rho_inf
                         / ((rho_inf - four) * (rho_inf - two) * rho_t))
        adaptive, plain = math.sqrt(c2) * rect, zero
    else:
        adaptive, plain = zero, one
    return (beta1, one_minus_beta1, beta2, one_minus_beta2, lr / c1, adaptive, plain, eps)


RADAM = Spec(
    name="radam",
    doc="""One in-place RAdam step: updates `param`, `exp_avg` and `exp_avg_sq`
    (torch's ``RAdam``; ``convention="torch"`` only).

    ``m ← lerp(m, g, 1 − β₁);  v ← β₂·v + (1 − β₂)·g²``. With
    ``c₁ = 1 − β₁ᵗ, c₂ = 1 − β₂ᵗ``, ``ρ∞ = 2/(1 − β₂) − 1`` and
    ``ρₜ = ρ∞ − 2t·β₂ᵗ/c₂`` (t = `step`): if ``ρₜ > 5``,
    ``p ← p − (lr/c₁)·m·rₜ·sqrt(c₂)/(sqrt(v) + ε)`` with the rectification
    ``rₜ = sqrt((ρₜ − 4)(ρₜ − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρₜ))``, else
    ``p ← p − (lr/c₁)·m``. Weight decay is L2 unless
    `decoupled_weight_decay` (``p ← p·(1 − lr·wd)``, torch's RAdamW form).

    exp_avg, exp_avg_sq: the first and second moments, zeros at first.""",
    hypers=(Hyper("lr"), Hyper("beta1", high=1.0, high_open=True),
            Hyper("beta2", high=1.0, high_open=True),
            Hyper("eps", low_open=True, why="fastopt needs eps > 0")),
    slots=(Slot("exp_avg", torch="exp_avg"), Slot("exp_avg_sq", torch="exp_avg_sq")),
    plan=only("torch", "radam"), scalars=_scalars,
    device=StepScalars(lambda h, convention: (1.0, 2.0, 4.0, 5.0, 0.0, h.beta1,
                                              1.0 - h.beta1, h.beta2, 1.0 - h.beta2,
                                              2.0 / (1.0 - h.beta2) - 1.0, h.eps),
                       _device),
    torch=Front("RAdam", "lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, "
                "decoupled_weight_decay=False, *, foreach=None, maximize=False, "
                "capturable=False, differentiable=False",
                names={"betas": ("beta1", "beta2")}),
)
