"""Rprop: per-element step sizes driven by the gradient's sign (torch)."""
from ..spec import Front, Hyper, Slot, Spec, StepScalars, constants, only


RPROP = Spec(
    name="rprop",
    doc="""One in-place Rprop step: updates `param`, `prev` and `step_size`
    (torch's ``Rprop``; ``convention="torch"`` only).

    With ``c = g·prev``: ``c > 0``: ``η ← η·η₊``; ``c < 0``: ``η ← η·η₋``
    and ``g ← 0``; then ``η ← clamp(η, step_size_min, step_size_max)``,
    ``p ← p − sign(g)·η``, ``prev ← g``.

    prev: the last gradient used, zeros at first; step_size: the step sizes
    η, filled with `lr` before the first step (torch's initial step size;
    `lr` is used for nothing else but decoupled weight decay).""",
    hypers=(Hyper("lr"),
            Hyper("etaminus", low_open=True, high=1.0, high_open=True),
            Hyper("etaplus", low=1.0, low_open=True),
            Hyper("step_size_min", low=None), Hyper("step_size_max", low=None)),
    slots=(Slot("prev", torch="prev"), Slot("step_size", torch="step_size", init="lr")),
    plan=only("torch", "rprop"),
    scalars=lambda h, convention, step: (h.etaminus, h.etaplus, h.step_size_min,
                                         h.step_size_max, 0.0),
    device=StepScalars(lambda h, convention: (h.etaminus, h.etaplus, h.step_size_min,
                                              h.step_size_max, 0.0), constants),
    torch=Front("Rprop", "lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, "
                "capturable=False, foreach=None, maximize=False, differentiable=False",
                names={"etas": ("etaminus", "etaplus"),
                       "step_sizes": ("step_size_min", "step_size_max")},
                options={"pair_errors": {"etas": "Invalid eta values: {0}, {1}"}}),
)
