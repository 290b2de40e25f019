"""A call's pipeline: describe the arrays, validate them, plan, run.

`update` is where every `fastopt.functional` call arrives (and, through the
functions, every front end's). One array per argument is handled here; lists
go to `fastopt._multi`, the same four steps over many tensors:

* describe: where the arrays live (`_facts.place`) and what they hold
  (NumPy views on the host, `_device.DeviceArray` on a GPU);
* validate: `fastopt._checks`, every check before anything is written;
* plan: the kernel and its arguments (addresses, length, the scalars);
* run: through `_batch.run`, at once or at the end of a front end's
  all-or-nothing step.

NumPy arrays (and torch CPU tensors, through zero-copy NumPy views) run the
CPU kernel; anything exposing ``__cuda_array_interface__`` (CuPy, Numba
device arrays, torch CUDA tensors) runs the CUDA kernel. The common case,
plain NumPy arrays, first tries the ``"single"`` accelerator (`_accel`):
describe, validate and run in one compiled call.
"""
import functools

import numpy as np

from . import (_accel, _batch, _checks, _device, _facts, _hostscan, _multi, _repeat,
               _rounding)
from ._facts import HOST
from .kernels import PRE, cpu, storage
from .kernels import launch as _launch

_pending = _batch.pending


def update(fn, variant, param, grad, states, pre, hyper):
    """Check the arrays of one update and run `variant`'s kernel on them.

    fn:     the public function's name, for error messages.
    states: the caller's state arrays by name (None for absent ones); the
            kernel gets those named in ``variant.slots``.
    pre, hyper: Python floats, cast here to the arrays' dtype.
    """
    # The common case first, in straight-line code: it runs with cold caches
    # between training steps, where each line of Python costs about a
    # microsecond (measured: a whole adam() call on a tiny array 65-75 µs
    # cold, 90-100 before the check and the kernel became one jitted call and
    # the hyperparameter checks were remembered; a floor kernel's call 30-35).
    if type(param) is np.ndarray:
        runs, name0, name1, name2, used = _accel.SINGLE.get(variant) or _single_plan(variant, param)
        ids = (id(param), id(grad), id(param if name0 is None else states.get(name0)),
               id(param if name1 is None else states.get(name1)),
               id(param if name2 is None else states.get(name2)))
        # 16-bit arrays (with a model copy, stochastic rounding): the
        # accelerator of the storage a checked call of `variant` on these
        # dtypes had (`_remember_stored`), where the native one would decline.
        stored = _accel.STORED and _accel.STORED.get(
            (variant, id(param.dtype), id(getattr(grad, "dtype", None))))
        if stored:
            if _pending.queue is None:
                if stored[0][param.size >= _PARALLEL_FROM](ids, used, pre, hyper) == 1:
                    return
            elif _defer_stored(stored[1], ids, used, pre, hyper):
                return
        elif runs is not None:
            if _pending.queue is None:
                # checked and updated in one jitted call, the loop its size takes
                status = runs[param.size >= _PARALLEL_FROM](ids, used, pre, hyper)
                if status == 1 or (status and _rerun(variant, status, ids, used, pre, hyper)):
                    return
            elif _defer_checked(variant, ids, used, pre, hyper):
                return
    elif isinstance(param, (list, tuple)):   # the list form (fastopt/_multi.py)
        return _multi.update_many(fn, variant, param, grad, states, pre, hyper)
    elif _repeat._single:     # GPU arrays of a checked call again (fastopt/_repeat.py)
        run = _repeat.single(variant, param, grad, states)
        if run is not None:
            return _batch.run(functools.partial(run, pre, hyper))
    assert len(hyper) == len(variant.spec.hyper) and len(pre) == variant.num_pre
    names, arrays = _facts.arguments(fn, variant, param, grad, states)
    labels = _checks.Labels(names, 1, indexed=False)
    if all([type(a) is np.ndarray for a in arrays]):
        place, written = HOST, ()
    else:
        place = _checks.placed(fn, labels, arrays)
        _checks.torch_writable(fn, labels, [[a] for a in arrays])
        written = [a for j, a in enumerate(arrays) if j != _facts.GRAD]
    if place == HOST:
        action = _plan_host(fn, variant, labels, [_facts.host_view(a) for a in arrays],
                            pre, hyper, remember=not written)
    else:
        action = _plan_device(fn, variant, labels, arrays, pre, hyper)
    _batch.run(_facts.bump_after(action, written))


