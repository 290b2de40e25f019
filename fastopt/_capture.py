"""Capturable steps: the step count (and the learning rate) in device memory.

A functional call whose ``step`` is a one-element float32 array (torch's
capturable ``state['step']``; a list call: one for all, or one per param)
and, optionally, whose ``lr`` is a one-element float32 array, runs the
spec's `fastopt.spec.StepScalars` instead of its host ``scalars``:

* on a GPU, in the kernel (`kernels.capture`): every thread reads the count
  and the lr, computes t = count + 1 and the rule's scalars in the kernel's
  dtype, and the last block to finish writes t back (per tensor for a list
  with one count per param). The host reads nothing from the device,
  allocates nothing after a layout's first call and never synchronises, so
  the step can be captured in a CUDA graph (``torch.cuda.graph``) and
  replayed: each replay advances the count and uses the lr's current value;
* on the CPU (NumPy arrays, torch CPU tensors), with the same semantics:
  the count and the lr are read on the host, the same formula runs compiled
  in the arrays' dtype (float32 for float32 params), the update runs as any
  other, and the count is advanced after it. (torch refuses capturable on
  the CPU; fastopt accepts it, so that CPU and GPU code and checkpoints are
  one.)

A device step refuses what depends on the host's step: stochastic rounding
(its key hashes the step), an optimizer whose scalars are kept on the host
(NAdam's mu_product, ASGD's eta and mu: `Spec.device` None) and programs.

``torch.amp.GradScaler``, as torch's fused capturable steps take it: a call
may give ``found_inf`` and ``loss_scale`` (GradScaler's ``found_inf`` and
scale, one-element float32 arrays, like ``step``). On a GPU the kernel
reads them (`kernels.capture`): found_inf nonzero, the launch writes
nothing and the count stays; otherwise each gradient is divided by
loss_scale (torch divides; it does not multiply by the inverse) before
everything else, and written back so divided, as torch's fused steps leave
``.grad``. Nothing is read back. On the CPU the host reads both (no
synchronisation there) and the same kernel variant divides and writes back.
"""
import functools
import numbers
import sys

import numba
import numpy as np

from . import _batch, _checks, _device, _facts, _hostscalars, _multi, _precision
from ._facts import HOST
from .kernels import launch as _launch

_F32 = np.dtype(np.float32)
LAUNCHERS = 1024
_launchers = {}


def is_array(x):
    """Whether `x` is given as an array (a capturable step or lr), not a number."""
    return x is not None and not isinstance(x, numbers.Number)


def counter_like(param, value):
    """A one-element float32 array holding `value`, in `param`'s array
    library and on its device (a step count for `call`)."""
    if isinstance(param, np.ndarray):
        return np.full(1, value, np.float32)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(param, torch.Tensor):
        return torch.full((1,), float(value), dtype=torch.float32, device=param.device)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(param, cupy.ndarray):
        with param.device:
            return cupy.full(1, value, cupy.float32)
    from numba import cuda
    return cuda.to_device(np.full(1, value, np.float32))


def _lr_index(spec):
    names = [h.name for h, _ in spec.arguments]
    return names.index("lr") if "lr" in names else None


