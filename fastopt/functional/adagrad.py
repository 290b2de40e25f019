"""Adagrad, in Keras's and torch's forms."""
from .. import _dispatch
from ..kernels import variant
from ._common import (SHARED_ARGS_DOC, check_convention, check_float, check_step,
                      gradient_transforms, remember_last)


def adagrad(param, grad, state_sum, *, step: int, lr: float, eps: float,
            lr_decay: float = 0.0, weight_decay: float = 0.0,
            decoupled_weight_decay=None, maximize: bool = False,
            grad_scale: float = 1.0, clip_value=None,
            convention: str = "keras") -> None:
    """One in-place Adagrad step: updates `param` and `state_sum`.

    * ``"keras"``: ``a ← a + g²;  p ← p − lr·g / sqrt(a + ε)``
    * ``"torch"``: ``a ← a + g²;  p ← p − clr·g / (sqrt(a) + ε)`` with
      ``clr = lr / (1 + (step − 1)·lr_decay)``.

    Args:
        param, grad: arrays of one shape and dtype (float32/float64), C-contiguous.
        state_sum: the accumulator (Keras's ``accumulator``), filled with the
            initial accumulator value before the first step (Keras: 0.1, torch: 0).
        step: this update's 1-based count.
        lr, eps (> 0), lr_decay (torch only): the hyperparameters.
    """ + SHARED_ARGS_DOC + """
    Example::

        >>> p, g = np.ones(2), np.full(2, 0.5)
        >>> acc = np.full(2, 0.1)
        >>> fastopt.functional.adagrad(p, g, acc, step=1, lr=0.1, eps=1e-7)
    """
    fn = "adagrad"
    check_step(fn, step)
    which, pre, lr, eps, lr_decay = _settings(
        fn, lr, eps, lr_decay, weight_decay, decoupled_weight_decay, maximize,
        grad_scale, clip_value, convention)
    if convention == "torch":
        lr = lr / (1.0 + (step - 1) * lr_decay)
    _dispatch.update(fn, which, param, grad, {"state_sum": state_sum}, pre, (lr, eps))


@remember_last
def _settings(fn, lr, eps, lr_decay, weight_decay, decoupled_weight_decay, maximize,
              grad_scale, clip_value, convention):
    """`adagrad`'s checks: (variant, pre, and lr, eps, lr_decay as floats)."""
    check_convention(fn, convention)
    lr = check_float(fn, "lr", lr, low=0.0)
    eps = check_float(fn, "eps", eps, low=0.0, low_open=True)
    lr_decay = check_float(fn, "lr_decay", lr_decay, low=0.0)
    if convention == "keras" and lr_decay != 0.0:
        raise ValueError(f"{fn}(): lr_decay is a torch option; use convention='torch'")
    clip, l2, pre = gradient_transforms(
        fn, convention, lr=lr, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
        grad_scale=grad_scale, clip_value=clip_value)
    return variant(f"adagrad_{convention}", (), clip, l2), pre, lr, eps, lr_decay
