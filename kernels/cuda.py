"""The CUDA skeleton: one grid-stride kernel, compiled once per variant and dtype.

Kernels are built lazily (on first use) so that importing fastopt needs no
GPU. They are not cached on disk; the CUDA kernel closes over the element step
directly, inlined at Numba IR level, which also lets `numba.cuda.compile_ptx`
compile it with no GPU present. Indices are 64-bit (``cuda.grid`` and
``cuda.gridsize`` return int64), so arrays beyond 2**31 elements are covered.

The arrays arrive as five int64 addresses (param, grad, three state slots)
and a length, turned into typed views in the kernel (`kernels.multi_table`).
Measured on an H200: handing Numba's launcher five array objects cost about
0.3 ms of host time per call (it builds a device-array object per argument);
scalars cost next to nothing. Under the simulator, which runs no intrinsic,
the same body gets the arrays themselves.
"""
import numba
from numba import cuda
from numba.cuda.extending import intrinsic
from numba.cuda.np.arrayobj import populate_array

from . import capture as _capture
from . import launch as _launch
from . import storage
from . import vector as _vector
from .multi_table import view_codegen, view_signature
from .variants import PRE, element_step

# Adam, 2**28 float32 on an H200 (benchmarks/results/gpu-h200-2026-11-25/profile.txt):
# 256 x 16 per SM gave 3217 GB/s, 512 x 16 3364, copy 3406. 512 keeps every
# kernel under 128 registers a thread (the many-tensor float64 one uses 66).
THREADS = 512
BLOCKS_PER_SM = 16
SIM_THREADS, SIM_BLOCKS = 32, 2   # the simulator pays per simulated thread

_kernels = {}
_max_blocks = {}


def _simulated():
    return bool(numba.config.ENABLE_CUDASIM)


_GLOBAL_MEMORY = 1   # NVVM's address space of global memory


@intrinsic
def view(typingctx, addr, start, n, like):
    """``addr`` as a 1-D array of n elements from `start`, dtype of scalar `like`."""
    return view_signature(addr, start, n, like), view_codegen(populate_array,
                                                              _GLOBAL_MEMORY)


@numba.njit(inline="always")
def _device_view(addr, n, like):
    return view(addr, 0, n, like)


def _sim_view(array, n, like):
    return array


def kernel_function(variant, python=False):
    """The Python function of the kernel, before `cuda.jit` (for compile_ptx)."""
    step = element_step(variant, python=python)
    view_of = _sim_view if python else _device_view
    base_of = storage.rnd_base_function(variant.sr, python)
    # 16-bit columns are viewed as uint16 (kernels.storage); the math's
    # dtype is that of the scalars.
    lp, lg, l0, l1, l2 = (storage.column_like_function(f, python)
                          for f in variant.columns or (None,) * 5)
    # 128-bit loads in the main loop when every address is 16-byte aligned
    # (`kernels.vector`); the scalar loop does the tail, or all if unaligned.
    # The simulator runs no intrinsic: scalar only; 16-bit columns (whose
    # quads would be 64-bit) take the scalar loop for now.
    vector = not python and not variant.storage
    quads = _vector.quad_loop(variant, step) if vector else None
    aligned16 = _vector.aligned16

    def body(addrs, n, pre, hyper, start, stride):
        # The update of elements start, start + stride, ... of the five
        # arrays at `addrs`: both kernels' one body (the capturable kernel
        # adds only the device scalars and the done-counter).
        like = pre[0]
        param, grad = view_of(addrs[0], n, lp(like)), view_of(addrs[1], n, lg(like))
        state = (view_of(addrs[2], n, l0(like)), view_of(addrs[3], n, l1(like)),
                 view_of(addrs[4], n, l2(like)))
        rnd = (base_of(pre, 0), 0)
        done = 0
        if vector:
            a0, a1, a2, a3, a4 = addrs
            if aligned16(a0, a1, a2, a3, a4):
                done = quads(a0, a1, a2, a3, a4, 0, n, start, stride, pre, hyper)
        for i in range(done + start, n, stride):
            step(i, param, grad, state, pre, hyper, rnd)

    # Inlined on the device; plain Python under the simulator, which swaps
    # its per-thread `cuda` into the kernel's globals only: the thread's
    # place in the grid is passed in.
    body = body if python else numba.njit(inline="always")(body)

    def update(addrs, n, pre, hyper):
        body(addrs, n, pre, hyper, cuda.grid(1), cuda.gridsize(1))

    if variant.capture is None:
        return update
    # A capturable step (`kernels.capture`): the scalars from the device's
    # step count and lr, the count advanced by the last block to finish.
    # GradScaler's found_inf set: the whole launch returns, writing nothing.
    count_of, _, lr_of, counter_of, found = _capture.helpers(python)
    scalars = _capture.scalar_function(variant.capture, python)
    device_pre = _capture.pre_function(variant, python)

    def captured(addrs, n, pre, cst, dev):
        if found(dev[3]):
            return
        count = count_of(dev[0])
        t = count[0] + cst[0]
        lr = lr_of(dev[1], cst[1])
        hyper = scalars(t, lr, cst[3:])
        pre = device_pre(pre, lr, cst, dev[4])
        body(addrs, n, pre, hyper, cuda.grid(1), cuda.gridsize(1))
        # The last block to finish writes the count (`kernels.capture`).
        cuda.syncthreads()
        if cuda.threadIdx.x == 0:
            cuda.threadfence()
            counter = counter_of(dev[2])
            if cuda.atomic.add(counter, 0, 1) == cuda.gridDim.x - 1:
                counter[0] = 0
                count[0] = t

    return captured