def call(name, spec, param, grad, states, step, values, host, sr, found_inf=None,
         loss_scale=None):
    """One capturable update (the module docstring): ``step`` an array or a
    list of them, ``lr`` (in `values`) a number or an array; `found_inf` and
    `loss_scale` GradScaler's, or None."""
    fn = f"{name}()"
    if spec.device is None or spec.program is not None or spec.host:
        raise ValueError(
            f"{fn}: step as a one-element array (a capturable step) is not supported by "
            f"{name}: its per-step scalars are computed on the host"
            + (" from values kept there" if spec.host else ""))
    if sr is not False:
        raise ValueError(f"{fn}: stochastic_rounding needs step as an int (its random "
                         "bits hash the step); a capturable step cannot use it")
    k = _lr_index(spec)
    lr = values[k] if k is not None else None
    lr_array = None
    if is_array(lr):
        lr_array = lr
        values = values[:k] + (0.0,) + values[k + 1:]   # checked below, on use
    which, pre, h, convention = spec.settings(name, values)
    if states.get("model") is not None:
        try:
            which = which.with_model
        except ValueError:
            raise ValueError(f"{fn}: model needs a free state slot for the copy, and "
                             f"{name} with these options uses all of them") from None
    if loss_scale is not None:   # the gradient unscaled in the kernel, written back
        which = which.with_unscale
    decoupled = h.decoupled_weight_decay
    if decoupled is None:
        decoupled = convention == "keras"
    dwd = h.weight_decay if (lr_array is not None and decoupled) else 0.0
    consts = tuple(spec.device.consts(h, convention))
    cst = (1.0, float(h.lr), float(dwd), *consts)
    steps = list(step) if isinstance(step, (list, tuple)) else [step]
    many = isinstance(param, (list, tuple))
    if not steps:
        raise ValueError(f"{fn}: step is an empty list")
    if many and len(steps) not in (1, len(param)):
        raise ValueError(f"{fn}: step has {len(steps)} arrays; a list call takes one "
                         f"for all params or one per param ({len(param)})")
    if not many and len(steps) != 1:
        raise ValueError(f"{fn}: step must be one one-element array, got {len(steps)}")
    flat = _multi._flatten([list(param), list(grad)]) if many else [param, grad]
    if all([_facts.place(a) == HOST for a in flat + steps]):
        return _host(fn, spec, which, param, grad, states, steps, lr_array, pre, cst, h,
                     convention, many, found_inf, loss_scale)
    return _gpu(fn, spec, which, param, grad, states, steps, lr_array, pre, cst, many, h,
                found_inf, loss_scale)


# -- the CPU: the same semantics, the count read and advanced on the host ------
@functools.lru_cache(maxsize=None)
def _compiled(scalar_fn):
    return numba.njit(cache=False)(scalar_fn)


def _host_value(fn, name, a):
    """The value of a one-element float32 host array (GradScaler's found_inf
    or scale: NumPy, or a torch CPU tensor)."""
    try:
        view = _facts.host_view(a) if _facts.place(a) == HOST else None
    except (TypeError, ValueError):
        view = None
    if view is None or view.dtype != _F32 or view.size != 1:
        raise TypeError(f"{fn}: {name} must be a one-element float32 array on the "
                        f"params' device, got {_facts.describe(a)}")
    return float(view.reshape(-1)[0])


def _grads_apart(fn, which, param, grad, states, many):
    """With the gradients written back (``loss_scale``), no gradient may
    share memory with another array of the call."""
    params, grads = (list(param), list(grad)) if many else ([param], [grad])
    lists = states if many else {k: (None if v is None else [v]) for k, v in states.items()}
    names, columns = _multi._columns(fn[:-2], which, params, grads, lists)
    views = [_facts.host_view(a) for a in _multi._flatten(columns)]
    _checks.no_overlap(fn[:-2], _checks.Labels(names, len(params), indexed=many),
                       [v.ctypes.data for v in views], [v.nbytes for v in views],
                       grads_written=True)


