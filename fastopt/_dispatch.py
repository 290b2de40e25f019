"""Dispatch: check every array argument, then run the kernel where they live.

NumPy arrays (and torch CPU tensors, through zero-copy NumPy views) run the CPU
kernel; anything exposing ``__cuda_array_interface__`` (CuPy, Numba device
arrays, torch CUDA tensors) runs the CUDA kernel. Every check happens before
any memory is written, so a rejected call leaves params and state untouched.
"""
import functools
import sys

import numpy as np

from . import _device, _hostscan
from .kernels import PRE, RULES, cpu

FLOAT_DTYPES = _hostscan.FLOAT_DTYPES
LIKE = {d: d.type(0) for d in FLOAT_DTYPES}   # the CPU kernels' dtype argument

_HOST, _DEVICE = "host", "device"
_places = {np.ndarray: _HOST}     # type -> place, for types with one place


def _place(x):
    place = _places.get(type(x))
    if place is not None:
        return place
    if isinstance(x, np.ma.MaskedArray):   # the kernels would ignore the mask
        return None
    if _is_torch(x):   # other devices (meta, mps, ...), sparse layouts: neither
        if x.layout != _torch_strided():
            return None
        return _DEVICE if x.is_cuda else _HOST if x.is_cpu else None
    if _device.is_device_array(x):
        if _device.is_device_array_type(type(x)):
            _places[type(x)] = _DEVICE
        return _DEVICE
    if isinstance(x, np.ndarray):
        return _HOST
    return None


def describe(x):
    """What `x` is, for messages: its type, and its device if it is a tensor."""
    if isinstance(x, np.ma.MaskedArray):
        return "a masked array (its mask would be ignored: pass .data or .filled())"
    if _is_torch(x):
        if x.layout != _torch_strided():
            return f"a torch tensor with layout {x.layout} (only dense tensors can be updated)"
        return f"a torch tensor on {x.device}"
    return type(x).__name__


def _torch_strided():
    return sys.modules["torch"].strided


def _is_torch(x):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def update(fn, variant, param, grad, states, pre, hyper):
    """Check the arrays of one update and run `variant`'s kernel on them.

    fn:     the public function's name, for error messages.
    states: the caller's state arrays by name (None for absent ones); the
            kernel gets those named in ``variant.slots``.
    pre, hyper: Python floats, cast here to the arrays' dtype.
    """
    # The common case first, in straight-line code: it runs with cold caches
    # between training steps, where each line of Python costs about a
    # microsecond (measured: a whole adam() call on a tiny array 65-75 µs
    # cold, 90-100 before the check and the kernel became one jitted call and
    # the hyperparameter checks were remembered; a floor kernel's call 30-35).
    if type(param) is np.ndarray:
        run, name0, name1, name2, used = _host_plans.get(variant) or _host_plan(variant)
        if run is not None and run(   # checked and updated in one jitted call
                (id(param), id(grad), id(param if name0 is None else states.get(name0)),
                 id(param if name1 is None else states.get(name1)),
                 id(param if name2 is None else states.get(name2))), used, pre, hyper):
            return
    elif isinstance(param, (list, tuple)):   # the list form (fastopt/_multi.py)
        return _multi.update_many(fn, variant, param, grad, states, pre, hyper)
    assert len(hyper) == len(RULES[variant.rule].hyper) and len(pre) == len(PRE)
    names, arrays = named_arguments(fn, variant, param, grad, states)
    if all(type(a) is np.ndarray for a in arrays):
        return _update_host(fn, variant, names, arrays, pre, hyper)
    places = [_place(a) for a in arrays]
    for name, a, place in zip(names, arrays, places):
        if place is None:
            raise TypeError(
                f"{fn}(): {name} must be a NumPy array or a CUDA array "
                f"(CuPy, Numba, torch), got {describe(a)}")
    if places.count(places[0]) != len(places):
        host = [n for n, p in zip(names, places) if p == _HOST]
        dev = [n for n, p in zip(names, places) if p == _DEVICE]
        raise TypeError(
            f"{fn}(): arrays are mixed between host memory ({', '.join(host)}) "
            f"and a GPU ({', '.join(dev)}); all must live in the same place")
    if places[0] == _HOST:
        _update_host(fn, variant, names, [_host_view(a) for a in arrays], pre, hyper)
    else:
        _update_device(fn, variant, names, arrays, pre, hyper)
    bump_torch_versions([a for name, a in zip(names, arrays) if name != "grad"])


