"""Adagrad, in Keras's and torch's forms."""
from ..spec import Front, Hyper, Slot, Spec


def _scalars(h, convention, step):
    if convention == "torch":
        return h.lr / (1.0 + (step - 1) * h.lr_decay), h.eps
    return h.lr, h.eps


ADAGRAD = Spec(
    name="adagrad",
    doc="""One in-place Adagrad step: updates `param` and `state_sum`.

    * ``"keras"``: ``a ← a + g²;  p ← p − lr·g / sqrt(a + ε)``
    * ``"torch"``: ``a ← a + g²;  p ← p − clr·g / (sqrt(a) + ε)`` with
      ``clr = lr / (1 + (step − 1)·lr_decay)``.

    state_sum: the accumulator, filled with the initial accumulator value
    before the first step (Keras: 0.1, torch: 0).""",
    hypers=(Hyper("lr"), Hyper("eps", low_open=True, why="fastopt needs eps > 0"),
            Hyper("lr_decay", 0.0, only="torch"),
            Hyper("initial_accumulator_value", 0.0, functional=False)),
    slots=(Slot("state_sum", keras="accumulator", torch="sum",
                init="initial_accumulator_value"),),
    plan=lambda h, convention: (f"adagrad_{convention}", ()), scalars=_scalars,
    keras=Front("Adagrad", "learning_rate=0.001, initial_accumulator_value=0.1, "
                "epsilon=1e-7"),
    # torch builds the state in the constructor, from the constructor's
    # initial_accumulator_value whatever a param group says.
    torch=Front("Adagrad", "lr=1e-2, lr_decay=0, weight_decay=0, "
                "initial_accumulator_value=0, eps=1e-10, foreach=None, *, "
                "maximize=False, differentiable=False, fused=None",
                options={"eager_state": True}),
)
