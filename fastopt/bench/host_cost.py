"""``python -m fastopt.bench --host-cost``: the Python side of a GPU step.

With no GPU (``--device cpu``, the default) the driver call is replaced by
`kernels.launch.Recorder` (same plans, same packing, the launch counted, not
made) and the arrays are `RecordedArray`s: host buffers behind a CUDA array
interface, of a fixed-buffer type like Numba's device arrays. What is timed is
everything fastopt does on the host for a step: the functional call, the
lookups, the slots rewritten, the stream read, the (recorded) launch.

Rows (µs per call, median of repeats):

* ``adam 1 array``: ``fastopt.functional.adam`` on the same single arrays each
  step (target <= 15 µs);
* ``adam 150-tensor list``: the list form on the same 150 tensors each step,
  layout repeating (target <= 25 µs);
* ``... first call``: the same on arrays seen for the first time (every
  check, the plan built; the list's tables too);
* ``adam 1 array, float16``: the first row on float16 arrays (float32
  math, `kernels.storage`);
* ``adam 1 host array, ...``, ``fastopt.torch Adam 1 CPU tensor, ...``:
  host calls (CPU kernels on one element), float32 beside bfloat16
  (`host_16bit`);
* ``launcher alone``: a `kernels.cuda.packed_launcher` with fixed arrays (this
  step's scalars packed, the recorded driver call), the floor under the rows above;
* ``python call``: an empty Python function with the same arguments.

With ``--device cuda`` the real driver is used on CuPy arrays (if installed)
and torch tensors, against torch's fused Adam and a CuPy ElementwiseKernel,
each timed as host time per call (launches queued, synchronised once per
repeat, on 1,000-element arrays so the GPU keeps up).
"""
import statistics
import time

import numpy as np

N = 1000
TENSORS = 150
HYPERS = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


class _Device:
    id = 0


class RecordedArray:
    """A host buffer posing as a GPU array (``__cuda_array_interface__``),
    for recorded launches: its buffer is fixed for its life, its stream the
    default one, its ``==`` identity (as Numba's device arrays)."""

    device = _Device()

    def __init__(self, host):
        self.host = host
        self.shape, self.dtype, self.size = host.shape, host.dtype, host.size

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.host.shape, "typestr": self.host.dtype.str,
                "data": (self.host.ctypes.data, False), "version": 3,
                "strides": None, "stream": None}