def _host(fn, spec, which, param, grad, states, steps, lr_array, pre, cst, h, convention,
          many=False, found_inf=None, loss_scale=None):
    count, step_dtype = _hostscalars._read_one(fn, "step", steps)
    if count != int(count) or count < 0:
        raise ValueError(f"{fn}: step must hold a whole count >= 0, got {count}")
    if found_inf is not None and _host_value(fn, "found_inf", found_inf) != 0.0:
        return    # GradScaler found an inf or NaN: nothing written, the count kept
    if loss_scale is not None:    # (the variant divides by it: `Variant.unscale`)
        scale = _host_value(fn, "loss_scale", loss_scale)
        _grads_apart(fn, which, param, grad, states, many)
    lr = cst[1]
    if lr_array is not None:
        lr, _ = _hostscalars._read_one(fn, "lr", [lr_array])
        h.lr = spec.hyper("lr").check(fn[:-2], lr, convention)
    dtype = _math_dtype(param)
    cast = dtype.type
    t = cast(count) + cast(1.0)
    lr_ = cast(lr)
    hyper = _compiled(spec.device.fn)(t, lr_, tuple([cast(c) for c in cst[3:]]))
    hyper = tuple([float(x) for x in hyper])
    decay = float(cast(pre[3]) - lr_ * cast(cst[2]))
    pre = (*pre[:3], decay, *pre[4:])
    if not _precision.scalars_fit(hyper):
        _precision.check(fn[:-2], spec, h, which, pre, hyper, param)
    if loss_scale is not None:
        pre = (*pre, scale)
    from . import _dispatch
    _dispatch.update(fn[:-2], which, param, grad, states, pre, hyper)
    if loss_scale is not None:   # the grads were written back unscaled
        written = _multi._flatten([list(grad)]) if many else [grad]
        _batch.run(functools.partial(_facts.bump_torch_versions, written))
    _hostscalars.run_after(lambda: _hostscalars.fill(steps, count + 1))


def _math_dtype(param):
    params = param if isinstance(param, (list, tuple)) else [param]
    dtypes = {np.dtype(getattr(a, "dtype", np.float64)) if isinstance(a, np.ndarray)
              else _torch_dtype(a) for a in params}
    return _F32 if dtypes <= {_F32} else np.dtype(np.float64)


def _torch_dtype(a):
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        return {torch.float32: _F32, torch.float64: np.dtype(np.float64)}.get(
            a.dtype, _F32)
    return np.dtype(getattr(a, "dtype", np.float64))


# -- a GPU: in the kernel ---------------------------------------------------
def _one_element(fn, name, a, device):
    """The `_device.DeviceArray` of a one-element float32 device array on `device`."""
    try:
        if _facts.place(a) != _facts.DEVICE:
            raise TypeError(name)
        info = _device.describe(name, a)
    except (TypeError, AttributeError):
        raise TypeError(f"{fn}: {name} must be a one-element float32 array on the "
                        f"params' GPU, got {_facts.describe(a)}") from None
    if info.size != 1 or info.dtype != _F32:
        raise TypeError(f"{fn}: {name} must be a one-element float32 array on the "
                        f"params' GPU, got {info.size} elements of {info.dtype}")
    if info.device != device:
        raise ValueError(f"{fn}: {name} is on GPU {info.device}, the params on GPU "
                         f"{device}")
    return info


