"""How arrays are stored, apart from how the math is done: 16-bit storage.

A `Variant` whose ``storage`` is ``(param, grad, state)`` formats, each one
of `FORMATS`, computes in float32 and converts every load and store here:

* ``"f32"``:  float32, stored as it is;
* ``"f16"``:  IEEE half, as uint16 bits: LLVM's ``fpext``/``fptrunc`` of
  ``half`` (F16C's ``vcvtph2ps``/``vcvtps2ph`` on x86, ``cvt.f32.f16`` in PTX),
  round to nearest even, exactly as NumPy's and torch's casts;
* ``"bf16"``: bfloat16, as uint16 bits: a load is a 16-bit shift, a store
  rounds to nearest even with integer ops (NaN kept quiet), exactly as
  ml_dtypes' and torch's casts.

The kernels see 16-bit arrays as uint16 (Numba has no half or bfloat16 array
on the CPU), so the conversions are plain integer and bit-cast operations
that LLVM vectorizes and NVPTX compiles to 16-bit loads and stores. Both
skeletons (`kernels.cpu`, `kernels.cuda` and their many-tensor twins) read
the arrays through `column` and convert through `codec`; each conversion has
a plain-Python twin for the CUDA simulator, bit for bit the same.

On the CPU the host passes, for a stored variant, a tuple of scalars
``(math, param, grad, slot0, slot1, slot2)`` (one per column: the 16-bit
model copy of master weights sits in a state slot of its own format) where a native call passes one scalar of the
arrays' dtype: `math_like` and `column` read either.
"""
import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic, overload

FORMATS = ("f32", "f16", "bf16")
# A column's format from its NumPy dtype's name (ml_dtypes names its own "bfloat16").
BY_DTYPE_NAME = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
BITS = np.dtype(np.uint16)    # how a 16-bit column reaches a kernel

_rule = numba.njit(inline="always")


# --- bit casts (one LLVM instruction each; they compile for both targets) ---

@intrinsic
def _half_to_float(typingctx, u):
    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def _float_to_half(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@intrinsic
def _float_bits(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@intrinsic
def _bits_float(typingctx, u):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


# --- the conversions ---

@_rule
def f16_load(u):
    """float32 of the half whose bits are `u`."""
    return _half_to_float(u)


@_rule
def f16_store(x):
    """The bits of float32 `x` rounded to half (nearest even)."""
    return _float_to_half(x)


@_rule
def bf16_load(u):
    """float32 of the bfloat16 whose bits are `u` (exact: a shift)."""
    return _bits_float(numba.uint32(u) << numba.uint32(16))


@_rule
def bf16_bits(b):
    """bfloat16 bits of the float32 whose bits are `b`, rounded to nearest
    even: add 0x7FFF plus the lowest kept bit, drop 16 bits. A NaN keeps its
    sign and top payload and is made quiet (the add could carry it to inf)."""
    if (b & numba.uint32(0x7FFFFFFF)) > numba.uint32(0x7F800000):
        return numba.uint16((b >> numba.uint32(16)) | numba.uint32(0x40))
    lsb = (b >> numba.uint32(16)) & numba.uint32(1)
    return numba.uint16((b + numba.uint32(0x7FFF) + lsb) >> numba.uint32(16))


@_rule
def bf16_store(x):
    """The bits of float32 `x` rounded to bfloat16 (nearest even)."""
    return bf16_bits(_float_bits(x))


@_rule
def same(x):
    return x


# Plain-Python twins, for the CUDA simulator (and the tests' reference).
def _py_f16_load(u):
    return np.uint16(u).view(np.float16).astype(np.float32)


def _py_f16_store(x):
    return np.float32(x).astype(np.float16).view(np.uint16)


def _py_bf16_load(u):
    return np.uint32(np.uint32(u) << np.uint32(16)).view(np.float32)


def _py_bf16_store(x):
    return bf16_bits.py_func(np.float32(x).view(np.uint32))


def _py_same(x):
    return x


_JIT = {"f32": (same, same), "f16": (f16_load, f16_store),
        "bf16": (bf16_load, bf16_store)}
_PY = {"f32": (_py_same, _py_same), "f16": (_py_f16_load, _py_f16_store),
       "bf16": (_py_bf16_load, _py_bf16_store)}


def codec(fmt, python=False):
    """``(load, store)`` of a column in format `fmt` ("" or None: native,
    the identity): load gives the math dtype, store takes it."""
    table = _PY if python else _JIT
    return table.get(fmt or "f32")


def is16(fmt):
    return fmt in ("f16", "bf16")


# --- the skeletons' view of a column ---

def math_like(like):
    """The math dtype's scalar: `like` itself, or a stored call's ``like[0]``."""


@overload(math_like, inline="always")
def _math_like(like):
    if isinstance(like, types.BaseTuple):
        return lambda like: like[0]
    return lambda like: like


def column(like, c):
    """The scalar whose dtype column `c` (0 param, 1 grad, 2 + s state slot
    s) is viewed in: `like` itself, or a stored call's ``like[c + 1]``."""


@overload(column, inline="always", prefer_literal=True)
def _column(like, c):
    if not isinstance(like, types.BaseTuple):
        return lambda like, c: like
    if not isinstance(c, types.IntegerLiteral):
        return None
    k = c.literal_value + 1
    return lambda like, c: like[k]


def column_like_function(fmt, python=False):
    """For the CUDA kernels, which know their variant in Python: a jitted
    ``f(like) -> scalar`` of the dtype a column in `fmt` is viewed in."""
    if python:
        return _py_same
    if is16(fmt):
        return _bits_like
    return same


@_rule
def _bits_like(like):
    return numba.uint16(0)


def host_like(columns):
    """The CPU skeletons' `like` for a stored variant, from its
    `Variant.columns` (the formats of param, grad and each state slot):
    ``(math, param, grad, slot0, slot1, slot2)`` scalars."""
    if not columns:
        return None
    return _HOST_LIKE[columns]


class _Likes(dict):
    def __missing__(self, columns):
        f32, u16 = np.float32(0), np.uint16(0)
        value = self[columns] = (f32, *[u16 if is16(f) else f32 for f in columns])
        return value


_HOST_LIKE = _Likes()
