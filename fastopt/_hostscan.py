"""The host's fast argument check: NumPy arrays' layouts read in one compiled pass.

Checking a model's tensors attribute by attribute costs about a microsecond
per array in Python (``a.ctypes.data`` alone is most of it): 200 tensors of
Adam are 800 arrays, 1.3 ms, ten times the update itself. Here one jitted
function walks the argument lists and reads, for every array, the fields
NumPy's own C macros read (``PyArray_DATA``, ``PyArray_NDIM``,
``PyArray_DIMS``, ``PyArray_DESCR``, ``PyArray_FLAGS``): the public
``PyArrayObject_fields`` struct, stable ABI since NumPy 1.7, and the list
object's item array.

`scan` checks the list form's columns, `check_one` a single-array call;
`list_runner` and `runner` run each with the variant's kernel in one compiled
call (the kernel runs only when the check passed). They only ever accept:
every argument (a ``list`` of) exact ``np.ndarray`` objects whose dtype is
the canonical float32 or float64 descriptor, the same dtype and shape across
a tensor's arrays, C-contiguous, and writeable where written. Anything else
(tuples, subclasses, torch tensors, a byte-swapped dtype, a read-only param,
memory shared within a single call) makes them decline, and the caller takes
the Python path, which checks the same things and names the culprit. A
stored variant's runner (16-bit columns, `_walk_stored`) accepts exactly
its columns' canonical dtypes (float32, float16, ml_dtypes' bfloat16), one
per column, and declines anything else the same way. The
walk's caller holds the GIL until it returns (the walk's threads only read)
and holds the arrays, so nothing moves under it.

The offsets are checked once, against arrays and a list read through Python
(`enabled`): on an interpreter or NumPy whose layout differs (PyPy, a
free-threaded build), the fast path is off and only speed changes.
"""
import ctypes
import functools
import sys
import sysconfig

import numba
import numpy as np
from numba.core import types
from numba.core.extending import intrinsic

from . import _facts
from ._facts import FLOAT_DTYPES, ITEMSIZES
from .kernels import NUM_ARRAYS, cpu, multi_cpu, storage
from .kernels.cache import cached
from .kernels.cpu import SERIAL_BELOW
from .kernels.cpu import prefetch

# CPython (standard build): PyObject = (ob_refcnt, ob_type); a list adds
# ob_size and then ob_item, the pointer to its items.
_OB_TYPE, _LIST_SIZE, _LIST_ITEMS = 8, 16, 24
# NumPy's PyArrayObject_fields after the PyObject header.
_DATA, _NDIM, _DIMS, _DESCR, _FLAGS = 16, 24, 32, 56, 64
_C_CONTIGUOUS, _WRITEABLE = 0x0001, 0x0400     # NPY_ARRAY_* flag bits
_BYTE = np.uint8(0)     # `prefetch`'s unit: offsets in bytes


def _loader(ty):
    @intrinsic
    def load(typingctx, addr):
        """The `ty` value stored at int64 address `addr`."""
        def codegen(context, builder, sig, args):
            ptr = builder.inttoptr(args[0], context.get_value_type(ty).as_pointer())
            return builder.load(ptr)
        return ty(types.int64), codegen
    return load


_i64, _i32 = _loader(types.int64), _loader(types.int32)


@cached()
def _kind(a, ndarray, descrs):
    """(dtype code, ndim, dims address, element count) of the object at `a`;
    code -1 if it is not an exact ndarray of an accepted dtype."""
    if _i64(a + _OB_TYPE) != ndarray:      # first: only an ndarray has the fields
        return -1, 0, 0, 0
    descr, ndim, dims = _i64(a + _DESCR), _i32(a + _NDIM), _i64(a + _DIMS)
    code = -1
    for d in range(descrs.size):
        if descrs[d] == descr:
            code = d
    size = 1
    for d in range(ndim):
        size *= _i64(dims + 8 * d)
    return code, ndim, dims, size


