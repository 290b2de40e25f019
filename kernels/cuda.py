"""The CUDA skeleton: one grid-stride kernel, compiled once per variant and dtype.

Kernels are built lazily (on first use) so that importing fastopt needs no
GPU. They are not cached on disk; the CUDA kernel closes over the element step
directly, inlined at Numba IR level, which also lets `numba.cuda.compile_ptx`
compile it with no GPU present. Indices are 64-bit (``cuda.grid`` and
``cuda.gridsize`` return int64), so arrays beyond 2**31 elements are covered.
"""
import numba
from numba import cuda

from .variants import element_step

THREADS = 256
BLOCKS_PER_SM = 16          # enough resident warps to saturate HBM
SIM_THREADS, SIM_BLOCKS = 32, 2   # the simulator pays per simulated thread

_kernels = {}
_max_blocks = {}


def _simulated():
    return bool(numba.config.ENABLE_CUDASIM)


def kernel_function(variant, python=False):
    """The Python function of the kernel, before `cuda.jit` (for compile_ptx)."""
    step = element_step(variant, python=python)

    def update(param, grad, state, pre, hyper):
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, param.size, stride):
            step(i, param, grad, state, pre, hyper)

    return update


def kernel(variant):
    """The CUDA kernel of `variant`, same arguments as `kernels.cpu.kernel`."""
    kern = _kernels.get(variant)
    if kern is None:
        kern = cuda.jit(kernel_function(variant, python=_simulated()))
        _kernels[variant] = kern
    return kern


def launch_config(n):
    """(blocks, threads) for n elements: enough to fill the GPU, no more."""
    if _simulated():
        return SIM_BLOCKS, SIM_THREADS
    device = cuda.get_current_device()
    limit = _max_blocks.get(device.id)
    if limit is None:
        limit = _max_blocks[device.id] = BLOCKS_PER_SM * device.MULTIPROCESSOR_COUNT
    return max(1, min(limit, -(-n // THREADS))), THREADS


def launch(variant, n, stream, param, grad, state, pre, hyper):
    """Run the kernel of `variant` over n elements on `stream` (0: default)."""
    blocks, threads = launch_config(n)
    kernel(variant)[blocks, threads, stream](param, grad, state, pre, hyper)
