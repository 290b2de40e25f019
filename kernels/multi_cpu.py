"""The CPU skeleton for many tensors: one loop per call, whatever N (a
parallel region from `kernels.cpu.SERIAL_BELOW` elements in all, in a
kernel of its own as `kernels.cpu`'s).

The host describes same-dtype tensors with three int64 tables:
``addrs[t] = (param, grad, slot0, slot1, slot2)`` addresses of tensor t
(`NUM_ARRAYS` columns)
(unused slots repeat param's and are never touched),
``chunks[c] = (t, start, n)``, and ``parts``, where each run of consecutive
chunks of about equal element count starts (part j is chunks
``parts[j]:parts[j + 1]``). One ``prange`` walks the parts, so threads,
which take equal numbers of them, get equal work however the chunk sizes
vary; each chunk runs in blocks as `kernels.cpu`'s parallel loop does
(`kernels.cpu.block`: prefetch the chunk's lines ahead, turn the addresses
into typed 1-D views of the block, `kernels.multi_table`, run the variant's
element step over them).

Vectorization: views are built once per block, outside the element loop, and
that loop runs from 0 to the block's length, so LLVM vectorizes it (packed
sqrt/div in zmm/ymm registers) by versioning it with a runtime overlap check
of the few pointers; a loop that reads the address table per element, or
indexes one big raw-address view with a computed offset, stays scalar. The
host has already checked that no written array overlaps another, so the
vector version is the one that runs. `tests/test_multi_tensor.py` checks the
LLVM IR for vector stores.

Caching: like `kernels.cpu`, the loop is a closure over the variant's key
string, resolved by `kernels.cpu`'s overload, so ``cache=True`` holds.
"""
import numba

from . import cpu as _cpu
from .cpu import _steps, prefetch, scalars
from .storage import math_like, rnd_base
from .variants import NUM_ARRAYS, element_step

_kernels = {}   # variant -> compiled loop


@numba.njit(inline="always")
def loop(key, addrs, chunks, parts, like, pre, hyper):
    """The loop over `chunks` of the variant whose element step `kernels.cpu`
    holds under the literal `key`, as `kernel` describes its arguments, on
    the calling thread; inlined into its jitted caller, which must be made
    by `kernels.cpu.jit` (why inlined: `kernels.cpu.loop`)."""
    pre, hyper = scalars(like, pre, hyper)
    for c in range(chunks.shape[0]):
        _chunk(key, c, addrs, chunks, like, pre, hyper)


@numba.njit(inline="always")
def parallel_loop(key, addrs, chunks, parts, like, pre, hyper):
    """`loop` as a parallel region over the parts."""
    pre, hyper = scalars(like, pre, hyper)
    for j in numba.prange(parts.shape[0] - 1):
        for c in range(parts[j], parts[j + 1]):
            _chunk(key, c, addrs, chunks, like, pre, hyper)


def parallel_for(parts):
    """Whether a table of these `parts` takes the parallel loop: more than
    one part (the host makes one part of fewer than `kernels.cpu.SERIAL_BELOW`
    elements in all)."""
    return parts.shape[0] > 2


@numba.njit(inline="always")
def _chunk(key, c, addrs, chunks, like, pre, hyper):
    """Chunk c's update."""
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    if c < chunks.shape[0] - 1:
        # A thread's next chunk is c + 1 (its parts are consecutive), often
        # another tensor elsewhere in memory: start its streams now
        # (measured on 200 tensors of 1,000 elements: 10% less time;
        # prefetching more of it, or further ahead, was slower).
        for a in range(NUM_ARRAYS):
            prefetch(addrs[chunks[c + 1, 0], a], chunks[c + 1, 1], math_like(like))
    # In blocks, each prefetching the chunk's lines ahead (`kernels.cpu.block`).
    base, end = rnd_base(pre, t), start + n
    for b in range(start, end, _cpu.BLOCK):
        _cpu.block(key, addrs[t], b, min(_cpu.BLOCK, end - b), end, like, pre, hyper, base)


def _loop(key, cache=True, parallel=True):
    @_cpu.jit(cache, parallel, key=key)     # one loop compiled, as `kernels.cpu._loop`
    def update(addrs, chunks, parts, like, pre, hyper):
        if parallel:
            parallel_loop(key, addrs, chunks, parts, like, pre, hyper)
        else:
            loop(key, addrs, chunks, parts, like, pre, hyper)

    return update


_serial = {}    # variant -> compiled loop without a parallel region


def kernel(variant, parallel=True):
    """The many-tensor CPU kernel:
    ``kernel(addrs, chunks, parts, like, pre, hyper)``.

    addrs: int64 (T, NUM_ARRAYS); chunks: int64 (C, 3); parts: int64 (P + 1,),
    non-decreasing from 0 to C; all as above; `like` a scalar of
    the tensors' dtype; `pre` and `hyper` tuples of Python floats. The caller
    keeps the memory alive and guarantees that no written array overlaps
    another. parallel: as `kernels.cpu.kernel`, for tables whose parts are
    ``parallel_for``.
    """
    kernels = _kernels if parallel else _serial
    kern = kernels.get(variant)
    if kern is None:
        key = _cpu.key_of(variant, parallel)
        _steps.setdefault(key, element_step(variant, host=True))
        kern = kernels[variant] = _cpu.registered(key_of(variant, parallel),
                                                  _loop(key, parallel=parallel))
    return kern


def key_of(variant, parallel=True):
    """The key under which `kernels.cpu.call` finds ``kernel(variant, parallel)``."""
    return "many-" + _cpu.key_of(variant, parallel)
