"""Memory-floor kernels: the same reads and writes as a rule, trivial math.

For a rule with k state slots the floor reads param, grad and the k slots and
writes param and the k slots, once each, with a multiply-add or two per
written array; it is compiled and run like fastopt's CPU loop (`kernels.cpu.jit`,
on the calling thread below `kernels.cpu.SERIAL_BELOW` elements, from there
prange over blocks of `kernels.cpu.BLOCK` elements, each after prefetching
the lines `kernels.cpu.AHEAD` on), so fastopt time / floor time is how far
fastopt is from what the memory bus allows. The copy kernels give the device's copy
bandwidth.
"""
import functools

import numba
import numpy as np
from numba import cuda   # module level: the CUDA simulator swaps it in kernels

from ..kernels.cpu import BLOCK, SERIAL_BELOW, ahead, jit
from ..kernels.storage import _float_bits as float_bits


def _cpu_floor(nslots):
    # A closure over an int: Numba's cache keys on its value (see style.md).
    @jit()
    def floor(param, grad, state, h, keep):
        if param.size < SERIAL_BELOW:      # as kernels.cpu.loop
            for i in range(param.size):
                _floor_at(nslots, i, param, grad, state, h, keep)
        else:
            for b in numba.prange((param.size + BLOCK - 1) // BLOCK):
                start = b * BLOCK
                stop = min(start + BLOCK, param.size)
                _fetch(param, start)
                _fetch(grad, start)
                for k in range(nslots):
                    _fetch(state[k], start)
                p, g = param[start:stop], grad[start:stop]
                s = (state[0][start:stop], state[1][start:stop], state[2][start:stop])
                for i in range(stop - start):
                    _floor_at(nslots, i, p, g, s, h, keep)

    return floor


@numba.njit(inline="always")
def _fetch(a, start):
    """`kernels.cpu`'s prefetch of the lines `AHEAD` elements on, of array `a`."""
    ahead(a.ctypes.data, start, a.size, a[0])


@numba.njit(inline="always")
def _floor_at(nslots, i, param, grad, state, h, keep):
    g = grad[i]
    b = h * (g * g)
    param[i] = param[i] - h * g
    if nslots > 0:
        state[0][i] = state[0][i] * keep + b
    if nslots > 1:
        state[1][i] = state[1][i] * keep + b
    if nslots > 2:
        state[2][i] = state[2][i] * keep + b


CPU_FLOORS = [_cpu_floor(k) for k in range(4)]


def _cpu_master_floor(nslots):
    """Master weights' traffic: reads the 16-bit grad (as uint16), the
    float32 master and slots; writes master, slots and the 16-bit copy (the
    master's top 16 bits)."""
    @jit()
    def floor(param, grad, state, copy, h):
        if param.size < SERIAL_BELOW:
            for i in range(param.size):
                _master_floor_at(nslots, i, param, grad, state, copy, h)
        else:
            for b in numba.prange((param.size + BLOCK - 1) // BLOCK):
                start = b * BLOCK
                stop = min(start + BLOCK, param.size)
                _fetch(param, start)
                _fetch(grad, start)
                _fetch(copy, start)
                for k in range(nslots):
                    _fetch(state[k], start)
                p, g, c = param[start:stop], grad[start:stop], copy[start:stop]
                s = (state[0][start:stop], state[1][start:stop], state[2][start:stop])
                for i in range(stop - start):
                    _master_floor_at(nslots, i, p, g, s, c, h)

    return floor


@numba.njit(inline="always")
def _master_floor_at(nslots, i, param, grad, state, copy, h):
    g = numba.float32(grad[i])
    b = g * g
    p = param[i] - h * g
    param[i] = p
    if nslots > 0:
        state[0][i] = state[0][i] * h + b
    if nslots > 1:
        state[1][i] = state[1][i] * h + b
    if nslots > 2:
        state[2][i] = state[2][i] * h + b
    copy[i] = numba.uint16(float_bits(p) >> numba.uint32(16))


CPU_MASTER_FLOORS = [_cpu_master_floor(k) for k in range(3)]


@jit()
def cpu_copy(dst, src):
    """dst ← src over all threads; credits 2 x nbytes (read + write)."""
    for i in numba.prange(src.size):
        dst[i] = src[i]


def make_cpu(case, sets):
    """``call(k)``: the floor kernel of `case` on buffer set k."""
    if case.master:
        return _make_cpu_master(case, sets)
    kern = CPU_FLOORS[len(case.slots)]
    args = []
    for arrays in sets:
        p = arrays["param"]
        if p.dtype.itemsize == 2:   # 16-bit: the same bytes, as uint16 (integer math)
            arrays = {k: a.view(np.uint16) for k, a in arrays.items()}
            p = arrays["param"]
        slots = [arrays[s] for s in case.slots]
        state = tuple(slots + [p] * (3 - len(slots)))   # unused: never touched
        # Floats: p - g/2 and (s + g²)/2, values that stay normal. 16-bit
        # bits: h = 0 and keep = 1 at run time, so every element keeps its
        # value. Integer arithmetic on the bits would fill the buffers shared
        # with the other implementations with denormals and NaNs, and a
        # float32 denormal costs a microcode assist (measured: bfloat16 Adam
        # 1e7 on 2 threads, 3.8 ms after itself, 6.8 ms after that floor).
        half = p.dtype.kind != "u"
        h, keep = p.dtype.type(0.5 if half else 0), p.dtype.type(0.5 if half else 1)
        args.append((p, arrays["grad"], state, h, keep))

    def call(k):
        kern(*args[k])

    return call


def _make_cpu_master(case, sets):
    kern = CPU_MASTER_FLOORS[len(case.slots)]
    args = []
    for arrays in sets:
        p = arrays["param"]
        slots = [arrays[s] for s in case.slots]
        state = tuple(slots + [p] * (3 - len(slots)))
        args.append((p, arrays["grad"].view(np.uint16), state,
                     arrays["model"].view(np.uint16), np.float32(0.5)))

    def call(k):
        kern(*args[k])

    return call


@functools.lru_cache(maxsize=None)
def _gpu_floor(nslots):
    @cuda.jit
    def floor(param, grad, s0, s1, s2, h):
        start, stride = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, param.size, stride):
            g = grad[i]
            b = g * g
            param[i] = param[i] - h * g
            if nslots > 0:
                s0[i] = s0[i] * h + b
            if nslots > 1:
                s1[i] = s1[i] * h + b
            if nslots > 2:
                s2[i] = s2[i] * h + b

    return floor


def make_gpu(case, sets):
    """``call(k)``: the floor kernel of `case` on GPU buffer set k, launched
    with fastopt's own launch configuration."""
    from ..kernels import cuda as fastopt_cuda

    kern = _gpu_floor(len(case.slots))
    n = sets[0]["param"].size
    blocks, threads = fastopt_cuda.launch_config(n)
    args = []
    for arrays in sets:
        p = arrays["param"]
        slots = [arrays[s] for s in case.slots]
        args.append([p, arrays["grad"], *(slots + [p] * (3 - len(slots))),
                     p.dtype.type(0.5)])

    def call(k):
        kern[blocks, threads](*args[k])

    return call
