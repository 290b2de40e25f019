"""Launching the CUDA kernels at the driver's floor: packed parameters, one driver call.

Numba stays the code generator; this module replaces its launcher. Numba's
``kernel[blocks, threads, stream](*args)`` builds a ctypes object per flattened
scalar and a new launch configuration on every call, and cuda.core's packer
type-checks each one again (54 µs a launch, measured on an H200). Here each
kernel's parameters live in one buffer (`Packed`), laid out once per plan,
with the ``void*[]`` array the driver reads (``cuLaunchKernel``'s
``kernelParams``: one pointer per parameter, the driver copies the values
during the call, so the buffer is reusable at once). A call rewrites only the
slots whose values changed (compared first: the addresses of a repeated call
are last call's) and makes one driver call.

The layout is Numba's own flattening of the kernel's argument types (see
``numba.cuda.dispatcher._Kernel._prepare_args``): a tuple is its members one
after the other, an integer or float one parameter of its width, an array
the fields of its struct (meminfo, parent, nitems, itemsize, data, shape...,
strides...). `flatten` gives it as PTX types, which tests/test_launch.py
checks, byte for byte, against the ``.entry`` signature of every compiled
variant.

Backends: `DriverBackend` calls ``cuda.bindings.driver.cuLaunchKernel`` with
the compiled kernel's handle (``dispatcher.compile(sig)._codelibrary.
get_cufunc().handle``); `Recorder` stands in for it where there is no GPU (the
tests, ``python -m fastopt.bench --host-cost``): same packing, same call
sequence, the driver call replaced by a record. `backend()` picks the
driver backend on a GPU when cuda.bindings is importable, else None: the
callers then launch through Numba as before. ``FASTOPT_LAUNCHER=numba`` forces
Numba's launcher.
"""
import os
import struct
import threading

import numpy as np
from numba.core import types

# PTX parameter type -> (struct code, size) for the types the kernels take.
_CODES = {".u64": ("q", 8), ".f32": ("f", 4), ".f64": ("d", 8), ".u32": ("i", 4),
          ".u16": ("h", 2), ".u8": ("b", 1)}


def flatten(argtypes):
    """The kernel parameters of `argtypes` in order, as PTX types (``.u64``...)."""
    out = []
    for ty in argtypes:
        _flatten(ty, out)
    return out


def _flatten(ty, out):
    if isinstance(ty, types.Array):
        # meminfo, parent, nitems, itemsize, data, shape[ndim], strides[ndim]
        out.extend([".u64"] * (5 + 2 * ty.ndim))
    elif isinstance(ty, types.BaseTuple):
        for member in ty:
            _flatten(member, out)
    elif isinstance(ty, (types.Integer, types.CPointer)):
        out.append({64: ".u64", 32: ".u32", 16: ".u16", 8: ".u8"}[ty.bitwidth])
    elif ty == types.float32:
        out.append(".f32")
    elif ty == types.float64:
        out.append(".f64")
    else:
        raise NotImplementedError(f"no parameter layout for {ty}")


def array_values(ptr, shape, itemsize):
    """The flattened parameters of a C-contiguous device array (Numba's array
    struct): meminfo and parent 0, nitems, itemsize, data, shape, strides."""
    strides, step = [], itemsize
    for extent in reversed(shape):
        strides.append(step)
        step *= extent
    nitems = 1
    for extent in shape:
        nitems *= extent
    return (0, 0, nitems, itemsize, ptr, *shape, *reversed(strides))


_DTYPES = {"q": np.int64, "f": np.float32, "d": np.float64, "i": np.int32,
           "h": np.int16, "b": np.int8}


