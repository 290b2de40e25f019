"""The DLPack exchange API of torch tensors: their addresses and sizes read
from compiled code (`kernels.dlpack`), for calls over many tensors.

torch (2.10 and later) publishes the API as ``torch.Tensor.
__dlpack_c_exchange_api__``, a capsule holding a ``DLPackExchangeAPI``
table. `reader` finds the table's ``dltensor_from_py_object_no_sync``
once; where the capsule is missing or of another major version it returns
None and callers read the tensors' properties from Python.
"""
import ctypes

from .kernels.dlpack import KDL_BFLOAT, KDL_COMPLEX, KDL_FLOAT, dtype_word

_CAPSULE = b"dlpack_exchange_api"
_MAJOR = 1
# DLPackExchangeAPI: header (version: two uint32, prev_api), then the
# allocator, managed_tensor_from_py_object_no_sync,
# managed_tensor_to_py_object_no_sync, dltensor_from_py_object_no_sync.
_DLTENSOR_FROM_PYOBJECT = 5     # the table's 8-byte word holding it

_found = {}


def reader(tensor_type):
    """``(describe, clear)`` addresses for `kernels.dlpack.read_dense`, for
    objects of exactly `tensor_type`; None where it has no usable API."""
    if tensor_type not in _found:
        _found[tensor_type] = _find(tensor_type)
    return _found[tensor_type]


def _find(tensor_type):
    capsule = tensor_type.__dict__.get("__dlpack_c_exchange_api__")
    if capsule is None:
        return None
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                  ctypes.c_char_p]
    try:
        table = get_pointer(capsule, _CAPSULE)
    except ValueError:          # another capsule name
        return None
    if not table or ctypes.c_uint32.from_address(table).value != _MAJOR:
        return None
    describe = ctypes.c_void_p.from_address(table + 8 * _DLTENSOR_FROM_PYOBJECT).value
    clear = ctypes.cast(ctypes.pythonapi.PyErr_Clear, ctypes.c_void_p).value
    return (describe, clear) if describe else None


def torch_dtypes(torch):
    """The readers' dtype words (`kernels.dlpack.dtype_word`) of the torch
    dtypes fastopt updates -> those dtypes."""
    if not _torch_dtypes:
        _torch_dtypes.update({
            dtype_word(KDL_FLOAT, 32): torch.float32, dtype_word(KDL_FLOAT, 64): torch.float64,
            dtype_word(KDL_FLOAT, 16): torch.float16, dtype_word(KDL_BFLOAT, 16): torch.bfloat16,
            dtype_word(KDL_COMPLEX, 64): torch.complex64,
            dtype_word(KDL_COMPLEX, 128): torch.complex128})
    return _torch_dtypes


_torch_dtypes = {}
