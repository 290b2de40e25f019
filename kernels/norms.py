"""Sums of squares where the arrays live: the reductions behind norm clipping.

Keras's ``clipnorm`` and ``global_clipnorm`` need the L2 norm of each gradient.
On the GPU the reduction runs in a Numba CUDA kernel and only the final sums
(one float64 per array) come back to the host; gradients are never copied.
On the CPU a parallel `njit` loop does the same for NumPy arrays.

Both accumulate in float64 whatever the arrays' dtype: a float32 sum of 1e7
squares would lose ~3 digits, and the reduction is bound by memory, not by
float64 arithmetic.

Nothing here imports the public API; the caller picks the GPU and the stream.
"""
import numba
import numpy as np
from numba import cuda

from .cache import cached
from .cuda import THREADS, launch_config

_kernels = {}   # threads per block -> kernel


def kernel_function(threads=THREADS):
    """The reduction kernel before `cuda.jit` (for `compile_ptx`).

    ``sum_squares(x, out, k)`` adds ``Σ x[i]²`` over the 1-D array `x` to
    ``out[k]`` (float64): a grid-stride loop per thread, a tree reduction in
    shared memory per block, one atomic add per block. `threads` must be the
    block size it is launched with (a power of two).
    """

    def sum_squares(x, out, k):
        partial = cuda.shared.array(threads, numba.float64)
        tid = cuda.threadIdx.x
        acc = numba.float64(0)
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = numba.float64(x[i])
            acc += v * v
        partial[tid] = acc
        cuda.syncthreads()
        half = threads // 2
        while half > 0:
            if tid < half:
                partial[tid] += partial[tid + half]
            cuda.syncthreads()
            half //= 2
        if tid == 0:
            cuda.atomic.add(out, k, partial[0])

    return sum_squares


def _kernel(threads):
    kern = _kernels.get(threads)
    if kern is None:
        kern = _kernels[threads] = cuda.jit(kernel_function(threads))
    return kern


def sum_squares_device(arrays, stream=0):
    """``Σ x²`` of each 1-D GPU array in `arrays`, as a host float64 array.

    The arrays (Numba device arrays or ``__cuda_array_interface__`` views, all
    on the current GPU) are reduced on `stream` (0: the default stream), one
    launch each, into one small device vector; that vector is the only copy
    to the host.

    Example::

        >>> x = cuda.to_device(np.arange(4.0))
        >>> sum_squares_device([x])
        array([14.])
    """
    out = cuda.to_device(np.zeros(len(arrays), np.float64), stream=stream)
    for k, x in enumerate(arrays):
        n = x.shape[0]
        if n == 0:
            continue
        blocks, threads = launch_config(n)
        _kernel(threads)[blocks, threads, stream](x, out, k)
    host = out.copy_to_host(stream=stream)
    if stream != 0:
        stream.synchronize()    # the copy is asynchronous on a non-default stream
    return host


@numba.njit(inline="always")
def _sum_of_squares(x):
    acc = 0.0
    for i in numba.prange(x.size):
        v = np.float64(x[i])
        acc += v * v
    return acc


# reassoc lets the loop vectorise; the order still depends only on the
# compiled code and the thread count, so a run repeats bit for bit.
@cached(parallel=True, fastmath={"reassoc", "contract"})
def _sum_squares_host(x):
    return _sum_of_squares(x)


@cached(fastmath={"reassoc", "contract"})
def _sum_squares_serial(x):
    return _sum_of_squares(x)


def sum_squares_host(x, parallel=True):
    """``Σ x²`` of a 1-D contiguous NumPy array, accumulated in float64
    (parallel=False: on the calling thread alone, see `kernels.cpu.kernel`).

    Example::

        >>> sum_squares_host(np.arange(4, dtype=np.float32))
        14.0
    """
    return float((_sum_squares_host if parallel else _sum_squares_serial)(x))
