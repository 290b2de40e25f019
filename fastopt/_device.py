"""GPU arrays: what the dispatcher needs to know of them, without copies.

Arrays arrive as CuPy arrays, Numba device arrays, torch CUDA tensors or any
object with ``__cuda_array_interface__`` (CAI); under Numba's CUDA simulator,
as the simulator's device arrays, which have no CAI. Each is described once
(pointer, shape, dtype, device, stream) and handed to the kernel as a flat 1-D
CAI view, with no stream field so that Numba adds no synchronisation: the
kernel runs on the stream the caller's framework is using.
"""
import contextlib
import functools
import math
import sys
from dataclasses import dataclass

import numpy as np


@dataclass
class DeviceArray:
    name: str
    owner: object       # keeps the memory alive while the view is in use
    ptr: int
    shape: tuple
    dtype: np.dtype
    contiguous: bool
    readonly: bool
    device: int
    stream: object      # CAI stream value: None, 1, 2, a cudaStream_t, or TORCH_STREAM
    masked: bool = False   # its CAI has a mask: the kernels would ignore it

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    @property
    def aligned(self):
        """Whether the buffer starts on an element boundary: a GPU load from a
        misaligned address is a fault that ends the CUDA context."""
        return self.ptr % self.dtype.itemsize == 0


class _FlatView:
    """A 1-D CAI view of a contiguous device buffer, for the kernel launch."""

    def __init__(self, info):
        self._owner = info.owner
        self.shape = (info.size,)
        self.__cuda_array_interface__ = {
            "shape": (info.size,), "strides": None, "typestr": info.dtype.str,
            "data": (info.ptr, False), "version": 3, "stream": None}


def simulated():
    """Whether Numba's CUDA simulator stands in for a GPU."""
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def _simulator_array_type():
    if not simulated():
        return None
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
    return FakeCUDAArray


def is_device_array(x):
    sim = _simulator_array_type()
    if sim is not None and isinstance(x, sim):
        return True
    return hasattr(x, "__cuda_array_interface__")


def is_device_array_type(cls):
    """Whether every instance of `cls` is a GPU array (so the answer can be cached)."""
    sim = _simulator_array_type()
    return (sim is not None and issubclass(cls, sim)) or hasattr(cls, "__cuda_array_interface__")