def _rerun(variant, status, ids, used, pre, hyper):
    """The arrays passed the accelerator's check but are of the other dtype
    than the plan's (`_hostscan.runner`): that dtype's accelerators become
    the plan's, and the one of the loop they take runs. Whether it ran."""
    which = status - 2
    runs = _runs(variant, which // 2)
    _accel.SINGLE[variant] = (runs, *_accel.SINGLE[variant][1:])
    return runs is not None and runs[which & 1](ids, used, pre, hyper) == 1


def _runs(variant, code):
    """The ``"single"`` accelerators of `variant` on arrays of dtype `code`
    (`FLOAT_DTYPES`' index; 0 for a stored variant): its serial loop's and
    its parallel loop's, each compiled on its first call; None when off.
    The caller picks by size, so that the accelerator it calls runs the
    loop: finding the other one needed costs a second entry into compiled
    code (measured: Adam on 1e5 float32 elements with cold caches took
    175-179 µs a call that way, 139-155 in one entry)."""
    serial = _accel.get("single", variant, 2 * code)
    return None if serial is None else (serial, _accel.get("single", variant, 2 * code + 1))


# `cpu.parallel_for(n)` is ``n >= _PARALLEL_FROM``: `update` compares without
# the call on its fast path.
_PARALLEL_FROM = cpu.SERIAL_BELOW


def _defer_checked(variant, ids, used, pre, hyper):
    """Inside an all-or-nothing step: the accelerator's check alone, and the
    kernel's run left for the end of the step; False if the check declined."""
    ok, code, n, addrs = _hostscan.check_one(ids, used)
    if ok:
        _batch.run(functools.partial(_accel.get("cpu", variant, cpu.parallel_for(n)), addrs, n,
                                     _facts.LIKE[_facts.FLOAT_DTYPES[code]], pre, hyper))
    return ok


def _defer_stored(stored, ids, used, pre, hyper):
    """`_defer_checked` for a stored variant (16-bit arrays)."""
    ok, n, addrs = _hostscan.check_stored(stored, ids, used)
    if ok:
        _batch.run(functools.partial(_accel.get("cpu", stored, cpu.parallel_for(n)), addrs, n,
                                     storage.host_like(stored.columns), pre, hyper))
    return ok


def _plan_host(fn, variant, labels, views, pre, hyper, remember=False):
    """Validate host arrays (NumPy views); the kernel call, or None if empty.
    remember: the views are the caller's NumPy arrays, so that a call on
    16-bit arrays of the same dtypes may take the accelerator next time
    (`_accel.STORED`)."""
    (stored,) = _checks.tensors(fn, labels, [[v] for v in views], _checks.host_layout,
                                model=_facts.model_column(variant))
    _rounding.check(fn, labels, variant, [stored])
    p = views[0]
    if p.size == 0:
        return None
    ptrs = [v.ctypes.data for v in views]
    _checks.no_overlap(fn, labels, ptrs, [v.nbytes for v in views])
    columns, _ = _facts.kernel_columns(variant)
    if stored:      # 16-bit arrays: float32 math (kernels.storage)
        asked, variant = variant, variant.stored(stored)
        like = storage.host_like(variant.columns)
        if remember:
            _remember_stored(asked, variant, p, views[1])
    else:
        like = _facts.LIKE[p.dtype]
    return functools.partial(_accel.get("cpu", variant, cpu.parallel_for(p.size)),
                             tuple([ptrs[i] for i in columns]),
                             p.size, like, pre, hyper)


def _plan_device(fn, variant, labels, arrays, pre, hyper):
    """Validate GPU arrays; the kernel launch, or None if empty."""
    from .kernels import cuda   # imported on first GPU use only

    infos = [_device.describe(labels(j), a) for j, a in enumerate(arrays)]
    p = infos[0]
    (stored,) = _checks.tensors(fn, labels, [[i] for i in infos], _checks.device_layout,
                                p.device, _facts.model_column(variant))
    _rounding.check(fn, labels, variant, [stored])
    ptrs = [i.ptr for i in infos]
    _checks.aligned(fn, labels, ptrs, np.array([i.dtype.itemsize for i in infos]))
    if p.size == 0:
        return None
    _checks.no_overlap(fn, labels, ptrs, [i.nbytes for i in infos])
    math, asked = p.dtype, variant
    if stored:      # 16-bit arrays: float32 math (kernels.storage)
        variant, math = variant.stored(stored), _facts.FLOAT32
    columns, _ = _facts.kernel_columns(variant)
    backend = _launch.backend()    # None under the simulator unless one was chosen
    if backend is not None:     # packed parameters, one driver call (kernels/launch.py)
        addrs, n, device = tuple([ptrs[i] for i in columns]), p.size, p.device
        fixed = _repeat.fixed(arrays)
        stream = _repeat.stream_reader(p) if fixed else functools.partial(
            _device.stream_handle, p)

        switch = _device.switcher(device)
        launch = cuda.launcher_for(backend, variant, math, n, addrs, device)

        def run(pre, hyper):
            if switch is None:
                return launch(stream(), pre, hyper)
            with switch():
                launch(stream(), pre, hyper)

        if fixed:     # the same arrays again: straight to `run` (fastopt/_repeat.py)
            _repeat.remember_single(asked, arrays, run)   # as `update` asks
        return functools.partial(run, pre, hyper)
    if cuda._simulated():    # the simulator runs no intrinsic: pass the arrays
        flat = [_device.flat_view(i) for i in infos]
    else:
        flat = ptrs

    def launch():
        with _device.on_device(p.device):
            cuda.launch(variant, p.size, _device.stream_of(p),
                        tuple([flat[i] for i in columns]),
                        _facts.scalars(math, pre), _facts.scalars(math, hyper),
                        p.device)

    return launch


def _remember_stored(asked, stored, param, grad):
    """Keep the accelerator of `stored` (the storage of a checked call of
    `asked` on `param`'s and `grad`'s dtypes) for `update`'s fast path. Its
    own check reads every array's dtype again, so a call on other dtypes
    is only declined."""
    runs = _runs(stored, 0)
    if runs is not None:
        # the dtypes are kept alive with the entry: their ids stay theirs
        _accel.STORED[(asked, id(param.dtype), id(grad.dtype))] = (
            runs, stored, param.dtype, grad.dtype)


def _single_plan(variant, param):
    """What `update`'s fast path needs of `variant`, in one lookup: its
    ``"single"`` accelerators (`_runs`) for `param`'s dtype, the names of its
    state slots (None: unused) and which of the kernel's arrays it uses."""
    # A model copy is never float32 like param: the accelerator would decline.
    run = (None if variant.model or variant.sr
           else _runs(variant, _facts.CODES.get(param.dtype, 0)))
    plan = _accel.SINGLE[variant] = (run, *variant.slots,
                                     _facts.kernel_columns(variant)[1])
    return plan
