"""The GPU side of the harness: availability, device buffers, timers.

Nothing here runs without a real CUDA GPU: `require_gpu` refuses the CUDA
simulator and machines without a driver, with a message saying why.
"""
import time


class NoGPU(RuntimeError):
    """--device cuda was asked for and no real GPU can run it."""


def require_gpu():
    """Raise `NoGPU` unless a real CUDA GPU is usable; returns its description."""
    import numba
    if numba.config.ENABLE_CUDASIM:
        raise NoGPU("--device cuda needs a real GPU, but NUMBA_ENABLE_CUDASIM=1 "
                    "is set (the CUDA simulator cannot be benchmarked)")
    try:
        from numba import cuda
        if not cuda.is_available():
            raise NoGPU("--device cuda: no CUDA GPU is available "
                        "(numba.cuda.is_available() is False: no NVIDIA driver or "
                        "no device). Use --device cpu.")
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    except NoGPU:
        raise
    except Exception as err:   # a broken driver install reads like no GPU
        raise NoGPU(f"--device cuda: CUDA is not usable here: {err}") from err
    try:
        from numba.cuda.cudadrv.driver import driver as cuda_driver
        driver = ".".join(map(str, cuda_driver.get_version()))
    except Exception:          # only a label for the report
        driver = None
    return {"name": name, "driver": driver,
            "compute_capability": ".".join(map(str, dev.compute_capability)),
            "multiprocessors": dev.MULTIPROCESSOR_COUNT}


def gpu_available():
    try:
        require_gpu()
    except NoGPU:
        return False
    return True


def l2_bytes():
    from numba import cuda
    try:
        return int(cuda.get_current_device().L2_CACHE_SIZE)
    except Exception:   # attribute missing in some numba-cuda versions
        return 64 << 20


def make_device_sets(case, n, dtype, count, seed=0):
    """Like `timing.make_host_sets`, drawn on the GPU with CuPy when it is
    installed (host draws of 2**28 elements take seconds each); Numba device
    arrays either way."""
    from .timing import draw_arrays, make_host_sets
    try:
        import cupy
    except ImportError:
        return to_device_sets(make_host_sets(case, n, dtype, count, seed))
    from numba import cuda
    rng = cupy.random.default_rng(seed)
    return [{k: cuda.as_cuda_array(a)
             for k, a in draw_arrays(case, n, dtype, rng, cupy).items()}
            for _ in range(count)]


def to_device_sets(host_sets):
    """Numba device arrays holding copies of host buffer sets."""
    from numba import cuda
    return [{name: cuda.to_device(a) for name, a in s.items()} for s in host_sets]


class _Events:
    """Times one call between two CUDA events (`_start`, `_end`), set by a subclass."""

    def measure(self, fn):
        self._start.record()
        fn()
        self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1e3


class EventTimer(_Events):
    """CUDA events on the legacy default stream, which orders work with
    Numba's, CuPy's and torch's default streams."""

    def __init__(self):
        from numba import cuda
        self.synchronize = cuda.synchronize
        self._start, self._end = cuda.event(), cuda.event()


class TorchEventTimer(_Events):
    """CUDA events on torch's current stream (torch may not use stream 0)."""

    def __init__(self):
        import torch
        self.synchronize = torch.cuda.synchronize
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)


class SyncTimer:
    """Host clock around a call followed by `block(result)` (JAX has no
    user-facing events; it is synchronised before the clock is read)."""

    def __init__(self, block):
        self._block = block

    def synchronize(self):
        self._block()

    def measure(self, fn):
        t0 = time.perf_counter()
        fn()
        self._block()
        return time.perf_counter() - t0


def make_copy(sets):
    """``call(k)``: a device-to-device copy of set k's param into its grad's
    twin buffer (credited 2 x nbytes)."""
    from numba import cuda
    pairs = [(cuda.device_array_like(s["param"]), s["param"]) for s in sets]

    def call(k):
        dst, src = pairs[k]
        dst.copy_to_device(src)

    return call


STREAM_BYTES = 1 << 30    # each STREAM buffer at least this (1 GiB)


def make_stream(kind, dtype, nbytes=STREAM_BYTES):
    """``(call, n, moved)``: STREAM's `kind` ("copy" or "triad",
    `kernels.stream`) on fresh device buffers of `nbytes` each, launched
    through the optimizers' packed launcher where it is in use (else Numba's);
    `moved` the bytes one call reads and writes."""
    import numpy as np
    from numba import cuda

    from ..kernels import launch, stream
    dtype = np.dtype(dtype)
    n = -(-nbytes // dtype.itemsize)
    arrays = [cuda.device_array(n, dtype) for _ in range(stream.KINDS[kind])]
    for a in arrays[1:]:
        a[:] = 1.0 if dtype.kind == "f" else 1
    backend = launch.backend()
    if backend is None:
        def call(k):
            stream.run(kind, *arrays, s=0.5) if kind == "triad" else \
                stream.run(kind, *arrays)
    else:
        addrs = [a.device_ctypes_pointer.value for a in arrays]
        fire = stream.launcher(backend, kind, dtype, n, addrs, 0.5, cuda.get_current_device().id)

        def call(k):
            fire(0)
    call.arrays = arrays    # kept alive with the call
    return call, n, stream.KINDS[kind] * dtype.itemsize * n
