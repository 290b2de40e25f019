"""torch.optim.SGD on fastopt's fused kernel."""
from .. import functional
from ._base import Optimizer, check, flag


class SGD(Optimizer):
    """Drop-in `torch.optim.SGD`: same arguments, defaults, update and state.

    State: ``momentum_buffer`` (only with momentum != 0), started as a copy of
    the first gradient, as torch does. No step counter (torch keeps none).

    Example::

        >>> opt = fastopt.torch.SGD(model.parameters(), lr=0.1, momentum=0.9)
    """

    _counts_steps = False
    _fallbacks = {"nesterov": False, "maximize": False, "foreach": None,
                  "differentiable": False, "fused": False}

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None,
                 differentiable=False, fused=None, flat=False):
        super().__init__(params, dict(
            lr=lr, momentum=momentum, dampening=dampening,
            weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
            foreach=foreach, differentiable=differentiable, fused=fused), flat)

    def _hyper(self, group):
        hyper = dict(lr=check(group["lr"], "learning rate"),
                     momentum=check(group["momentum"], "momentum value"),
                     dampening=check(group["dampening"], "dampening value", high=1.0),
                     weight_decay=check(group["weight_decay"], "weight_decay value"),
                     nesterov=flag(group["nesterov"], "nesterov"),
                     maximize=flag(group["maximize"], "maximize"))
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        return hyper

    def _slots(self, hyper, p):
        return {"momentum_buffer": 0} if hyper["momentum"] != 0 else {}

    def _update(self, hyper, params, grads, state, step):
        functional.sgd(params, grads, state.get("momentum_buffer"), step=step,
                       convention="torch", **hyper)
