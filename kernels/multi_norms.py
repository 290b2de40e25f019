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
"""
import math

import numba
import numpy as np
from numba import cuda

from . import cpu as _cpu
from .cpu import as_dtype_of
from .cpu import view as _host_view
from .cuda import view as _gpu_view
from . import cuda as _cuda

L2, L1, MAX, MIN, COUNT, POW = range(6)
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


@numba.njit(cache=True)
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


@numba.njit(cache=True)
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
@_cpu.jit()
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