@cached()
def _like(a, p, ndim, dims, writeable, ndarray):
    """Whether the object at `a` is an exact ndarray with the dtype of the
    array at `p` and shape (ndim, dims), C-contiguous, writeable if asked."""
    return _like_as(a, _i64(p + _DESCR), ndim, dims, writeable, ndarray)


_BLOCK = 8      # tensors per parallel task of the walk


@cached(parallel=True)
def _walk(lists, read_only, ndarray, descrs, out, expect):
    """Fill `out` from the arrays of the lists at addresses `lists`.

    Column `read_only` may be read-only, every other must be writeable.
    descrs: the accepted dtype descriptors' addresses, by dtype code. `out`
    is int64 of length (ncols + 2) * n: the columns' data addresses
    (column-major), then each tensor's element count, then its dtype code.
    Returns (status, hash of `out`): status 0 when any array is not of the
    accepted kind (nothing else is told: the Python path finds out what),
    2 when `out` equals `expect` (then the hash is not computed), else 1.

    With cold caches the walk is a chain of cache misses (a list's items, an
    object's two lines, its shape buffer), so it runs on every thread, a
    block of tensors at a time (measured on 800 arrays: 23 µs, 37 on one).
    """
    ncols, n = len(lists), out.size // (len(lists) + 2)
    items = np.empty(ncols, np.int64)
    for c in range(ncols):
        if _i64(lists[c] + _LIST_SIZE) != n:
            return 0, 0
        items[c] = _i64(lists[c] + _LIST_ITEMS)
    blocks = (n + _BLOCK - 1) // _BLOCK
    if blocks == 1:     # a parallel region costs more than a few tensors' walk
        if not _walk_block(items, read_only, ndarray, descrs, out, n, 0, n):
            return 0, 0
    else:
        bad = np.zeros(blocks, np.bool_)
        for b in numba.prange(blocks):
            bad[b] = not _walk_block(items, read_only, ndarray, descrs, out, n,
                                     b * _BLOCK, min(n, (b + 1) * _BLOCK))
        if bad.any():
            return 0, 0
    if same(out, expect):
        return 2, 0
    return 1, digest(out)


@cached()
def _walk_block(items, read_only, ndarray, descrs, out, n, first, stop):
    """`_walk`'s work on tensors [first, stop): whether all are accepted."""
    ncols = items.size
    # First the data addresses alone: independent loads the CPU overlaps,
    # while it fetches what the checks below read (an object's second cache
    # line, its shape buffer).
    for c in range(ncols):
        for k in range(first, stop):
            a = _i64(items[c] + 8 * k)
            if _i64(a + _OB_TYPE) != ndarray:
                return False
            out[c * n + k] = _i64(a + _DATA)
            prefetch(a, _FLAGS, _BYTE)
            prefetch(_i64(a + _DIMS), 0, _BYTE)
    for k in range(first, stop):
        p = _i64(items[0] + 8 * k)
        code, ndim, dims, size = _kind(p, ndarray, descrs)
        if code < 0:
            return False
        for c in range(ncols):
            if not _like(_i64(items[c] + 8 * k), p, ndim, dims, c != read_only, ndarray):
                return False
        out[ncols * n + k] = size
        out[(ncols + 1) * n + k] = code
    return True


@cached()
def _walk_one(ids, used, ndarray, descrs, itemsizes):
    """The single-array form: `ids` are the objects of the kernel's
    `NUM_ARRAYS` columns (param, grad, the state slots), `used` says which
    slots hold arrays (the others repeat param). All must match param; none
    may share memory with another (only grad is read, and it may be
    read-only). Returns (ok, dtype code, element count, the data addresses)."""
    fail = (False, 0, 0, (0, 0, 0, 0, 0))
    p = ids[0]
    code, ndim, dims, size = _kind(p, ndarray, descrs)
    if code < 0:
        return fail
    for j in range(NUM_ARRAYS):
        if used[j] and not _like(ids[j], p, ndim, dims, j != 1, ndarray):
            return fail
    # A tuple has a length fixed at compile time: one load per column.
    data = (_i64(ids[0] + _DATA), _i64(ids[1] + _DATA), _i64(ids[2] + _DATA),
            _i64(ids[3] + _DATA), _i64(ids[4] + _DATA))
    nbytes = size * itemsizes[code]
    for j in range(1, NUM_ARRAYS):
        for i in range(j):
            if used[i] and used[j] and abs(data[j] - data[i]) < nbytes:
                return fail
    return True, code, size, data


