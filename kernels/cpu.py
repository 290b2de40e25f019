"""The CPU skeleton: one loop, compiled once per variant and dtype, in two
kernels: on the calling thread, and a parallel region (from `SERIAL_BELOW`
elements, the host's choice).

Binding a variant's element step to the loop must survive Numba's on-disk
cache. The loop is a closure over the variant's *key string* only (a value the
cache hashes into its index key); an overload resolves that literal key to the
element step at compile time. A closure over the step itself would never be
cached (a dispatcher does not hash stably), and re-binding one function's
globals would let one variant be served another's code from the cache.

No fastmath at all. ``nnan``/``ninf`` would break NaN and Inf propagation,
``reassoc``/``arcp``/``afn`` correctly rounded sqrt and division. Even
``contract`` (FMA) is off: LLVM fuses the vectorized body and the scalar tail
differently, so an element's result would depend on its position in the array
(and a list of tensors would not match one call per tensor bit for bit). The
kernels are memory-bound, so FMA buys no speed; the loop vectorizes without any
flag because its iterations are independent.
"""
import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic, overload
from numba.np.arrayobj import populate_array

from .cache import lock_writes, named
from .multi_table import view_codegen, view_signature
from .storage import column, math_like, rnd_base
from .variants import element_step

FASTMATH = False

# Below this many elements a loop runs on the calling thread, as torch's CPU
# loops do below the same grain: a parallel region costs a few µs even with
# its threads spinning (measured: adam() on 1,000 float32 elements 4.9 µs a
# call in parallel, 3.4 on one thread), and near the grain one thread is
# about as fast as two (16,000 elements: 7.6 µs on one, 6.9 on two).
SERIAL_BELOW = 1 << 15


def jit(cache=True, parallel=True, fastmath=FASTMATH, key=None):
    """The decorator of every CPU function that runs a kernel loop: parallel
    (unless told not), no fastmath (above; a reduction may allow
    reassociation, `kernels.multi_norms`), and NumPy's error model. A
    division by zero then gives inf or nan, as in a parallel loop's body,
    instead of raising as Python does; the check per element that raising
    needs keeps LLVM from vectorizing a serial loop (measured: 6x slower).
    Cache writes are locked (`kernels.cache`). key: for a closure compiled
    once per key (a variant's loop, a runner, a pass), that key, which names
    it (`kernels.cache.named`)."""
    njit = numba.njit(parallel=parallel, cache=cache, fastmath=fastmath,
                      error_model="numpy")

    def decorate(fn):
        fn = fn if key is None else named(fn, key)
        return lock_writes(njit(fn)) if cache else njit(fn)

    return decorate


def serial_key(variant):
    """The key of `variant`'s loop compiled without a parallel region: its
    own key, so that Numba's cache keeps the two apart."""
    return variant.key + "-serial"

_steps = {}     # variant key -> element step, read by the overload below
_kernels = {}   # variant -> compiled loop


def _element_at(key, i, param, grad, state, pre, hyper, rnd):
    """Stand-in resolved by the overload below; never called from Python."""
    raise NotImplementedError


@overload(_element_at, prefer_literal=True, target="cpu")
def _element_at_impl(key, i, param, grad, state, pre, hyper, rnd):
    if not isinstance(key, types.StringLiteral):
        return None
    step = _steps[key.literal_value]

    def impl(key, i, param, grad, state, pre, hyper, rnd):
        step(i, param, grad, state, pre, hyper, rnd)

    return impl


@intrinsic
def as_dtype_of(typingctx, values, like):
    """The tuple `values` cast to the dtype of `like` (an array or a scalar).

    The host passes Python floats (typed float64); the skeletons cast them
    once per call, before the loop, so no float64 reaches float32 arithmetic
    and the host builds no NumPy scalars (about 1.5 µs a call). The cast
    rounds to nearest, exactly as ``np.float32(x)`` does.
    """
    dtype = like.dtype if isinstance(like, types.Array) else like
    out = types.UniTuple(dtype, len(values.types))

    def codegen(context, builder, sig, args):
        items = [context.cast(builder, builder.extract_value(args[0], i), t, dtype)
                 for i, t in enumerate(values.types)]
        return context.make_tuple(builder, out, items)

    return out(values, like), codegen


@intrinsic
def view(typingctx, addr, start, n, like):
    """``addr`` as a 1-D array of n elements from `start`, dtype of scalar `like`."""
    return view_signature(addr, start, n, like), view_codegen(populate_array)


