"""The CUDA skeleton for many tensors: one launch per call, whatever N.

Same tables as `kernels.multi_cpu` (``addrs`` (T, NUM_ARRAYS), ``chunks`` (C, 3)), in
device memory. Blocks stride over the chunks (Apex's multi_tensor_apply
layout: one chunk per block at a time) and the threads of a block over the
chunk's elements. A chunk's addresses become typed views through a small
intrinsic (`kernels.cuda.view`): no ``carray`` (its CUDA version is an
@overload, which needs a GPU to compile) and no device function, so
``numba.cuda.compile_ptx`` builds the kernel with no GPU. Addresses are
int64 and element offsets 64-bit (``start`` is int64; ``i`` < CHUNK).

Under the simulator, which runs no intrinsic, the same kernel body runs as
plain Python with `_sim_view`: the "table" is then a tuple, per tensor, of
the five simulator arrays, and a view is a slice of one.
"""
import numba
from numba import cuda
from . import cuda as _cuda
from . import capture as _capture
from . import launch as _launch
from . import storage
from . import vector as _vector
from .variants import PRE, element_step

_kernels = {}


@numba.njit(inline="always")
def _device_view(addrs, t, k, start, n, like):
    return _cuda.view(addrs[t, k], start, n, like)


def _sim_view(arrays, t, k, start, n, like):
    return arrays[t][k][start:start + n]


def kernel_function(variant, python=False):
    """The Python function of the kernel, before `cuda.jit` (for compile_ptx)."""
    step = element_step(variant, python=python)
    view = _sim_view if python else _device_view
    base_of = storage.rnd_base_function(variant.sr, python)
    lp, lg, l0, l1, l2 = (storage.column_like_function(f, python)
                          for f in variant.columns or (None,) * 5)
    # 128-bit loads where a tensor's five addresses are 16-byte aligned
    # (`kernels.vector`; a chunk starts a multiple of CHUNK elements in), the
    # scalar loop for the tail; the simulator runs no intrinsic: scalar only;
    # 16-bit columns take the scalar loop for now (as in kernels.cuda).
    vector = not python and not variant.storage
    quads = _vector.quad_loop(variant, step) if vector else None
    aligned16 = _vector.aligned16

    def chunk(table, t, start, n, pre, hyper, tid, nthreads):
        # The update of chunk (t, start, n) by threads tid, tid + nthreads,
        # ... of a block: both kernels' one body (the capturable kernel adds
        # only the device scalars and the done-counter).
        like = pre[0]
        param = view(table, t, 0, start, n, lp(like))
        grad = view(table, t, 1, start, n, lg(like))
        state = (view(table, t, 2, start, n, l0(like)),
                 view(table, t, 3, start, n, l1(like)),
                 view(table, t, 4, start, n, l2(like)))
        rnd = (base_of(pre, t), start)
        done = 0
        if vector:
            a0, a1, a2, a3, a4 = (table[t, 0], table[t, 1], table[t, 2], table[t, 3],
                                  table[t, 4])
            if aligned16(a0, a1, a2, a3, a4):
                done = quads(a0, a1, a2, a3, a4, start, n, tid, nthreads, pre, hyper)
        for i in range(done + tid, n, nthreads):
            step(i, param, grad, state, pre, hyper, rnd)

    # Inlined on the device; plain Python under the simulator (as in
    # `kernels.cuda`: the thread's place is passed in).
    chunk = chunk if python else numba.njit(inline="always")(chunk)

    def update(table, chunks, pre, hyper):
        for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
            chunk(table, chunks[c, 0], chunks[c, 1], chunks[c, 2], pre, hyper,
                  cuda.threadIdx.x, cuda.blockDim.x)

    if variant.capture is None:
        return update
    # A capturable step (`kernels.capture`): each chunk's scalars from its
    # tensor's step count (dev[3] counts, or one for every tensor), the
    # counts advanced by the last block to finish, each address once.
    # GradScaler's found_inf set: the whole launch returns, writing nothing.
    _, count_at, lr_of, counter_of, found = _capture.helpers(python)
    scalars = _capture.scalar_function(variant.capture, python)
    device_pre = _capture.pre_function(variant, python)

    def captured(table, chunks, pre, cst, dev):
        if found(dev[4]):
            return
        nsteps = dev[3]
        lr = lr_of(dev[1], cst[1])
        pre = device_pre(pre, lr, cst, dev[5])
        for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
            t = chunks[c, 0]
            hyper = scalars(count_at(dev[0], nsteps, t if nsteps > 1 else 0)[0] + cst[0],
                            lr, cst[3:])
            chunk(table, t, chunks[c, 1], chunks[c, 2], pre, hyper,
                  cuda.threadIdx.x, cuda.blockDim.x)
        last = cuda.shared.array(1, numba.int32)
        cuda.syncthreads()
        if cuda.threadIdx.x == 0:
            cuda.threadfence()
            counter = counter_of(dev[2])
            last[0] = 0
            if cuda.atomic.add(counter, 0, 1) == cuda.gridDim.x - 1:
                counter[0] = 0
                last[0] = 1
        cuda.syncthreads()
        if last[0] == 1:
            for k in range(cuda.threadIdx.x, nsteps, cuda.blockDim.x):
                count = count_at(dev[0], nsteps, k)
                count[0] = count[0] + cst[0]

    return captured