@cached()
def _walk_stored(ids, used, ndarray, want, sizes):
    """`_walk_one` for a stored variant (16-bit arrays, `kernels.storage`):
    each used column j must have the dtype descriptor `want[j]` (itemsize
    `sizes[j]`) and param's shape. Returns (ok, element count, addresses)."""
    fail = (False, 0, (0, 0, 0, 0, 0))
    p = ids[0]
    if _i64(p + _OB_TYPE) != ndarray:
        return fail
    ndim, dims = _i32(p + _NDIM), _i64(p + _DIMS)
    for j in range(NUM_ARRAYS):
        if used[j] and not _like_as(ids[j], want[j], ndim, dims, j != 1, ndarray):
            return fail
    size = 1
    for d in range(ndim):
        size *= _i64(dims + 8 * d)
    data = (_i64(ids[0] + _DATA), _i64(ids[1] + _DATA), _i64(ids[2] + _DATA),
            _i64(ids[3] + _DATA), _i64(ids[4] + _DATA))
    for j in range(1, NUM_ARRAYS):
        for i in range(j):
            if (used[i] and used[j] and data[i] < data[j] + size * sizes[j]
                    and data[j] < data[i] + size * sizes[i]):
                return fail
    return True, size, data


@cached()
def _like_as(a, descr, ndim, dims, writeable, ndarray):
    """Whether the object at `a` is an exact ndarray with the dtype descriptor
    at address `descr` and shape (ndim, dims), C-contiguous, writeable if
    asked."""
    if (_i64(a + _OB_TYPE) != ndarray or _i64(a + _DESCR) != descr
            or _i32(a + _NDIM) != ndim):
        return False
    flags = _i32(a + _FLAGS)
    if not flags & _C_CONTIGUOUS or (writeable and not flags & _WRITEABLE):
        return False
    a_dims = _i64(a + _DIMS)
    for d in range(ndim):
        if _i64(a_dims + 8 * d) != _i64(dims + 8 * d):
            return False
    return True


@cached()
def digest(values):
    """A 64-bit mix of int64 values (FNV-1a over words, then a final avalanche)."""
    h = np.uint64(14695981039346656037)
    for v in values:
        h = (h ^ np.uint64(v)) * np.uint64(1099511628211)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xff51afd7ed558ccd)
    h ^= h >> np.uint64(33)
    return np.int64(h)


@cached()
def same(a, b):
    """Whether two int64 arrays are equal (a hash match is confirmed with it)."""
    if a.size != b.size:
        return False
    for i in range(a.size):
        if a[i] != b[i]:
            return False
    return True


def scan(columns, read_only, expect=None):
    """The layout of a list-form call's arrays: ``(layout, hash)``, or
    ``(expect, None)`` when it equals `expect`, or None if any array is unusual.

    columns: the argument lists (param, grad, states...), each of one length
    n; column `read_only` is the one not updated. `layout` is an int64
    array: the data addresses (column c, tensor k at ``c*n + k``), then each
    tensor's element count, then its dtype (index into `FLOAT_DTYPES`).
    expect: a layout this call probably has (last step's), or None.
    """
    if not enabled():
        return None
    for c in columns:
        if type(c) is not list:
            return None
    out = np.empty((len(columns) + 2) * len(columns[0]), np.int64)
    status, digest = _walk(tuple([id(c) for c in columns]), read_only, _NDARRAY,
                           _DESCRS, out, _NOTHING if expect is None else expect)
    if status == 2:
        return expect, None
    return (out, digest) if status else None


_NOTHING = np.empty(0, np.int64)


