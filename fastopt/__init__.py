"""fastopt: fused optimizer update kernels for NumPy and CUDA arrays."""
from . import _threads

_threads.choose()   # before anything can start Numba's threading layer

from . import functional, optimizers  # noqa: E402
from .optimizers import *  # noqa: E402,F401,F403 - the Keras-style classes, one per spec
from .custom import Hyper, RuleError, rule, sign  # noqa: E402 - users' own rules
from ._clip import clip_coef, clip_grad_norm_, get_total_norm  # noqa: E402

__version__ = "0.1.0"

__all__ = ["functional", *optimizers.__all__[:-1], "rule", "sign", "Hyper", "RuleError",
           "clip_grad_norm_", "get_total_norm", "clip_coef"]
