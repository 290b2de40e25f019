"""Norms and scaling of many tensors: the list-form reductions behind
`fastopt.clip_grad_norm_`.

The tensors come as the many-tensor kernels' tables (`kernels.multi_cpu`):
``addrs[t]`` the address of tensor t (one column), ``chunks[c] = (t, start,
n)`` and ``parts``. One call reduces every chunk into ``partial[c]`` (in one
parallel region on the CPU, one launch on a GPU: a block per chunk at a
time); the partials of a tensor are then combined into its norm, and the
norms into the total, as torch combines them: per-tensor norms, then the
norm of the vector of norms (`combine`, a few microseconds for thousands of
tensors). Everything accumulates in float64, whatever the tensors' dtype.

The norm is chosen at run time (`MODES`, one compiled loop for all):

====== ============================ ================================
mode   partial (per chunk)           torch's ``norm_type``
====== ============================ ================================
L2     Σ x²                         2
L1     Σ |x|                        1
MAX    max |x| (NaN wins)           inf
MIN    min |x| (NaN wins)           -inf
COUNT  number of x ≠ 0 (NaN counts) 0
POW    Σ |x|^p                      any other p
====== ============================ ================================

`scale` multiplies every element of every tensor by one factor, in the
tensors' dtype (the clip's in-place form, when no fastopt optimizer takes the
factor into its own pass).

Below a million elements or so a reduction is over before a parallel region
would have started, and the table is not worth building: `norms_list` and
`scale_list` take each tensor's address and size as they are, on the
calling thread, chunk by chunk in the same order (so the same partials and
the same norms as `norms_cpu`). Thousands of small tensors scattered over the
heap are each too short for the hardware prefetcher to find: both loops
prefetch the head of the tensor `AHEAD` places on (measured: 2,000 x 100
float32 out of the L2 cache, 176 µs a norm without, 109 with; 116 with 4
places, 105-109 with 8 or 16).
"""
import math

import numba
import numpy as np
from llvmlite import ir
from numba import cuda
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from . import cpu as _cpu
from .cpu import as_dtype_of
from .cpu import view as _host_view
from .cuda import view as _gpu_view
from . import cuda as _cuda
from .cache import cached

L2, L1, MAX, MIN, COUNT, POW = range(6)
# The host loops' sums may be reassociated: LLVM then keeps several float64
# partial sums in vector lanes instead of one running sum, whose add latency
# bound the loop (2,000 x 100 float32 out of the L2 cache: 177 -> 109 µs a
# norm). The order is the compiled loop's, the same in every call and in
# both loops (`norms_list`, `norms_cpu`).
REDUCE_FASTMATH = {"reassoc"}
MODES = ("L2", "L1", "MAX", "MIN", "COUNT", "POW")


def mode_of(p):
    """The mode of torch's ``norm_type`` `p` (a float)."""
    if p == 2.0:
        return L2
    if p == 1.0:
        return L1
    if p == math.inf:
        return MAX
    if p == -math.inf:
        return MIN
    if p == 0.0:
        return COUNT
    return POW


@numba.njit(inline="always")
def _nan_max(a, b):
    """max(a, b), NaN if either is NaN (torch's max)."""
    if a != a:
        return a
    if b != b or b > a:
        return b
    return a


@numba.njit(inline="always")
def _nan_min(a, b):
    """min(a, b), NaN if either is NaN (torch's min)."""
    if a != a:
        return a
    if b != b or b < a:
        return b
    return a


@numba.njit(inline="always")
def _merge(mode, a, b):
    """Two partials of one tensor as one."""
    if mode == MAX:
        return _nan_max(a, b)
    if mode == MIN:
        return _nan_min(a, b)
    return a + b


@numba.njit(inline="always")
def _identity(mode):
    if mode == MIN:
        return np.inf
    return 0.0


@numba.njit(inline="always")
def _reduce(x, mode, p):
    """The partial of the 1-D array `x` (`MODES`), in float64."""
    n = x.size
    acc = _identity(mode)
    if mode == L2:
        for i in range(n):
            v = np.float64(x[i])
            acc += v * v
    elif mode == L1:
        for i in range(n):
            acc += abs(np.float64(x[i]))
    elif mode == MAX:
        for i in range(n):
            acc = _nan_max(acc, abs(np.float64(x[i])))
    elif mode == MIN:
        for i in range(n):
            acc = _nan_min(acc, abs(np.float64(x[i])))
    elif mode == COUNT:
        for i in range(n):
            if x[i] != 0:
                acc += 1.0
    else:
        for i in range(n):
            acc += abs(np.float64(x[i])) ** p
    return acc