def check_one(ids, used):
    """``(ok, dtype code, n, addresses)`` of a single-array call.

    ids: ``id()`` of param, grad and the state slots, in the kernel's
    order (an unused slot repeats param's); used: `NUM_ARRAYS` bools, which are
    arrays of the call. ok is False when anything is unusual (then the Python
    path checks, and names the problem): a non-ndarray, another dtype or
    shape than param, not C-contiguous, read-only (but grad), or memory
    shared between two of the arrays.
    """
    if not enabled():
        return False, 0, 0, None
    return _walk_one(ids, used, _NDARRAY, _DESCRS, ITEMSIZES)


def check_stored(variant, ids, used):
    """`check_one` for a stored variant: ``(ok, n, addresses)``."""
    if not enabled():
        return False, 0, None
    want, sizes = _stored_columns(variant)
    return _walk_stored(ids, used, _NDARRAY, want, sizes)


@functools.lru_cache(maxsize=None)
def _stored_columns(variant):
    """The dtype descriptors' addresses and the itemsizes of a stored
    variant's kernel columns (`Variant.columns`): its canonical dtypes."""
    dtypes = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16)}
    want = [dtypes.get(f) or _facts.bfloat16() for f in variant.columns]
    return tuple([id(d) for d in want]), tuple([d.itemsize for d in want])


@functools.lru_cache(maxsize=None)
def runner(variant, which=0):
    """``run(ids, used, pre, hyper) -> status``: `check_one`, then, if the
    check passed, `variant`'s CPU loop number `which`, in one compiled call.
    None where the fast path is off (`enabled`). `pre` and `hyper` are the
    kernel's tuples of Python floats.

    Loop w = 2·code + parallel, where code is the arrays' dtype's index in
    `FLOAT_DTYPES` (0 for a stored variant: its columns are fixed) and
    parallel whether they take the parallel loop (`kernels.cpu.parallel_for`).
    status: 0 the check declined, nothing ran; 1 done; ``2 + w``: the arrays
    passed but take loop w, not this one's, and nothing ran (the caller
    takes ``runner(variant, w)``). One loop per runner, so that a program
    compiles only the loops its arrays take; the runner calls the kernel's
    own (`kernels.cpu.call`), compiled once for it and for the general path.

    One jitted call instead of two: with cold caches (a training step between
    two updates) each entry into a jitted function costs ~10 µs (measured: a
    check and then a kernel call on a tiny array ~93 µs for a whole `adam()`,
    fused ~82).
    """
    if not enabled():
        return None
    code, parallel = divmod(which, 2)
    # closure constants: the branches not taken are pruned at compile time
    parallel, stored = bool(parallel), bool(variant.columns)
    cpu.kernel(variant, parallel)     # registers the loop `cpu.call` runs
    kernel = cpu.key_of(variant, parallel)
    if stored:      # 16-bit arrays: each column of its own dtype (`_walk_stored`)
        checked = _stored_columns(variant)
        like = storage.host_like(variant.columns)
    else:
        checked, like = (_DESCRS, ITEMSIZES), _facts.LIKE[FLOAT_DTYPES[code]]

    @cpu.jit(parallel=False, key=f"{kernel}-{which}")
    def run(ndarray, checked, like, ids, used, pre, hyper):
        if stored:
            ok, n, addrs = _walk_stored(ids, used, ndarray, *checked)
            code = 0
        else:
            ok, code, n, addrs = _walk_one(ids, used, ndarray, *checked)
        if not ok:
            return 0
        if n == 0:
            return 1
        need = 2 * code + (n >= SERIAL_BELOW)
        if need != which:
            return 2 + need
        cpu.call(kernel, (addrs, n, like, pre, hyper))
        return 1

    return functools.partial(run, _NDARRAY, checked, like)


