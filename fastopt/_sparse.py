"""Updates from sparse gradients: only the rows a COO gradient touches.

`update_rows` runs any kernel variant's element step (the dense optimizers'
own, `kernels.variants.element_step`) over the rows listed by a coalesced
gradient (`kernels.rows`): param and state are read and written at those
rows only. `sparse_adam` is torch's ``torch.optim._functional.sparse_adam``
on it: Adam without the dense pass, ``m``, ``v`` and the param moved only
where the gradient has entries, with bias corrections from the param's step.

SparseAdam's arithmetic is the Adam rule in the Keras form
(``m ← β₁·m + (1−β₁)·g``, ``v ← β₂·v + (1−β₂)·g²``,
``p ← p − (lr·sqrt(1−β₂ᵗ)/(1−β₁ᵗ))·m / (sqrt(v) + ε)``): torch's
``m + (g − m)·(1−β₁)`` and ``v + (g² − v)·(1−β₂)`` are the same values, in
another rounding (a few ulps a step; within 1e-12 in float64 and 1e-5 in
float32 over 50 steps, tests/test_sparse_adam.py).

Duplicate indices are summed first (torch's ``coalesce``; for torch
gradients torch's own), as the update is not linear in the gradient.
"""
import math

import numpy as np

from . import _checks, _device, _facts, _rounding
from .kernels import rows as krows
from .kernels import storage
from .kernels import variant as _variant
from .spec import check_float, check_step

ADAM_ROWS = _variant("adam", (False, False))   # Adam, Keras form: SparseAdam's math


def sparse_adam_scalars(lr, beta1, beta2, eps, step):
    """The Adam rule's host scalars of SparseAdam's update `step` (1-based):
    ``(lr·sqrt(c₂)/c₁, β₁, 1−β₁, β₂, 1−β₂, ε)``, torch's ``step_size`` and ε."""
    c1 = 1.0 - beta1 ** step
    sqrt_c2 = math.sqrt(1.0 - beta2 ** step)
    return (lr * sqrt_c2 / c1, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps)


def pre_of(maximize):
    """The shared transforms' scalars (`kernels.PRE`): the gradient's sign only."""
    return (-1.0 if maximize else 1.0, 0.0, 0.0, 1.0, 0.0, 1.0)


def sparse_adam(param, indices, values, exp_avg, exp_avg_sq, *, step, lr=1e-3,
                beta1=0.9, beta2=0.999, eps=1e-8, maximize=False,
                stochastic_rounding=False, seed=0):
    """torch's SparseAdam update of `param` (NumPy or GPU array, float32 or
    float64) from a COO gradient: `indices` (int, ``(nnz,)`` rows of the first
    dim, or ``(k, nnz)`` indices into the first k dims) and `values`
    (``(nnz, *param.shape[k:])``); duplicates are summed first. `exp_avg`,
    `exp_avg_sq`: like `param` (zeros at first); `step`: 1-based.

    On the host, param, values and state may also be float16 or bfloat16
    (float32 math, as the dense functions), and ``stochastic_rounding=True``
    (with `seed`) rounds the bfloat16 stores as the dense functions do: the
    same bits as `fastopt.functional.adam` gives the same element at the
    same step and seed. A GPU's rows kernel takes float32 and float64 only.

    Example::

        >>> sparse_adam(w, rows, vals, m, v, step=1, lr=1e-2)
    """
    fn = "sparse_adam"
    check_step(fn, step)
    lr = check_float(fn, "lr", lr, low=0.0, low_open=True)
    eps = check_float(fn, "eps", eps, low=0.0, low_open=True)
    beta1 = check_float(fn, "beta1", beta1, low=0.0, high=1.0, high_open=True)
    beta2 = check_float(fn, "beta2", beta2, low=0.0, high=1.0, high_open=True)
    if not isinstance(maximize, bool):
        raise TypeError(f"{fn}(): maximize must be True or False, got {maximize!r}")
    where = _facts.place(param)
    xp = np
    if where == _facts.DEVICE and not _device.simulated():
        import cupy as xp   # noqa: F811 - GPU index bookkeeping on the GPU
    indices = xp.asarray(indices) if where == _facts.HOST else indices
    shape = tuple(param.shape)
    rows, width = _linear_rows(fn, indices, shape)
    if where == _facts.HOST:
        rows, values = coalesce(np.asarray(rows), np.asarray(values), width)
    variant, pre = ADAM_ROWS, pre_of(maximize)
    if stochastic_rounding is not False:
        if stochastic_rounding is not True:
            raise TypeError(f"{fn}(): stochastic_rounding must be True or False, "
                            f"got {stochastic_rounding!r}")
        variant, pre = variant.with_sr, (*pre, *_rounding.key(fn, seed, step))
    update_rows(fn, variant, param, rows, values, (exp_avg, exp_avg_sq),
                pre, sparse_adam_scalars(lr, beta1, beta2, eps, step))


def _linear_rows(fn, indices, shape):
    """(rows, width): `indices` over the first k dims of `shape` as row numbers
    of the param seen as ``(prod(shape[:k]), prod(shape[k:]))``."""
    idx = indices if indices.ndim == 2 else indices.reshape(1, -1)
    k = idx.shape[0]
    if not 1 <= k <= len(shape):
        raise ValueError(f"{fn}(): indices index {k} dims of a {len(shape)}-dim param")
    width = int(np.prod(shape[k:], dtype=np.int64))
    if k == 1:
        return idx[0], width
    strides = np.cumprod((1,) + tuple(shape[1:k])[::-1])[::-1]
    rows = idx[0] * int(strides[0])
    for d in range(1, k):
        rows = rows + idx[d] * int(strides[d])
    return rows, width