def _gpu(fn, spec, which, param, grad, states, steps, lr_array, pre, cst, many, h,
         found_inf=None, loss_scale=None):
    from numba import cuda as numba_cuda

    from .kernels import cuda as kc
    from .kernels import multi_cuda as mc

    if not many:
        param, grad = [param], [grad]
        states = {k: (None if v is None else [v]) for k, v in states.items()}
    names, columns = _multi._columns(fn[:-2], which, list(param), list(grad), states)
    n = len(param)
    labels = _checks.Labels(names, n, indexed=many)
    flat = _multi._flatten(columns)
    if _checks.placed(fn[:-2], labels, flat) == HOST:
        raise ValueError(f"{fn}: step is a GPU array, the params are host arrays")
    _checks.torch_writable(fn[:-2], labels, columns)
    infos = [[_device.describe(labels.at(c, k), a) for k, a in enumerate(column)]
             for c, column in enumerate(columns)]
    device = infos[0][0].device
    stored = _checks.tensors(fn[:-2], labels, infos, _checks.device_layout, device,
                             _facts.model_column(which))
    if any(stored):
        raise ValueError(f"{fn}: a capturable step takes float32 and float64 arrays")
    step_infos = [_one_element(fn, "step", s, device) for s in steps]
    if len({i.ptr for i in step_infos}) != len(step_infos):
        raise ValueError(f"{fn}: step holds one array twice; give one for all params "
                         "or a distinct one per param")
    lr_info = None if lr_array is None else _one_element(fn, "lr", lr_array, device)
    found_info = (None if found_inf is None
                  else _one_element(fn, "found_inf", found_inf, device))
    scale_info = (None if loss_scale is None
                  else _one_element(fn, "loss_scale", loss_scale, device))
    amp_ptrs = tuple([0 if i is None else i.ptr for i in (found_info, scale_info)])
    params = infos[0]
    dtypes = [p.dtype for p in params]
    if len(set(dtypes)) != 1:
        raise ValueError(f"{fn}: a capturable step takes params of one dtype, got "
                         f"{sorted({str(d) for d in dtypes})}")
    dtype = dtypes[0]
    finfo = [i for column in infos for i in column]
    ptrs = [i.ptr for i in finfo]
    itemsize = np.array([i.dtype.itemsize for i in finfo], np.int64)
    _checks.aligned(fn[:-2], labels, ptrs, itemsize)
    _checks.no_overlap(fn[:-2], labels, ptrs,
                       itemsize * np.array([i.size for i in finfo], np.int64),
                       grads_written=which.unscale)
    variant = which.captured(spec.device.fn)
    cols = list(_facts.kernel_columns(which)[0])
    cst_ = _facts.scalars(dtype, cst)
    pre_ = _facts.scalars(dtype, pre)
    written = [a for c, column in enumerate(columns)
               if c != _facts.GRAD or which.unscale for a in column]
    backend = _launch.backend()
    sizes = [p.size for p in params]
    if backend is None and _device.simulated():
        views = [_device.flat_view(i) for i in finfo]
        step_views = [i.owner for i in step_infos]
        lr_view = None if lr_info is None else lr_info.owner
        amp_views = tuple([None if i is None else i.owner for i in (found_info, scale_info)])
        stream = 0

        def launch():
            counter = numba_cuda.to_device(np.zeros(1, np.uint32))
            if not many and sizes[0]:
                arrays = tuple(views[c * n] for c in cols)
                blocks, threads = kc.launch_config(sizes[0])
                kc.kernel(variant)[blocks, threads, stream](
                    arrays, sizes[0], pre_, cst_, (step_views[0], lr_view, counter,
                                                   *amp_views))
                return
            entry = _multi._table(ptrs, sizes, cols, list(range(n)), n)
            if len(entry["chunks"]) == 0:
                return
            table = tuple(tuple(views[c * n + k] for c in cols) for k in range(n))
            chunks = numba_cuda.to_device(entry["chunks"])
            blocks, threads = mc.launch_config(len(chunks))
            mc.kernel(variant)[blocks, threads, stream](
                table, chunks, pre_, cst_, (tuple(step_views), lr_view, counter,
                                            len(step_views), *amp_views))

        return _batch.run(_facts.bump_after(launch, written))
    stream_of = functools.partial(_device.stream_handle, params[0])
    key = (variant, dtype, many, tuple(ptrs), tuple(sizes), tuple(i.ptr for i in step_infos),
           0 if lr_info is None else lr_info.ptr, device, backend, len(cst))
    launcher = _launchers.get(key)
    if launcher is None:
        if len(_launchers) >= LAUNCHERS:
            _launchers.clear()
        launcher = _launchers[key] = _launcher(
            backend, variant, dtype, many, ptrs, sizes, cols, n,
            [i.ptr for i in step_infos], 0 if lr_info is None else lr_info.ptr,
            device, len(cst), stream_of())
    switch = _device.switcher(device)

    def run():
        if switch is None:
            return launcher(stream_of(), pre_, cst_, amp_ptrs)
        with switch():
            launcher(stream_of(), pre_, cst_, amp_ptrs)

    _batch.run(_facts.bump_after(run, written))


