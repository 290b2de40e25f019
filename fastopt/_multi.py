"""The list form of the functional API: one kernel call per dtype, whatever N.

`update_many` is `_dispatch.update` for lists: ``params``, ``grads`` and every
state the variant uses are lists (or tuples) of one length N; tensor k is
``(params[k], grads[k], states[name][k], ...)`` and all share the
hyperparameters. Design: a table of addresses (the Apex ``multi_tensor_apply``
way, for arrays the user allocated separately), so no model code changes:

* the tensors are grouped by dtype; each group is cut into chunks of at most
  `CHUNK` elements, and the table holds each tensor's five addresses
  (param, grad, three state slots) and each chunk's ``(tensor, start, n)``;
* on the CPU one ``prange`` over the chunks (one parallel region per dtype
  group, `kernels.multi_cpu`); on a GPU one launch per dtype group, a block
  per chunk (`kernels.multi_cuda`);
* tables are cached, keyed by every address and size (so a cached table is
  exactly the table that would be rebuilt): when the same arrays come back
  each step, nothing is rebuilt or copied to the GPU. Tensors added, removed
  or reallocated between steps simply give another key: the table is rebuilt.
  The cache (`_Cache`) keeps up to `CACHE_ENTRIES` tables and `CACHE_BYTES`
  bytes of them, least recently used out first.

Every check of the one-tensor path runs per tensor, and across tensors no
written array may overlap any other array of the call, all before anything
is written. Messages name the argument and index: ``exp_avg[3]``.

Host lists of plain NumPy arrays (the common case) are checked by a
compiled walk over the arrays' structs (`_hostscan`), on every thread, about
30 ns per array with cold caches instead of ~2 µs of Python attribute reads;
its result, the layout (every address, size and dtype), keys the cached
overlap check and tables. When the layout is last step's, the kernel runs in
the same compiled call as the walk, on last step's tables. Anything
the walk does not accept takes the Python path below, which names the problem;
the host lists it checks are put in the same layout form, so one cache serves
both. Lists of torch tensors, on the CPU or on one GPU, are read in bulk (one
pass per property, `_torch_device`); fastopt.torch, which has checked its
tensors in bulk already, marks its call checked (`_front.call`), and only
their addresses and sizes are read. Other GPU arrays (CuPy, Numba, any CAI producer) are
described one by one (`_plan_device`, ~6 µs an array).
"""
import collections
import functools
import itertools
import operator
import sys
import threading

import numba
import numpy as np

from . import _accel, _batch, _checks, _device, _facts, _hostscan, _repeat, _rounding
from ._facts import HOST
from ._front import frame as _frame
from .kernels import NUM_ARRAYS, PRE, cpu, multi_cpu, storage
from .kernels import launch as _launch

# Elements per chunk: large enough that a chunk's loop runs at full speed
# (64K float32 = 256 KiB per array), small enough to balance a few big
# tensors over CPU threads and to give a GPU block a few hundred elements
# per thread. A module constant so tests can exercise chunk boundaries.
CHUNK = 1 << 16

# A training loop meets one layout per param group; a benchmark rotating
# buffer sets, or several models trained in turn, meet more: a cache smaller
# than the cycle of layouts it serves would miss on every call (64 entries
# did, under the list benchmark's 75).
CACHE_ENTRIES = 1024
CACHE_BYTES = 64 << 20


class _Cache(collections.OrderedDict):
    """Entries (dicts of table arrays) by key; past `CACHE_ENTRIES` entries
    or `CACHE_BYTES` bytes of host arrays the least recently used go first
    (a GPU table's device copy, made at its first launch, is as large again).
    Stores take a lock, to keep the byte count exact; lookups need none (an
    entry dropped meanwhile stays good for whoever holds it)."""

    nbytes = 0

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def hit(self, key):
        """The entry of `key`, marked as just used; None if there is none."""
        entry = self.get(key)
        if entry is not None:
            try:
                self.move_to_end(key)
            except KeyError:    # dropped by another thread meanwhile: still good
                pass
        return entry

    def store(self, key, entry, nbytes):
        """Keep `entry` (`nbytes` bytes of arrays) under `key`; returns it."""
        entry["nbytes"] = nbytes
        with self._lock:
            old = self.pop(key, None)
            self.nbytes += nbytes - (0 if old is None else old["nbytes"])
            self[key] = entry
            while len(self) > 1 and (len(self) > CACHE_ENTRIES
                                     or self.nbytes > CACHE_BYTES):
                self.nbytes -= self.popitem(last=False)[1]["nbytes"]
        return entry


