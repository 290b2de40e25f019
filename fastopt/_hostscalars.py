"""Scalars of state kept on the host (`fastopt.spec.Scalar`): read, derived,
advanced and written back, for every front end.

Some optimizers keep, beside their state arrays, a running scalar that the
step's kernel scalars come from: torch's NAdam ``mu_product``, ASGD's ``eta``
and ``mu`` (one 0-d tensor per param, float32 by default), Keras's Nadam
``u_product`` (one variable per optimizer, in the params' dtype). The
library rounds each to its storage dtype every step, so reproducing its
numbers means keeping the value as it does. A functional call takes each as
a keyword:

* None: derived from `step`: the value the library would hold before update
  `step`, had every earlier update run with these hyperparameters, kept in
  torch's dtype under ``convention="torch"`` (float32, its default scalar
  dtype) and in float64 under ``"keras"`` (Keras keeps it in the first
  param's dtype: pass a one-element array of that dtype for its rounding
  too). A product over the steps is remembered between calls, so a training
  loop's next step costs one multiplication;
* a float: the value before this step, as the library holds it; used as it
  is, not written back (advanced in the dtype None uses);
* a one-element array (NumPy array, torch tensor), or for a list call a list
  of them holding one value (torch's per-param tensors): read, and after the
  step advanced in place, in its own dtype. Passing torch's ``state`` tensors
  gives torch's numbers exactly.

The front ends pass what they keep (fastopt.torch: the state tensors;
Keras-style: the value, which it advances once per step itself).
"""
import numbers
import sys

import numpy as np

from . import _batch, _checks, _facts, _front
from .kernels.cache import cached
from .kernels.cpu import view

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_REMEMBERED = {}       # derived products: key -> (step, value before that step)
_REMEMBER_AT_MOST = 256


def rounded(value, dtype):
    """`value` rounded to `dtype` (float32 or float64), as a Python float."""
    return float(dtype.type(value)) if dtype == _F32 else float(value)


def resolve(fn, spec, h, convention, step, given):
    """This call's host scalars: ``(before, after, write)``.

    given: the call's keywords by name (see the module docstring).
    before, after: the values before and after this update, by name;
    write: None, or a function writing `after` into the caller's arrays.
    """
    before, after, targets = {}, {}, []
    for s in spec.host:
        value = given.get(s.name)
        if value is None or isinstance(value, numbers.Real):
            dtype = _F32 if convention == "torch" else _F64
            if value is None:
                value = derived(s, h, convention, step, dtype)
            else:
                value = _real(fn, s.name, value)
        else:
            arrays = list(value) if isinstance(value, (list, tuple)) else [value]
            value, dtype = _read_one(fn, s.name, arrays)
            targets.append((s.name, arrays))
        _check_range(fn, s, value)
        before[s.name] = value
        after[s.name] = s.advance(h, convention, step, value, dtype)
    write = None
    if targets:
        def write():
            for name, arrays in targets:
                fill(arrays, after[name])
    return before, after, write


def derived(s, h, convention, step, dtype):
    """The value of `s` before update `step`, had every earlier one run
    with `h` (see the module docstring)."""
    value = rounded(s.initial(h), dtype)
    if step == 1:
        return value
    if s.memoryless:
        return s.advance(h, convention, step - 1, value, dtype)
    key = (s.advance, convention, dtype.char, *[getattr(h, name) for name in s.depends])
    first, known = _REMEMBERED.get(key, (1, value))
    if first > step:
        first, known = 1, value
    for k in range(first, step):
        known = s.advance(h, convention, k, known, dtype)
        if known == 0.0:    # a product that reached 0 stays there
            break
    if len(_REMEMBERED) >= _REMEMBER_AT_MOST:
        _REMEMBERED.clear()
    _REMEMBERED[key] = (step, known)
    return known


def _check_range(fn, s, value):
    """ValueError unless `value` is in `s.bounds`, naming it as the caller does."""
    low, high = s.bounds.get("low"), s.bounds.get("high")
    low_open, high_open = s.bounds.get("low_open", False), s.bounds.get("high_open", False)
    if ((low is None or (value > low if low_open else value >= low))
            and (high is None or (value < high if high_open else value <= high))):
        return
    name = s.name if _front.frame.name is None else _front.frame.name(s.name, 0)
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"
    raise ValueError(f"{_checks.who(fn)}: {name} must be in {lo}{'-inf' if low is None else low}, "
                     f"{'inf' if high is None else high}{hi}, got {value}")


