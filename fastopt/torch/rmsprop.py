"""torch.optim.RMSprop on fastopt's fused kernel."""
from .. import functional
from ._base import Optimizer, check, flag


class RMSprop(Optimizer):
    """Drop-in `torch.optim.RMSprop`: same arguments, defaults, update and state.

    State: ``step``, ``square_avg``; ``momentum_buffer`` with momentum > 0;
    ``grad_avg`` when centered.

    Example::

        >>> opt = fastopt.torch.RMSprop(model.parameters(), lr=1e-3, centered=True)
    """

    _fallbacks = {"momentum": 0, "centered": False, "foreach": None,
                  "maximize": False, "differentiable": False, "capturable": False}

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0,
                 momentum=0, centered=False, capturable=False, foreach=None,
                 maximize=False, differentiable=False, *, flat=False):
        super().__init__(params, dict(
            lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
            weight_decay=weight_decay, capturable=capturable, foreach=foreach,
            maximize=maximize, differentiable=differentiable), flat)

    def _hyper(self, group):
        return dict(lr=check(group["lr"], "learning rate"),
                    eps=check(group["eps"], "epsilon value (fastopt needs eps > 0)",
                              low_open=True),
                    momentum=check(group["momentum"], "momentum value"),
                    weight_decay=check(group["weight_decay"], "weight_decay value"),
                    alpha=check(group["alpha"], "alpha value (fastopt needs 0 <= alpha <= 1)",
                                high=1.0),
                    centered=flag(group["centered"], "centered"),
                    maximize=flag(group["maximize"], "maximize"))

    def _slots(self, hyper, p):
        slots = {"square_avg": 0}
        if hyper["momentum"] > 0:
            slots["momentum_buffer"] = 0
        if hyper["centered"]:
            slots["grad_avg"] = 0
        return slots

    def _update(self, hyper, params, grads, state, step):
        functional.rmsprop(params, grads, state["square_avg"], step=step,
                           momentum_buffer=state.get("momentum_buffer"),
                           grad_avg=state.get("grad_avg"), convention="torch", **hyper)
