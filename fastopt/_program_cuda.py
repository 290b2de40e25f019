"""Program steps (`fastopt.spec.Program`) on a GPU: the executor of
`fastopt._program`'s plan of a dtype group (`Device`), with
`kernels.passes_cuda`'s kernels.

`fastopt._program.run` describes and validates the arrays as it does on the
host (a GPU array seen through `DeviceView`, which reads as a NumPy array to
its checks: dtype, shape, C-contiguity, writeability, overlap) and hands a
group whose arrays are on a GPU to `Device`. Per pass, as on the host:

* `Elementwise`: one launch over the group's chunks (the many-tensor
  kernels' address table, in device memory); its per-chunk sums (a block
  reduction each) come back to the host and are added per tensor in
  float64 (the second stage of the reduction);
* `Factored`: the launches of `kernels.passes_cuda.LAUNCHES` over the
  group's matrices, in tiles; the row means they leave (``means``) stay on
  the GPU for the next factored passes of the step;
* `PerTensor`: the same NumPy arithmetic on the host's ``env`` (the sums
  came back through one copy per pass that has sums);
* `MatrixFunction`: through the arrays' own library's matmul, on the GPU:
  torch's for torch tensors, CuPy's for CuPy arrays (and for Numba device
  arrays, viewed through CuPy or torch); under Numba's simulator, NumPy on
  the simulated device memory.

Launches go to the stream of the param's producer (torch's current stream
for torch tensors), so torch's matmuls and fastopt's kernels are ordered.
"""
import contextlib
import sys
from types import SimpleNamespace

import numpy as np

from . import _device, _facts, _multi
from .kernels import passes_cuda as _pc

_tables = _multi._Cache()   # device copies of the chunk, matrix and tile tables, by content


class DeviceView:
    """A GPU array as `fastopt._program`'s checks read a NumPy one."""

    def __init__(self, info):
        self.info = info
        self.dtype, self.shape, self.size, self.nbytes = (info.dtype, info.shape, info.size,
                                                          info.nbytes)
        self.device = info.device
        self.flags = SimpleNamespace(c_contiguous=info.contiguous,
                                     writeable=not info.readonly)
        self.ctypes = SimpleNamespace(data=info.ptr)


def describe(who, label, a):
    """`a` (a GPU array) as a `DeviceView`, or the reason it cannot be one."""
    info = _device.describe(label, a)
    if info.masked:
        raise TypeError(f"{who}: {label} has a mask, which the kernels would ignore")
    if not info.aligned:
        raise ValueError(f"{who}: {label} is not aligned to its {info.dtype.itemsize}-byte "
                         "elements")
    return DeviceView(info)


def empty_like(a):
    """A fresh GPU array shaped as `a`, in `a`'s own library."""
    if _device.simulated() or hasattr(a, "copy_to_host"):     # Numba device arrays
        from numba import cuda
        return cuda.device_array(a.shape, a.dtype)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy.empty_like(a)
    raise TypeError(f"cannot make scratch memory like a {type(a).__name__}")