def param_dtype(param):
    """The dtype Keras keeps its optimizer scalars in: the first param's."""
    from . import _precision
    dtypes = _precision._dtypes(param[:1] if isinstance(param, (list, tuple)) else param)
    return dtypes[0] if dtypes and dtypes[0] in (_F32, _F64) else _F64


def _real(fn, name, value):
    if isinstance(value, bool):
        raise TypeError(f"{_checks.who(fn)}: {name} must be a real number or a "
                        "one-element array, got bool")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{_checks.who(fn)}: {name} must be finite, got {value}")
    return value


def _dtype_of(a):
    if isinstance(a, np.ndarray):
        return a.dtype
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        return {torch.float32: _F32, torch.float64: _F64}.get(a.dtype)
    return None


def _read_one(fn, name, arrays):
    """The one value `arrays` hold, and their dtype; TypeError or ValueError
    for anything else (before anything is written)."""
    who = _checks.who(fn)
    if not arrays:
        raise ValueError(f"{who}: {name} is an empty list")
    dtype = None
    for a in arrays:
        kind = _dtype_of(a)
        if kind is None or getattr(a, "ndim", 0) > 1 or _size(a) != 1:
            raise TypeError(f"{who}: {name} must be a real number, a one-element "
                            "float32 or float64 array (NumPy or torch) or a list of "
                            f"them, got {_facts.describe(a)}")
        if dtype is not None and kind != dtype:
            raise TypeError(f"{who}: {name} mixes {dtype} and {kind} arrays")
        if isinstance(a, np.ndarray) and not a.flags.writeable:
            raise ValueError(f"{who}: {name} is read-only; it is advanced in place")
        dtype = kind
    values = read(arrays)
    if any(v != values[0] for v in values) and not all(v != v for v in values):
        raise ValueError(f"{who}: {name} holds different values ({values[0]} and "
                         f"{next(v for v in values if v != values[0])}); one call "
                         "takes one value")
    if not np.isfinite(values[0]):
        raise ValueError(f"{who}: {name} must be finite, got {values[0]}")
    return values[0], dtype


def _size(a):
    return a.size if isinstance(a, np.ndarray) else a.numel()


# -- many one-element arrays, read and written in one pass -----------------------
@cached()
def read_at(addrs, like):
    """The values of the one-element arrays at `addrs` (of `like`'s dtype), as float64."""
    out = np.empty(addrs.size, np.float64)
    for i in range(addrs.size):
        out[i] = view(addrs[i], 0, 1, like)[0]
    return out


@cached()
def _fill_at(addrs, like, value):
    for i in range(addrs.size):
        view(addrs[i], 0, 1, like)[0] = value


def _addresses(arrays):
    """(addresses, scalar type) of `arrays` if all are host arrays of one
    float dtype, else None."""
    if all([type(a) is np.ndarray for a in arrays]):
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) == 1 and dtypes <= {_F32, _F64}:
            return np.array([a.ctypes.data for a in arrays], np.int64), dtypes.pop().type(0)
        return None
    torch = sys.modules.get("torch")
    if torch is None or not all([isinstance(a, torch.Tensor) for a in arrays]):
        return None
    dtypes = {a.dtype for a in arrays}
    if (len(dtypes) != 1 or not all([a.is_cpu for a in arrays])
            or dtypes.pop() not in (torch.float32, torch.float64)):
        return None
    return (np.array([a.data_ptr() for a in arrays], np.int64),
            _dtype_of(arrays[0]).type(0))


def read(arrays):
    """The values of one-element arrays, as Python floats."""
    found = _addresses(arrays)
    if found is not None:
        return read_at(*found).tolist()
    return [float(a.reshape(-1)[0]) if isinstance(a, np.ndarray) else a.item()
            for a in arrays]


def fill(arrays, value):
    """Set every one of the one-element `arrays` to `value` (torch tensors'
    autograd versions bumped, as an in-place op would)."""
    found = _addresses(arrays)
    if found is not None:
        _fill_at(found[0], found[1], found[1].dtype.type(value))
    else:
        for a in arrays:
            a.fill(value) if isinstance(a, np.ndarray) else a.fill_(value)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(arrays[0], torch.Tensor):
        torch.autograd.graph.increment_version(arrays)


def run_after(write):
    """Run `write` once the step's kernels have (`fastopt._batch`)."""
    if write is not None:
        _batch.run(write)
