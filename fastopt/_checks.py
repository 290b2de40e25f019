"""The one array checker: every check of a call's arrays, one message style.

A call's arrays are columns (param, grad, then the state slots its variant
uses) of n arrays each; a single-array call is n = 1, its arrays named
without an index. Every check raises ``"{fn}(): {label} ..."``, the label
being the caller's argument name (``exp_avg``, ``exp_avg[3]``), before
anything is written; a front end names the call and its arrays in its own
words (`fastopt._front.call`). The accelerators (`fastopt._hostscan`) answer the same
questions faster for the common case and decline whatever they cannot vouch
for; the functions here then name the culprit.
"""
import sys

import numpy as np

from . import _facts
from ._facts import DEVICE, GRAD, HOST
from ._front import frame as _frame


def who(fn):
    """How a message names the call: the front end's name, else ``fn()``."""
    return f"{fn}()" if _frame.who is None else _frame.who


class Labels:
    """The caller's name of the j-th array of the flattened columns
    (column ``j // n``, tensor ``j % n``): ``grad[3]``, or ``grad`` when the
    call took single arrays; `index`, if given, is the caller's index of
    each tensor (a front end passing a subset of its lists)."""

    __slots__ = ("names", "n", "indexed", "index")

    def __init__(self, names, n, indexed=True, index=None):
        self.names, self.n, self.indexed, self.index = names, n, indexed, index

    def __call__(self, j):
        return self.at(j // self.n, j % self.n)

    def at(self, column, k):
        name = self.names[column]
        if _frame.name is not None:
            return _frame.name(name, k)
        if not self.indexed:
            return name
        return f"{name}[{k if self.index is None else self.index[k]}]"


def placed(fn, labels, flat):
    """Where all of `flat` (the flattened columns) live: `HOST` or `DEVICE`.
    Raises for an array the kernels cannot reach, or a mix of places."""
    places = [_facts.place(a) for a in flat]
    for j, (a, where) in enumerate(zip(flat, places)):
        if where is None:
            raise TypeError(
                f"{who(fn)}: {labels(j)} must be a NumPy array or a CUDA array "
                f"(CuPy, Numba, torch), got {_facts.describe(a)}")
    if places.count(places[0]) != len(places):
        other = next(j for j, p in enumerate(places) if p != places[0])
        where = {HOST: "host memory", DEVICE: "a GPU"}
        raise TypeError(
            f"{who(fn)}: arrays are mixed between host memory and a GPU: "
            f"{labels(0)} is in {where[places[0]]}, {labels(other)} in "
            f"{where[places[other]]}; all must live in the same place")
    return places[0]


def tensors(fn, labels, columns, layout, device=None, model=None):
    """Each tensor's arrays: a float dtype, and param's dtype and shape, or a
    16-bit storage (`_facts.storage`); C-contiguous; writeable unless grad;
    on GPU `device` if given. Returns each tensor's storage. model: the
    column of the 16-bit model copy of master weights (`_facts.model_column`).

    columns: the arrays (or `_device.DeviceArray` descriptions) with
    ``.dtype`` and ``.shape`` (and ``.device``); ``layout(a) ->
    (contiguous, readonly)``.
    """
    stored = []
    for k, p in enumerate(columns[0]):
        dtype, shape = p.dtype, p.shape
        st = stored_as(fn, labels, k, [column[k].dtype for column in columns], model)
        stored.append(st)
        for c, column in enumerate(columns):
            a = column[k]
            if a.shape != shape:
                raise ValueError(f"{who(fn)}: {labels.at(c, k)} has shape {a.shape}, "
                                 f"expected {shape} like {labels.at(0, k)}")
            contiguous, readonly = layout(a)
            if not contiguous:
                raise ValueError(f"{who(fn)}: {labels.at(c, k)} must be C-contiguous")
            if getattr(a, "masked", False):
                raise TypeError(
                    f"{who(fn)}: {labels.at(c, k)} has a mask in its "
                    "__cuda_array_interface__, which the kernels would ignore: pass "
                    "the data without the mask")
            if device is not None and a.device != device:
                raise ValueError(
                    f"{who(fn)}: {labels.at(c, k)} is on GPU {a.device} but "
                    f"{labels.at(0, 0)} is on GPU {device}; all arrays must be on "
                    "the same GPU")
            if readonly and c != GRAD:
                raise ValueError(
                    f"{who(fn)}: {labels.at(c, k)} is read-only; it is updated in place")
    return stored


def stored_as(fn, labels, k, dtypes, model=None):
    """Tensor k's storage (`_facts.storage`: () when its arrays share float32
    or float64), or a TypeError naming the array whose dtype does not fit.
    model: the column of a 16-bit model copy (master weights), whose
    format ends the storage; param must then be float32."""
    if model is not None:
        fmt = _facts.storage_format(dtypes[model])
        if fmt not in ("f16", "bf16"):
            raise TypeError(f"{who(fn)}: {labels.at(model, k)} (the model copy of "
                            f"master weights) must be float16 or bfloat16, got "
                            f"{dtypes[model]}")
        if dtypes[0] != _facts.FLOAT32:
            raise TypeError(f"{who(fn)}: {labels.at(0, k)} (the master weights) must "
                            f"be float32 when a model copy is given, got {dtypes[0]}")
        # The model's column takes another state's dtype (none: it goes), so
        # that the others' checks and messages keep their columns.
        others = [c for c in range(2, len(dtypes)) if c != model]
        rest = list(dtypes)
        if others:
            rest[model] = dtypes[others[0]]
        else:
            del rest[model]
        st = stored_as(fn, labels, k, rest)
        return (*(st or ("f32",) * 3), fmt)
    st = _facts.storage(dtypes)
    if st and type(st[0]) is int:
        c, note, ref = st
        if c == 0:
            raise TypeError(f"{who(fn)}: {labels.at(0, k)} must be float32 or float64, "
                            f"got {dtypes[0]} (or float16, bfloat16: float32 math)")
        raise TypeError(f"{who(fn)}: {labels.at(c, k)} has dtype {dtypes[c]}, "
                        f"expected {dtypes[ref]} like {labels.at(ref, k)}{note}")
    return st


def host_layout(a):
    """`tensors`' layout of a NumPy array."""
    flags = a.flags
    return flags.c_contiguous, not flags.writeable


def device_layout(info):
    """`tensors`' layout of a `_device.DeviceArray`."""
    return info.contiguous, info.readonly


def aligned(fn, labels, addresses, itemsizes):
    """Every GPU array starts on an element boundary: a load off its boundary
    faults and ends the CUDA context. `itemsizes` per flattened array."""
    misaligned = np.flatnonzero(np.asarray(addresses, np.int64) % itemsizes)
    if misaligned.size:
        j = int(misaligned[0])
        raise ValueError(
            f"{who(fn)}: {labels(j)} starts at {addresses[j]:#x}, not on a "
            f"{int(itemsizes[j])}-byte boundary; GPU arrays must be aligned to "
            "their elements")


def no_overlap(fn, labels, addresses, nbytes, grads_written=False):
    """No written array may share memory with any other array of the call.

    `addresses` and `nbytes` run over the flattened columns (param[0..n),
    grad[0..n), ...); grads are the only arrays not written. One sweep over
    the arrays sorted by start address: an array overlaps an earlier one
    exactly when it starts before the furthest end seen so far (of any
    earlier array if it is written, of an earlier written one if not).
    grads_written: the grads are written too (back unscaled,
    `kernels.variants.Variant.unscale`).
    """
    start = np.asarray(addresses, np.int64)
    size = np.asarray(nbytes, np.int64)
    live = np.flatnonzero(size)            # empty arrays overlap nothing
    if live.size < 2:
        return
    written = ((live // labels.n) != GRAD) | grads_written
    order = np.argsort(start[live], kind="stable")
    idx, wr = live[order], written[order]
    lo, hi = start[idx], start[idx] + size[idx]
    # Running maximum of the ends before each array, over all and over written.
    lowest = np.iinfo(np.int64).min
    end_any = np.maximum.accumulate(hi)
    end_written = np.maximum.accumulate(np.where(wr, hi, lowest))
    before_any = np.concatenate(([lowest], end_any[:-1]))
    before_written = np.concatenate(([lowest], end_written[:-1]))
    bad = np.flatnonzero(np.where(wr, before_any, before_written) > lo)
    if bad.size:
        j = int(bad[0])
        ends = end_any if wr[j] else end_written
        # The earlier array whose end is the running maximum overlaps idx[j].
        i = int(np.flatnonzero((ends[:j] == ends[j - 1]))[0])
        first, second = sorted((int(idx[i]), int(idx[j])))
        raise ValueError(f"{who(fn)}: {labels(second)} shares memory with "
                         f"{labels(first)}; each array must be a separate buffer")


def torch_writable(fn, labels, columns):
    """The torch tensors among the written columns (all but grad's) accept an
    in-place update where they are, as torch's own in-place ops require: not
    a leaf that requires grad while grad mode is on, not an inference tensor
    outside inference mode. Read in bulk; one by one only for the message."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    tensors = [(c, k, t) for c, column in enumerate(columns) if c != GRAD
               for k, t in enumerate(column) if isinstance(t, torch.Tensor)]
    if not tensors:
        return
    grad_mode = torch.is_grad_enabled()
    inference_mode = torch.is_inference_mode_enabled()
    if not ((grad_mode and any([t.requires_grad and t.is_leaf for _, _, t in tensors]))
            or (not inference_mode and any([t.is_inference() for _, _, t in tensors]))):
        return
    for c, k, t in tensors:
        if grad_mode and t.requires_grad and t.is_leaf:
            raise ValueError(
                f"{who(fn)}: {labels.at(c, k)} is a leaf tensor that requires grad, "
                "which torch updates in place only under torch.no_grad()")
        if not inference_mode and t.is_inference():
            raise ValueError(
                f"{who(fn)}: {labels.at(c, k)} is an inference tensor, which torch "
                "updates in place only inside torch.inference_mode()")
