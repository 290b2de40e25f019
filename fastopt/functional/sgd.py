"""SGD, with momentum and Nesterov, in Keras's and torch's forms."""
from .. import _dispatch
from ..kernels import variant
from ._common import (SHARED_ARGS_DOC, check_convention, check_flag, check_float,
                      check_step, gradient_transforms, remember_last)


def sgd(param, grad, momentum_buffer=None, *, step: int, lr: float,
        momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0, decoupled_weight_decay=None,
        maximize: bool = False, grad_scale: float = 1.0, clip_value=None,
        convention: str = "keras") -> None:
    """One in-place SGD step: updates `param` (and `momentum_buffer`).

    Without momentum, both conventions: ``p ← p − lr·g``. With momentum:

    * ``"keras"``: ``m ← μ·m − lr·g;  p ← p + m``
      (Nesterov: ``p ← p + μ·m − lr·g``); momentum must be in [0, 1].
    * ``"torch"``: ``b ← μ·b + (1 − dampening)·g;  p ← p − lr·b``
      (Nesterov: ``p ← p − lr·(g + μ·b)``); on step 1, ``b ← g``.

    Args:
        param, grad: arrays of one shape and dtype (float32/float64), C-contiguous.
        momentum_buffer: the momentum state, required when ``momentum > 0``;
            zeros before the first step.
        step: this update's 1-based count (torch uses it to start the buffer).
        lr, momentum, dampening (torch only), nesterov: the hyperparameters.
    """ + SHARED_ARGS_DOC + """
    Example::

        >>> p, g = np.ones(3, np.float32), np.full(3, 0.5, np.float32)
        >>> buf = np.zeros_like(p)
        >>> fastopt.functional.sgd(p, g, buf, step=1, lr=0.1, momentum=0.9)
        >>> p
        array([0.95, 0.95, 0.95], dtype=float32)
    """
    fn = "sgd"
    check_step(fn, step)
    which, pre, hyper = _settings(fn, lr, momentum, dampening, nesterov, weight_decay,
                                  decoupled_weight_decay, maximize, grad_scale,
                                  clip_value, convention)
    if step == 1 and which.rule == "sgd_momentum_torch":
        # (lr, buffer decay, buffer grad, momentum): torch starts the buffer
        # as a copy of the gradient
        hyper = (hyper[0], 0.0, 1.0, hyper[3])
    _dispatch.update(fn, which, param, grad, {"momentum_buffer": momentum_buffer},
                     pre, hyper)


@remember_last
def _settings(fn, lr, momentum, dampening, nesterov, weight_decay,
              decoupled_weight_decay, maximize, grad_scale, clip_value, convention):
    """`sgd`'s checks: (variant, pre, the kernel's hyperparameters after step 1)."""
    check_convention(fn, convention)
    lr = check_float(fn, "lr", lr, low=0.0)
    high = 1.0 if convention == "keras" else None
    momentum = check_float(fn, "momentum", momentum, low=0.0, high=high)
    dampening = check_float(fn, "dampening", dampening, low=0.0, high=1.0)
    check_flag(fn, "nesterov", nesterov)
    if convention == "keras" and dampening != 0.0:
        raise ValueError(f"{fn}(): dampening is a torch option; use convention='torch'")
    if convention == "torch" and nesterov and (momentum == 0.0 or dampening != 0.0):
        raise ValueError(f"{fn}(): nesterov requires momentum > 0 and dampening == 0")
    clip, l2, pre = gradient_transforms(
        fn, convention, lr=lr, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
        grad_scale=grad_scale, clip_value=clip_value)
    if momentum == 0.0:
        return variant("sgd", (), clip, l2), pre, (lr,)
    if convention == "keras":
        return variant("sgd_momentum_keras", (nesterov,), clip, l2), pre, (lr, momentum)
    return (variant("sgd_momentum_torch", (nesterov,), clip, l2), pre,
            (lr, momentum, 1.0 - dampening, momentum))
