"""Hyperparameters checked in the precision the kernel computes in.

The host checks hyperparameters and derives a step's scalars in float64; a
float32 kernel gets them rounded to float32. A value that is fine in float64
can overflow there (``lr=1e39``, or a product such as ``lr·wd``) or round a
value that must be positive to 0 (``eps=1e-50``), and the kernel would then
write inf or NaN into every element. Such a call is refused, naming the
value, when any of its params is float32; float64 arrays take it as it is.

The common case costs one comparison per call: `fits` (and the shared
transforms' scalars) are decided once per set of hyperparameters, and a
step's derived scalars are compared with float32's largest value together;
only a call that fails either looks at its arrays' dtypes (`check`).
"""
import sys

import numpy as np

from . import _checks, _device, _facts, _front

FLOAT32 = np.dtype(np.float32)
_MAX = float(np.finfo(np.float32).max)


def fits(spec, h):
    """Whether every float hyperparameter in `h` (a checked namespace) keeps
    its meaning in float32: finite, and not 0 where it must be > 0."""
    return _culprit(spec, h) is None


def _culprit(spec, h):
    """The first hyperparameter of `h` that float32 cannot hold, and why."""
    for name, value in vars(h).items():
        if type(value) is not float:
            continue
        single = _single(value)
        if not np.isfinite(single):
            return name, value, "overflows float32"
        hyper = spec.hyper(name)
        if single == 0.0 and value != 0.0 and hyper.low == 0.0 and hyper.low_open:
            return name, value, "rounds to 0 in float32 and must be > 0"
    return None


def _single(value):
    with np.errstate(over="ignore"):    # an overflow is what is asked about
        return np.float32(value)


def scalars_fit(scalars):
    """Whether derived scalars are all within float32's range (a value just
    above its largest may still round down to it: `check` decides)."""
    return max(map(abs, scalars)) <= _MAX


def check(fn, spec, h, variant, pre, hyper, param):
    """Raise ValueError if `param` (an array, or a list of them) holds float32
    (or 16-bit: float32 math) arrays and `h` or the step's scalars do not fit float32. Arrays whose
    dtype cannot be read are left to the call's own checks."""
    if not any(dtype == FLOAT32 or _facts.storage_format(dtype) is not None
               for dtype in _dtypes(param) if dtype is not None):
        return
    culprit = _culprit(spec, h)
    if culprit is not None:
        name, value, why = culprit
        name = _front.frame.hypers.get(name, name)      # the caller's word for it
        raise ValueError(f"{_checks.who(fn)}: {name}={value} {why} (the params are float32)")
    from .kernels import PRE

    names = PRE + variant.spec.hyper
    for name, value in zip(names, pre + hyper):
        if not np.isfinite(_single(value)):
            raise ValueError(
                f"{_checks.who(fn)}: the hyperparameters give the kernel's "
                f"{_SCALARS.get(name, name)} "
                f"= {value:g}, which overflows float32 (the params are float32)")


# What a kernel scalar is, in the caller's words (see kernels.variants.element_step).
_SCALARS = {"scale": "gradient factor (grad_scale)", "bound": "clip bound (clip_value)",
            "wd": "coupled weight decay", "decay": "decoupled decay factor 1 − lr·weight_decay"}


def _dtypes(param):
    """The NumPy dtypes of `param`'s arrays (None where unknown)."""
    items = param if isinstance(param, (list, tuple)) else [param]
    torch = sys.modules.get("torch")
    known = _device._torch_dtypes(torch) if torch is not None else {}
    return [known.get(a.dtype) if _facts.is_torch(a) else getattr(a, "dtype", None)
            for a in items]
