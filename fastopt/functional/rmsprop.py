"""RMSprop: plain, with momentum, centered; in Keras's and torch's forms."""
from .. import _dispatch
from ..kernels import variant
from ._common import (SHARED_ARGS_DOC, check_convention, check_flag, check_float,
                      check_step, gradient_transforms, remember_last)


def rmsprop(param, grad, square_avg, *, step: int, lr: float, alpha: float,
            eps: float, momentum: float = 0.0, centered: bool = False,
            momentum_buffer=None, grad_avg=None, weight_decay: float = 0.0,
            decoupled_weight_decay=None, maximize: bool = False,
            grad_scale: float = 1.0, clip_value=None,
            convention: str = "keras") -> None:
    """One in-place RMSprop step: updates `param` and the state it uses.

    ``s ← α·s + (1 − α)·g²`` (α is Keras's ``rho``), then

    * ``"keras"``: ``inc = lr·g / sqrt(s + ε)``, or centered
      ``ḡ ← α·ḡ + (1 − α)·g;  inc = lr·g / sqrt(s − ḡ² + ε)``;
      momentum: ``buf ← μ·buf + inc;  p ← p − buf``, else ``p ← p − inc``.
    * ``"torch"``: ``d = sqrt(s) + ε``, or centered
      ``ḡ ← ḡ + (1 − α)·(g − ḡ);  d = sqrt(s − ḡ²) + ε``;
      momentum: ``buf ← μ·buf + g/d;  p ← p − lr·buf``, else ``p ← p − lr·g/d``.

    Args:
        param, grad: arrays of one shape and dtype (float32/float64), C-contiguous.
        square_avg: the second-moment average (Keras's ``velocity``), zeros at first.
        momentum_buffer: required when ``momentum > 0``; zeros at first.
        grad_avg: the gradient average, required when ``centered``; zeros at first.
        step: this update's 1-based count (checked; RMSprop does not use it).
        lr, alpha in [0, 1], eps (> 0), momentum (>= 0), centered: the hyperparameters.
    """ + SHARED_ARGS_DOC + """
    Example::

        >>> p, g, s = np.ones(2), np.full(2, 0.5), np.zeros(2)
        >>> fastopt.functional.rmsprop(p, g, s, step=1, lr=1e-3, alpha=0.9, eps=1e-7)
    """
    fn = "rmsprop"
    check_step(fn, step)
    which, pre, hyper = _settings(fn, lr, alpha, eps, momentum, centered, weight_decay,
                                  decoupled_weight_decay, maximize, grad_scale,
                                  clip_value, convention)
    states = {"square_avg": square_avg, "grad_avg": grad_avg,
              "momentum_buffer": momentum_buffer}
    _dispatch.update(fn, which, param, grad, states, pre, hyper)


@remember_last
def _settings(fn, lr, alpha, eps, momentum, centered, weight_decay,
              decoupled_weight_decay, maximize, grad_scale, clip_value, convention):
    """`rmsprop`'s checks: (variant, pre, the kernel's hyperparameters)."""
    check_convention(fn, convention)
    lr = check_float(fn, "lr", lr, low=0.0)
    alpha = check_float(fn, "alpha", alpha, low=0.0, high=1.0)
    eps = check_float(fn, "eps", eps, low=0.0, low_open=True)
    momentum = check_float(fn, "momentum", momentum, low=0.0)
    check_flag(fn, "centered", centered)
    clip, l2, pre = gradient_transforms(
        fn, convention, lr=lr, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
        grad_scale=grad_scale, clip_value=clip_value)
    which = variant(f"rmsprop_{convention}", (centered, momentum > 0.0), clip, l2)
    return which, pre, (lr, alpha, 1.0 - alpha, eps, momentum)
