"""Schedule-Free AdamW (Keras's ScheduleFreeAdamW)."""
from ..spec import PARAM, Front, Hyper, Slot, Spec, only


def _scalars(h, convention, step):
    lr = h.lr * min(step / h.warmup_steps, 1.0) if h.warmup_steps > 0 else h.lr
    weight = 1.0 / step
    return (lr, 1.0 - h.beta2, 1.0 - h.beta2 ** step, h.eps, h.beta1, 1.0 - h.beta1,
            weight, 1.0 - weight)


SCHEDULE_FREE_ADAMW = Spec(
    name="schedule_free_adamw",
    doc="""One in-place Schedule-Free AdamW step: updates `param` (y), `momentum`
    (z) and `velocity` (v).

    ``v ← v + (g² − v)(1 − β₂);  z ← z − lr′·g / (sqrt(v / (1 − β₂ᵗ)) + ε);
    x ← (y − (1 − β₁)·z) / β₁;  x ← (1 − 1/t)·x + z/t;  y ← (1 − β₁)·z + β₁·x``
    with lr′ = lr·min(t / warmup_steps, 1) (lr without warmup), t = `step`
    (Keras's ``ScheduleFreeAdamW``; ``convention="keras"`` only). x is
    recovered from the updated z, as Keras computes it on its torch backend.

    momentum: z, a copy of the param before the first step; velocity: v,
    zeros at first.""",
    hypers=(Hyper("lr"), Hyper("beta1", low_open=True, high=1.0,
                               why="schedule_free_adamw divides by beta1"),
            Hyper("beta2", high=1.0, high_open=True),
            Hyper("eps", low_open=True, why="fastopt needs eps > 0"),
            Hyper("warmup_steps", 0, kind="int")),
    slots=(Slot("momentum", keras="momentum", init=PARAM),
           Slot("velocity", keras="velocity")),
    plan=only("keras", "schedule_free_adamw"),
    scalars=_scalars,
    keras=Front("ScheduleFreeAdamW", "learning_rate=0.0025, beta_1=0.9, beta_2=0.999, "
                "epsilon=1e-8, warmup_steps=0"),
)