def _library(original):
    """The array library of GPU array `original` and the array in it."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(original, torch.Tensor):
        return torch, original.detach()
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(original, cupy.ndarray):
        return cupy, original
    if _device.simulated():     # the simulated device memory is a NumPy array
        return np, original._ary
    try:
        import cupy
        return cupy, cupy.asarray(original)
    except ImportError:
        import torch
        return torch, torch.as_tensor(original, device="cuda")


def _table(arrays, names, ks, simulated):
    """A pass's address table: (T, columns) int64 addresses; under the
    simulator, per tensor a tuple of its arrays (flat)."""
    if simulated:
        return tuple(tuple(_device.flat_view(arrays[name][k].info) for name in names)
                     for k in ks)
    return np.array([[arrays[name][k].ctypes.data for name in names] for k in ks],
                    dtype=np.int64).reshape(len(ks), len(names))


def _chunks(sizes, chunk=_pc.CHUNK):
    """(t, start, n) per chunk of `chunk` elements of tensors of `sizes`."""
    rows = [(t, start, min(chunk, int(size) - start))
            for t, size in enumerate(sizes) for start in range(0, int(size), chunk)]
    return np.array(rows, dtype=np.int64).reshape(len(rows), 3)


def _on_device(device, *tables):
    """The device copies of int64 host `tables`, cached by their content
    (one synchronous copy each the first time a layout is seen)."""
    from numba import cuda
    key = (device, *((a.shape, a.tobytes()) for a in tables))
    entry = _tables.hit(key)
    if entry is None:
        entry = _tables.store(key, {"arrays": tuple(cuda.to_device(a) for a in tables)},
                              sum(a.nbytes for a in tables))
    return entry["arrays"]


class Device:
    """The executor of a dtype group's kernels on its GPU
    (`kernels.passes_cuda`), for `fastopt._program._plan_group`: a pass's
    tables built at plan time; at run time, one launch (or a factored
    pass's launches) on the param's stream, its sums copied back into env's
    columns."""

    def __init__(self, arrays, first, pre, hyper):
        self.arrays, self.first = arrays, first
        self.dtype, self.device = first.dtype, first.device
        self.simulated = _device.simulated()
        self.pre, self.hyper = _facts.scalars(self.dtype, pre), _facts.scalars(self.dtype, hyper)

    @contextlib.contextmanager
    def session(self):
        """The device current, its stream, and the row means a factor pass
        leaves for the later factored passes of the step."""
        with _device.on_device(self.device):
            yield SimpleNamespace(stream=_device.stream_of(self.first.info), means={})

    library = staticmethod(lambda original, array: _library(original))

    def _env_of(self, env, sel, reads, stream):
        cols = env[np.ix_(sel, reads)] if reads else np.zeros((len(sel), 1))
        return _to_device(cols.astype(self.dtype), stream)

    def elementwise(self, step, sel, ks, sizes, out, reads):
        from numba import cuda

        name, dtype, device = step.kernel, self.dtype, self.device
        table, chunks = _table(self.arrays, step.arrays, ks, self.simulated), _chunks(sizes)

        def run(env, session):
            stream = session.stream
            if out:
                env[np.ix_(sel, out)] = 0.0
            if len(chunks) == 0:
                return
            if self.simulated:
                table_d, chunks_d = table, *_on_device(device, chunks)
            else:
                table_d, chunks_d = _on_device(device, table, chunks)
            partial = cuda.device_array((len(chunks), 2), dtype, stream=stream)
            blocks, threads = _pc.launch_config(len(chunks), name, device)
            _pc.kernel(name, dtype)[blocks, threads, stream](
                table_d, chunks_d, self._env_of(env, sel, reads, stream), self.pre,
                self.hyper, partial)
            if out:
                sums = _sums_back(partial, chunks[:, 0], len(sel), stream)
                env[np.ix_(sel, out)] = sums[:, :len(out)]

        return run

    def factored(self, step, sel, ks, shapes, out, reads):
        from numba import cuda

        launches, dtype, device = _pc.LAUNCHES[step.kernel], self.dtype, self.device
        table = _table(self.arrays, step.arrays, ks, self.simulated)
        mats, tiles, ncol = _pc.tiles_of(shapes)
        key = tuple(sel)

        def run(env, session):
            stream = session.stream
            if out:
                env[np.ix_(sel, out)] = 0.0
            if len(mats) == 0:
                return
            if key not in session.means:    # the row means the factor pass leaves
                session.means[key] = cuda.device_array(len(mats), dtype, stream=stream)
            tables = ((table, *_on_device(device, mats, tiles)) if self.simulated
                      else _on_device(device, table, mats, tiles))
            args = (*tables, self._env_of(env, sel, reads, stream), session.means[key],
                    self.pre, self.hyper,
                    cuda.device_array((len(tiles), 1), dtype, stream=stream),
                    cuda.device_array(max(ncol, 1), dtype, stream=stream))
            for name in launches:
                items = len(mats) if name.startswith("factor_cols") else len(tiles)
                blocks, threads = _pc.launch_config(items, name, device)
                _pc.kernel(name, dtype)[blocks, threads, stream](*args)
            if out:
                sums = _sums_back(args[7], mats[tiles[:, 0], 0], len(sel), stream)
                env[np.ix_(sel, out)] = sums[:, :len(out)]

        return run


def _to_device(a, stream):
    from numba import cuda
    return cuda.to_device(np.ascontiguousarray(a), stream=stream)


def _sums_back(partial, owner, nsel, stream):
    """Each tensor's sums (float64) from the blocks' partials on the device."""
    host = partial.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    return _pc.tensor_sums(host, owner, nsel)
