"""Raw addresses to typed 1-D views, for the kernels of both targets.

`view_codegen` builds, from an int64 address, an element offset and a length,
a C-contiguous 1-D array struct with no owner (no meminfo): the host keeps the
memory alive for the duration of the call. It is lowered by a tiny intrinsic
per target (``view`` in `kernels.cpu` and `kernels.cuda`), not by ``carray``,
whose CUDA version is an @overload that needs a GPU to compile.
"""
from numba.core import types


def view_signature(addr, start, n, like):
    """``view(addr, start, n, like) -> like[::1]``, the dtype of scalar `like`."""
    return types.Array(like, 1, "C")(types.int64, types.int64, types.int64, like)


def view_codegen(populate_array, address_space=None):
    """The lowering of `view`; `populate_array` comes from the target's arrayobj.

    address_space: where the address points (CUDA's global memory: 1). The
    pointer is made there and cast to a generic one, as CUDA C's
    ``cvta.to.global`` does, so the compiler knows every access through the
    view is a global one (``ld.global``), however much code the rule puts
    between the view and its loads (a libdevice pow hid it, in the many-tensor
    kernel).
    """
    def codegen(context, builder, sig, args):
        addr, start, n, _ = args
        array_type = sig.return_type
        dtype = context.get_data_type(array_type.dtype)
        if address_space is None:
            base = builder.inttoptr(addr, dtype.as_pointer())
        else:
            base = builder.addrspacecast(
                builder.inttoptr(addr, dtype.as_pointer(address_space)), dtype.as_pointer())
        data = builder.gep(base, [start], inbounds=True)
        itemsize = context.get_constant(types.intp,
                                        context.get_abi_sizeof(dtype))
        array = context.make_array(array_type)(context, builder)
        populate_array(array, data=data, shape=[n], strides=[itemsize],
                       itemsize=itemsize, meminfo=None)
        return array._getvalue()

    return codegen
