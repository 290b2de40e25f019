"""torch.optim.Adam and AdamW on fastopt's fused kernel."""
from .. import functional
from ._base import Optimizer, check, flag


class Adam(Optimizer):
    """Drop-in `torch.optim.Adam`: same arguments, defaults, update and state.

    State: ``step``, ``exp_avg``, ``exp_avg_sq``; ``max_exp_avg_sq`` with
    AMSGrad. ``decoupled_weight_decay=True`` is AdamW.

    Example::

        >>> opt = fastopt.torch.Adam(model.parameters(), lr=1e-3)
    """

    _fallbacks = {"amsgrad": False, "maximize": False, "foreach": None,
                  "capturable": False, "differentiable": False,
                  "decoupled_weight_decay": False, "fused": None}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0, amsgrad=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, flat=False):
        super().__init__(params, dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
            amsgrad=amsgrad, maximize=maximize, foreach=foreach,
            capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay), flat)

    def _hyper(self, group):
        beta1, beta2 = group["betas"]
        return dict(lr=check(group["lr"], "learning rate"),
                    eps=check(group["eps"], "epsilon value (fastopt needs eps > 0)",
                              low_open=True),
                    beta1=check(beta1, "beta parameter at index 0", high=1.0,
                                high_open=True),
                    beta2=check(beta2, "beta parameter at index 1", high=1.0,
                                high_open=True),
                    weight_decay=check(group["weight_decay"], "weight_decay value"),
                    amsgrad=flag(group["amsgrad"], "amsgrad"),
                    maximize=flag(group["maximize"], "maximize"),
                    decoupled_weight_decay=flag(group["decoupled_weight_decay"],
                                                "decoupled_weight_decay"))

    def _slots(self, hyper, p):
        slots = {"exp_avg": 0, "exp_avg_sq": 0}
        if hyper["amsgrad"]:
            slots["max_exp_avg_sq"] = 0
        return slots

    def _update(self, hyper, params, grads, state, step):
        functional.adam(params, grads, state["exp_avg"], state["exp_avg_sq"],
                        max_exp_avg_sq=state.get("max_exp_avg_sq"), step=step,
                        convention="torch", **hyper)


class AdamW(Adam):
    """Drop-in `torch.optim.AdamW`: Adam with decoupled weight decay
    (``p ← p·(1 − lr·wd)`` first), weight_decay 1e-2 by default.

    Example::

        >>> opt = fastopt.torch.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=1e-2, amsgrad=False, *, maximize=False, foreach=None,
                 capturable=False, differentiable=False, fused=None, flat=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad,
                         foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, flat=flat)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:   # as torch: AdamW is always decoupled
            group["decoupled_weight_decay"] = True