@functools.lru_cache(maxsize=None)
def list_runner(variant, loops=(0,) * len(FLOAT_DTYPES)):
    """``run(lists, out, expect, tables, pre, hyper) -> (status, hash)``:
    `_walk` (`lists`: the columns' ids, grad's second; `out`, `expect` and
    the result as `_walk` says), then, when the layout is `expect`, the
    variant's many-tensor CPU loops over `tables`, in one compiled call.
    tables: ``(addrs, chunks, parts)`` (`kernels.multi_cpu`) of each dtype of
    `FLOAT_DTYPES` in turn, float32's then float64's, for the checked layout
    `expect`; loops: per dtype, which loop its table takes (`LOOP_NONE`,
    `LOOP_SERIAL`, `LOOP_PARALLEL`: `loops_of`). A runner calls only those
    (`kernels.cpu.call`: the many-tensor kernels' own), so `expect` must be
    a layout with these loops.
    None where the fast path is off. One call instead of two, as `runner`.
    """
    if not enabled():
        return None
    like32, like64 = [_facts.LIKE[dtype] for dtype in FLOAT_DTYPES]
    # closure constants: the calls not taken are pruned at compile time
    run32, run64 = [k != LOOP_NONE for k in loops]
    for k in loops:     # registers the loops `cpu.call` runs
        if k != LOOP_NONE:
            multi_cpu.kernel(variant, k == LOOP_PARALLEL)
    kernel32, kernel64 = [multi_cpu.key_of(variant, k == LOOP_PARALLEL) for k in loops]

    @cpu.jit(parallel=False, key=f"{multi_cpu.key_of(variant)}-{loops}")
    def run(ndarray, descrs, lists, out, expect, tables, pre, hyper):
        status, hashed = _walk(lists, 1, ndarray, descrs, out, expect)
        if status == 2:
            addrs32, chunks32, parts32, addrs64, chunks64, parts64 = tables
            if run32:
                cpu.call(kernel32, (addrs32, chunks32, parts32, like32, pre, hyper))
            if run64:
                cpu.call(kernel64, (addrs64, chunks64, parts64, like64, pre, hyper))
        return status, hashed

    return functools.partial(run, _NDARRAY, _DESCRS)


LOOP_NONE, LOOP_SERIAL, LOOP_PARALLEL = range(3)


def loops_of(tables):
    """`list_runner`'s loops for `tables` (as there)."""
    return tuple([LOOP_NONE if not tables[3 * c + 1].shape[0] else
                  LOOP_PARALLEL if multi_cpu.parallel_for(tables[3 * c + 2]) else LOOP_SERIAL
                  for c in range(len(FLOAT_DTYPES))])


_NDARRAY = id(np.ndarray)
_DESCRS = np.array([id(d) for d in FLOAT_DTYPES], np.int64)
assert NUM_ARRAYS == 5, "`_walk_one` reads the kernel's columns one by one"


@functools.lru_cache(maxsize=None)
def enabled():
    """Whether this interpreter and NumPy have the layout assumed above.

    Checked by reading a few arrays and a list both ways, raw and through
    Python; any mismatch (or an interpreter other than standard CPython)
    turns the fast path off.
    """
    if (sys.implementation.name != "cpython" or sys.maxsize != 2**63 - 1
            or sysconfig.get_config_var("Py_GIL_DISABLED")):
        return False

    def raw(address, ctype=ctypes.c_int64):
        return ctype.from_address(address).value

    samples = [np.zeros((2, 3), np.float32), np.zeros(5)[::2],
               np.zeros(4, np.float64), np.zeros(0, np.float32)]
    samples[2].flags.writeable = False
    for a in samples:
        flags = raw(id(a) + _FLAGS, ctypes.c_int32)
        dims = raw(id(a) + _DIMS)
        if (raw(id(a) + _OB_TYPE) != id(type(a)) or raw(id(a) + _DATA) != a.ctypes.data
                or raw(id(a) + _NDIM, ctypes.c_int32) != a.ndim
                or raw(id(a) + _DESCR) != id(a.dtype)
                or [raw(dims + 8 * d) for d in range(a.ndim)] != list(a.shape)
                or bool(flags & _C_CONTIGUOUS) != a.flags.c_contiguous
                or bool(flags & _WRITEABLE) != a.flags.writeable):
            return False
    if (raw(id(samples) + _LIST_SIZE) != len(samples)
            or [raw(raw(id(samples) + _LIST_ITEMS) + 8 * k) for k in range(len(samples))]
            != [id(a) for a in samples]):
        return False
    return True
