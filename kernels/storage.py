"""How arrays are stored, apart from how the math is done: 16-bit storage.

A `Variant` whose ``storage`` is ``(param, grad, state)`` formats, each one
of `FORMATS`, computes in float32 and converts every load and store here:

* ``"f32"``:  float32, stored as it is;
* ``"f16"``:  IEEE half, as uint16 bits: LLVM's ``fpext``/``fptrunc`` of
  ``half`` (F16C's ``vcvtph2ps``/``vcvtps2ph`` on x86, ``cvt.f32.f16`` in PTX),
  round to nearest even, exactly as NumPy's and torch's casts;
* ``"bf16"``: bfloat16, as uint16 bits: a load is a 16-bit shift, a store
  rounds to nearest even with integer ops (NaN kept quiet), exactly as
  ml_dtypes' and torch's casts; a CPU kernel on a CPU with AVX512-BF16
  stores through its conversion instruction instead, the same bits
  (`bf16_store_native`, `codec(host=True)`).

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

from .inlining import helper

FORMATS = ("f32", "f16", "bf16")
# A column's format from its NumPy dtype's name (ml_dtypes names its own "bfloat16").
BY_DTYPE_NAME = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
BITS = np.dtype(np.uint16)    # how a 16-bit column reaches a kernel

_rule = helper     # `kernels.inlining`


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
def _bf16_round(b):
    """The float32 bits `b` with round to nearest even applied at bit 16:
    add 0x7FFF plus the lowest kept bit (the kept bits are the top 16)."""
    return b + numba.uint32(0x7FFF) + ((b >> numba.uint32(16)) & numba.uint32(1))


@_rule
def bf16_bits(b):
    """bfloat16 bits of the float32 whose bits are `b`, rounded to nearest
    even. A NaN keeps its sign and top payload and is made quiet (the
    rounding add could carry it to inf)."""
    r = _bf16_round(b)
    if (b & numba.uint32(0x7FFFFFFF)) > numba.uint32(0x7F800000):
        r = b | numba.uint32(0x400000)
    return numba.uint16(r >> numba.uint32(16))


@_rule
def bf16_store(x):
    """The bits of float32 `x` rounded to bfloat16 (nearest even), as
    `bf16_bits`. Written for the vector loop: the NaN case chosen on the
    32-bit value (one masked OR) and narrowed once, NaN found by a float
    compare (one instruction): 9 vector instructions a store on AVX-512,
    where a select of two narrowed values took 13 (Adam in bfloat16, one
    thread, in cache: 0.72 -> 0.61 ns an element)."""
    b = _float_bits(x)
    r = _bf16_round(b)
    if x != x:
        r = b | numba.uint32(0x400000)
    return numba.uint16(r >> numba.uint32(16))


# --- bfloat16 stores through the CPU's conversion instruction ---

class _BFloatType(ir.Type):
    """LLVM's ``bfloat`` (llvmlite's IR builder has no such type)."""

    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, _BFloatType)

    def __hash__(self):
        return hash(_BFloatType)


@intrinsic
def _bits_to_bfloat(typingctx, b):
    """LLVM's ``fptrunc`` to ``bfloat`` of the float32 whose bits are `b`:
    on x86 with AVX512-BF16, ``vcvtneps2bf16``, which rounds to nearest
    even and keeps a NaN quiet as `bf16_bits` does, but reads a denormal
    input as zero."""
    def codegen(context, builder, sig, args):
        x = builder.bitcast(args[0], ir.FloatType())
        return builder.bitcast(builder.fptrunc(x, _BFloatType()), ir.IntType(16))
    return types.uint16(types.uint32), codegen


@_rule
def bf16_store_native(x):
    """`bf16_store` through the conversion instruction: bit for bit
    `bf16_bits` over all 2^32 inputs (`tests/test_mixed_precision.py`). A
    denormal x (exponent bits 0) is converted as x + sign(x)·2^-126, its
    bits plus 0x800000: a normal number holding x's mantissa, exactly, which
    rounds as x does, 0x80 above x's bfloat16 bits, taken off after. Five
    vector operations a store on AVX-512 where `bf16_store` takes nine
    (`Variant` bfloat16 Adam, one thread, in cache: 0.67 -> 0.59 ms for 1e6
    elements). CPU only, where `HOST_BF16` (NVVM has no ``bfloat``)."""
    b = _float_bits(x)
    denormal = (b & numba.uint32(0x7F800000)) == numba.uint32(0)
    r = _bits_to_bfloat(b + (numba.uint32(0x800000) if denormal else numba.uint32(0)))
    return numba.uint16(r - (numba.uint16(0x80) if denormal else numba.uint16(0)))


def _host_converts_bf16():
    """Whether the CPU kernels compile for AVX512-BF16: the features Numba
    compiles for (``NUMBA_CPU_FEATURES``, else the host's) include it.
    Without it LLVM would lower ``fptrunc`` to ``bfloat`` to a library call
    Numba's JIT may not link."""
    from numba.core.codegen import get_host_cpu_features
    features = numba.config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return "+avx512bf16" in features.split(",")


HOST_BF16 = _host_converts_bf16()


@intrinsic
def same(typingctx, x):
    """`x` itself: a float32 column's load and store. An intrinsic rather
    than a helper: Numba inlines a helper into a CUDA kernel by copying and
    typing its IR again at each call, and these identities were 19 of a
    float32 Adam kernel's 40 inlined calls (PTX of 22 kernels: 1.01 -> 0.94
    s each)."""
    def codegen(context, builder, sig, args):
        return args[0]
    return x(x), codegen


# --- stochastic rounding (bfloat16 stores) ---
#
# The random bits of element e of tensor t at a call with key k (a hash of
# the seed and the step, `fastopt._rounding.key`) are
# ``mix32(mix32(k ^ mix32(t)) + e)``: counter-based, so the CPU and the GPU
# (and any split of the tensors into chunks) give every element the same
# bits. Each step of the hash is cut to 32 bits (`numba.uint32` of a
# widened uint64: Numba types uint32 arithmetic as uint64), so LLVM keeps the
# vector loop in 32-bit lanes (16 on AVX-512, `vpmulld`) instead of 64-bit
# ones (8, `vpmullq`): no signed or float type creeps in, and the CUDA kernels
# and the Python twins (masked Python ints) give the same bits.

_M32 = 0xFFFFFFFF
NUM_PRE = 6     # len(kernels.variants.PRE) (checked there): the key follows
_u32 = numba.uint32


@_rule
def mix32(x):
    """A 32-bit integer hash (Wellons' lowbias32) of the low 32 bits of `x`
    (any unsigned integer), as uint32."""
    x = _u32(x)
    x = _u32(x ^ (x >> _u32(16)))
    x = _u32(x * _u32(0x7FEB352D))
    x = _u32(x ^ (x >> _u32(15)))
    x = _u32(x * _u32(0x846CA68B))
    return _u32(x ^ (x >> _u32(16)))


@_rule
def low32(x):
    """The low 32 bits of the unsigned integer `x`, as uint32."""
    return _u32(x)


@_rule
def bf16_store_sr(x, r):
    """The bits of float32 `x` rounded to bfloat16 stochastically: the low 16
    bits of `r` added to the float32's bits, then 16 bits dropped (rounds up
    with probability equal to the dropped fraction: unbiased). Inf and NaN
    round to nearest. No carry leaves 32 bits: |x| < inf."""
    b = _float_bits(x)
    if (b & _u32(0x7FFFFFFF)) >= _u32(0x7F800000):
        return bf16_bits(b)
    return numba.uint16(_u32(b + (_u32(r) & _u32(0xFFFF))) >> _u32(16))


def _py_mix32(x):
    x = int(x)
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return np.uint64(x ^ (x >> 16))


def _py_bf16_store_sr(x, r):
    b = int(np.float32(x).view(np.uint32))
    if (b & 0x7FFFFFFF) >= 0x7F800000:
        return bf16_bits.py_func(np.uint32(b))
    return np.uint16((b + (int(r) & 0xFFFF)) >> 16)


def store_r(fmt, stochastic, python=False, host=False):
    """``store(x, r)`` of a column in format `fmt`, `r` a value's random
    bits: bfloat16's stochastic store if `stochastic`, else the format's
    own store (`codec`'s, `host` as there), `r` unused (and its computation
    then dead code)."""
    if fmt == "bf16" and stochastic:
        return _py_bf16_store_sr if python else bf16_store_sr
    store = codec(fmt, python)[1]
    if python:
        return lambda x, r: store(x)
    return (_ignore_r_host if host else _ignore_r)[fmt or "f32"]


@_rule
def _f16_store_r(x, r):
    return f16_store(x)


@_rule
def _bf16_store_r(x, r):
    return bf16_store(x)


@intrinsic
def _same_r(typingctx, x, r):
    """`x` itself, `r` unused: `same` with random bits."""
    def codegen(context, builder, sig, args):
        return args[0]
    return x(x, r), codegen


@_rule
def _bf16_store_native_r(x, r):
    return bf16_store_native(x)


_ignore_r = {"f32": _same_r, "f16": _f16_store_r, "bf16": _bf16_store_r}
_ignore_r_host = {**_ignore_r, "bf16": _bf16_store_native_r} if HOST_BF16 else _ignore_r


def mix(python=False):
    return _py_mix32 if python else mix32


def _py_low32(x):
    return np.uint64(int(x) & _M32)


def to32(python=False):
    """``f(x)``: the low 32 bits of an unsigned integer (uint32 when jitted)."""
    return _py_low32 if python else low32


def rnd_base(pre, t):
    """The chunk's base of the random bits: ``mix32(k ^ mix32(t))`` of the key
    `k` a stochastic-rounding call appends to `pre` (as two 16-bit halves,
    exact in float32), 0 for any other call."""


@overload(rnd_base, inline="always")
def _rnd_base(pre, t):
    if len(pre.types) < NUM_PRE + 2:   # (an unscale divisor alone: no key)
        return lambda pre, t: numba.uint64(0)
    n = NUM_PRE

    def impl(pre, t):
        k = (numba.uint64(pre[n]) << numba.uint64(16)) | numba.uint64(pre[n + 1])
        return mix32(k ^ mix32(numba.uint64(t)))

    return impl


@_rule
def _rnd_base_sr(pre, t):
    k = (numba.uint64(pre[6]) << numba.uint64(16)) | numba.uint64(pre[7])
    return mix32(k ^ mix32(numba.uint64(t)))


@_rule
def _rnd_base_none(pre, t):
    return numba.uint64(0)


def rnd_base_function(sr, python=False):
    """For the CUDA kernels, which know their variant in Python (an
    @overload would need a GPU to compile there): `rnd_base`'s twin."""
    if python:
        return py_rnd_base
    return _rnd_base_sr if sr else _rnd_base_none


def py_rnd_base(pre, t):
    n = NUM_PRE
    if len(pre) < n + 2:
        return np.uint64(0)
    k = (int(pre[n]) << 16) | int(pre[n + 1])
    return _py_mix32(k ^ int(_py_mix32(int(t))))


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


_HOST = {**_JIT, "bf16": (bf16_load, bf16_store_native)} if HOST_BF16 else _JIT


def codec(fmt, python=False, host=False):
    """``(load, store)`` of a column in format `fmt` ("" or None: native,
    the identity): load gives the math dtype, store takes it. host=True: for
    a CPU kernel, whose bfloat16 store converts with the CPU's instruction
    where it has one (`bf16_store_native`), the same bits."""
    table = _PY if python else _HOST if host else _JIT
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
