"""FTRL-Proximal (Keras's Ftrl)."""
from ..spec import Front, Hyper, Slot, Spec, only


def _scalars(h, convention, step):
    return (-h.lr_power, h.lr, h.l1, 2.0 * (h.l2 + h.beta / (2.0 * h.lr)),
            2.0 * h.l2_shrinkage)


def _keras_check(name):
    """Keras's message for its own check of `name` (>= 0)."""
    return (f"`{name}` needs to be positive or zero. Received: {name}={{value}}.")


FTRL = Spec(
    name="ftrl",
    doc="""One in-place FTRL-Proximal step: updates `param`, `accumulator`, `linear`.

    ``n′ ← n + g²;  z ← z + (g + 2λₛ·p) − ((n′^q − n^q)/lr)·p;
    p ← (clip(z, −λ₁, λ₁) − z) / (n′^q/lr + 2λ₂ + β/lr);  n ← n′``
    with q = −lr_power, λ₁ = l1, λ₂ = l2, λₛ = l2_shrinkage (Keras's
    ``Ftrl``; ``convention="keras"`` only).

    accumulator: n, filled with the initial accumulator value (Keras: 0.1)
    before the first step; linear: z, zeros at first.""",
    hypers=(Hyper("lr", low_open=True, why="ftrl divides by the learning rate"),
            Hyper("lr_power", -0.5, low=None, high=0.0),
            Hyper("l1", 0.0), Hyper("l2", 0.0), Hyper("l2_shrinkage", 0.0),
            Hyper("beta", 0.0, why="fastopt needs beta >= 0"),
            Hyper("initial_accumulator_value", 0.1, functional=False)),
    slots=(Slot("accumulator", keras="accumulator", init="initial_accumulator_value"),
           Slot("linear", keras="linear")),
    plan=only("keras", "ftrl", lambda h: (h.lr_power == -0.5,)),
    scalars=_scalars,
    keras=Front(
        "Ftrl", "learning_rate=0.001, learning_rate_power=-0.5, "
        "initial_accumulator_value=0.1, l1_regularization_strength=0.0, "
        "l2_regularization_strength=0.0, l2_shrinkage_regularization_strength=0.0, "
        "beta=0.0",
        names={"learning_rate_power": "lr_power", "l1_regularization_strength": "l1",
               "l2_regularization_strength": "l2",
               "l2_shrinkage_regularization_strength": "l2_shrinkage"},
        # Keras's own checks, in its words, where a value fails them.
        options={"messages": {
            "learning_rate_power": "`learning_rate_power` needs to be negative or zero. "
                                   "Received: learning_rate_power={value}.",
            **{name: _keras_check(name) for name in (
                "initial_accumulator_value", "l1_regularization_strength",
                "l2_regularization_strength", "l2_shrinkage_regularization_strength")}}}),
)