def bump_torch_versions(written):
    """Tell autograd that the torch tensors among `written` changed.

    The kernels write through raw pointers; torch's in-place ops bump a
    tensor's version, so that a graph which saved the old value raises
    instead of silently using the new one (inference tensors, which keep no
    version, are skipped by torch).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return
    tensor = torch.Tensor
    tensors = [t for t in written if isinstance(t, tensor)]
    if tensors:
        torch.autograd.graph.increment_version(tensors)


def named_arguments(fn, variant, param, grad, states):
    """``(names, values)``: param, grad, then the state arguments `variant`
    uses, in slot order; a missing one raises, saying which option needs it."""
    names, values = ["param", "grad"], [param, grad]
    for name, why in zip(variant.slots, variant.slot_reasons):
        if name is not None:
            value = states.get(name)
            if value is None:
                raise ValueError(f"{fn}(): {name} is required{why}")
            names.append(name)
            values.append(value)
    return names, values


def _host_view(x):
    return x if type(x) is np.ndarray else (
        x.detach().numpy() if _is_torch(x) else np.asarray(x))


def _update_host(fn, variant, names, views, pre, hyper):
    """The host path in Python: any array `_hostscan` declined (torch CPU
    tensors' views, subclasses...), and the error messages."""
    p = views[0]
    _check_dtype_shape(fn, names, [v.dtype for v in views], [v.shape for v in views])
    for name, v in zip(names, views):
        flags = v.flags
        if not flags.c_contiguous:
            raise ValueError(f"{fn}(): {name} must be C-contiguous")
        if not flags.writeable and name != "grad":
            raise ValueError(f"{fn}(): {name} is read-only; it is updated in place")
    if p.size == 0:
        return
    ptrs = [v.ctypes.data for v in views]
    _check_no_overlap(fn, names, ptrs, p.nbytes)
    order, _ = _kernel_slots(variant)
    cpu.kernel(variant)(tuple([ptrs[i] for i in order]), p.size, LIKE[p.dtype],
                        pre, hyper)


def _update_device(fn, variant, names, arrays, pre, hyper):
    from .kernels import cuda   # imported on first GPU use only

    infos = [_device.describe(name, a) for name, a in zip(names, arrays)]
    p = infos[0]
    _check_dtype_shape(fn, names, [i.dtype for i in infos],
                       [i.shape for i in infos])
    for name, info in zip(names, infos):
        if not info.contiguous:
            raise ValueError(f"{fn}(): {name} must be C-contiguous")
        if info.device != p.device:
            raise ValueError(
                f"{fn}(): {name} is on GPU {info.device} but param is on GPU "
                f"{p.device}; all arrays must be on the same GPU")
        if info.readonly and name != "grad":
            raise ValueError(f"{fn}(): {name} is read-only; it is updated in place")
        if not info.aligned:
            raise ValueError(_misaligned(fn, name, info.ptr, info.dtype.itemsize))
    if p.size == 0:
        return
    _check_no_overlap(fn, names, [i.ptr for i in infos], p.nbytes)
    if cuda._simulated():    # the simulator runs no intrinsic: pass the arrays
        flat = [_device.flat_view(i) for i in infos]
    else:
        flat = [i.ptr for i in infos]
    with _device.on_device(p.device):
        cuda.launch(variant, p.size, _device.stream_of(p),
                    tuple([flat[i] for i in _kernel_slots(variant)[0]]),
                    _scalars(p.dtype, pre), _scalars(p.dtype, hyper), p.device)


def _check_dtype_shape(fn, names, dtypes, shapes):
    if dtypes[0] not in FLOAT_DTYPES:
        raise TypeError(
            f"{fn}(): param must be float32 or float64, got {dtypes[0]}")
    for name, dtype, shape in zip(names[1:], dtypes[1:], shapes[1:]):
        if dtype != dtypes[0]:
            raise TypeError(
                f"{fn}(): {name} has dtype {dtype}, expected {dtypes[0]} like param")
        if shape != shapes[0]:
            raise ValueError(
                f"{fn}(): {name} has shape {shape}, expected {shapes[0]} like param")


def _misaligned(fn, name, ptr, itemsize):
    return (f"{fn}(): {name} starts at {ptr:#x}, not on a {itemsize}-byte "
            f"boundary; GPU arrays must be aligned to their elements")


def _check_no_overlap(fn, names, ptrs, nbytes):
    """No written array may share memory with any other argument.

    All arrays have the same (non-zero) size and are contiguous, so two of
    them overlap exactly when their start addresses are less than `nbytes`
    apart.
    """
    order = sorted(range(len(ptrs)), key=ptrs.__getitem__)
    for a, b in zip(order, order[1:]):
        if ptrs[b] - ptrs[a] < nbytes:
            raise _overlap_error(fn, names, *sorted((a, b)))


def _overlap_error(fn, names, first, second):
    return ValueError(f"{fn}(): {names[second]} shares memory with {names[first]}; "
                      "each array must be a separate buffer")


def _host_plan(variant):
    """What `update`'s fast path needs of `variant`, in one lookup: its
    `_hostscan.runner`, the names of its 3 state slots (None: unused) and
    which of the kernel's 5 arrays it uses."""
    plan = _host_plans[variant] = (_hostscan.runner(variant), *variant.slots,
                                   _kernel_slots(variant)[1])
    return plan


_host_plans = {}


@functools.lru_cache(maxsize=None)
def _kernel_slots(variant):
    """The kernels' 5 arrays (param, grad, 3 state slots) as indices into
    [param, grad, used states...], and which of the 5 are used. An unused
    slot repeats param (index 0): the kernel never touches it."""
    used = iter(range(2, 2 + sum(variant.used)))
    slots = tuple(next(used) if u else 0 for u in variant.used)
    return (0, 1, *slots), (True, True, *variant.used)


def _scalars(dtype, values):
    """Scalars of the arrays' dtype, for the CUDA kernels (a Python float would
    be float64 there; the CPU skeletons cast Python floats themselves)."""
    if dtype is _FLOAT64:
        return values
    cast = dtype.type
    return tuple([cast(v) for v in values])


_FLOAT64 = np.dtype(np.float64)


# Last: _multi imports this module (a cycle that is fine once both are defined).
from . import _multi  # noqa: E402