@numba.njit(inline="always")
def scalars(like, pre, hyper):
    """`pre` and `hyper` in the math's dtype, cast once before a loop."""
    return as_dtype_of(pre, math_like(like)), as_dtype_of(hyper, math_like(like))


@numba.njit(inline="always")
def _operands(addrs, n, like, pre, hyper):
    """The loop's views and scalars: the arrays as 1-D views of their
    columns' dtypes, `pre` and `hyper` in the math's dtype, the random bits'
    base of stochastic rounding."""
    pre, hyper = scalars(like, pre, hyper)
    param, grad = view(addrs[0], 0, n, column(like, 0)), view(addrs[1], 0, n, column(like, 1))
    state = (view(addrs[2], 0, n, column(like, 2)), view(addrs[3], 0, n, column(like, 3)),
             view(addrs[4], 0, n, column(like, 4)))
    return param, grad, state, pre, hyper, (rnd_base(pre, 0), numba.int64(0))


@numba.njit(inline="always")
def loop(key, addrs, n, like, pre, hyper):
    """The loop of the variant whose element step `_steps` holds under the
    literal `key`, as `kernel` describes its arguments, on the calling
    thread; inlined into the jitted caller, which must be made by `jit`.
    Other compiled code runs a variant's loop through `call`, not a copy of
    its own."""
    param, grad, state, pre, hyper, rnd = _operands(addrs, n, like, pre, hyper)
    for i in range(n):
        _element_at(key, i, param, grad, state, pre, hyper, rnd)


@numba.njit(inline="always")
def parallel_loop(key, addrs, n, like, pre, hyper):
    """`loop` as a parallel region (``prange``) over blocks of `BLOCK`
    elements, each run by `block`."""
    pre, hyper = scalars(like, pre, hyper)
    base = rnd_base(pre, 0)
    for b in numba.prange((n + BLOCK - 1) // BLOCK):
        start = b * BLOCK
        block(key, addrs, start, min(BLOCK, n - start), n, like, pre, hyper, base)


# A parallel loop runs in blocks, and before each asks for the lines of its
# columns `AHEAD` elements on. With the hardware prefetchers alone, a loop
# whose arithmetic takes about as long as its memory traffic did not overlap
# the two (measured, bfloat16 Adam, 1e7 elements out of memory, 2 threads:
# 4.0-4.2 ms a call, 3.0 with its data in cache; prefetching, 3.1-3.4 ms;
# the floor kernel, which prefetches the same way, from 3.4 to 2.7 ms;
# float32 unchanged within noise). Blocks of 128 and 512 ahead were the best
# of those tried (64 to 4096, 512 to 8192): longer bursts of prefetches
# wait for the core's few line-fill buffers.
BLOCK = 128
AHEAD = 512
LINE = 64       # bytes


@numba.njit(inline="always")
def block(key, addrs, start, m, end, like, pre, hyper, base):
    """Elements [start, start + m) of the columns at `addrs` (a tensor's),
    after prefetching the block `AHEAD` on (`ahead`, below `end`, where the
    tensor, or a chunk of it, ends); `base` is the stochastic rounding's
    (`kernels.storage.rnd_base`)."""
    ahead(addrs[0], start, end, column(like, 0))
    ahead(addrs[1], start, end, column(like, 1))
    if addrs[2] != addrs[0]:     # an unused slot repeats param's address
        ahead(addrs[2], start, end, column(like, 2))
    if addrs[3] != addrs[0]:
        ahead(addrs[3], start, end, column(like, 3))
    if addrs[4] != addrs[0]:
        ahead(addrs[4], start, end, column(like, 4))
    # The views spelled out here: returned from a helper, Numba's parfor
    # array analysis fails on them inside the prange body.
    param, grad = view(addrs[0], start, m, column(like, 0)), view(addrs[1], start, m, column(like, 1))
    state = (view(addrs[2], start, m, column(like, 2)), view(addrs[3], start, m, column(like, 3)),
             view(addrs[4], start, m, column(like, 4)))
    rnd = (base, start)
    for i in range(m):
        _element_at(key, i, param, grad, state, pre, hyper, rnd)


@numba.njit(inline="always")
def ahead(addr, start, end, like):
    """Prefetch the lines of elements [start + AHEAD, + BLOCK) at `addr`
    (dtype of `like`) if they end by element `end`."""
    if start + AHEAD + BLOCK <= end:
        _prefetch_block(addr, start, like)


@intrinsic
def _prefetch_block(typingctx, addr, start, like):
    """`ahead`'s prefetches: one a line, unrolled (a loop of them made every
    kernel's compile about 10% slower)."""
    def codegen(context, builder, sig, args):
        addr, start, _ = args
        dtype = context.get_data_type(sig.args[2])
        first = builder.gep(builder.inttoptr(addr, dtype.as_pointer()),
                            [builder.add(start, start.type(AHEAD))])
        data = builder.bitcast(first, ir.IntType(8).as_pointer())
        for line in range(BLOCK * like.bitwidth // 8 // LINE):
            _prefetch_line(builder, builder.gep(data, [ir.IntType(64)(line * LINE)]))
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, like), codegen


def _prefetch_line(builder, data):
    """LLVM's prefetch of the line at `data` (an i8*), for reading, kept in
    all cache levels."""
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
        "llvm.prefetch.p0")
    builder.call(fn, [data, i32(0), i32(3), i32(1)])


