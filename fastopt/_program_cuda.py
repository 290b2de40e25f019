"""Program steps (`fastopt.spec.Program`) on a GPU: `fastopt._program`'s
plan of a dtype group, with `kernels.passes_cuda`'s kernels.

`fastopt._program.run` describes and validates the arrays as it does on the
host (a GPU array seen through `DeviceView`, which reads as a NumPy array to
its checks: dtype, shape, C-contiguity, writeability, overlap) and hands a
group whose arrays are on a GPU to `plan_group`. Per pass, as on the host:

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
import sys
from types import SimpleNamespace

import numpy as np

from . import _device, _facts, _multi
from .kernels import passes_cuda as _pc
from .spec import Elementwise, Factored, MatrixFunction, PerTensor, selected

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


def plan_group(spec, info, arrays, index, pre, hyper):
    """The runs of one dtype group (tensors `index` of the call), on its GPU."""
    from numba import cuda

    program = spec.program
    first = arrays["param"][index[0]]
    dtype, device = first.dtype, first.device
    if program.dtype_scalars is not None:
        hyper = tuple(program.dtype_scalars(hyper, dtype))
    simulated = _device.simulated()
    shapes = [arrays["param"][k].shape for k in index]
    sizes = np.array([arrays["param"][k].size for k in index], dtype=np.int64)
    columns = {name: j for j, name in enumerate(program.env)}
    ginfo = SimpleNamespace(**vars(info), dtype=dtype, shapes=shapes, sizes=sizes)
    pre_d, hyper_d = _facts.scalars(dtype, pre), _facts.scalars(dtype, hyper)
    steps = []
    for step in program.passes:
        sel = selected(step, shapes, info, index)
        if not sel:
            continue
        ks = [index[j] for j in sel]
        if isinstance(step, Factored):
            mats, tiles, ncol = _pc.tiles_of([shapes[j] for j in sel])
            steps.append(("factored", _pc.LAUNCHES[step.kernel], sel,
                          _table(arrays, step.arrays, ks, simulated), (mats, tiles, ncol),
                          [columns[s] for s in step.sums], [columns[s] for s in step.reads]))
        elif isinstance(step, Elementwise):
            steps.append(("elementwise", step.kernel, sel,
                          _table(arrays, step.arrays, ks, simulated),
                          _chunks(sizes[sel]),
                          [columns[s] for s in step.sums], [columns[s] for s in step.reads]))
        elif isinstance(step, PerTensor):
            steps.append(("host", step.fn, sel))
        elif isinstance(step, MatrixFunction):
            steps.append(("matrix", step.fn, sel))
        else:   # pragma: no cover - a spec's own mistake
            raise TypeError(f"unknown pass {step!r}")

    def to_device(a, stream):
        return cuda.to_device(np.ascontiguousarray(a), stream=stream)

    def env_of(env, sel, reads, stream):
        cols = env[np.ix_(sel, reads)] if reads else np.zeros((len(sel), 1))
        return to_device(cols.astype(dtype), stream)

    def sums_back(partial, owner, nsel, stream):
        host = partial.copy_to_host(stream=stream)
        if stream:
            stream.synchronize()
        return _pc.tensor_sums(host, owner, nsel)

    def act():
        env = np.zeros((len(index), len(program.env)))
        stream = _device.stream_of(first.info)
        means = {}
        with _device.on_device(device):
            for st in steps:
                kind, sel = st[0], st[2]
                if kind == "elementwise":
                    _, name, _, table, chunks, out, reads = st
                    if out:
                        env[np.ix_(sel, out)] = 0.0
                    if len(chunks) == 0:
                        continue
                    if simulated:
                        table_d, chunks_d = table, *_on_device(device, chunks)
                    else:
                        table_d, chunks_d = _on_device(device, table, chunks)
                    partial = cuda.device_array((len(chunks), 2), dtype, stream=stream)
                    blocks, threads = _pc.launch_config(len(chunks), name, device)
                    _pc.kernel(name, dtype)[blocks, threads, stream](
                        table_d, chunks_d, env_of(env, sel, reads, stream), pre_d, hyper_d,
                        partial)
                    if out:
                        sums = sums_back(partial, chunks[:, 0], len(sel), stream)
                        env[np.ix_(sel, out)] = sums[:, :len(out)]
                elif kind == "factored":
                    _, launches, _, table, (mats, tiles, ncol), out, reads = st
                    if out:
                        env[np.ix_(sel, out)] = 0.0
                    if len(mats) == 0:
                        continue
                    key = tuple(sel)
                    if key not in means:    # the row means the factor pass leaves
                        means[key] = cuda.device_array(len(mats), dtype, stream=stream)
                    tables = ((table, *_on_device(device, mats, tiles)) if simulated
                              else _on_device(device, table, mats, tiles))
                    args = (*tables, env_of(env, sel, reads, stream), means[key], pre_d, hyper_d,
                            cuda.device_array((len(tiles), 1), dtype, stream=stream),
                            cuda.device_array(max(ncol, 1), dtype, stream=stream))
                    for name in launches:
                        items = len(mats) if name.startswith("factor_cols") else len(tiles)
                        blocks, threads = _pc.launch_config(items, name, device)
                        _pc.kernel(name, dtype)[blocks, threads, stream](*args)
                    if out:
                        sums = sums_back(args[7], mats[tiles[:, 0], 0], len(sel), stream)
                        env[np.ix_(sel, out)] = sums[:, :len(out)]
                elif kind == "host":
                    fn = st[1]
                    view = {name: env[sel, j] for name, j in columns.items()}
                    fn(view, SimpleNamespace(**{**vars(ginfo), "sizes": sizes[sel],
                                                "shapes": [shapes[j] for j in sel]}))
                    for name, j in columns.items():
                        env[sel, j] = view[name]
                else:
                    fn = st[1]
                    for j in sel:
                        k = index[j]
                        xp = None
                        tensors = {}
                        for name in arrays:
                            if arrays[name][k] is not None:
                                xp, tensors[name] = _library(info.originals[name][k])
                        row = {name: env[j, c] for name, c in columns.items()}
                        fn(xp, tensors, SimpleNamespace(**{**vars(ginfo), "env": row,
                                                           "index": j}))
                        for name, c in columns.items():
                            env[j, c] = row[name]

    return act
