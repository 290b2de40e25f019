"""Lion: the sign of an interpolation of momentum and gradient (Keras)."""
from ..spec import Front, Hyper, Slot, Spec, only


LION = Spec(
    name="lion",
    doc="""One in-place Lion step: updates `param` and `momentum`.

    ``c ← β₁·m + (1 − β₁)·g;  p ← p − lr·sign(c);  m ← β₂·m + (1 − β₂)·g``
    (Keras's ``Lion``; ``convention="keras"`` only).

    momentum: the moment m (Keras's ``momentum``), zeros at first.""",
    hypers=(Hyper("lr"), Hyper("beta1", low=0.0, low_open=True, high=1.0),
            Hyper("beta2", high=1.0)),
    slots=(Slot("momentum", keras="momentum"),),
    plan=only("keras", "lion"),
    scalars=lambda h, convention, step: (h.lr, h.beta1, 1.0 - h.beta1,
                                         h.beta2, 1.0 - h.beta2),
    keras=Front("Lion", "learning_rate=0.001, beta_1=0.9, beta_2=0.99"),
)
