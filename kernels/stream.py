"""STREAM's copy and triad on the GPU: the bandwidth ceiling the optimizers
are measured against, built as they are.

``copy``: ``a ← b``; ``triad``: ``a ← b + s·c``: the same grid-stride
skeleton as `kernels.cuda`, the same 128-bit loads and stores in the main
loop (`kernels.vector`; scalar head-free, scalar tail, the whole array
scalar when an address is not 16-byte aligned), the same raw addresses
turned into views, and the same packed launcher (`kernels.launch`), so that
the ceiling differs from an optimizer's kernel only in the arithmetic and the
number of arrays. `fastopt.bench` times both on buffers of at least 1 GiB in
the same run as the optimizers (``--device cuda``) and reports GB/s: copy
moves 2 arrays per element, triad 3.

Arguments: ``(addrs, n, scalars)``: the int64 addresses (a, b[, c]), the
length, and a 1-tuple of the arrays' dtype (triad's s; copy takes it only
for the dtype). Under the simulator the arrays themselves, scalar loop only.
"""
import numba
import numpy as np
from numba import cuda

from . import launch as _launch
from . import vector as _vector
from .cuda import _device_view, _sim_view, _simulated, launch_config

KINDS = {"copy": 2, "triad": 3}    # arrays per element
_kernels = {}


def kernel_function(kind, python=False):
    """The Python function of the `kind` kernel, before `cuda.jit`."""
    if kind not in KINDS:
        raise ValueError(f"unknown STREAM kernel {kind!r}: {sorted(KINDS)}")
    view_of = _sim_view if python else _device_view
    quad, load4, store4 = _vector.CUDA
    vector = not python
    width = _vector.WIDTH

    if kind == "copy":
        def copy(addrs, n, scalars):
            like = scalars[0]
            a, b = view_of(addrs[0], n, like), view_of(addrs[1], n, like)
            start, stride = cuda.grid(1), cuda.gridsize(1)
            done = 0
            if vector:
                a0, a1 = addrs
                if ((a0 | a1) & 15) == 0:
                    x = quad(like)
                    for q in range(start, n // width, stride):
                        load4(a1, q * width, x)
                        store4(a0, q * width, x)
                    done = (n // width) * width
            for i in range(done + start, n, stride):
                a[i] = b[i]

        return copy

    def triad(addrs, n, scalars):
        like = s = scalars[0]
        a, b = view_of(addrs[0], n, like), view_of(addrs[1], n, like)
        c = view_of(addrs[2], n, like)
        start, stride = cuda.grid(1), cuda.gridsize(1)
        done = 0
        if vector:
            a0, a1, a2 = addrs
            if ((a0 | a1 | a2) & 15) == 0:
                x, y = quad(like), quad(like)
                for q in range(start, n // width, stride):
                    load4(a1, q * width, x)
                    load4(a2, q * width, y)
                    for k in range(width):
                        x[k] = x[k] + s * y[k]
                    store4(a0, q * width, x)
                done = (n // width) * width
        for i in range(done + start, n, stride):
            a[i] = b[i] + s * c[i]

    return triad


def kernel(kind):
    """The CUDA kernel of `kind` (built on first use)."""
    kern = _kernels.get(kind)
    if kern is None:
        kern = _kernels[kind] = cuda.jit(kernel_function(kind, python=_simulated()))
    return kern


def argtypes(kind, dtype):
    from numba.core import types
    return (types.UniTuple(types.int64, KINDS[kind]), types.int64,
            types.UniTuple(numba.from_dtype(dtype), 1))


def run(kind, a, b, c=None, s=0.0, stream=0):
    """``a ← b`` or ``a ← b + s·c`` on device arrays of one dtype and size
    (Numba or CuPy arrays, or under the simulator Numba's), through Numba's
    launcher; `launcher` is the packed one the benchmark times."""
    arrays = [a, b] if kind == "copy" else [a, b, c]
    dtype = np.dtype(a.dtype)
    n = a.size
    if any(x.size != n or np.dtype(x.dtype) != dtype for x in arrays):
        raise ValueError("STREAM arrays must have one size and dtype")
    blocks, threads = launch_config(n)
    args = (tuple(arrays) if _simulated()
            else tuple(x.__cuda_array_interface__["data"][0] for x in arrays))
    kernel(kind)[blocks, threads, stream](args, n, (dtype.type(s),))


def launcher(backend, kind, dtype, n, addrs, s=0.0, device=None):
    """``launch(stream)``: the `kind` kernel over n elements at `addrs`
    through `backend` (`kernels.launch`), its parameters packed once."""
    plan = _launch.plan(("stream", kind, np.dtype(dtype)), kernel(kind),
                        lambda: argtypes(kind, dtype), (KINDS[kind], 1, 1), device)
    plan.set(0, tuple(addrs))
    plan.set(1, (n,))
    plan.set(2, (float(s),))
    plan.grid, plan.block = launch_config(n, device)

    def launch(stream=0):
        backend.launch(plan, stream)

    return launch
