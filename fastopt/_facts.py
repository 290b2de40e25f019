"""Array facts: what every route of a call knows of arrays, in one place.

The bottom of the call pipeline (describe -> validate -> plan -> run): the
dtypes the kernels update and their codes, where an array lives (host
memory or a GPU), how an array reads in a message, the kernels' array
columns, the per-call scalars' cast, and how a written torch tensor tells
autograd. Single arrays and lists, host and GPU, all read these; this
module imports no other part of fastopt but `_device` (GPU arrays' own
facts) and the kernels' constants.
"""
import functools
import sys

import numpy as np

from . import _device
from .kernels import NUM_ARRAYS

# The dtypes the kernels update; a dtype's code is its index here.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
CODES = {d: code for code, d in enumerate(FLOAT_DTYPES)}
ITEMSIZES = np.array([d.itemsize for d in FLOAT_DTYPES], np.int64)
LIKE = {d: d.type(0) for d in FLOAT_DTYPES}   # the CPU kernels' dtype argument
GRAD = 1        # the kernels' one column that is read, never written

HOST, DEVICE = "host", "device"
_places = {np.ndarray: HOST}     # type -> place, for types with one place


def place(x):
    """`HOST`, `DEVICE`, or None for anything the kernels cannot update."""
    where = _places.get(type(x))
    if where is not None:
        return where
    if isinstance(x, np.ma.MaskedArray):   # the kernels would ignore the mask
        return None
    if is_torch(x):   # other devices (meta, mps, ...), sparse layouts: neither
        if x.layout != sys.modules["torch"].strided:
            return None
        return DEVICE if x.is_cuda else HOST if x.is_cpu else None
    if _device.is_device_array(x):
        if _device.is_device_array_type(type(x)):
            _places[type(x)] = DEVICE
        return DEVICE
    if isinstance(x, np.ndarray):
        return HOST
    return None


def describe(x):
    """What `x` is, for messages: its type, and its device if it is a tensor."""
    if isinstance(x, np.ma.MaskedArray):
        return "a masked array (its mask would be ignored: pass .data or .filled())"
    if is_torch(x):
        if x.layout != sys.modules["torch"].strided:
            return f"a torch tensor with layout {x.layout} (only dense tensors can be updated)"
        return f"a torch tensor on {x.device}"
    return type(x).__name__


def is_torch(x):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def host_view(x):
    """A host array as NumPy sees it (a torch CPU tensor: a zero-copy view;
    a bfloat16 one, which NumPy cannot import, viewed as ml_dtypes' bfloat16)."""
    if type(x) is np.ndarray:
        return x
    if is_torch(x):
        torch = sys.modules["torch"]
        if x.dtype == torch.bfloat16:
            return x.detach().view(torch.int16).numpy().view(bfloat16())
        return x.detach().numpy()
    return np.asarray(x)


@functools.lru_cache(maxsize=None)
def bfloat16():
    """ml_dtypes' bfloat16 NumPy dtype (imported on first use)."""
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)


# 16-bit storage (kernels.storage): float32 math over float16 / bfloat16 columns.
FLOAT32, FLOAT64 = FLOAT_DTYPES


def storage_format(dtype):
    """`kernels.storage`'s format of a NumPy dtype ("f32", "f16", "bf16"), or None."""
    if dtype is FLOAT32 or dtype == FLOAT32:
        return "f32"
    if dtype == np.float16:
        return "f16"
    if dtype.name == "bfloat16" and dtype.itemsize == 2 and dtype.kind == "V":
        return "bf16"
    return None


def storage(dtypes):
    """The storage of one tensor's arrays from their dtypes (param, grad,
    then its used state slots): () when all share float32 or float64 (the
    native kernels), a `kernels.storage` ``(param, grad, state)`` triple
    when 16-bit arrays are mixed in, or ``(column, note)`` of the first
    array that cannot be, a note, and the column it is compared with
    (`_checks.stored_as` words the message)."""
    first = dtypes[0]
    if first in FLOAT_DTYPES and all([d == first for d in dtypes]):
        return ()
    if first == FLOAT64:
        return next(c for c, d in enumerate(dtypes) if d != first), "", 0
    fmts = [storage_format(d) for d in dtypes]
    if fmts[0] is None:
        return 0, "", 0
    for c, f in enumerate(fmts[1:], 1):
        if f is None:
            return c, " (or float16, bfloat16: float32 math)", 0
    states = fmts[2:]
    for c, f in enumerate(states, 2):
        if f != states[0]:
            return c, " (a call's state arrays share one dtype)", 2
    return fmts[0], fmts[1], states[0] if states else "f32"


@functools.lru_cache(maxsize=None)
def model_column(variant):
    """The index of the 16-bit model copy (master weights) among a call's
    arrays ``[param, grad, used states...]``, or None without one."""
    if not variant.model:
        return None
    return 2 + sum(variant.used[:variant.model_slot])


def bump_torch_versions(written):
    """Tell autograd that the torch tensors among `written` changed.

    The kernels write through raw pointers; torch's in-place ops bump a
    tensor's version, so that a graph which saved the old value raises
    instead of silently using the new one (inference tensors, which keep no
    version, are skipped by torch).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return
    tensor = torch.Tensor
    tensors = [t for t in written if isinstance(t, tensor)]
    if tensors:
        torch.autograd.graph.increment_version(tensors)


def bump_after(action, written):
    """A plan's run: `action()` (None: nothing to run), then the autograd
    versions of the torch tensors among `written` bumped."""
    def run():
        if action is not None:
            action()
        bump_torch_versions(written)

    return run


def arguments(fn, variant, param, grad, states):
    """``(names, values)``: param, grad, then the state arguments `variant`
    uses, in slot order; a missing one raises, saying which option needs it."""
    names, values = ["param", "grad"], [param, grad]
    for name, why in zip(variant.slots, variant.slot_reasons):
        if name is not None:
            value = states.get(name)
            if value is None:
                raise ValueError(f"{fn}(): {name} is required{why}")
            names.append(name)
            values.append(value)
    return names, values


@functools.lru_cache(maxsize=None)
def kernel_columns(variant):
    """The kernels' `NUM_ARRAYS` columns (param, grad, the state slots) as
    indices into ``[param, grad, used states...]``, and which of them are
    used. An unused slot repeats param (index 0): the kernel never touches it."""
    used = iter(range(2, 2 + sum(variant.used)))
    slots = tuple(next(used) if u else 0 for u in variant.used)
    columns = (0, 1, *slots)
    assert len(columns) == NUM_ARRAYS
    return columns, (True, True, *variant.used)


def scalars(dtype, values):
    """Scalars of the arrays' dtype, for the CUDA kernels (a Python float would
    be float64 there; the CPU skeletons cast Python floats themselves)."""
    if dtype is _FLOAT64:
        return values
    cast = dtype.type
    return tuple([cast(v) for v in values])


_FLOAT64 = np.dtype(np.float64)
