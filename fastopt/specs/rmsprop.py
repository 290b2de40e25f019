"""RMSprop: plain, with momentum, centered; in Keras's and torch's forms."""
from ..spec import Front, Hyper, Slot, Spec, StepScalars, lr_then

RMSPROP = Spec(
    name="rmsprop",
    doc="""One in-place RMSprop step: updates `param` and the state it uses.

    ``s ← α·s + (1 − α)·g²`` (α is Keras's ``rho``), then

    * ``"keras"``: ``inc = lr·g / sqrt(s + ε)``, or centered
      ``ḡ ← α·ḡ + (1 − α)·g;  inc = lr·g / sqrt(s − ḡ² + ε)``;
      momentum: ``buf ← μ·buf + inc;  p ← p − buf``, else ``p ← p − inc``.
    * ``"torch"``: ``d = sqrt(s) + ε``, or centered
      ``ḡ ← ḡ + (1 − α)·(g − ḡ);  d = sqrt(s − ḡ²) + ε``;
      momentum: ``buf ← μ·buf + g/d;  p ← p − lr·buf``, else ``p ← p − lr·g/d``.

    square_avg (zeros at first); momentum_buffer, required when
    ``momentum > 0``; grad_avg, required when ``centered``.""",
    hypers=(Hyper("lr"),
            Hyper("alpha", high=1.0, why="fastopt needs 0 <= alpha <= 1"),
            Hyper("eps", low_open=True, why="fastopt needs eps > 0"),
            Hyper("momentum", 0.0), Hyper("centered", False, kind="flag")),
    slots=(Slot("square_avg", keras="velocity", torch="square_avg"),
           Slot("momentum_buffer", keras="momentum", torch="momentum_buffer",
                when=lambda h: h.momentum > 0.0, arg="keyword"),
           Slot("grad_avg", keras="average_gradient", torch="grad_avg",
                when=lambda h: h.centered, arg="keyword")),
    plan=lambda h, convention: (f"rmsprop_{convention}", (h.centered, h.momentum > 0.0)),
    scalars=lambda h, convention, step: (h.lr, h.alpha, 1.0 - h.alpha, h.eps, h.momentum),
    device=StepScalars(lambda h, convention: (h.alpha, 1.0 - h.alpha, h.eps, h.momentum),
                       lr_then),
    keras=Front("RMSprop", "learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, "
                "centered=False", names={"rho": "alpha"}),
    torch=Front("RMSprop", "lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, "
                "centered=False, capturable=False, foreach=None, maximize=False, "
                "differentiable=False"),
)
