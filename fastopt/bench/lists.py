"""Many tensors per step: a model's parameter list against one flat tensor.

For each shape list (`fastopt.bench_shapes.MODELS`) and optimizer, timed
round-robin in the same run:

* ``fastopt-list``: one list-form call over the model's N tensors;
* ``fastopt-flat``: one call over a single array of the same total size, the
  reference (``list / flat``: the issue's target is <= 1.15);
* ``fastopt-per-tensor``: N single-array calls, what the list form replaces;
* ``fastopt.torch`` / ``fastopt.torch-flat``: the torch front end over the N
  tensors, its table path and ``flat=True`` (params and grads moved into one
  buffer each, state kept in its own; the front end's own per-step work is in
  the figure, as torch.optim's is in torch's);
* ``fastopt.keras``: the Keras-style front end, ``apply_gradients(zip(grads,
  params))`` over the N arrays, its state its own (Keras's convention: the
  same arrays move, the arithmetic differs slightly);
* ``torch-foreach`` / ``torch-fused``: torch.optim over the same N tensors.

Launches per step are counted, not assumed: on a GPU with torch's profiler
(CUPTI sees every kernel the GPU ran during one step, whoever launched it),
on the CPU by counting the update loops run by calls into fastopt's compiled
objects (each loop is one parallel region; a NumPy call's jitted
check-and-run counts when it ran the loop; the check of a list of more than
8 tensors is a parallel region of its own, not counted: it updates nothing).
On a GPU every array is a torch CUDA tensor, so fastopt and torch get the
same tensors.
"""
import numpy as np

from ..bench_shapes import MODELS
from . import peers_torch
from .cases import CASES
from .overhead import fastopt_step
from .timing import HostClock, draw_arrays, num_sets, time_interleaved, warm_up

def _lists(case, shapes, dtype, rng, device):
    """One buffer set: name -> list of arrays (NumPy, or torch CUDA tensors)."""
    drawn = [draw_arrays(case, shape, dtype, rng) for shape in shapes]
    out = {name: [d[name] for d in drawn] for name in drawn[0]}
    if device == "cuda":
        import torch
        out = {k: [torch.from_numpy(a).cuda() for a in v] for k, v in out.items()}
    return out


def _fastopt(case, sets, per_tensor=False):
    steps = [10] * len(sets)
    if per_tensor:
        bound = [[fastopt_step(case, {n: v[t] for n, v in arrays.items()})
                  for t in range(len(arrays["param"]))] for arrays in sets]
    else:
        bound = [[fastopt_step(case, arrays)] for arrays in sets]

    def call(k):
        steps[k] += 1
        for step in bound[k]:
            step(step=steps[k])

    return call


def _torch_front_end(case, sets, flat):
    """``call(k)``: a fastopt.torch step over set k's params and grads (as
    zero-copy tensors); its state is its own, made by a first step, which
    with ``flat=True`` also lays the tensors out."""
    import fastopt.torch
    cls = getattr(fastopt.torch, case.torch_class)
    optimizers = []
    for arrays in sets:
        params = [peers_torch.tensor_view(p) for p in arrays["param"]]
        for p, g in zip(params, arrays["grad"]):
            p.grad = peers_torch.tensor_view(g)
        optimizers.append(cls(params, **case.torch_kwargs, flat=flat))
        optimizers[-1].step()

    def call(k):
        optimizers[k].step()

    return call


def _keras_front_end(case, sets):
    """``call(k)``: a Keras-style ``apply_gradients`` over set k's params and
    grads; the optimizer's state is its own, made by a first step."""
    import fastopt
    name, kwargs = case.keras
    optimizers = []
    for arrays in sets:
        optimizers.append(getattr(fastopt, name)(**kwargs))
        optimizers[-1].apply_gradients(zip(arrays["grad"], arrays["param"]))

    def call(k):
        optimizers[k].apply_gradients(zip(sets[k]["grad"], sets[k]["param"]))

    return call


def _count_launches(impl, call, device):
    """Kernels run by one call of `call(0)`, counted (None: cannot be counted
    here, torch's CPU loops)."""
    if device == "cpu" and not impl.startswith("fastopt"):
        return None
    if device == "cuda":
        import torch
        from torch.profiler import ProfilerActivity, profile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call(0)
            torch.cuda.synchronize()
        kernels = [e for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA
                   and "memcpy" not in e.name.lower() and "memset" not in e.name.lower()]
        return len(kernels)
    from .. import _accel
    counts = [0]
    # NumPy calls check and run the kernel in one jitted call (built by the
    # warm-up): a single array's ran it when the check passed, a list's when
    # the lists held last step's layout (else it ran the ``"multi_cpu"`` kernel).
    ran = {"single": bool, "many": lambda result: result[0] == 2}

    def counted(kind, variant, fn):
        if fn is None:
            return None
        ran_it = ran.get(kind, lambda result: True)

        def run(*args):
            result = fn(*args)
            counts[0] += ran_it(result)
            return result
        return run

    with _accel.observe(counted):
        call(0)
    return counts[0]


