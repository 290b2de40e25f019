"""SGD, with momentum and Nesterov, in Keras's and torch's forms."""
from ..spec import Front, Hyper, Slot, Spec


def _plan(h, convention):
    if convention == "torch" and h.nesterov and (h.momentum == 0.0 or h.dampening != 0.0):
        raise ValueError("nesterov requires momentum > 0 and dampening == 0")
    if h.momentum == 0.0:
        return "sgd", ()
    return f"sgd_momentum_{convention}", (h.nesterov,)


def _scalars(h, convention, step):
    if h.momentum == 0.0:
        return (h.lr,)
    if convention == "keras":
        return h.lr, h.momentum
    if step == 1:   # (lr, buffer decay, buffer grad, μ): torch starts b as a copy of g
        return h.lr, 0.0, 1.0, h.momentum
    return h.lr, h.momentum, 1.0 - h.dampening, h.momentum


SGD = Spec(
    name="sgd",
    doc="""One in-place SGD step: updates `param` (and `momentum_buffer`).

    Without momentum, both conventions: ``p ← p − lr·g``. With momentum:

    * ``"keras"``: ``m ← μ·m − lr·g;  p ← p + m``
      (Nesterov: ``p ← p + μ·m − lr·g``); momentum must be in [0, 1].
    * ``"torch"``: ``b ← μ·b + (1 − dampening)·g;  p ← p − lr·b``
      (Nesterov: ``p ← p − lr·(g + μ·b)``); on step 1, ``b ← g``.

    momentum_buffer: the momentum state, required when ``momentum > 0``;
    zeros before the first step. `step` starts torch's buffer.""",
    hypers=(Hyper("lr"),
            Hyper("momentum", 0.0, bounds={"keras": {"high": 1.0}}),
            Hyper("dampening", 0.0, high=1.0, only="torch"),
            Hyper("nesterov", False, kind="flag")),
    slots=(Slot("momentum_buffer", keras="momentum", torch="momentum_buffer",
                when=lambda h: h.momentum != 0.0, arg="optional"),),
    plan=_plan, scalars=_scalars,
    keras=Front("SGD", "learning_rate=0.01, momentum=0.0, nesterov=False"),
    torch=Front("SGD", "lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, "
                "*, maximize=False, foreach=None, differentiable=False, fused=None",
                # torch keeps no step count for SGD, and says this in its words
                options={"counts_steps": False, "plan_error":
                         "Nesterov momentum requires a momentum and zero dampening"}),
)