def _median_us(fn, calls, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(times)


def recorded(repeats=7, calls=2000):
    """The rows above, with the recorder; returns a dict of rows."""
    from .. import _repeat
    from ..functional import adam
    from ..kernels import cuda as kcuda
    from ..kernels import launch, variant

    recorder = launch.Recorder(keep=0)
    old = launch.use(recorder)
    _repeat.FIXED[RecordedArray] = None
    try:
        def arrays():
            return [RecordedArray(np.zeros(N, np.float32)) for _ in range(4)]

        one = arrays()
        steps = iter(range(1, 10 ** 9))
        rows = {}
        rows["adam 1 array"] = _median_us(
            lambda: adam(*one, step=next(steps), **HYPERS), calls, repeats)
        lists = [[RecordedArray(np.zeros(N, np.float32)) for _ in range(TENSORS)]
                 for _ in range(4)]
        rows[f"adam {TENSORS}-tensor list"] = _median_us(
            lambda: adam(*lists, step=next(steps), **HYPERS), calls // 4, repeats)
        fresh = [arrays() for _ in range(calls)]
        it = iter(fresh * repeats)
        rows["adam 1 array, first call"] = _median_us(
            lambda: adam(*next(it), step=1, **HYPERS), calls // 10, repeats)
        _repeat.clear()
        fresh_lists = [[[RecordedArray(np.zeros(N, np.float32)) for _ in range(TENSORS)]
                        for _ in range(4)] for _ in range(repeats * 3)]
        it = iter(fresh_lists)
        rows[f"adam {TENSORS}-tensor list, first call"] = _median_us(
            lambda: adam(*next(it), step=1, **HYPERS), 3, repeats)
        v = variant("adam", (False, True))
        addrs = tuple(a.host.ctypes.data for a in one) + (one[0].host.ctypes.data,)
        pre, hyper = (1.0, 0.0, 0.0, 1.0, 0.0, 1.0), (1e-3, 0.9, 0.1, 0.999, 1e-3, 1e-8)
        dtype = np.dtype(np.float32)
        hypers = iter([(1e-3 * (1 + k * 1e-9),) + hyper[1:] for k in range(10 ** 6)])
        launcher = kcuda.packed_launcher(recorder, v, dtype, N, addrs, 0)
        rows["launcher alone"] = _median_us(
            lambda: launcher(0, pre, next(hypers)), calls, repeats)

        half = [RecordedArray(np.zeros(N, np.float16)) for _ in range(4)]
        rows["adam 1 array, float16"] = _median_us(
            lambda: adam(*half, step=next(steps), **HYPERS), calls, repeats)
        rows.update(host_16bit(repeats, calls))

        def empty(*args, **kwargs):
            return None

        rows["python call"] = _median_us(
            lambda: empty(*one, step=next(steps), **HYPERS), calls, repeats)
        rows["launches recorded"] = recorder.count
        return rows
    finally:
        launch.use(old)
        _repeat.FIXED.pop(RecordedArray, None)
        _repeat.clear()


def host_16bit(repeats=7, calls=2000):
    """Host-array calls on one element (the call's cost, not the kernel's),
    float32 beside 16-bit: ``fastopt.functional.adam`` on NumPy arrays
    (ml_dtypes bfloat16), and ``fastopt.torch.Adam`` on one CPU tensor
    beside torch's fused Adam on the same tensor; each after a first,
    checked call, as in a training loop."""
    import ml_dtypes

    from ..functional import adam
    rows = {}
    steps = iter(range(2, 10 ** 9))
    for name, dtype in (("float32", np.float32), ("bfloat16", ml_dtypes.bfloat16)):
        arrays = [np.zeros(1, dtype) for _ in range(4)]
        adam(*arrays, step=1, **HYPERS)
        rows[f"adam 1 host array, {name}"] = _median_us(
            lambda: adam(*arrays, step=next(steps), **HYPERS), calls, repeats)
    try:
        import torch

        import fastopt.torch as fastopt_torch
    except ImportError:
        return rows
    for name, dtype, master in (("float32", torch.float32, False),
                                ("bfloat16", torch.bfloat16, False),
                                ("bfloat16, master weights", torch.bfloat16, True)):
        param = torch.nn.Parameter(torch.zeros(1, dtype=dtype))
        param.grad = torch.zeros(1, dtype=dtype)
        opt = fastopt_torch.Adam([param], lr=1e-3)
        opt.master_weights = master
        opt.step()
        rows[f"fastopt.torch Adam 1 CPU tensor, {name}"] = _median_us(
            opt.step, calls // 4, repeats)
        if not master:    # the reference: torch's own fused step, same tensor
            ref = torch.optim.Adam([param], lr=1e-3, fused=True)
            ref.step()
            rows[f"torch Adam(fused=True) 1 CPU tensor, {name}"] = _median_us(
                ref.step, calls // 4, repeats)
    return rows


def on_gpu(repeats=7, calls=2000):
    """Host time per call on a GPU: fastopt (CuPy arrays, torch tensors, a
    150-tensor list of each) against torch fused Adam and CuPy's
    ElementwiseKernel; launches queued, one synchronisation per repeat."""
    import torch

    from ..functional import adam
    rows = {}
    dev = torch.device("cuda")

    def timed(fn, sync, n=calls):
        def one_repeat():
            for _ in range(n):
                fn()
            sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            one_repeat()
            times.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(times)

    steps = iter(range(1, 10 ** 9))
    ts = [torch.zeros(N, device=dev) for _ in range(4)]
    rows["fastopt adam, torch tensors"] = timed(
        lambda: adam(*ts, step=next(steps), **HYPERS), torch.cuda.synchronize)
    tl = [[torch.zeros(N, device=dev) for _ in range(TENSORS)] for _ in range(4)]
    rows[f"fastopt adam, {TENSORS} torch tensors"] = timed(
        lambda: adam(*tl, step=next(steps), **HYPERS), torch.cuda.synchronize, calls // 4)
    p = torch.nn.Parameter(torch.zeros(N, device=dev))
    p.grad = torch.zeros(N, device=dev)
    opt = torch.optim.Adam([p], lr=1e-3, fused=True)
    rows["torch Adam(fused=True), 1 tensor"] = timed(opt.step, torch.cuda.synchronize)
    ps = [torch.nn.Parameter(torch.zeros(N, device=dev)) for _ in range(TENSORS)]
    for q in ps:
        q.grad = torch.zeros(N, device=dev)
    opt = torch.optim.Adam(ps, lr=1e-3, fused=True)
    rows[f"torch Adam(fused=True), {TENSORS} tensors"] = timed(
        opt.step, torch.cuda.synchronize, calls // 4)
    try:
        import cupy
    except ImportError:
        return rows
    cs = [cupy.zeros(N, np.float32) for _ in range(4)]
    sync = cupy.cuda.get_current_stream().synchronize
    rows["fastopt adam, CuPy arrays"] = timed(
        lambda: adam(*cs, step=next(steps), **HYPERS), sync)
    cl = [[cupy.zeros(N, np.float32) for _ in range(TENSORS)] for _ in range(4)]
    rows[f"fastopt adam, {TENSORS} CuPy arrays"] = timed(
        lambda: adam(*cl, step=next(steps), **HYPERS), sync, calls // 4)
    kern = cupy.ElementwiseKernel(
        "T g, T a, T b1, T b2, T eps", "T p, T m, T v",
        "m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g * g;"
        "p -= a * m / (sqrt(v) + eps);", "fastopt_bench_adam")
    p_, g_, m_, v_ = cs
    rows["CuPy ElementwiseKernel adam"] = timed(
        lambda: kern(g_, np.float32(1e-3), np.float32(0.9), np.float32(0.999),
                     np.float32(1e-8), p_, m_, v_), sync)
    return rows


def main(device="cpu", repeats=7):
    rows = recorded(repeats) if device == "cpu" else on_gpu(repeats)
    targets = {"adam 1 array": 15.0, f"adam {TENSORS}-tensor list": 25.0}
    where = "recorded launches (no GPU)" if device == "cpu" else "GPU"
    print(f"host cost per call, µs, median of {repeats} ({where}):")
    for name, value in rows.items():
        if isinstance(value, float):
            target = targets.get(name)
            note = "" if target is None else f"   (target <= {target:g})"
            print(f"  {name:<40} {value:9.2f}{note}")
        else:
            print(f"  {name:<40} {value}")
    return rows