_tables = _Cache()     # by the columns, members, addresses and sizes
_layouts = _Cache()    # the host path's overlap-checked tables, by layout
_last_layout = {}      # list identities -> their last layout's key (a hint for
                       # callers that hold no `_front.Layout`)


def update_many(fn, variant, params, grads, states, pre, hyper):
    """Check the lists of one update and run `variant` on all their tensors.

    fn:     the public function's name, for error messages.
    params, grads: lists or tuples of arrays of one length N.
    states: the caller's state arguments by name, each a list or tuple of N
            arrays, or None (required only for the slots the variant uses).
    pre, hyper: Python floats shared by all tensors, cast per dtype group.

    Example (what ``fastopt.functional.sgd([p1, p2], [g1, g2], step=1,
    lr=0.1)`` runs)::

        >>> update_many("sgd", variant("sgd"), [p1, p2], [g1, g2], {}, pre, (0.1,))
    """
    # The common case first, in few lines (each costs about a microsecond
    # with cold caches, as in `_dispatch.update`).
    if _repeat._lists and type(params) is list:   # GPU arrays of a checked call again
        run = _repeat.lists(variant, [params, grads, *[states.get(s) for s in variant.slots
                                                       if s is not None]])
        if run is not None:
            return _batch.run(functools.partial(run, pre, hyper))
    if (type(params) is list and params and type(params[0]) is np.ndarray
            and not (variant.model or variant.sr)
            and _update_scanned(fn, variant, params, grads, states, pre, hyper)):
        return
    assert len(hyper) == len(variant.spec.hyper) and len(pre) == variant.num_pre
    names, columns = _columns(fn, variant, params, grads, states)
    n = len(params)
    if n == 0:
        return
    labels = _checks.Labels(names, n)
    if _frame.checked:     # checked by the caller, in bulk (fastopt.torch)
        device = params[0].get_device()
    else:
        flat = _flatten(columns)
        if all([type(a) is np.ndarray for a in flat]):
            return _batch.run(_plan_host(fn, labels, variant, columns, pre, hyper))
        device = _torch_device(columns, flat)
        _checks.torch_writable(fn, labels, columns)
        if device is None:
            if _checks.placed(fn, labels, flat) == HOST:
                views = [[_facts.host_view(a) for a in column] for column in columns]
                action = _plan_host(fn, labels, variant, views, pre, hyper)
            else:
                action = _plan_device(fn, labels, variant, columns, pre, hyper)
            return _batch.run(_facts.bump_after(action, _written(columns)))
    _batch.run(_plan_torch(fn, labels, variant, columns, device, pre, hyper))


def _written(columns):
    """Every array the update writes: all columns but grad's."""
    return _flatten(columns[:_facts.GRAD] + columns[_facts.GRAD + 1:])


def _flatten(columns, get=None):
    """The arrays of `columns` one after the other (their `get(array)`, if given)."""
    out = []
    for column in columns:
        out += column if get is None else map(get, column)
    return out


def _columns(fn, variant, params, grads, states):
    """The argument names and their lists, param and grad first, then used slots."""
    names, columns = _facts.arguments(fn, variant, params, grads, states)
    n = len(params)
    for name, column in zip(names[1:], columns[1:]):
        if not isinstance(column, (list, tuple)):
            raise TypeError(
                f"{fn}(): param is a list, so {name} must be a list or tuple of "
                f"{n} arrays too, got {type(column).__name__}")
        if len(column) != n:
            raise ValueError(
                f"{fn}(): {name} has {len(column)} arrays, expected {n} like param")
    return names, columns


