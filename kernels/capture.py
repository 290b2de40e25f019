"""Capturable steps in the CUDA kernels: the step count and the learning rate
in device memory, the step's scalars computed in the kernel, the count
advanced in the same launch.

A capturable variant (`kernels.variants.Variant.capture`) takes, instead of
the host's per-step scalars ``hyper``:

* ``cst``: ``(1, lr, dwd, *consts)`` in the kernel's dtype: the number one,
  the learning rate used when no device lr is given, the decoupled weight
  decay to take from the device lr (``decay = pre.decay − lr·dwd``; 0 when lr
  is a host float, whose decay the host computed), and the spec's constants
  (`fastopt.spec.StepScalars.consts`);
* ``dev``: the int64 addresses of the step count (a one-element float32
  array, torch's capturable ``state['step']``; for the many-tensor kernel, a
  device table of one such address per tensor, or one for them all), of the
  learning rate (a one-element float32 array, or 0 for the host's), and of a
  uint32 done-counter (zero between launches), for the many-tensor
  kernel the number of step addresses, then the addresses of
  ``torch.amp.GradScaler``'s ``found_inf`` and scale (one-element float32
  arrays, or 0 for none).

GradScaler, as torch's fused capturable kernels take it: every thread reads
``found_inf`` first, and if it is nonzero (an inf or NaN in some gradient)
the launch returns at once, everywhere: nothing written, the count not
advanced, the done-counter untouched. A variant with
`kernels.variants.Variant.unscale` divides each gradient by the scale
(torch divides, it does not multiply by the inverse) and writes it back so
divided; the kernel appends the scale to ``pre`` for it (1 when none).

Every thread reads the count s and computes t = s + 1 and the rule's scalars
``StepScalars.fn(t, lr, consts)`` itself (in the kernel's dtype: no float64
in a float32 kernel). The count is written back by the last block to finish:
each block, once all its threads are past the update (``syncthreads``),
fences and bumps the done-counter atomically; the block that sees the
grid's count minus one knows every other block has read the count already,
writes t (many tensors: every tensor's s + 1, each address once) and resets
the counter for the next launch. Nothing is allocated, synchronised or read
back: a step can be captured in a CUDA graph and replayed. Two launches
sharing a counter must not run concurrently (each launcher has its own).

Under the simulator (plain Python) ``dev`` holds the arrays themselves
(lr: None for the host's), and blocks run one after another: a count written
by the first block to finish would be read by the next, which the tests see.
"""
import numba
from numba.cuda.extending import intrinsic
from numba.cuda.np.arrayobj import populate_array

from .multi_table import view_codegen, view_signature

_GLOBAL_MEMORY = 1


@intrinsic
def _view(typingctx, addr, start, n, like):
    return view_signature(addr, start, n, like), view_codegen(populate_array,
                                                              _GLOBAL_MEMORY)


@numba.njit(inline="always")
def _count_device(addr):
    return _view(addr, 0, 1, numba.float32(0))


@numba.njit(inline="always")
def _count_at_device(addr, nsteps, k):
    return _view(_view(addr, 0, nsteps, numba.int64(0))[k], 0, 1, numba.float32(0))


@numba.njit(inline="always")
def _lr_device(addr, fallback):
    lr = fallback
    if addr != 0:
        lr = _view(addr, 0, 1, numba.float32(0))[0]
    return lr


@numba.njit(inline="always")
def _counter_device(addr):
    return _view(addr, 0, 1, numba.uint32(0))


@numba.njit(inline="always")
def _found_device(addr):
    found = False
    if addr != 0:
        found = _view(addr, 0, 1, numba.float32(0))[0] != numba.float32(0)
    return found


def _count_sim(array):
    return array


def _count_at_sim(arrays, nsteps, k):
    return arrays[k]


def _lr_sim(array, fallback):
    return fallback if array is None else array[0]


def _counter_sim(array):
    return array


def _found_sim(array):
    return array is not None and array[0] != 0


def helpers(python):
    """``(count, count_at, lr, counter, found)`` for the target: the step
    count's view, tensor k's in a table of them, the learning rate (or any
    one-element float32 value, with a fallback), the done-counter's view,
    and whether ``found_inf`` is set. (The fence and the atomic are written
    in the kernels themselves: the simulator swaps its `cuda` module into
    the kernel's globals only.)"""
    if python:
        return _count_sim, _count_at_sim, _lr_sim, _counter_sim, _found_sim
    return _count_device, _count_at_device, _lr_device, _counter_device, _found_device


def pre_function(variant, python):
    """``pre(pre, lr, cst, scale) -> pre``: the host's ``pre`` with the
    decoupled decay taken from the device lr and, for a variant that
    unscales (`Variant.unscale`), the loss scale at address `scale` (1 for
    0) appended."""
    lr_of = _lr_sim if python else _lr_device
    if variant.unscale:
        def device_pre(pre, lr, cst, scale):
            return (pre[0], pre[1], pre[2], pre[3] - lr * cst[2], pre[4], pre[5],
                    lr_of(scale, cst[0]))
    else:
        def device_pre(pre, lr, cst, scale):
            return (pre[0], pre[1], pre[2], pre[3] - lr * cst[2], pre[4], pre[5])
    return device_pre if python else numba.njit(inline="always")(device_pre)


def scalar_function(fn, python):
    """`StepScalars.fn` for the kernel: inlined on the device; under the
    simulator plain Python, its results cast to t's dtype (the kernel's)."""
    if not python:
        return numba.njit(inline="always")(fn)

    def scalars(t, lr, c):
        cast = type(t)
        return tuple([cast(x) for x in fn(t, lr, c)])

    return scalars


NUM_DEV_SINGLE = 5    # step, lr, counter, found_inf, scale
NUM_DEV_MULTI = 6     # step table, lr, counter, number of steps, found_inf, scale
NUM_CST = 3           # 1, lr, dwd: then the spec's constants