def coalesce(rows, values, width):
    """Unique sorted `rows` and their summed `values` (torch's coalesce)."""
    values = values.reshape(len(rows), width)
    if rows.size < 2 or np.all(rows[1:] > rows[:-1]):
        return rows.astype(np.int64, copy=False), values
    unique, inverse = np.unique(rows, return_inverse=True)
    summed = np.zeros((len(unique), width), values.dtype)
    np.add.at(summed, inverse, values)
    return unique.astype(np.int64), summed


def update_rows(fn, variant, param, rows, values, states, pre, hyper):
    """`variant`'s update of the rows `rows` (unique, int64) of `param` and its
    state arrays `states` (in the variant's slot order), from `values`
    (``(len(rows), width)``, the param's dtype). Host arrays (NumPy, torch
    CPU tensors) or GPU arrays; all checked before anything is written."""
    arrays = [param, values, *states]
    if all(_facts.place(a) == _facts.HOST for a in arrays) and _facts.place(rows) in (
            _facts.HOST, None):
        _run_host(fn, variant, arrays, rows, pre, hyper)
    else:
        _run_device(fn, variant, arrays, rows, pre, hyper)
    _facts.bump_torch_versions([param, *states])


def _host(x):
    return _facts.host_view(x)


def _run_host(fn, variant, arrays, rows, pre, hyper):
    views = [_host(a) for a in arrays]
    rows = np.ascontiguousarray(_host(rows), dtype=np.int64)
    param, values = views[0], views[1]
    n = param.size
    names = ["param", "values"] + [f"state[{k}]" for k in range(len(views) - 2)]
    # float32 or float64 throughout, or 16-bit arrays (`_facts.storage`)
    labels = _checks.Labels(names, 1, indexed=False)
    stored = _checks.stored_as(fn, labels, 0, [v.dtype for v in views])
    _rounding.check(fn, labels, variant, [stored])
    for name, v in zip(names, views):
        if not v.flags.c_contiguous:
            raise ValueError(f"{fn}(): {name} is not C-contiguous")
        if name != "values" and (v.size != n or not v.flags.writeable):
            raise ValueError(f"{fn}(): {name} must be a writeable array of {n} elements "
                             "like param")
    nnz = rows.shape[0]
    width = values.size // nnz if nnz else 0
    if nnz and (values.size != nnz * width or n % width):
        raise ValueError(f"{fn}(): values has {values.size} elements, not "
                         f"{nnz} rows of a row of param")
    if nnz == 0:
        return
    nrows = n // width
    if rows.min() < 0 or rows.max() >= nrows:
        raise IndexError(f"{fn}(): a row index is outside [0, {nrows})")
    addrs = np.array([v.ctypes.data for v in views[:2]]
                     + [views[2 + k].ctypes.data if s is not None else param.ctypes.data
                        for k, s in enumerate(_slot_columns(variant, len(views) - 2))],
                     np.int64)
    if stored:      # 16-bit arrays: float32 math (kernels.storage)
        variant = variant.stored(stored)
        like = storage.host_like(variant.columns)
    else:
        like = _facts.LIKE[param.dtype]
    krows.kernel(variant)(addrs, n, rows, width, like, pre, hyper)


def _slot_columns(variant, given):
    """The three kernel slots: an index into the given states, or None (unused)."""
    out, k = [], 0
    for used in variant.used:
        if used and k < given:
            out.append(k)
            k += 1
        else:
            out.append(None)
    return out


def _run_device(fn, variant, arrays, rows, pre, hyper):
    from numba import cuda

    param = arrays[0]
    if variant.sr:
        raise TypeError(f"{fn}(): stochastic_rounding rounds bfloat16 rows on the host; "
                        "the GPU's rows kernel takes float32 and float64 arrays only")
    flat = [_device_1d(a) for a in arrays]
    dtype = np.dtype(flat[0].dtype)
    if dtype not in _facts.CODES or any(np.dtype(f.dtype) != dtype for f in flat):
        raise TypeError(f"{fn}(): param, values and state must be float32 or float64 "
                        "GPU arrays of one dtype")
    rows_d = _device_1d(rows)
    nnz = rows_d.shape[0]
    if nnz == 0:
        return
    width = flat[1].shape[0] // nnz
    n = flat[0].shape[0]
    host_rows = rows_d.copy_to_host() if hasattr(rows_d, "copy_to_host") else None
    if host_rows is not None and (host_rows.min() < 0 or host_rows.max() >= n // width):
        raise IndexError(f"{fn}(): a row index is outside [0, {n // width})")
    slots = _slot_columns(variant, len(flat) - 2)
    state = [flat[2 + k] if k is not None else flat[0] for k in slots]
    blocks, threads = _launch(flat[1].shape[0])
    stream = 0 if _device.simulated() else _device.stream_of(
        _device.describe("param", param))
    cast = dtype.type
    krows.cuda_kernel(variant)[blocks, threads, stream](
        flat[0], flat[1], *state, rows_d, width, tuple(cast(p) for p in pre),
        tuple(cast(h) for h in hyper))


def _launch(n):
    from .kernels import cuda as kcuda
    return kcuda.launch_config(max(n, 1))


def _device_1d(x):
    """A GPU array as a 1-D Numba device array (the simulator's: itself)."""
    from numba import cuda
    if not _device.simulated():
        x = cuda.as_cuda_array(x.detach() if _facts.is_torch(x) else x)
    return x.reshape(x.size) if x.ndim != 1 else x