def describe(name, x):
    """A `DeviceArray` for a GPU array `x` (already known to be one)."""
    sim = _simulator_array_type()
    if sim is not None and isinstance(x, sim):
        host = x._ary   # the simulator's "device" memory is a NumPy array
        return DeviceArray(name, x, host.ctypes.data, host.shape, host.dtype,
                           host.flags.c_contiguous, not host.flags.writeable,
                           0, None)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        dtype = _torch_dtypes(torch).get(x.dtype)
        if dtype is not None:
            # Read off the tensor directly: building its CAI dict costs ~10x
            # more, which adds up over a model's hundreds of tensors.
            return DeviceArray(name, x, x.data_ptr(), tuple(x.shape), dtype,
                               x.is_contiguous(), False, x.get_device(), TORCH_STREAM)
        x = x.detach()   # a tensor that requires grad refuses the CAI
        cai = x.__cuda_array_interface__
        device = x.device.index
        stream = TORCH_STREAM
    else:
        cai = x.__cuda_array_interface__
        device = _device_ordinal(x, cai["data"][0])
        stream = cai.get("stream")
    shape = tuple(cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    contiguous = strides is None or tuple(strides) == _c_strides(shape, dtype.itemsize)
    ptr, readonly = cai["data"]
    return DeviceArray(name, x, ptr, shape, dtype, contiguous, bool(readonly),
                       device, stream, cai.get("mask") is not None)


TORCH_STREAM = "torch"   # a DeviceArray.stream: torch's current stream, looked up at launch
_torch_dtype_map = {}


def _torch_dtypes(torch):
    """torch dtype -> NumPy dtype for the dtypes whose CAI typestr NumPy reads."""
    if not _torch_dtype_map:
        _torch_dtype_map.update({torch.float32: np.dtype(np.float32),
                                 torch.float64: np.dtype(np.float64),
                                 torch.float16: np.dtype(np.float16)})
        try:    # NumPy has no bfloat16: ml_dtypes' (fastopt's kernels read its bits)
            import ml_dtypes
            _torch_dtype_map[torch.bfloat16] = np.dtype(ml_dtypes.bfloat16)
        except ImportError:  # pragma: no cover - ml_dtypes is a dependency
            pass
    return _torch_dtype_map


def _c_strides(shape, itemsize):
    strides, step = [], itemsize
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


def _device_ordinal(x, ptr):
    """The GPU an array lives on: from its library when known, else the driver."""
    device = getattr(x, "device", None)
    ordinal = getattr(device, "id", None)      # CuPy
    if isinstance(ordinal, int):
        return ordinal
    gpu_data = getattr(x, "gpu_data", None)    # Numba device arrays
    if gpu_data is not None:
        return gpu_data.context.device.id
    if ptr == 0:
        return _current_device()
    from cuda.bindings import driver
    err, ordinal = driver.cuPointerGetAttribute(
        driver.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ptr)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise ValueError(f"cannot tell which GPU owns pointer {ptr:#x}: {err}")
    return int(ordinal)


def _current_device():
    from numba import cuda
    return cuda.get_current_device().id


def flat_view(info):
    """The 1-D view of `info`'s buffer that the kernel is launched with."""
    sim = _simulator_array_type()
    if sim is not None and isinstance(info.owner, sim):
        flat = info.owner.reshape(info.size)
        if info.dtype.itemsize == 2:    # 16-bit storage: the kernels read its bits
            flat = flat.view(np.uint16)
        return flat
    return _FlatView(info)


_streams = {}


def stream_of(info):
    """The Numba stream to launch on: the one the array's producer uses."""
    return _stream(info.stream, info.device)


def torch_stream(device):
    """The Numba stream of torch's current stream on GPU `device`."""
    return _stream(TORCH_STREAM, device)


def stream_handle(info):
    """The raw stream handle to launch on, read now (at the call): torch's
    current stream for torch tensors, else the array interface's stream
    (None: 0; 1 and 2 are the driver's legacy and per-thread default streams,
    whose handles are the same numbers)."""
    value = info.stream
    if value == TORCH_STREAM:
        return torch_stream_handle(info.device)
    return 0 if value is None else int(value)


def torch_stream_handle(device):
    """torch's current stream on GPU `device`, as a raw handle."""
    import torch
    return torch.cuda.current_stream(device).cuda_stream


def numba_stream(handle):
    """The Numba stream of a raw handle (for Numba's launcher)."""
    return _stream(handle or None, None)


def _stream(value, device):
    if value == TORCH_STREAM:
        import torch
        value = torch.cuda.current_stream(device).cuda_stream or None
    if value is None or value == 0 or simulated():
        return 0
    stream = _streams.get(value)
    if stream is None:
        from numba import cuda
        if value == 1:
            stream = cuda.legacy_default_stream()
        elif value == 2:
            stream = cuda.per_thread_default_stream()
        else:
            stream = cuda.external_stream(value)
        _streams[value] = stream
    return stream


@functools.lru_cache(maxsize=None)
def _gpu_count():
    from numba import cuda
    return len(cuda.gpus)


def on_device(ordinal):
    """Make `ordinal` the current GPU for the launch (a no-op if it already is,
    or if there is only one: asking the driver costs ~5 us a call)."""
    if _simulator_array_type() is not None or _recording():
        return contextlib.nullcontext()
    if _gpu_count() == 1 or ordinal == _current_device():
        return contextlib.nullcontext()
    from numba import cuda
    return cuda.gpus[ordinal]


def switcher(ordinal):
    """`on_device` for a plan: None when no launch of it will ever need to
    switch GPUs (one GPU, the simulator, recorded launches), else a function
    giving the context to launch in."""
    if _simulator_array_type() is not None or _recording() or _gpu_count() == 1:
        return None
    return functools.partial(on_device, ordinal)


def _recording():
    """Whether GPU launches are recorded, not made (`kernels.launch.Recorder`:
    no GPU to switch to)."""
    from .kernels import launch
    backend = launch._state["backend"]
    return backend is not None and backend.name == "recorder"
