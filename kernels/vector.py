"""128-bit loads and stores for the CUDA skeletons' main loop.

Plain Numba indexing emits scalar ``ld.global.f32`` (4 bytes a load), and
numba-cuda's vector types cannot be loaded from global memory. Here two
intrinsics move 4 consecutive elements between global memory and a
4-element local array through one ``<4 x T>`` access aligned to 16 bytes:
``ld.global.v4.f32`` / ``st.global.v4.f32`` for float32, two ``.v2.f64`` for
float64. The local arrays (`quad`, allocated in the kernel's entry block)
are indexed only with constants once the 4-step loop is unrolled, so the
compiler keeps them in registers: no ``.local`` in the PTX (the PTX tests
check it).

`quad_loop(variant, step)` is the main loop: each thread takes groups of 4
elements (grid-stride), loads every array the variant reads, runs the
unchanged element step (`kernels.variants.element_step`) on the 4 local
elements, and stores every array it writes. It runs only when every address
is 16-byte aligned (`aligned16`), a condition uniform over the launch; the
caller's scalar loop then does the last ``n % 4`` elements, or everything
when an address is not aligned (as torch's multi-tensor kernels do).
"""
import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.cuda.extending import intrinsic

WIDTH = 4
_GLOBAL = 1   # NVVM's address space of global memory


def intrinsics(intrinsic, address_space):
    """``(quad, load4, store4)`` made with a target's `intrinsic` decorator,
    loading from and storing to `address_space` (None: generic pointers,
    as on the CPU, where tests run the same loop)."""

    @intrinsic
    def quad(typingctx, like):
        """A 4-element local array of `like`'s type, in the entry block."""
        array_type = types.Array(like, 1, "C")

        def codegen(context, builder, sig, args):
            dtype = context.get_data_type(like)
            data = cgutils.alloca_once(builder, ir.ArrayType(dtype, WIDTH))
            data = builder.bitcast(data, dtype.as_pointer())
            itemsize = context.get_constant(types.intp, context.get_abi_sizeof(dtype))
            array = context.make_array(array_type)(context, builder)
            context.populate_array(array, data=data,
                                   shape=[context.get_constant(types.intp, WIDTH)],
                                   strides=[itemsize], itemsize=itemsize, meminfo=None)
            return array._getvalue()

        return array_type(like), codegen

    def vector_pointer(context, builder, addr, start, array_type):
        dtype = context.get_data_type(array_type.dtype)
        vector = ir.VectorType(dtype, WIDTH)
        size = context.get_abi_sizeof(dtype)
        byte = builder.add(addr, builder.mul(start, ir.Constant(ir.IntType(64), size)))
        if address_space is None:
            return vector, builder.inttoptr(byte, vector.as_pointer())
        return vector, builder.inttoptr(byte, vector.as_pointer(address_space))

    def index(k):
        return ir.Constant(ir.IntType(32), k)

    @intrinsic
    def load4(typingctx, addr, start, dst):
        """dst[0:4] = the 4 elements at address `addr`, element `start` on
        (one 16-byte aligned vector load)."""
        def codegen(context, builder, sig, args):
            addr, start, dst = args
            vector, pointer = vector_pointer(context, builder, addr, start, sig.args[2])
            value = builder.load(pointer, align=16)
            data = context.make_array(sig.args[2])(context, builder, dst).data
            for k in range(WIDTH):
                builder.store(builder.extract_element(value, index(k)),
                              builder.gep(data, [index(k)]))
            return context.get_dummy_value()

        return types.void(types.int64, types.int64, dst), codegen

    @intrinsic
    def store4(typingctx, addr, start, src):
        """The 4 elements at address `addr`, element `start` on, = src[0:4]
        (one 16-byte aligned vector store)."""
        def codegen(context, builder, sig, args):
            addr, start, src = args
            vector, pointer = vector_pointer(context, builder, addr, start, sig.args[2])
            data = context.make_array(sig.args[2])(context, builder, src).data
            value = ir.Constant(vector, ir.Undefined)
            for k in range(WIDTH):
                value = builder.insert_element(
                    value, builder.load(builder.gep(data, [index(k)])), index(k))
            builder.store(value, pointer, align=16)
            return context.get_dummy_value()

        return types.void(types.int64, types.int64, src), codegen

    return quad, load4, store4


CUDA = intrinsics(intrinsic, _GLOBAL)


@numba.njit(inline="always")
def aligned16(a0, a1, a2, a3, a4):
    """Whether all five addresses are 16-byte aligned."""
    return ((a0 | a1 | a2 | a3 | a4) & 15) == 0


def quad_loop(variant, step, ops=CUDA):
    """``loop(a0, a1, a2, a3, a4, first, n, start, stride, pre, hyper) -> done``:
    `step` over elements first .. first + 4·⌊(n)/4⌋ of the arrays at the five
    addresses, 4 at a time (threads `start`, `start + stride`, ... take groups
    of 4); returns how many elements it did. The arrays the variant does not
    use are neither loaded nor stored. ops: `intrinsics` of the target."""
    used0, used1, used2 = variant.used
    unscale = variant.unscale    # the gradient written back (`Variant.unscale`)
    quad, load4, store4 = ops

    @numba.njit(inline="always")
    def loop(a0, a1, a2, a3, a4, first, n, start, stride, pre, hyper):
        like = pre[0]
        param, grad = quad(like), quad(like)
        s0, s1, s2 = quad(like), quad(like), quad(like)
        state = (s0, s1, s2)
        for q in range(start, n // WIDTH, stride):
            i = first + q * WIDTH
            load4(a0, i, param)
            load4(a1, i, grad)
            if used0:
                load4(a2, i, s0)
            if used1:
                load4(a3, i, s1)
            if used2:
                load4(a4, i, s2)
            for k in range(WIDTH):   # no random bits: a 16-bit variant has no quads
                step(k, param, grad, state, pre, hyper, (numba.uint64(0), numba.int64(0)))
            store4(a0, i, param)
            if unscale:
                store4(a1, i, grad)
            if used0:
                store4(a2, i, s0)
            if used1:
                store4(a3, i, s1)
            if used2:
                store4(a4, i, s2)
        return (n // WIDTH) * WIDTH

    return loop
