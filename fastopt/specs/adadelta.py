"""Adadelta, in Keras's and torch's forms."""
from ..spec import Front, Hyper, Slot, Spec, StepScalars, lr_then

ADADELTA = Spec(
    name="adadelta",
    doc="""One in-place Adadelta step: updates `param`, `square_avg` and `acc_delta`.

    ``s ← ρ·s + (1 − ρ)·g²;  δ = sqrt(d + ε)·g / sqrt(s + ε);
    d ← ρ·d + (1 − ρ)·δ²;  p ← p − lr·δ`` (ρ is torch's and Keras's
    ``rho``); each convention rounds as its library does.

    square_avg, acc_delta: the running averages of the squared gradient and
    of the squared update (Keras's ``accumulated_grad`` and
    ``accumulated_delta_var``), zeros at first.""",
    hypers=(Hyper("lr"), Hyper("rho", high=1.0), Hyper("eps")),
    slots=(Slot("square_avg", keras="accumulated_grad", torch="square_avg"),
           Slot("acc_delta", keras="accumulated_delta_var", torch="acc_delta")),
    plan=lambda h, convention: ("adadelta", (convention == "torch",)),
    scalars=lambda h, convention, step: (h.lr, h.rho, 1.0 - h.rho, h.eps),
    device=StepScalars(lambda h, convention: (h.rho, 1.0 - h.rho, h.eps), lr_then),
    keras=Front("Adadelta", "learning_rate=0.001, rho=0.95, epsilon=1e-7"),
    torch=Front("Adadelta", "lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, "
                "capturable=False, maximize=False, differentiable=False"),
)
