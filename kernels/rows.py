"""The skeletons for sparse gradients: a variant's update of only the rows a
COO gradient touches.

A param (and its state) is seen as ``(R, width)``: R rows of `width`
elements (torch's sparse ``grad`` of an ``nn.Embedding(sparse=True)`` weight:
R embeddings, ``indices[0]`` the touched rows, ``values`` of shape
``(nnz, width)``). With ``rows`` unique (coalesced) and in range, element j of
touched row k is updated from ``values[k, j]``: the variant's own element step
(`kernels.variants.element_step`, ``gathered=True``: param and state at
``rows[k]·width + j``, the gradient at ``k·width + j``). Nothing else is read
or written: 2·(arrays the rule uses)·nnz·width elements move, whatever R.

CPU: one loop over the touched rows, parallel from `kernels.cpu.SERIAL_BELOW`
elements; cached on disk like `kernels.cpu` (a closure over the variant's key
string, resolved by an overload). CUDA: one grid-stride launch over the
nnz·width elements; under the simulator the step is plain Python.
"""
import numba
from numba import cuda
from numba.core import types
from numba.core.extending import overload

from . import cpu as _cpu
from . import cuda as _cuda
from .cpu import scalars
from .cpu import view as _view
from .storage import column, rnd_base
from .variants import element_step

_steps = {}     # variant key -> gathered element step, read by the overload below
_kernels = {}


def _gathered_at(key, i, j, param, grad, state, pre, hyper, rnd):
    """Stand-in resolved by the overload below; never called from Python."""
    raise NotImplementedError


@overload(_gathered_at, prefer_literal=True, target="cpu")
def _gathered_at_impl(key, i, j, param, grad, state, pre, hyper, rnd):
    if not isinstance(key, types.StringLiteral):
        return None
    step = _steps[key.literal_value]

    def impl(key, i, j, param, grad, state, pre, hyper, rnd):
        step(i, j, param, grad, state, pre, hyper, rnd)

    return impl


@numba.njit(inline="always")
def loop(key, addrs, n, rows, width, like, pre, hyper):
    """Rows `rows` (int64, unique, each < n // width) of the n-element param
    and state at `addrs` (param, grad values, 3 slots, as `kernels.cpu`)
    updated from the ``len(rows)·width`` gradient values. 16-bit columns
    (a stored variant's `like`, `kernels.storage.host_like`) and stochastic
    rounding as in `kernels.cpu.loop`: element i of the param takes the
    random bits the dense kernel gives element i of a call's one tensor."""
    pre, hyper = scalars(like, pre, hyper)
    nnz = rows.shape[0]
    param = _view(addrs[0], 0, n, column(like, 0))
    grad = _view(addrs[1], 0, nnz * width, column(like, 1))
    state = (_view(addrs[2], 0, n, column(like, 2)), _view(addrs[3], 0, n, column(like, 3)),
             _view(addrs[4], 0, n, column(like, 4)))
    rnd = (rnd_base(pre, 0), numba.int64(0))
    if nnz * width < _cpu.SERIAL_BELOW:
        for k in range(nnz):
            base = rows[k] * width
            for j in range(width):
                _gathered_at(key, base + j, k * width + j, param, grad, state, pre, hyper,
                             rnd)
    else:
        for k in numba.prange(nnz):
            base = rows[k] * width
            for j in range(width):
                _gathered_at(key, base + j, k * width + j, param, grad, state, pre, hyper,
                             rnd)


def _loop(key):
    @_cpu.jit(key=key)
    def update(addrs, n, rows, width, like, pre, hyper):
        loop(key, addrs, n, rows, width, like, pre, hyper)

    return update


def kernel(variant):
    """The rows CPU kernel of `variant`:
    ``kernel(addrs, n, rows, width, like, pre, hyper)`` (see `loop`)."""
    kern = _kernels.get(variant)
    if kern is None:
        key = variant.key + "-rows"
        _steps.setdefault(key, element_step(variant, gathered=True, host=True))
        kern = _kernels[variant] = _loop(key)
    return kern


_cuda_kernels = {}


def kernel_function(variant, python=False):
    """The CUDA kernel before `cuda.jit`: ``update(param, grad, s0, s1, s2,
    rows, width, pre, hyper)``, 1-D arrays (an unused slot: any array, never
    touched), a thread per element of the gradient's values. float32 and
    float64 only: 16-bit rows are refused on a GPU (`fastopt._sparse`)."""
    step = element_step(variant, python=python, gathered=True)

    def update(param, grad, s0, s1, s2, rows, width, pre, hyper):
        state = (s0, s1, s2)
        for e in range(cuda.grid(1), grad.size, cuda.gridsize(1)):
            k = e // width
            step(rows[k] * width + (e - k * width), e, param, grad, state, pre, hyper,
                 (0, 0))

    return update


def cuda_kernel(variant):
    """The rows CUDA kernel of `variant`, built lazily."""
    simulated = _cuda._simulated()
    kern = _cuda_kernels.get((variant, simulated))
    if kern is None:
        kern = _cuda_kernels[(variant, simulated)] = cuda.jit(
            kernel_function(variant, python=simulated))
    return kern
