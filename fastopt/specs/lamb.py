"""Lamb: Adam's update scaled per tensor by a trust ratio ‖p‖ / ‖u‖ (Keras).

A program of two passes (`fastopt.spec.Program`), Apex FusedLAMB's layout:
the moments and both norms in one pass, the trust-ratio apply in the next,
each over the whole list in one parallel region.
"""
import numpy as np

from ..spec import Elementwise, Front, Hyper, PerTensor, Program, Slot, Spec, only


def _scalars(h, convention, step):
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


LAMB = Spec(
    name="lamb",
    doc="""One in-place Lamb step: updates `param`, `exp_avg`, `exp_avg_sq`.

    ``m ← m + (g − m)·(1 − β₁);  v ← v + (g² − v)·(1 − β₂);
    u = (m / c₁) / (sqrt(v / c₂) + ε)`` with ``c₁ = 1 − β₁ᵗ, c₂ = 1 − β₂ᵗ``;
    per tensor ``r = ‖p‖ / ‖u‖`` (1 if either norm is 0) and
    ``p ← p − r·lr·u`` (Keras's ``Lamb``; ``convention="keras"`` only).
    Two passes over memory: the moments and both norms, then the apply.

    exp_avg, exp_avg_sq: the moments (Keras's ``momentum``, ``velocity``),
    zeros at first.""",
    hypers=(Hyper("lr"), Hyper("beta1", high=1.0, high_open=True),
            Hyper("beta2", high=1.0, high_open=True),
            Hyper("eps", low_open=True, why="fastopt needs eps > 0")),
    slots=(Slot("exp_avg", keras="momentum"), Slot("exp_avg_sq", keras="velocity")),
    plan=only("keras", "lamb"),
    scalars=_scalars,
    program=Program(
        passes=(Elementwise("lamb_moments", ("param", "grad", "exp_avg", "exp_avg_sq"),
                            sums=("w2", "u2")),
                PerTensor(_trust_ratio),
                Elementwise("lamb_apply", ("param", "exp_avg", "exp_avg_sq"),
                            reads=("k",))),
        env=("w2", "u2", "k")),
    keras=Front("Lamb", "learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7"),
)