def _groups(dtypes):
    """Tensor indices by dtype, in order of first appearance."""
    groups = {}
    for k, dtype in enumerate(dtypes):
        groups.setdefault(dtype, []).append(k)
    return groups


def _table(addresses, sizes, cols, members, n):
    """(addrs, chunks) of one dtype group, from the cache when unchanged.

    addresses: flattened per column (column c, tensor k at c*n + k);
    members: the tensor indices of the group.
    """
    key = (CHUNK, tuple(cols), tuple(members),
           tuple(addresses), tuple(sizes))
    entry = _tables.hit(key)
    if entry is None:
        entry = _build_table(
            np.asarray(addresses, np.int64).reshape(-1, n), np.asarray(sizes, np.int64),
            cols, np.asarray(members, np.int64))
        _tables.store(key, entry, entry["addrs"].nbytes + entry["chunks"].nbytes)
    return entry


def _build_table(addr, size, cols, member):
    """The kernel's tables for tensors `member`: addr[c, k] is column c's
    address of tensor k, size[k] its element count."""
    addrs = np.ascontiguousarray(addr[cols][:, member].T)
    size = size[member]
    count = -(-size // CHUNK)
    tensor = np.repeat(np.arange(len(member), dtype=np.int64), count)
    first = np.repeat(np.cumsum(count) - count, count)
    start = (np.arange(len(tensor), dtype=np.int64) - first) * CHUNK
    chunks = np.empty((len(tensor), 3), np.int64)
    chunks[:, 0] = tensor
    chunks[:, 1] = start
    chunks[:, 2] = np.minimum(CHUNK, size[tensor] - start)
    return {"addrs": addrs, "chunks": chunks}


def _update_scanned(fn, variant, params, grads, states, pre, hyper):
    """The host path for lists the ``"many"`` accelerator accepts (False if
    it does not: then nothing ran, and the Python path checks, and names the
    problem).

    Every per-array check is the walk's; what is left (overlap check,
    tables) depends on the layout only, so it is done once per layout and
    cached. The lists' identities point at last step's layout: the walk
    compares the arrays with it as it goes and, when they match, runs the
    kernel on its tables in the same compiled call. Inside an all-or-nothing
    step (`_batch`) the walk only checks, and the run waits.
    """
    columns = [params, grads, *[states.get(s) for s in variant.slots if s is not None]]
    if not all([type(c) is list for c in columns]):
        return False
    ids = tuple([id(c) for c in columns])
    layout = _frame.layout
    if _pending.queue is not None:
        guess = _NO_LAYOUT      # never equal to the layout: check, run nothing
    elif layout is not None:
        guess = _layouts.get(layout.key, _NO_LAYOUT)
    else:
        guess = _layouts.get(_last_layout.get((CHUNK, variant.used, ids)), _NO_LAYOUT)
    # the runner of the loops the guessed layout's tables take
    run = _accel.MANY.get((variant, guess["loops"]), _UNBUILT)
    if run is _UNBUILT:
        run = _accel.MANY[(variant, guess["loops"])] = _accel.get("many", variant, guess["loops"])
    if run is None:
        return False
    n = len(params)
    out = np.empty((len(columns) + 2) * n, np.int64)
    status, digest = run(ids, out, guess["layout"], guess["tables"], pre, hyper)
    if status == 1:     # not last step's layout: check it, then run
        names = _facts.arguments(fn, variant, params, grads, states)[0]
        entry = _entry(fn, _checks.Labels(names, n), variant, out, digest)
        _remember(layout, variant, ids, _layout_key(variant, digest))
        _batch.run(functools.partial(_run_entry, variant, entry, pre, hyper))
    return status != 0


def _remember(layout, variant, ids, key):
    """Where the next call with these lists will look first for their layout:
    the caller's `Layout`, or else a hint by the lists' identities (the walk
    compares the arrays with whatever layout a hint gives)."""
    if layout is not None:
        layout.key = key
        return
    if len(_last_layout) >= CACHE_ENTRIES:
        _last_layout.clear()
    _last_layout[(CHUNK, variant.used, ids)] = key


_UNBUILT = object()
_pending = _batch.pending


def _run_entry(variant, entry, pre, hyper):
    tables = entry["tables"]
    for code, dtype in enumerate(_facts.FLOAT_DTYPES):
        addrs, chunks, parts = tables[3 * code:3 * code + 3]
        if len(chunks):
            _accel.get("multi_cpu", variant, multi_cpu.parallel_for(parts))(
                addrs, chunks, parts, _facts.LIKE[dtype], pre, hyper)


def _entry(fn, labels, variant, layout, digest):
    """The overlap-checked tables of a layout (`_hostscan.scan`'s int64
    form, `digest` its hash), from the cache when seen before."""
    key = _layout_key(variant, digest)
    entry = _layouts.hit(key)
    if entry is None or not _hostscan.same(entry["layout"], layout):
        entry = _layout_entry(fn, labels, variant, layout)
        _layouts.store(key, entry, layout.nbytes + sum(t.nbytes for t in entry["tables"]))
    return entry


def _layout_key(variant, digest):
    return CHUNK, variant.used, digest


def _layout_entry(fn, labels, variant, layout):
    ncols, n = len(labels.names), labels.n
    addr = layout[:ncols * n].reshape(ncols, n)
    size, code = layout[ncols * n:(ncols + 1) * n], layout[(ncols + 1) * n:]
    _checks.no_overlap(fn, labels, addr.ravel(),
                       np.tile(size * _facts.ITEMSIZES[code], ncols))
    cols = list(_facts.kernel_columns(variant)[0])
    tables = []
    for c in range(len(_facts.FLOAT_DTYPES)):
        table = _build_table(addr, size, cols, np.flatnonzero(code == c))
        tables += [table["addrs"], table["chunks"], _parts(table["chunks"])]
    return {"layout": layout, "tables": tuple(tables), "loops": _hostscan.loops_of(tables)}


# Parts per CPU thread (`_parts`): a few, so that a thread count set below
# Numba's maximum still splits them about evenly.
PARTS_PER_THREAD = 8


def _parts(chunks):
    """Where each part of `chunks` starts (and, last, where the last ends):
    consecutive chunks cut into parts of about equal element counts, the CPU
    kernel's unit of work. Threads take equal numbers of parts, so equal
    work, however the chunk sizes vary (ResNet-50's chunks, cut evenly by
    count, gave one thread of two 1.2x the average). Fewer elements than
    `kernels.cpu.SERIAL_BELOW` make one part, run on the calling thread."""
    sizes = chunks[:, 2]
    starts = np.cumsum(sizes) - sizes       # each chunk's first element
    total = int(sizes.sum())
    count = (min(len(chunks), PARTS_PER_THREAD * numba.config.NUMBA_NUM_THREADS)
             if total >= cpu.SERIAL_BELOW else min(len(chunks), 1))
    bounds = np.searchsorted(starts * count, np.arange(count) * total, side="left")
    return np.append(bounds, len(chunks)).astype(np.int64)


# What `_update_scanned` compares lists it has not seen with: no layout.
_NO_TABLES = (np.empty((0, NUM_ARRAYS), np.int64), np.empty((0, 3), np.int64),
              np.zeros(1, np.int64))
_NO_LAYOUT = {"layout": np.empty(0, np.int64), "tables": _NO_TABLES * 2,
              "loops": _hostscan.loops_of(_NO_TABLES * 2)}


def _torch_device(columns, flat):
    """Where lists of torch tensors live, read in bulk (one pass per
    property): -1 when all are CPU tensors, the GPU's ordinal when all are
    CUDA tensors on one GPU, and None unless every tensor is also float32,
    float64, float16 or bfloat16 (the mixes `_plan_torch` checks per
    tensor), dense, contiguous and shaped like its param. None sends the tensors
    through the per-tensor checks, which name the culprit. (A tensor on any
    other device, meta or mps, has no memory a kernel can reach: it must
    never get past here.)"""
    torch = sys.modules.get("torch")
    if torch is None or not all([isinstance(t, torch.Tensor) for t in flat]):
        return None
    if all(map(_IS_CPU, flat)):
        device = -1
    elif (all(map(_IS_CUDA, flat)) and not _device.simulated()
          and len(set(map(torch.Tensor.get_device, flat))) == 1):
        device = flat[0].get_device()
    else:
        return None
    if list(map(_LAYOUT, flat)).count(torch.strided) != len(flat):
        return None   # sparse, or another layout with no dense buffer
    params = columns[0]
    dtypes, shapes = list(map(_DTYPE, params)), list(map(_SHAPE, params))
    mixed = False
    for column in columns:
        if (list(map(_SHAPE, column)) != shapes
                or not all(map(torch.Tensor.is_contiguous, column))):
            return None
        mixed = mixed or list(map(_DTYPE, column)) != dtypes
    known = _device._torch_dtypes(torch)
    # (None, an unknown dtype, must be tested first: NumPy reads None as float64.)
    if not mixed and all([d is not None and d in _facts.FLOAT_DTYPES
                          for d in map(known.get, dtypes)]):
        return device
    # 16-bit tensors among them (or master weights: columns of their own
    # dtypes): each tensor's dtypes are checked as a storage (`_plan_torch`).
    if any([d is None or (d not in _facts.FLOAT_DTYPES and _facts.storage_format(d) is None)
            for d in map(known.get, set(map(_DTYPE, flat)))]):
        return None
    return device


def _plan_torch(fn, labels, variant, columns, device, pre, hyper):
    """The run of checked lists of torch tensors (`_torch_device`'s checks),
    on the CPU (device -1) or on GPU `device`, on torch's current stream
    there, then the bump of the versions of the tensors written. Only
    their addresses and sizes are read here."""
    torch = sys.modules["torch"]
    known = _device._torch_dtypes(torch)
    layout = (_flatten(columns, torch.Tensor.data_ptr),
              list(map(torch.Tensor.numel, columns[0])),
              list(map(known.__getitem__, map(_DTYPE, columns[0]))))
    dtypes = [layout[2]] + [list(map(known.__getitem__, map(_DTYPE, column)))
                            for column in columns[1:]]
    stored = runs = None
    if not (all([d in _facts.FLOAT_DTYPES for d in layout[2]])
            and all([column == dtypes[0] for column in dtypes[1:]])):
        # 16-bit arrays among them (fastopt.torch checked their dtypes); on
        # the host, the runs of a checked call on the same layout and dtypes
        key = (variant, *layout[0], *layout[1], *map(id, itertools.chain(*dtypes)))
        runs = _stored_runs.hit(key) if device < 0 else None
        if runs is None:
            model = _facts.model_column(variant)
            stored = [_checks.stored_as(fn, labels, k, [column[k] for column in dtypes],
                                        model) for k in range(len(layout[1]))]
    if runs is None:
        _rounding.check(fn, labels, variant, stored or [()] * len(layout[1]))
    if runs is not None:
        action = functools.partial(_run_stored, runs["runs"], pre, hyper)
    elif stored is not None and device < 0:
        action = _plan_stored_host(fn, labels, variant, *layout[:2], dtypes, stored,
                                   pre, hyper, key)
    elif stored is not None:
        action = _plan_layout_device(fn, labels, variant, *layout, device,
                                     _device.torch_stream(device), pre, hyper,
                                     stored=stored, all_dtypes=dtypes)
    elif device < 0:
        action = _plan_layout_host(fn, labels, variant, *layout, pre, hyper)
    else:
        action = _plan_layout_device(fn, labels, variant, *layout, device,
                                     functools.partial(_device.torch_stream_handle, device),
                                     pre, hyper)
    written = _written(columns)

    def run():
        action()
        torch.autograd.graph.increment_version(written)

    return run


_IS_CPU, _IS_CUDA, _LAYOUT, _DTYPE, _SHAPE = map(
    operator.attrgetter, ("is_cpu", "is_cuda", "layout", "dtype", "shape"))


def _plan_host(fn, labels, variant, columns, pre, hyper):
    """The list form on the host in Python: NumPy arrays (or views) that
    neither the accelerator nor the torch path took, and the error messages."""
    stored = _checks.tensors(fn, labels, columns, _checks.host_layout,
                             model=_facts.model_column(variant))
    _rounding.check(fn, labels, variant, stored)
    params = columns[0]
    addresses = [a.ctypes.data for column in columns for a in column]
    if any(stored):
        return _plan_stored_host(fn, labels, variant, addresses, [p.size for p in params],
                                 [[a.dtype for a in column] for column in columns], stored,
                                 pre, hyper)
    return _plan_layout_host(fn, labels, variant, addresses, [p.size for p in params],
                             [p.dtype for p in params], pre, hyper)


def _plan_stored_host(fn, labels, variant, addresses, sizes, dtypes, stored, pre, hyper,
                      key=None):
    """The list form on the host when 16-bit arrays are among the tensors:
    `dtypes` per column and tensor, `stored` each tensor's storage (() for
    native ones). One kernel call per storage (and native dtype), over
    tables built for the call, kept under `key` if given (torch tensors,
    whose dtypes' ids are stable: `_plan_torch`)."""
    n, ncols = len(sizes), len(labels.names)
    itemsize = np.array([d.itemsize for column in dtypes for d in column], np.int64)
    size = np.asarray(sizes, np.int64)
    _checks.no_overlap(fn, labels, addresses, itemsize * np.tile(size, ncols))
    addr = np.asarray(addresses, np.int64).reshape(ncols, n)
    cols = list(_facts.kernel_columns(variant)[0])
    runs, nbytes = [], 0
    for st, members in _groups([st or dtypes[0][k] for k, st in enumerate(stored)]).items():
        if type(st) is tuple:
            kern, like = variant.stored(st), storage.host_like(variant.stored(st).columns)
        else:
            kern, like = variant, _facts.LIKE[st]
        table = _build_table(addr, size, cols, np.asarray(members, np.int64))
        if len(table["chunks"]):
            runs.append((kern, table["addrs"], table["chunks"], _parts(table["chunks"]),
                         like))
            nbytes += table["addrs"].nbytes + table["chunks"].nbytes
    if key is not None:
        _stored_runs.store(key, {"runs": runs}, nbytes)
    return functools.partial(_run_stored, runs, pre, hyper)


_stored_runs = _Cache()   # `_plan_stored_host`'s runs by layout and dtypes


def _run_stored(runs, pre, hyper):
    for v, addrs, chunks, parts, like in runs:
        _accel.get("multi_cpu", v, multi_cpu.parallel_for(parts))(
            addrs, chunks, parts, like, pre, hyper)


def _plan_layout_host(fn, labels, variant, addresses, sizes, dtypes, pre, hyper):
    """Check overlap and plan the CPU kernel on arrays that passed every other
    check: `addresses` flattened per column, `sizes` and `dtypes` per tensor.
    They are put in the accelerator's layout form, so both share one cache
    of checked tables."""
    codes = _facts.CODES
    layout = np.array(addresses + sizes + [codes[d] for d in dtypes], np.int64)
    entry = _entry(fn, labels, variant, layout, _hostscan.digest(layout))
    return functools.partial(_run_entry, variant, entry, pre, hyper)


def _plan_device(fn, labels, variant, columns, pre, hyper):
    """The list form on a GPU, array by array: the checks, then `_plan_layout_device`."""
    infos = [[_device.describe(labels.at(c, k), a) for k, a in enumerate(column)]
             for c, column in enumerate(columns)]
    device = infos[0][0].device
    stored = _checks.tensors(fn, labels, infos, _checks.device_layout, device,
                             _facts.model_column(variant))
    _rounding.check(fn, labels, variant, stored)
    flat, params = _flatten(infos), infos[0]
    # The simulator runs no intrinsic: its kernel takes the arrays themselves
    # (unless a launcher backend was chosen: kernels/launch.py's Recorder).
    backend = _launch.backend()
    views = ([_device.flat_view(i) for i in flat]
             if backend is None and _device.simulated() else None)
    fixed = backend is not None and _repeat.fixed([i.owner for i in flat])
    stream = (_repeat.stream_reader(params[0]) if fixed
              else functools.partial(_device.stream_handle, params[0]))
    action = _plan_layout_device(fn, labels, variant, [i.ptr for i in flat],
                                 [p.size for p in params], [p.dtype for p in params],
                                 device, stream, pre, hyper, views,
                                 stored if any(stored) else None,
                                 [[i.dtype for i in column] for column in infos])
    if fixed:     # the same lists of the same arrays again: straight to the launch
        _repeat.remember_lists(variant, columns, action.func)
    return action


def _plan_layout_device(fn, labels, variant, addresses, sizes, dtypes, device, stream,
                        pre, hyper, views=None, stored=None, all_dtypes=None):
    """Check alignment and overlap, and plan one GPU launch per dtype, on
    arrays that passed every other check: `addresses` flattened per column,
    `sizes` and `dtypes` per tensor, all on GPU `device`; `views`, under the
    simulator, the arrays themselves in the same order. stream(): the raw
    handle of the stream to launch on, read at the launch."""
    n = len(sizes)
    ncols = len(labels.names)
    if stored is None:
        itemsize = np.tile(np.array([d.itemsize for d in dtypes], np.int64), ncols)
    else:   # 16-bit storage: `dtypes` per column and tensor, `stored` per tensor
        itemsize = np.array([d.itemsize for column in all_dtypes for d in column], np.int64)
        dtypes = [st or dtypes[0][k] for k, st in enumerate(stored)]
    _checks.aligned(fn, labels, addresses, itemsize)
    _checks.no_overlap(fn, labels, addresses,
                       itemsize * np.tile(np.asarray(sizes, np.int64), ncols))
    cols = list(_facts.kernel_columns(variant)[0])
    backend = None if views is not None else _launch.backend()
    if backend is not None:    # packed parameters, one driver call (kernels/launch.py)
        from .kernels import multi_cuda
        launches = []   # per dtype group, its launcher (this layout's, fixed): at the first run
        switch = _device.switcher(device)

        def run(pre, hyper):
            if not launches:
                for dtype, members in _groups(dtypes).items():
                    which = variant
                    if type(dtype) is tuple:    # a 16-bit storage: float32 math
                        which, dtype = variant.stored(dtype), _facts.FLOAT32
                    launches.append(multi_cuda.launcher_for(
                        backend, which, dtype, _table(addresses, sizes, cols, members, n),
                        device))
            handle = stream()
            if switch is None:
                for launch in launches:
                    launch(handle, pre, hyper)
                return
            with switch():
                for launch in launches:
                    launch(handle, pre, hyper)

        return functools.partial(run, pre, hyper)

    def launch():
        from numba import cuda as numba_cuda

        from .kernels import multi_cuda

        stream_handle = stream()
        numba_stream = 0 if views is not None else _device.numba_stream(stream_handle)
        with _device.on_device(device):
            for dtype, members in _groups(dtypes).items():
                if type(dtype) is tuple:    # a 16-bit storage: float32 math
                    kern, dtype = multi_cuda.kernel(variant.stored(dtype)), _facts.FLOAT32
                else:
                    kern = multi_cuda.kernel(variant)
                entry = _table(addresses, sizes, cols, members, n)
                if views is None:
                    table, chunks = multi_cuda.device_table(entry, device, numba_stream)
                else:   # per tensor, its arrays in the table's order
                    table = tuple(tuple(views[c * n + k] for c in cols) for k in members)
                    chunks = numba_cuda.to_device(entry["chunks"])
                if len(chunks) == 0:
                    continue
                blocks, threads = multi_cuda.launch_config(len(chunks), device)
                kern[blocks, threads, numba_stream](table, chunks,
                                              _facts.scalars(dtype, pre),
                                              _facts.scalars(dtype, hyper))

    return launch