def kernel(variant):
    """The CUDA kernel of `variant`, same arguments as `kernels.cpu.kernel`."""
    kern = _kernels.get(variant)
    if kern is None:
        kern = cuda.jit(kernel_function(variant, python=_simulated()))
        _kernels[variant] = kern
    return kern


def launch_config(n, device=None):
    """(blocks, threads) for n elements: enough to fill the GPU, no more.

    device: the ordinal of the current GPU, when the caller knows it (asking
    the driver costs ~5 us a call).
    """
    if _simulated():
        return SIM_BLOCKS, SIM_THREADS
    limit = _max_blocks.get(device)
    if limit is None:
        backend = _launch.backend()
        count = (cuda.get_current_device().MULTIPROCESSOR_COUNT if backend is None
                 else backend.multiprocessors(device))
        limit = _max_blocks[device] = BLOCKS_PER_SM * count
    return max(1, min(limit, -(-n // THREADS))), THREADS


def launch(variant, n, stream, addrs, pre, hyper, device=None):
    """Run the kernel of `variant` over n elements on `stream` (0: default).

    addrs: the addresses of param, grad and the three state slots (an unused
    slot repeats param's; it is never touched); under the simulator, the
    arrays themselves.
    """
    blocks, threads = launch_config(n, device)
    kernel(variant)[blocks, threads, stream](addrs, n, pre, hyper)


def argtypes(variant, dtype, ncst=0):
    """The kernel's Numba argument types for arrays of `dtype` (a NumPy dtype);
    a capturable variant's with `ncst` ``cst`` scalars (`kernels.capture`)."""
    from numba.core import types
    dt = numba.from_dtype(dtype)
    if variant.capture is not None:   # (cst, dev) for hyper: `kernels.capture`
        return (types.UniTuple(types.int64, 5), types.int64, types.UniTuple(dt, len(PRE)),
                types.UniTuple(dt, ncst),
                types.UniTuple(types.int64, _capture.NUM_DEV_SINGLE))
    return (types.UniTuple(types.int64, 5), types.int64,
            types.UniTuple(dt, len(PRE) + 2 * variant.sr),
            types.UniTuple(dt, len(variant.spec.hyper)))


def packed_plan(variant, dtype, device=None):
    """A new `launch.Plan` of the kernel (its own packed parameters) for
    arrays of `dtype`."""
    return _launch.plan(("single", variant, dtype), kernel(variant),
                        lambda: argtypes(variant, dtype),
                        (5, 1, len(PRE) + 2 * variant.sr, len(variant.spec.hyper)), device)


_launchers = {}
LAUNCHERS = 1024    # kept `packed_launcher`s, by everything that shapes them


def launcher_for(backend, variant, dtype, n, addrs, device=None):
    """The `packed_launcher` of these arrays (addresses, size, dtype), made
    once: a call on arrays that are not kept whole (`fastopt._repeat`: torch
    tensors) still finds its packed parameters."""
    key = (variant, dtype, n, addrs, device, backend)
    found = _launchers.get(key)
    if found is None:
        if len(_launchers) >= LAUNCHERS:
            _launchers.clear()
        found = _launchers[key] = packed_launcher(backend, variant, dtype, n, addrs, device)
    return found


def packed_launcher(backend, variant, dtype, n, addrs, device=None):
    """``launch(stream, pre, hyper)``: the kernel over n elements at `addrs`
    through `backend` (`kernels.launch`), its parameters packed once (per
    thread), only the changed scalars rewritten per call; `stream` a raw
    handle (0, 1, 2 or a cudaStream_t) read by the caller at call time;
    pre, hyper Python floats (packed in `dtype`)."""
    plans, get_ident, config = {}, _launch.get_ident, launch_config(n, device)

    def launch(stream, pre, hyper):
        plan = plans.get(get_ident())
        if plan is None:
            plan = plans[get_ident()] = packed_plan(variant, dtype, device)
            plan.set(0, addrs)
            plan.set(1, (n,))
            plan.grid, plan.block = config
        plan.set(2, pre)
        plan.set(3, hyper)
        backend.launch(plan, stream)

    return launch