@numba.njit(inline="always")
def _norm(mode, value, p):
    """A tensor's norm from its combined partial."""
    if mode == L2:
        return math.sqrt(value)
    if mode == POW:
        return value ** (1.0 / p)
    return value


@cached()
def combine(norms, mode, p):
    """The total norm of tensors whose norms are `norms` (float64), as
    ``torch.linalg.vector_norm(torch.stack(norms), p)`` computes it."""
    acc = _identity(mode)
    for k in range(norms.size):
        v = norms[k]
        if mode == L2:
            acc += v * v
        elif mode == L1:
            acc += abs(v)
        elif mode == MAX:
            acc = _nan_max(acc, abs(v))
        elif mode == MIN:
            acc = _nan_min(acc, abs(v))
        elif mode == COUNT:
            if v != 0:
                acc += 1.0
        else:
            acc += abs(v) ** p
    if norms.size == 0 and mode == MIN:
        return 0.0
    return _norm(mode, acc, p)


@cached()
def tensor_norms(partial, chunks, ntensors, mode, p):
    """Each tensor's norm (float64) from its chunks' partials; a tensor with
    no chunk (no element) gets the mode's identity, as torch's empty norm."""
    acc = np.empty(ntensors, np.float64)
    acc[:] = _identity(mode)
    for c in range(chunks.shape[0]):
        t = chunks[c, 0]
        acc[t] = _merge(mode, acc[t], partial[c])
    for t in range(ntensors):
        acc[t] = _norm(mode, acc[t], p)
    return acc


