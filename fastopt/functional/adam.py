"""Adam, AMSGrad and AdamW: one rule for both conventions."""
import math

from .. import _dispatch
from ..kernels import variant
from ._common import (SHARED_ARGS_DOC, check_convention, check_flag, check_float,
                      check_step, gradient_transforms, remember_last)


def adam(param, grad, exp_avg, exp_avg_sq, *, step: int, lr: float,
         beta1: float, beta2: float, eps: float, amsgrad: bool = False,
         max_exp_avg_sq=None, weight_decay: float = 0.0,
         decoupled_weight_decay=None, maximize: bool = False,
         grad_scale: float = 1.0, clip_value=None, convention: str = "keras",
         _fn: str = "adam") -> None:
    """One in-place Adam step: updates `param`, `exp_avg`, `exp_avg_sq` (and
    `max_exp_avg_sq` with AMSGrad).

    ``m ← β₁·m + (1 − β₁)·g;  v ← β₂·v + (1 − β₂)·g²``; AMSGrad:
    ``v̂ ← max(v̂, v)`` replaces v below. With bias corrections
    ``c₁ = 1 − β₁ᵗ, c₂ = 1 − β₂ᵗ`` (t = `step`):

    * ``"keras"``: ``p ← p − (lr·sqrt(c₂)/c₁)·m / (sqrt(v) + ε)``
    * ``"torch"``: ``p ← p − (lr/c₁)·m / (sqrt(v)/sqrt(c₂) + ε)``

    Args:
        param, grad: arrays of one shape and dtype (float32/float64), C-contiguous.
        exp_avg, exp_avg_sq: first and second moments (Keras's ``momentum``
            and ``velocity``), zeros before the first step.
        max_exp_avg_sq: the AMSGrad maximum, required when ``amsgrad``; zeros at first.
        step: this update's 1-based count t, used in the bias corrections.
        lr, beta1 and beta2 in [0, 1), eps (> 0), amsgrad: the hyperparameters.
    """ + SHARED_ARGS_DOC + """
    Example::

        >>> p, g = np.ones(3, np.float32), np.full(3, 0.5, np.float32)
        >>> m, v = np.zeros_like(p), np.zeros_like(p)
        >>> for t in range(1, 4):
        ...     fastopt.functional.adam(p, g, m, v, step=t, lr=1e-3,
        ...                             beta1=0.9, beta2=0.999, eps=1e-7)
    """
    check_step(_fn, step)
    which, pre, lr, beta1, beta2, eps = _settings(
        _fn, lr, beta1, beta2, eps, amsgrad, weight_decay, decoupled_weight_decay,
        maximize, grad_scale, clip_value, convention)
    # Bias corrections in float64 on the host; the kernel gets the products.
    c1 = 1.0 - beta1 ** step
    sqrt_c2 = math.sqrt(1.0 - beta2 ** step)
    eps = eps if convention == "keras" else eps * sqrt_c2
    hyper = (lr * sqrt_c2 / c1, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps)
    states = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq,
              "max_exp_avg_sq": max_exp_avg_sq}
    _dispatch.update(_fn, which, param, grad, states, pre, hyper)


@remember_last
def _settings(fn, lr, beta1, beta2, eps, amsgrad, weight_decay, decoupled_weight_decay,
              maximize, grad_scale, clip_value, convention):
    """`adam`'s checks: (variant, pre, and lr, beta1, beta2, eps as floats)."""
    check_convention(fn, convention)
    lr = check_float(fn, "lr", lr, low=0.0)
    beta1 = check_float(fn, "beta1", beta1, low=0.0, high=1.0, high_open=True)
    beta2 = check_float(fn, "beta2", beta2, low=0.0, high=1.0, high_open=True)
    eps = check_float(fn, "eps", eps, low=0.0, low_open=True)
    check_flag(fn, "amsgrad", amsgrad)
    clip, l2, pre = gradient_transforms(
        fn, convention, lr=lr, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
        grad_scale=grad_scale, clip_value=clip_value)
    which = variant("adam", (amsgrad, convention == "torch"), clip, l2)
    return which, pre, lr, beta1, beta2, eps


def adamw(param, grad, exp_avg, exp_avg_sq, *, step: int, lr: float,
          beta1: float, beta2: float, eps: float, weight_decay: float,
          amsgrad: bool = False, max_exp_avg_sq=None, maximize: bool = False,
          grad_scale: float = 1.0, clip_value=None,
          convention: str = "keras") -> None:
    """One in-place AdamW step: `adam` with decoupled weight decay,
    ``p ← p·(1 − lr·wd)`` before the Adam update, in both conventions.

    Example::

        >>> fastopt.functional.adamw(p, g, m, v, step=1, lr=1e-3, beta1=0.9,
        ...                          beta2=0.999, eps=1e-7, weight_decay=0.004)
    """
    adam(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, beta1=beta1,
         beta2=beta2, eps=eps, amsgrad=amsgrad, max_exp_avg_sq=max_exp_avg_sq,
         weight_decay=weight_decay, decoupled_weight_decay=True,
         maximize=maximize, grad_scale=grad_scale, clip_value=clip_value,
         convention=convention, _fn="adamw")
