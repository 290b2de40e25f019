"""Many tensors read in one compiled loop, through the DLPack exchange API
(DLPack >= 1.2, ``dlpack.h``): their addresses and sizes (`read_dense`, for
`fastopt.clip_grad_norm_`), or their dtypes, devices and layout against
their params' (`read_columns`, for fastopt.torch's bulk check).

A framework that implements the exchange API publishes, on its tensor type,
a table of C functions; one of them, ``dltensor_from_py_object_no_sync(obj,
&out)``, fills a ``DLTensor`` (data pointer, device, dtype, shape, strides,
byte offset) from a tensor object without allocating. `read_dense` calls it
for every object of a list from compiled code, so reading a tensor costs a C
call, not the six Python calls (dtype, device, contiguity, address, size)
that read it from Python, and the cache misses on the objects of
consecutive tensors overlap.

The caller (`fastopt._dlpack`) passes the function's address and the
address of CPython's ``PyErr_Clear`` as integers (nothing process-specific
is compiled in, so the function caches), and object addresses (``id``) of
objects it keeps alive, all of the API's own type. The loop runs holding the
GIL, as the API requires; a tensor the API refuses (sparse, meta, mkldnn,
quantized: it returns -1 with a Python error set) has its error cleared and
ends the loop as one that is not dense.
"""
import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic

from .cache import cached
from .cpu import view as _host_view

KDL_CPU, KDL_CUDA = 1, 2                     # DLDeviceType
KDL_FLOAT, KDL_BFLOAT, KDL_COMPLEX = 2, 4, 5   # DLDataTypeCode
# A DLTensor (64-bit): data @0, device (type, id: int32) @8, ndim (int32)
# @16, dtype (code: uint8, bits: uint8, lanes: uint16) @20, shape @24,
# strides @32 (int64 pointers), byte_offset (uint64) @40: six int64 words.
_WORDS = 6


@intrinsic
def _call_describe(typingctx, fn, obj, out):
    """``((int (*)(void*, void*)) fn)(obj, out)``: the exchange API's
    ``dltensor_from_py_object_no_sync``, addresses as int64."""
    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.IntType(32), [i8p, i8p])
        callee = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(callee, [builder.inttoptr(args[1], i8p),
                                     builder.inttoptr(args[2], i8p)])
    return types.int32(types.int64, types.int64, types.int64), codegen


@intrinsic
def _call_void(typingctx, fn):
    """``((void (*)(void)) fn)()``: CPython's ``PyErr_Clear``."""
    def codegen(context, builder, sig, args):
        callee = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), []).as_pointer())
        builder.call(callee, [])
        return context.get_dummy_value()
    return types.none(types.int64), codegen


def dtype_word(code, bits):
    """The dtype word the readers return for a DLPack (code, bits), one lane."""
    return code | bits << 8 | 1 << 16


@numba.njit(inline="always")
def _fields(out):
    """A filled DLTensor's (data address with its byte offset, device word
    (type | id << 32), dtype word, ndim, shape, strides)."""
    ndim = out[2] & 0xFFFFFFFF
    return (out[0] + out[5], out[1], out[2] >> 32, ndim,
            _host_view(out[3], 0, ndim, np.int64(0)), _host_view(out[4], 0, ndim, np.int64(0)))


@numba.njit(inline="always")
def _contiguous(shape, strides, ndim):
    """torch's contiguity: row-major strides over the dims of size > 1 (and
    any tensor with no element)."""
    expected = 1
    dense = True
    for d in range(ndim - 1, -1, -1):
        size = shape[d]
        if size == 0:
            return True
        if size != 1:
            if strides[d] != expected:
                dense = False
            expected *= size
    return dense


@cached()
def read_dense(objects, describe, clear):
    """Addresses and sizes (int64 arrays) of the tensors whose objects are at
    `objects` (int64 addresses), read with the exchange API's function at
    `describe` (`clear`: ``PyErr_Clear``).

    Returns ``(first, dtype, addrs, sizes)``: `first` -1 when every tensor is
    a contiguous CPU tensor of one real floating dtype with memory behind its
    elements, else the index of the first that is not (the arrays then hold
    the tensors before it); `dtype` the first tensor's DLPack dtype word
    (code | bits << 8 | lanes << 16), 0 if it was refused."""
    n = objects.shape[0]
    addrs = np.empty(n, np.int64)
    sizes = np.empty(n, np.int64)
    out = np.zeros(_WORDS, np.int64)
    base = out.ctypes.data
    dtype = np.int64(0)
    for t in range(n):
        if _call_describe(describe, objects[t], base) != 0:
            _call_void(clear)
            return t, dtype, addrs, sizes
        address, device, words, ndim, shape, strides = _fields(out)
        if t == 0:
            dtype = words
        if ((device & 0xFFFFFFFF) != KDL_CPU or words != dtype
                or (words & 0xFF) != KDL_FLOAT or (words >> 16) != 1):
            return t, dtype, addrs, sizes
        size = 1
        for d in range(ndim):
            size *= shape[d]
        if not _contiguous(shape, strides, ndim) or (address == 0 and size != 0):
            return t, dtype, addrs, sizes
        addrs[t] = address
        sizes[t] = size
    return -1, dtype, addrs, sizes


@cached()
def read_columns(objects, describe, clear):
    """A table of tensors read at once: `objects` (C, T) int64 object
    addresses, row 0 the T params, then their grads and state slots (a
    column: one param's tensors). Returns ``(refused, dtypes, devices,
    fine)``: `refused` True if the API refused a tensor (the tables are then
    incomplete); each tensor's DLPack dtype word and device word (type | id
    << 32), and whether it is contiguous with its param's shape."""
    ncols, n = objects.shape
    dtypes = np.zeros((ncols, n), np.int64)
    devices = np.zeros((ncols, n), np.int64)
    fine = np.zeros((ncols, n), np.bool_)
    out = np.zeros(_WORDS, np.int64)
    base = out.ctypes.data
    for t in range(n):
        pshape, pdim = np.int64(0), np.int64(0)
        for c in range(ncols):
            if _call_describe(describe, objects[c, t], base) != 0:
                _call_void(clear)
                return True, dtypes, devices, fine
            _, devices[c, t], dtypes[c, t], ndim, shape, strides = _fields(out)
            if c == 0:      # the param's shape stays where torch keeps it
                pshape, pdim = out[3], ndim
            same = ndim == pdim
            if same and c > 0:
                mine = _host_view(pshape, 0, pdim, np.int64(0))
                for d in range(ndim):
                    if shape[d] != mine[d]:
                        same = False
            fine[c, t] = same and _contiguous(shape, strides, ndim)
    return False, dtypes, devices, fine