class Layout:
    """Where each parameter of a flattened layout lives in a packed buffer
    (each at its natural alignment), computed once per kernel."""

    def __init__(self, ptx_types, groups=()):
        self.ptx_types = list(ptx_types)
        self.offsets, offset = [], 0
        for t in self.ptx_types:
            size = _CODES[t][1]
            offset = -(-offset // size) * size
            self.offsets.append(offset)
            offset += size
        self.nbytes = max(offset, 8)
        self.offset_array = np.array(self.offsets or [0], np.uint64)
        # per group of parameters (a call argument): (start, stop, dtype) of its
        # bytes, if its parameters are of one type (else None: written whole)
        self.groups, first = [], 0
        for count in groups:
            self.groups.append(self.span(first, count))
            first += count

    def span(self, first, count):
        kinds = set(self.ptx_types[first:first + count])
        if len(kinds) != 1:
            return None
        code, size = _CODES[kinds.pop()]
        start = self.offsets[first]
        assert self.offsets[first + count - 1] == start + (count - 1) * size
        return start, start + count * size, _DTYPES[code]


class Packed:
    """One kernel's parameter buffer and its ``void*[]``, for a `Layout`
    (or a list of PTX types).

    ``slots(first, count)`` hands out a NumPy view of `count` consecutive
    parameters of one type, to be written in place (``view[:] = values``);
    ``address`` is what the driver gets as kernelParams.
    """

    def __init__(self, layout):
        if not isinstance(layout, Layout):
            layout = Layout(layout)
        self.layout = layout
        self.ptx_types = layout.ptx_types
        self.buffer = np.zeros(layout.nbytes, np.uint8)
        self.pointers = layout.offset_array + np.uint64(self.buffer.ctypes.data)
        self.address = self.pointers.ctypes.data

    def slots(self, first, count):
        """A writable view of parameters first .. first+count-1 (one PTX type)."""
        span = self.layout.span(first, count)
        assert span is not None, f"parameters {first}..{first + count - 1} mix types"
        return self._view(span)

    def _view(self, span):
        start, stop, dtype = span
        return self.buffer[start:stop].view(dtype)

    def raw(self):
        """What the driver would read: each parameter's bytes, through its
        pointer, as many as its PTX type has (for tests)."""
        import ctypes
        return [ctypes.string_at(int(ptr), _CODES[t][1])
                for ptr, t in zip(self.pointers[:len(self.ptx_types)], self.ptx_types)]

    def values(self):
        """`raw`, each parameter decoded by its PTX type."""
        return [struct.unpack(_CODES[t][0], b)[0] for t, b in zip(self.ptx_types, self.raw())]


class Plan:
    """A kernel's launch: its function, its packed parameters, the views of
    the slots a call may change, and the values last written there."""

    __slots__ = ("function", "packed", "views", "last", "grid", "block")

    def __init__(self, function, layout):
        """layout: a `Layout` with groups, one per call argument (an argument
        a call rewrites must be of one PTX type)."""
        self.function = function
        self.packed = Packed(layout)
        self.views = [None if span is None else self.packed._view(span)
                      for span in layout.groups]
        self.last = [None] * len(layout.groups)
        self.grid = self.block = 0

    def set(self, k, values):
        """Argument k's parameters (a tuple), written only if they changed."""
        if values != self.last[k]:
            self.views[k][:] = values
            self.last[k] = values


# ---- backends -----------------------------------------------------------


class DriverBackend:
    """Launches through ``cuda.bindings.driver.cuLaunchKernel``."""

    name = "driver"

    def __init__(self):
        from cuda.bindings import driver
        self._driver = driver
        self._launch = driver.cuLaunchKernel
        self._success = driver.CUresult.CUDA_SUCCESS
        self._streams = {}
        self._sms = {}

    def function(self, dispatcher, argtypes, device):
        """The driver handle of `dispatcher` compiled for `argtypes` (compiled
        and loaded on the current GPU, as Numba's own launch would)."""
        cufunc = dispatcher.compile(tuple(argtypes))._codelibrary.get_cufunc()
        handle = cufunc.handle
        driver = self._driver
        if isinstance(handle, driver.CUkernel):   # a library kernel: this context's function
            err, fn = driver.cuKernelGetFunction(handle)
            if err == self._success:
                return fn
            return driver.CUfunction(int(handle))
        return handle if isinstance(handle, driver.CUfunction) else driver.CUfunction(int(handle))

    def prepare(self, device):
        """Make sure this thread has the GPU's context current (Numba's, the
        primary one), as Numba's own launch would: a plan is made on each
        thread that launches, before its first launch."""
        from numba.cuda.cudadrv import devices
        devices.get_context()

    def multiprocessors(self, device):
        count = self._sms.get(device)
        if count is None:
            from numba import cuda
            count = self._sms[device] = cuda.get_current_device().MULTIPROCESSOR_COUNT
        return count

    def stream(self, handle):
        """A ``CUstream`` for a raw handle (0, 1: legacy, 2: per-thread, or a
        cudaStream_t), made once per handle."""
        stream = self._streams.get(handle)
        if stream is None:
            stream = self._streams[handle] = self._driver.CUstream(handle)
        return stream

    def launch(self, plan, stream):
        err, = self._launch(plan.function, plan.grid, 1, 1, plan.block, 1, 1, 0,
                            self.stream(stream), plan.packed.address, 0)
        if err != self._success:
            raise RuntimeError(f"cuLaunchKernel failed: {err}")

    def to_device(self, host, stream):
        """A device copy of a host table (Numba's allocator) and its address."""
        from numba import cuda
        array = cuda.to_device(host, stream=self.numba_stream(stream))
        return array, array.device_ctypes_pointer.value

    def synchronize(self, stream):
        err, = self._driver.cuStreamSynchronize(self.stream(stream))
        if err != self._success:
            raise RuntimeError(f"cuStreamSynchronize failed: {err}")

    def numba_stream(self, handle):
        from numba import cuda
        if handle == 0:
            return 0
        if handle == 1:
            return cuda.legacy_default_stream()
        if handle == 2:
            return cuda.per_thread_default_stream()
        return cuda.external_stream(handle)


class Recorder:
    """Stands in for the driver where there is no GPU: the same plans and
    packing, each launch recorded instead of made.

    keep: how many launches to keep (with a copy of each parameter's bytes,
    decoded: `Record.values`); the count goes on past it. 0 (the host-cost
    benchmark) records only the count, as cheap as a driver call's Python side.
    """

    name = "recorder"

    def __init__(self, keep=64, multiprocessors=132):
        self.keep = keep
        self.sms = multiprocessors
        self.launches = []
        self.count = 0
        self._tables = []

    def prepare(self, device):
        pass

    def function(self, dispatcher, argtypes, device):
        return ("function", id(dispatcher), tuple(argtypes))

    def multiprocessors(self, device):
        return self.sms

    def launch(self, plan, stream):
        self.count += 1
        if len(self.launches) < self.keep:
            raw = plan.packed.raw()
            self.launches.append(Record(plan.function, plan.grid, plan.block, stream,
                                        plan.packed.ptx_types, raw))

    def to_device(self, host, stream):
        copy = np.array(host)          # "device memory": the host copy's address
        self._tables.append(copy)
        return copy, copy.ctypes.data

    def synchronize(self, stream):
        pass


class Record:
    """A recorded launch: its function, configuration, stream handle, and
    each parameter's bytes as the driver would have copied them (``raw``;
    ``values`` decoded by PTX type)."""

    __slots__ = ("function", "grid", "block", "stream", "ptx_types", "raw")

    def __init__(self, function, grid, block, stream, ptx_types, raw):
        self.function, self.grid, self.block, self.stream = function, grid, block, stream
        self.ptx_types, self.raw = ptx_types, raw

    @property
    def values(self):
        return [struct.unpack(_CODES[t][0], b)[0] for t, b in zip(self.ptx_types, self.raw)]


_state = {"backend": None, "chosen": False}


def use(backend):
    """Make `backend` (a `Recorder`, a `DriverBackend`, or None: Numba's
    launcher) the one every GPU launch goes through; returns the previous."""
    old = _state["backend"] if _state["chosen"] else None
    _state["backend"], _state["chosen"] = backend, True
    _functions.clear()
    return old


def backend():
    """The backend in use: chosen once, at the first GPU launch."""
    if _state["chosen"]:
        return _state["backend"]
    chosen = None
    if os.environ.get("FASTOPT_LAUNCHER", "driver") != "numba":
        from numba import config
        if not config.ENABLE_CUDASIM:
            try:
                chosen = DriverBackend()
            except Exception:   # no cuda.bindings: Numba's launcher
                chosen = None
    _state["backend"], _state["chosen"] = chosen, True
    return chosen


_functions = {}


def plan(key, dispatcher, argtypes, groups, device):
    """A new `Plan` of kernel `key`: its own buffer, to be kept by the caller
    per thread (a buffer is written, then launched: threads each need one).
    argtypes: a function giving the kernel's Numba argument types; groups:
    per call argument, its number of flattened parameters. The function
    handle and the layout are made once per kernel and device."""
    backend = _state["backend"]
    backend.prepare(device)     # once per plan and thread
    full = (key, device)
    found = _functions.get(full)
    if found is None:
        types_ = argtypes()
        found = _functions[full] = (
            _state["backend"].function(dispatcher, types_, device),
            Layout(flatten(types_), groups))
    return Plan(*found)


get_ident = threading.get_ident