def _launcher(backend, variant, dtype, many, ptrs, sizes, cols, n, step_ptrs, lr_ptr,
              device, ncst, stream):
    """``launch(stream, pre, cst, amp)`` of one layout: its done-counter, tables
    and packed parameters made here, once (a captured step allocates
    nothing); amp: the addresses of GradScaler's found_inf and scale (0:
    none), given per launch: GradScaler makes new tensors every step, which
    must not make a new layout (a new counter and tables: allocations, and a
    synchronisation for a list's)."""
    from numba import cuda as numba_cuda

    from .kernels import cuda as kc
    from .kernels import multi_cuda as mc
    from .kernels.capture import NUM_DEV_MULTI, NUM_DEV_SINGLE

    zeros = np.zeros(1, np.uint32)
    single = not many and sizes[0] > 0
    keep = []     # device buffers this launcher's launches use
    if backend is None:     # Numba's launcher, on a GPU
        numba_stream = _device.numba_stream(stream)
        counter = numba_cuda.to_device(zeros, stream=numba_stream)
        keep.append(counter)
        counter_ptr = counter.device_ctypes_pointer.value
        if single:
            addrs = tuple(ptrs[c * n] for c in cols)
            config = kc.launch_config(sizes[0], device)
            dev = (step_ptrs[0], lr_ptr, counter_ptr)

            def launch(handle, pre, cst, amp):
                kc.kernel(variant)[config[0], config[1], _device.numba_stream(handle)](
                    addrs, sizes[0], pre, cst, dev + amp)
        else:
            entry = _multi._table(ptrs, sizes, cols, list(range(n)), n)
            table, chunks = mc.device_table(entry, device, numba_stream)
            table_steps = numba_cuda.to_device(np.array(step_ptrs, np.int64),
                                               stream=numba_stream)
            keep.append(table_steps)
            numba_stream.synchronize() if numba_stream else numba_cuda.synchronize()
            dev = (table_steps.device_ctypes_pointer.value, lr_ptr, counter_ptr,
                   len(step_ptrs))
            config = mc.launch_config(len(chunks), device)

            def launch(handle, pre, cst, amp):
                if len(chunks):
                    mc.kernel(variant)[config[0], config[1], _device.numba_stream(handle)](
                        table, chunks, pre, cst, dev + amp)
        launch.keep = keep
        return launch
    # packed parameters, one driver call (kernels/launch.py)
    counter, counter_ptr = backend.to_device(zeros, stream)
    keep.append(counter)
    if single:
        addrs = tuple(ptrs[c * n] for c in cols)
        plan = _launch.plan(("capture", variant, dtype, ncst), kc.kernel(variant),
                            lambda: kc.argtypes(variant, dtype, ncst),
                            (5, 1, 6, ncst, NUM_DEV_SINGLE), device)
        plan.set(0, addrs)
        plan.set(1, (sizes[0],))
        dev = (step_ptrs[0], lr_ptr, counter_ptr)
        plan.grid, plan.block = kc.launch_config(sizes[0], device)
    else:
        entry = _multi._table(ptrs, sizes, cols, list(range(n)), n)
        _, tables, nchunks = mc.packed_tables(backend, entry, device, stream)
        steps, steps_ptr = backend.to_device(np.array(step_ptrs, np.int64), stream)
        backend.synchronize(stream)
        keep.append(steps)
        plan = _launch.plan(("capture-multi", variant, dtype, ncst), mc.kernel(variant),
                            lambda: mc.argtypes(variant, dtype, ncst),
                            (18, 6, ncst, NUM_DEV_MULTI), device)
        plan.set(0, tables)
        dev = (steps_ptr, lr_ptr, counter_ptr, len(step_ptrs))
        plan.grid, plan.block = mc.launch_config(max(nchunks, 1), device)
        if nchunks == 0:
            plan = None
    pre_k, cst_k, dev_k = (2, 3, 4) if single else (1, 2, 3)
    last = [None]    # the amp addresses the plan holds

    def launch(handle, pre, cst, amp):
        if plan is None:
            return
        plan.set(pre_k, tuple(pre))
        plan.set(cst_k, tuple(cst))
        if amp != last[0]:
            plan.set(dev_k, dev + amp)
            last[0] = amp
        backend.launch(plan, handle)

    launch.keep = keep
    return launch
