"""torch.optim.Adagrad on fastopt's fused kernel."""
import torch

from .. import functional
from ._base import Optimizer, _get_scalar_dtype, check, flag


class Adagrad(Optimizer):
    """Drop-in `torch.optim.Adagrad`: same arguments, defaults, update and state.

    State: ``step`` and ``sum``, created in the constructor as torch does.
    As in torch, the accumulator of every param starts at the constructor's
    `initial_accumulator_value`, whatever a param group says.

    Example::

        >>> opt = fastopt.torch.Adagrad(model.parameters(), lr=1e-2, lr_decay=1e-4)
    """

    _fallbacks = {"foreach": None, "maximize": False, "differentiable": False,
                  "fused": None}

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *,
                 maximize=False, differentiable=False, fused=None, flat=False):
        super().__init__(params, dict(
            lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, foreach=foreach,
            maximize=maximize, differentiable=differentiable, fused=fused), flat)
        for group in self.param_groups:   # torch builds the state eagerly
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
                state["sum"] = torch.full_like(p, self._fill(p),
                                               memory_format=torch.preserve_format)

    def _fill(self, p):
        value = self.defaults["initial_accumulator_value"]
        return complex(value, value) if p.is_complex() else value

    def _hyper(self, group):
        check(group["initial_accumulator_value"], "initial_accumulator_value value")
        return dict(lr=check(group["lr"], "learning rate"),
                    lr_decay=check(group["lr_decay"], "lr_decay value"),
                    weight_decay=check(group["weight_decay"], "weight_decay value"),
                    eps=check(group["eps"], "epsilon value (fastopt needs eps > 0)",
                              low_open=True),
                    maximize=flag(group["maximize"], "maximize"))

    def _slots(self, hyper, p):
        return {"sum": self._fill(p)}

    def _update(self, hyper, params, grads, state, step):
        functional.adagrad(params, grads, state["sum"], step=step,
                           convention="torch", **hyper)
