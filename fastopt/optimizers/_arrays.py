"""What the optimizer classes need of arrays, wherever they live.

One small place that knows each array library: describing an array (where it
is, its shape and dtype), creating state like a param with the param's own
library, moving state to and from the host for checkpoints, and sums of
squares for norm clipping, reduced where the arrays live.
"""
from dataclasses import dataclass

import numpy as np

from .. import _device, _facts, _threads
from ..kernels import norms
from ..spec import PARAM


@dataclass(frozen=True)
class Spec:
    """Where an array lives and what it holds: what later calls must match."""

    place: str          # "host" or "device"
    device: int         # GPU ordinal; -1 on the host
    shape: tuple
    dtype: np.dtype

    def where(self):
        return "host memory" if self.place == _facts.HOST else f"GPU {self.device}"


@dataclass(frozen=True)
class Described:
    spec: Spec
    ptr: int
    nbytes: int
    contiguous: bool
    readonly: bool
    info: object        # the `_device.DeviceArray` of a GPU array, else the host view


def describe(fn, name, x):
    """A `Described` for array `x`, or a TypeError naming `name`."""
    place = _facts.place(x)
    if place is None:
        raise TypeError(
            f"{fn}: {name} must be a NumPy array or a CUDA array (CuPy, Numba, "
            f"torch), got {_facts.describe(x)}")
    if place == _facts.HOST:
        view = _facts.host_view(x)
        spec = Spec(place, -1, view.shape, view.dtype)
        return Described(spec, view.ctypes.data, view.nbytes,
                         view.flags.c_contiguous, not view.flags.writeable, view)
    info = _device.describe(name, x)
    spec = Spec(place, info.device, tuple(info.shape), info.dtype)
    return Described(spec, info.ptr, info.nbytes, info.contiguous, info.readonly,
                     info)


def _is_cupy(x):
    return type(x).__module__.split(".")[0] == "cupy"


def initial(param, init, shape=None):
    """A param's new state array: filled with the number `init`, or a copy
    of the param where `init` is `fastopt.spec.PARAM`; `shape`: a state
    array of its own shape (a program's factors, `fastopt.spec.Slot.shape`)."""
    if shape is not None and tuple(shape) != tuple(_shape(param)):
        return full_shaped(param, shape, init)
    if init is not PARAM:
        return full_like(param, init)
    if type(param) is np.ndarray:
        return param.copy()
    if _facts.is_torch(param):
        import torch
        return param.detach().clone(memory_format=torch.contiguous_format)
    if _is_cupy(param):
        with param.device:
            return param.copy()
    copy = full_like(param, 0.0)      # any other CUDA array: a Numba array
    copy_from_host(copy, to_host(param))
    return copy


def float32_copy(param):
    """A float32 copy of `param` in its own library and place (the master of
    a 16-bit param: each value exact)."""
    if type(param) is np.ndarray:
        return param.astype(np.float32)
    if _facts.is_torch(param):
        import torch
        return param.detach().to(torch.float32).contiguous()
    if _is_cupy(param):
        with param.device:
            return param.astype("float32")
    raise TypeError("float32 state of a 16-bit param needs NumPy, torch or CuPy arrays")


def full_like(param, value):
    """A new contiguous array like `param` (same library, device, dtype), filled."""
    if type(param) is np.ndarray:
        return np.full(param.shape, value, param.dtype)
    if _facts.is_torch(param):
        import torch
        return torch.full_like(param.detach(), value,
                               memory_format=torch.contiguous_format)
    if _is_cupy(param):
        import cupy
        with param.device:
            return cupy.full(param.shape, value, param.dtype)
    info = _device.describe("param", param)
    from numba import cuda
    with _device.on_device(info.device):
        # Numba device arrays and any other CAI producer: a Numba array,
        # filled by one host copy at build time.
        return cuda.to_device(np.full(info.shape, value, info.dtype))


def _shape(x):
    return tuple(x.shape)


def full_shaped(param, shape, value):
    """A new array of `shape`, filled, in `param`'s library, device and dtype."""
    if type(param) is np.ndarray:
        return np.full(shape, value, param.dtype)
    if _facts.is_torch(param):
        import torch
        return torch.full(tuple(shape), value, dtype=param.dtype, device=param.device)
    if _is_cupy(param):
        import cupy
        with param.device:
            return cupy.full(shape, value, param.dtype)
    info = _device.describe("param", param)
    from numba import cuda
    with _device.on_device(info.device):
        return cuda.to_device(np.full(shape, value, info.dtype))


def to_host(x):
    """A NumPy copy of array `x`."""
    if type(x) is np.ndarray:
        return x.copy()
    if _facts.is_torch(x):
        return x.detach().cpu().numpy().copy()
    if _is_cupy(x):
        return x.get()
    if hasattr(x, "copy_to_host"):
        return x.copy_to_host()
    from numba import cuda
    return cuda.as_cuda_array(x).copy_to_host()


def copy_from_host(dst, host):
    """Overwrite array `dst` with NumPy array `host` (same shape and dtype)."""
    if type(dst) is np.ndarray:
        dst[...] = host
    elif _facts.is_torch(dst):
        import torch
        dst.detach().copy_(torch.from_numpy(np.ascontiguousarray(host)))
    elif _is_cupy(dst):
        dst.set(np.ascontiguousarray(host))
    elif hasattr(dst, "copy_to_device"):
        dst.copy_to_device(np.ascontiguousarray(host))
    else:
        from numba import cuda
        cuda.as_cuda_array(dst).copy_to_device(np.ascontiguousarray(host))


def sum_squares(described):
    """``Σ g²`` of each described array, as a list of Python floats.

    Host arrays are reduced on the CPU; GPU arrays on their GPU, on the stream
    of the first array there, one host copy of the results per GPU.
    """
    sums = [0.0] * len(described)
    by_device = {}
    for k, d in enumerate(described):
        if d.spec.place == _facts.HOST:
            sums[k] = norms.sum_squares_host(d.info.reshape(-1),
                                             parallel=not _threads.serial_only())
        else:
            by_device.setdefault(d.spec.device, []).append(k)
    for device, ks in by_device.items():
        infos = [described[k].info for k in ks]
        with _device.on_device(device):
            got = norms.sum_squares_device([_device.flat_view(i) for i in infos],
                                           _device.stream_of(infos[0]))
        for k, s in zip(ks, got):
            sums[k] = float(s)
    return sums