@intrinsic
def prefetch(typingctx, addr, start, like):
    """Ask the cache for the line holding element `start` of `addr` (dtype of
    `like`): LLVM's prefetch, for reading, kept in all cache levels. (The
    host's struct walk, `fastopt._hostscan`, and the many-tensor loop,
    `kernels.multi_cpu`, use it too.)"""
    def codegen(context, builder, sig, args):
        addr, start, _ = args
        dtype = context.get_data_type(sig.args[2])
        data = builder.gep(builder.inttoptr(addr, dtype.as_pointer()), [start])
        _prefetch_line(builder, builder.bitcast(data, ir.IntType(8).as_pointer()))
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, like), codegen


def parallel_for(n):
    """Whether n elements take the parallel loop (from `SERIAL_BELOW`)."""
    return n >= SERIAL_BELOW


def _loop(key, cache=True, parallel=True):
    # Closure constants are pruned at compile time: one loop is compiled. (A
    # closure over a dispatcher would not be cached: Numba keys a closure by
    # its pickled cells.)
    @jit(cache, parallel, key=key)
    def update(addrs, n, like, pre, hyper):
        if parallel:
            parallel_loop(key, addrs, n, like, pre, hyper)
        else:
            loop(key, addrs, n, like, pre, hyper)

    return update


_by_key = {}    # kernel key -> the kernel (`kernel`, `kernels.multi_cpu.kernel`)


def call(key, args):
    """From compiled code: ``kernel(*args)``, `key` (a literal) naming the
    kernel (`kernel` and `kernels.multi_cpu.kernel` register theirs), a
    native call into that kernel's own compiled loop: a caller (the host's
    runners, `fastopt._hostscan`) compiles no copy of it. Stand-in resolved
    by the overload below; never called from Python."""
    raise NotImplementedError


@overload(call, prefer_literal=True, target="cpu")
def _call_impl(key, args):
    if not isinstance(key, types.StringLiteral):
        return None
    kern = _by_key[key.literal_value]

    def impl(key, args):
        kern(*args)

    return impl


_serial = {}    # variant -> compiled loop without a parallel region


def kernel(variant, parallel=True):
    """The CPU kernel of `variant`: ``kernel(addrs, n, like, pre, hyper)``.

    addrs: the data addresses of param, grad and the 3 state slots (unused
    slots repeat param's and are never touched), n elements each, C-contiguous,
    of the dtype of scalar `like` (a stored variant: `kernels.storage.host_like`); `pre` and `hyper` are tuples of Python
    floats (cast to that dtype inside). As on the GPU, the kernel sees
    addresses, not arrays: the host checks the arrays (none may overlap a
    written one) and keeps them alive for the call.

    parallel=True: the loop as a parallel region, for ``parallel_for(n)``
    elements; parallel=False: on the calling thread, for fewer, or for a
    process that must not start a parallel region (a forked child of one
    that started GNU OpenMP). Two kernels, each compiled on first use: a
    program of small arrays never compiles a parallel region (Numba's
    parallel lowering is most of a kernel's compile time).
    """
    kernels = _kernels if parallel else _serial
    kern = kernels.get(variant)
    if kern is None:
        key = key_of(variant, parallel)
        _steps[key] = element_step(variant, host=True)
        kern = kernels[variant] = registered(key, _loop(key, parallel=parallel))
    return kern


def registered(key, kern):
    """`kern`, which `call` now finds under `key`."""
    _by_key[key] = kern
    return kern


def key_of(variant, parallel=True):
    """The key under which `call` finds ``kernel(variant, parallel)``."""
    return variant.key if parallel else serial_key(variant)