# -- the CPU loops ----------------------------------------------------------
@intrinsic
def _prefetch(typingctx, addr):
    """A hint to fetch the cache line at address `addr` for reading (it
    never faults, whatever the address)."""
    def codegen(context, builder, sig, args):
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(fn, [builder.inttoptr(args[0], i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(types.int64), codegen


AHEAD = 8           # tensors prefetched ahead of the one being read
AHEAD_BYTES = 512   # of each, at most (the prefetcher takes longer streams)


@numba.njit(inline="always")
def _fetch(addrs, sizes, t, itemsize):
    """Prefetch the first `AHEAD_BYTES` of tensor t, if there is one."""
    if t < addrs.shape[0]:
        end = min(sizes[t] * itemsize, AHEAD_BYTES)
        for b in range(0, end, 64):
            _prefetch(addrs[t] + b)


@cached(error_model="numpy", fastmath=REDUCE_FASTMATH)
def norms_list(addrs, sizes, chunk, like, mode, p):
    """Each tensor's norm (float64 array), tensors `addrs[t]` of `sizes[t]`
    elements of the dtype of `like`, on the calling thread: per chunk of
    `chunk` elements a partial, merged in order (as `tensor_norms` merges
    `norms_cpu`'s partials)."""
    ntensors = addrs.shape[0]
    itemsize = _host_view(0, 0, 0, like).itemsize
    out = np.empty(ntensors, np.float64)
    for t in range(AHEAD):
        _fetch(addrs, sizes, t, itemsize)
    for t in range(ntensors):
        _fetch(addrs, sizes, t + AHEAD, itemsize)
        n = sizes[t]
        acc = _identity(mode)
        for start in range(0, n, chunk):
            x = _host_view(addrs[t], start, min(chunk, n - start), like)
            acc = _merge(mode, acc, _reduce(x, mode, p))
        out[t] = _norm(mode, acc, p)
    return out


@cached(error_model="numpy")
def scale_list(addrs, sizes, like, factor):
    """Every element of tensors `addrs[t]` (`sizes[t]` elements of the dtype
    of `like`) times `factor` cast to that dtype, in place, tensor after
    tensor on the calling thread (a buffer listed twice is scaled twice, as
    torch's loop scales it)."""
    f = as_dtype_of((factor,), like)[0]
    ntensors = addrs.shape[0]
    itemsize = _host_view(0, 0, 0, like).itemsize
    for t in range(AHEAD):
        _fetch(addrs, sizes, t, itemsize)
    for t in range(ntensors):
        _fetch(addrs, sizes, t + AHEAD, itemsize)
        x = _host_view(addrs[t], 0, sizes[t], like)
        for i in range(x.size):
            x[i] = x[i] * f


@_cpu.jit(fastmath=REDUCE_FASTMATH)
def norms_cpu(addrs, chunks, parts, like, ntensors, mode, p):
    """Each tensor's norm (float64 array of `ntensors`): one parallel region
    over `parts` (one part: the calling thread), then the combine."""
    partial = np.empty(chunks.shape[0], np.float64)
    if parts.shape[0] <= 2:
        for c in range(chunks.shape[0]):
            partial[c] = _reduce(_host_view(addrs[chunks[c, 0]], chunks[c, 1], chunks[c, 2],
                                           like), mode, p)
    else:
        for j in numba.prange(parts.shape[0] - 1):
            for c in range(parts[j], parts[j + 1]):
                partial[c] = _reduce(_host_view(addrs[chunks[c, 0]], chunks[c, 1],
                                               chunks[c, 2], like), mode, p)
    return tensor_norms(partial, chunks, ntensors, mode, p)


@_cpu.jit()
def scale_cpu(addrs, chunks, parts, like, factor):
    """Every element of every chunk times `factor` (cast to the dtype of
    `like`), in place: one parallel region."""
    f = as_dtype_of((factor,), like)[0]
    if parts.shape[0] <= 2:
        for c in range(chunks.shape[0]):
            x = _host_view(addrs[chunks[c, 0]], chunks[c, 1], chunks[c, 2], like)
            for i in range(x.size):
                x[i] = x[i] * f
    else:
        for j in numba.prange(parts.shape[0] - 1):
            for c in range(parts[j], parts[j + 1]):
                x = _host_view(addrs[chunks[c, 0]], chunks[c, 1], chunks[c, 2], like)
                for i in range(x.size):
                    x[i] = x[i] * f


# -- the CUDA kernels ---------------------------------------------------------
_cuda_kernels = {}


def _device_view(table, t, start, n, like):
    return _gpu_view(table[t], start, n, like)


def _sim_view(table, t, start, n, like):
    return table[t][start:start + n]


def norms_kernel_function(threads=_cuda.THREADS, python=False):
    """``partials(table, chunks, like, mode, p, out)``: ``out[c]`` the partial
    of chunk c, a block per chunk (grid-stride over the chunks), a tree
    reduction in shared memory per block; no atomics, so a run repeats bit
    for bit. `threads`: the block size it is launched with (a power of two).
    """
    view = _sim_view if python else numba.njit(inline="always")(_device_view)
    merge = _merge.py_func if python else _merge
    reduce_one = _step.py_func if python else _step
    identity = _identity.py_func if python else _identity

    def partials(table, chunks, like, mode, p, out):
        shared = cuda.shared.array(threads, numba.float64)
        tid = cuda.threadIdx.x
        for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
            x = view(table, chunks[c, 0], chunks[c, 1], chunks[c, 2], like)
            acc = identity(mode)
            for i in range(tid, x.size, cuda.blockDim.x):
                acc = reduce_one(mode, acc, x[i], p)
            shared[tid] = acc
            cuda.syncthreads()
            half = threads // 2
            while half > 0:
                if tid < half:
                    shared[tid] = merge(mode, shared[tid], shared[tid + half])
                cuda.syncthreads()
                half //= 2
            if tid == 0:
                out[c] = shared[0]
            cuda.syncthreads()

    return partials


@numba.njit(inline="always")
def _step(mode, acc, x, p):
    """`acc` with one more element `x` (`_reduce`'s body, for a GPU thread)."""
    v = np.float64(x)
    if mode == L2:
        return acc + v * v
    if mode == L1:
        return acc + abs(v)
    if mode == MAX:
        return _nan_max(acc, abs(v))
    if mode == MIN:
        return _nan_min(acc, abs(v))
    if mode == COUNT:
        return acc + (1.0 if v != 0 else 0.0)
    return acc + abs(v) ** p


def scale_kernel_function(python=False):
    """``scale(table, chunks, factor)``: every element times `factor` (a
    scalar of the tensors' dtype), a block per chunk."""
    view = _sim_view if python else numba.njit(inline="always")(_device_view)

    def scale(table, chunks, factor):
        for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
            x = view(table, chunks[c, 0], chunks[c, 1], chunks[c, 2], factor)
            for i in range(cuda.threadIdx.x, x.size, cuda.blockDim.x):
                x[i] = x[i] * factor

    return scale


def cuda_kernel(which, threads):
    """The CUDA kernel `which` ("norms" or "scale"), built lazily."""
    simulated = _cuda._simulated()
    key = (which, threads, simulated)
    kern = _cuda_kernels.get(key)
    if kern is None:
        fn = (norms_kernel_function(threads, simulated) if which == "norms"
              else scale_kernel_function(simulated))
        kern = _cuda_kernels[key] = cuda.jit(fn)
    return kern