def kernel(variant):
    """The many-tensor CUDA kernel of `variant`: ``[blocks, threads, stream](table,
    chunks, pre, hyper)``, built lazily (importing needs no GPU)."""
    kern = _kernels.get(variant)
    if kern is None:
        kern = cuda.jit(kernel_function(variant, python=_cuda._simulated()))
        _kernels[variant] = kern
    return kern


def launch_config(nchunks, device=None):
    """(blocks, threads): a block per chunk, up to what fills the GPU."""
    return _cuda.launch_config(nchunks * _cuda.THREADS, device)


def device_table(entry, device, stream):
    """The device copies of a host table `entry` (cached in it, per GPU)."""
    key = ("device", device)
    tables = entry.get(key)
    if tables is None:
        tables = (cuda.to_device(entry["addrs"], stream=stream),
                  cuda.to_device(entry["chunks"], stream=stream))
        # Once per new table: a later step may launch on another stream, and
        # the host arrays must outlive the copy.
        (stream or cuda.default_stream()).synchronize()
        entry[key] = tables
    return tables


def argtypes(variant, dtype, ncst=0):
    """The kernel's Numba argument types for tensors of `dtype` (a NumPy dtype);
    a capturable variant's with `ncst` ``cst`` scalars (`kernels.capture`)."""
    from numba.core import types
    dt = numba.from_dtype(dtype)
    table = types.Array(types.int64, 2, "C")
    if variant.capture is not None:   # (cst, dev) for hyper: `kernels.capture`
        return (table, table, types.UniTuple(dt, len(PRE)), types.UniTuple(dt, ncst),
                types.UniTuple(types.int64, _capture.NUM_DEV_MULTI))
    return (table, table, types.UniTuple(dt, len(PRE) + 2 * variant.sr),
            types.UniTuple(dt, len(variant.spec.hyper)))


def packed_tables(backend, entry, device, stream):
    """The device copies of a host table `entry` through `backend`, as the
    kernel's flattened array parameters (cached in the entry, per GPU)."""
    key = ("packed", device)
    values = entry.get(key)
    if values is None:
        addrs, chunks = entry["addrs"], entry["chunks"]
        table, table_ptr = backend.to_device(addrs, stream)
        chunk, chunk_ptr = backend.to_device(chunks, stream)
        backend.synchronize(stream)   # the host arrays must outlive the copy
        values = entry[key] = (
            (table, chunk),
            _launch.array_values(table_ptr, addrs.shape, 8)
            + _launch.array_values(chunk_ptr, chunks.shape, 8), len(chunks))
    return values


def launcher_for(backend, variant, dtype, entry, device=None):
    """The `packed_launcher` of a table `entry` (cached in it: an entry is one
    layout's, keyed by every address and size), made once."""
    key = ("launcher", variant, dtype, device, backend)
    found = entry.get(key)
    if found is None:
        found = entry[key] = packed_launcher(backend, variant, dtype, entry, device)
    return found


def packed_launcher(backend, variant, dtype, entry, device=None):
    """``launch(stream, pre, hyper)``: one launch over a dtype group's table
    `entry` through `backend` (`kernels.launch`), its parameters packed once
    (per thread); stream a raw handle read at call time."""
    plans, get_ident = {}, _launch.get_ident

    def launch(stream, pre, hyper):
        plan = plans.get(get_ident())
        if plan is None:
            _, tables, nchunks = packed_tables(backend, entry, device, stream)
            if nchunks == 0:
                return
            plan = plans[get_ident()] = _launch.plan(
                ("multi", variant, dtype), kernel(variant), lambda: argtypes(variant, dtype),
                (18, len(PRE) + 2 * variant.sr, len(variant.spec.hyper)), device)
            plan.set(0, tables)
            plan.grid, plan.block = launch_config(nchunks, device)
        plan.set(1, pre)
        plan.set(2, hyper)
        backend.launch(plan, stream)

    return launch