def run_lists(models, optimizers, dtype, device, repeats, warmup, llc, bar=None):
    """Rows for every (model, optimizer, implementation), and their ratios."""
    rows, ratios = [], []
    dtype = np.dtype(dtype)
    for model in models:
        shapes = MODELS[model]()
        total = sum(int(np.prod(s)) for s in shapes)
        for name in optimizers:
            case = CASES[name]
            nbytes = case.bytes_per_element(dtype.itemsize) * total
            nsets = num_sets(nbytes, llc)
            rng = np.random.default_rng(0)
            many = [_lists(case, shapes, dtype, rng, device) for _ in range(nsets)]
            flat = [{k: v[0] for k, v in _lists(case, [(total,)], dtype, rng,
                                                 device).items()} for _ in range(nsets)]
            calls = {"fastopt-list": _fastopt(case, many),
                     "fastopt-flat": _fastopt(case, flat),
                     "fastopt-per-tensor": _fastopt(case, many, per_tensor=True)}
            if case.keras:      # Keras has the optimizer
                calls["fastopt.keras"] = _keras_front_end(case, many)
            if peers_torch.available():
                calls["fastopt.torch"] = _torch_front_end(case, many, flat=False)
                calls["fastopt.torch-flat"] = _torch_front_end(case, many, flat=True)
            for mode in ("torch-foreach", "torch-fused"):
                if peers_torch.available() and not peers_torch.supports(case, mode, device):
                    calls[mode] = peers_torch.make(case, many, mode)
            timer = _timer(device)
            prepared = {}
            for impl, call in calls.items():
                warm_up(call, nsets, warmup, timer)
                prepared[impl] = (call, timer)
            launches = {impl: _count_launches(impl, call, device)
                        for impl, call in calls.items()}
            timings = time_interleaved(prepared, nsets, repeats)
            group = {}
            for impl, timing in timings.items():
                row = {"model": model, "tensors": len(shapes), "elements": total,
                       "optimizer": name, "dtype": dtype.name, "impl": impl,
                       "buffer_sets": nsets, "launches_per_step": launches[impl]}
                if isinstance(timing, Exception):
                    row.update(status="error", note=f"{type(timing).__name__}: {timing}")
                else:
                    row.update(status="ok", **timing.as_dict(nbytes))
                    group[impl] = timing.median
                rows.append(row)
            ratios.append(_ratio(model, name, dtype, group))
            if bar is not None:
                bar.advance()
            del many, flat, prepared, calls
    return rows, ratios


def _ratio(model, name, dtype, t):
    out = {"model": model, "optimizer": name, "dtype": dtype.name,
           "list_over_flat": t["fastopt-list"] / t["fastopt-flat"]}
    out["meets_list_target"] = out["list_over_flat"] <= 1.15
    for impl in ("fastopt.keras", "fastopt.torch", "fastopt.torch-flat"):
        if impl in t:
            out[f"{impl}_over_flat"] = t[impl] / t["fastopt-flat"]
    for mode in ("torch-fused", "torch-foreach"):
        if mode in t:
            out[f"{mode}_over_list"] = t[mode] / t["fastopt-list"]
    # The torch front end against torch's own optimizer on the same tensors
    # (below 1: fastopt.torch is faster).
    for impl in ("fastopt.torch", "fastopt.torch-flat"):
        if impl in t and "torch-fused" in t:
            out[f"{impl}_vs_torch-fused"] = t[impl] / t["torch-fused"]
    return out


def _timer(device):
    if device == "cpu":
        return HostClock()
    from .gpu import TorchEventTimer
    return TorchEventTimer()


def summary(rows, ratios):
    """Text table: ms per step, launches, and the ratios."""
    lines = [f"{'model':10s} {'optimizer':13s} {'impl':19s} {'ms/step':>9s} "
             f"{'launches':>8s}"]
    for r in rows:
        ms = f"{r['median_s'] * 1e3:9.3f}" if r["status"] == "ok" else f"{'error':>9s}"
        n = r["launches_per_step"]
        lines.append(f"{r['model']:10s} {r['optimizer']:13s} {r['impl']:19s} {ms} "
                     f"{'-' if n is None else n:>8}")
    for q in ratios:
        extra = "".join(f", {k.replace('_over_list', '')}/list {v:.2f}"
                        for k, v in q.items() if k.endswith("_over_list"))
        extra += "".join(f", {k.replace('_over_flat', '')}/flat {v:.2f}"
                         for k, v in q.items()
                         if k.endswith("_over_flat") and k != "list_over_flat")
        extra += "".join(f", {k.replace('_vs_torch-fused', '')}/torch-fused {v:.2f}"
                         for k, v in q.items() if k.endswith("_vs_torch-fused"))
        lines.append(f"{q['model']} {q['optimizer']}: list/flat "
                     f"{q['list_over_flat']:.3f}{extra}")
    return "\n".join(lines)
