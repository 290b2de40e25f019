"""Dispatch: check every array argument, then run the kernel where they live.

NumPy arrays (and torch CPU tensors, through zero-copy NumPy views) run the CPU
kernel; anything exposing ``__cuda_array_interface__`` (CuPy, Numba device
arrays, torch CUDA tensors) runs the CUDA kernel. Every check happens before
any memory is written, so a rejected call leaves params and state untouched.
"""
import sys

import numpy as np

from . import _device
from .kernels import PRE, RULES

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_HOST, _DEVICE = "host", "device"
_places = {np.ndarray: _HOST}     # type -> place, for types with one place


def _place(x):
    place = _places.get(type(x))
    if place is not None:
        return place
    if _is_torch(x):
        return _DEVICE if x.is_cuda else _HOST
    if _device.is_device_array(x):
        _places[type(x)] = _DEVICE
        return _DEVICE
    if isinstance(x, np.ndarray):
        return _HOST
    return None


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
    assert len(hyper) == len(RULES[variant.rule].hyper) and len(pre) == len(PRE)
    arrays = [("param", param), ("grad", grad)]
    for name, why in zip(variant.slots, variant.slot_reasons):
        if name is None:
            continue
        if states.get(name) is None:
            raise ValueError(f"{fn}(): {name} is required{why}")
        arrays.append((name, states[name]))
    places = [_place(a) for _, a in arrays]
    for (name, a), place in zip(arrays, places):
        if place is None:
            raise TypeError(
                f"{fn}(): {name} must be a NumPy array or a CUDA array "
                f"(CuPy, Numba, torch), got {type(a).__name__}")
    if places.count(places[0]) != len(places):
        host = [n for (n, _), p in zip(arrays, places) if p == _HOST]
        dev = [n for (n, _), p in zip(arrays, places) if p == _DEVICE]
        raise TypeError(
            f"{fn}(): arrays are mixed between host memory ({', '.join(host)}) "
            f"and a GPU ({', '.join(dev)}); all must live in the same place")
    if places[0] == _HOST:
        _update_host(fn, variant, arrays, pre, hyper)
    else:
        _update_device(fn, variant, arrays, pre, hyper)


def _host_view(x):
    return x if type(x) is np.ndarray else (
        x.detach().numpy() if _is_torch(x) else np.asarray(x))


def _update_host(fn, variant, arrays, pre, hyper):
    from .kernels import cpu

    views = [_host_view(a) for _, a in arrays]
    p = views[0]
    _check_dtype_shape(fn, arrays, [v.dtype for v in views],
                       [v.shape for v in views])
    for (name, _), v in zip(arrays, views):
        if not v.flags.c_contiguous:
            raise ValueError(f"{fn}(): {name} must be C-contiguous")
    for (name, _), v in zip(arrays[:1] + arrays[2:], views[:1] + views[2:]):
        if not v.flags.writeable:
            raise ValueError(f"{fn}(): {name} is read-only; it is updated in place")
    if p.size > 1:
        _check_no_overlap(fn, arrays, [v.ctypes.data for v in views],
                          p.nbytes)
    if p.size == 0:
        return
    flat = [v.reshape(-1) for v in views]
    kern = cpu.kernel(variant)
    kern(flat[0], flat[1], _slot_tuple(variant, flat), _scalars(p.dtype, pre),
         _scalars(p.dtype, hyper))


def _update_device(fn, variant, arrays, pre, hyper):
    from .kernels import cuda

    infos = [_device.describe(name, a) for name, a in arrays]
    p = infos[0]
    _check_dtype_shape(fn, arrays, [i.dtype for i in infos],
                       [i.shape for i in infos])
    for (name, _), info in zip(arrays, infos):
        if not info.contiguous:
            raise ValueError(f"{fn}(): {name} must be C-contiguous")
        if info.device != p.device:
            raise ValueError(
                f"{fn}(): {name} is on GPU {info.device} but param is on GPU "
                f"{p.device}; all arrays must be on the same GPU")
    for (name, _), info in zip(arrays[:1] + arrays[2:], infos[:1] + infos[2:]):
        if info.readonly:
            raise ValueError(f"{fn}(): {name} is read-only; it is updated in place")
    if p.size > 1:
        _check_no_overlap(fn, arrays, [i.ptr for i in infos], p.nbytes)
    if p.size == 0:
        return
    flat = [_device.flat_view(i) for i in infos]
    with _device.on_device(p.device):
        cuda.launch(variant, p.size, _device.stream_of(infos[0]), flat[0],
                    flat[1], _slot_tuple(variant, flat),
                    _scalars(p.dtype, pre), _scalars(p.dtype, hyper))


def _check_dtype_shape(fn, arrays, dtypes, shapes):
    if dtypes[0] not in FLOAT_DTYPES:
        raise TypeError(
            f"{fn}(): param must be float32 or float64, got {dtypes[0]}")
    for (name, _), dtype, shape in zip(arrays[1:], dtypes[1:], shapes[1:]):
        if dtype != dtypes[0]:
            raise TypeError(
                f"{fn}(): {name} has dtype {dtype}, expected {dtypes[0]} like param")
        if shape != shapes[0]:
            raise ValueError(
                f"{fn}(): {name} has shape {shape}, expected {shapes[0]} like param")


def _check_no_overlap(fn, arrays, ptrs, nbytes):
    """No written array may share memory with any other argument.

    All arrays have the same (non-zero) size and are contiguous, so two of
    them overlap exactly when their start addresses are less than `nbytes`
    apart.
    """
    order = sorted(range(len(ptrs)), key=ptrs.__getitem__)
    for a, b in zip(order, order[1:]):
        if ptrs[b] - ptrs[a] < nbytes:
            first, second = sorted((a, b))
            raise ValueError(
                f"{fn}(): {arrays[second][0]} shares memory with "
                f"{arrays[first][0]}; each array must be a separate buffer")


def _slot_tuple(variant, flat):
    """The kernel's 3 state slots; unused slots repeat param (never touched)."""
    it = iter(flat[2:])
    return tuple(next(it) if used else flat[0] for used in variant.used)


def _scalars(dtype, values):
    cast = dtype.type
    return tuple([cast(v) for v in values])

