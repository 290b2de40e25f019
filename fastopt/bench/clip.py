"""``python -m fastopt.bench --clip 2000``: the host time of a global-norm
clip over many small tensors, fastopt.clip_grad_norm_ against
torch.nn.utils.clip_grad_norm_ (foreach=True and foreach=False), interleaved
in one run (`timing.time_interleaved`), medians.

Every call clips: call j of the run uses ``max_norm = n0 * 0.99**j`` (n0 the
norm of the fresh gradients), so each call finds the gradients above its
bound and writes them (a clip whose factor is 1 writes nothing in fastopt,
which would flatter it). Rows:

* ``fastopt``: norm + in-place scale (torch's semantics);
* ``fastopt (deferred)``: ``optimizer=`` a fastopt.torch.SGD holding the
  params: the norm and the hand-over of the factor, whose multiply then rides
  the optimizer's own pass (no pass of its own);
* ``torch foreach`` / ``torch loop``.

Bytes: the clip reads every gradient once and writes it once (4 + 4 bytes an
element in float32), the deferred form reads it once.
"""
import platform

import numpy as np

from .timing import HostClock, num_sets, cpu_llc_bytes, time_interleaved


def run_clip(counts, size, dtype, threads, repeats, warmup):
    import numba
    import torch
    from torch.nn.utils import clip_grad_norm_ as torch_clip

    import fastopt
    import fastopt.torch as ftorch

    if threads:
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    rows = []
    for count in counts:
        set_bytes = count * size * tdtype.itemsize
        nsets = min(num_sets(set_bytes, cpu_llc_bytes()), 8)
        gen = torch.Generator().manual_seed(count)
        sets, opts = [], []
        for _ in range(nsets):
            params = [torch.zeros(size, dtype=tdtype, requires_grad=True) for _ in range(count)]
            for p in params:
                p.grad = torch.randn(size, generator=gen, dtype=tdtype)
            sets.append(params)
            opts.append(ftorch.SGD(params, lr=0.0))
        n0 = float(torch_clip(sets[0], float("inf")))   # factor 1: nothing written
        calls = [0]

        def bound():
            calls[0] += 1
            return n0 * 0.99 ** calls[0]

        impls = {
            "fastopt": lambda k: fastopt.clip_grad_norm_(sets[k], bound()),
            "fastopt (deferred)": lambda k: fastopt.clip_grad_norm_(
                sets[k], bound(), optimizer=opts[k]),
            "torch foreach": lambda k: torch_clip(sets[k], bound(), foreach=True),
            "torch loop": lambda k: torch_clip(sets[k], bound(), foreach=False),
        }
        clock = HostClock()
        for call in impls.values():
            for k in range(max(warmup, nsets)):
                call(k % nsets)
        got = time_interleaved({name: (call, clock) for name, call in impls.items()},
                               nsets, repeats)
        for name, t in got.items():
            if isinstance(t, Exception):
                rows.append({"tensors": count, "impl": name, "error": repr(t)})
                continue
            rows.append({"tensors": count, "elements_each": size, "impl": name,
                         "median_ms": t.median * 1e3, "min_ms": min(t.times) * 1e3,
                         "max_ms": max(t.times) * 1e3})
        base = {r["impl"]: r for r in rows if r["tensors"] == count and "median_ms" in r}
        for r in rows:
            if r["tensors"] == count and "median_ms" in r and "torch foreach" in base:
                r["torch_foreach_over_this"] = (base["torch foreach"]["median_ms"]
                                                / r["median_ms"])
    meta = {"device": "cpu", "dtype": dtype, "threads": numba.get_num_threads(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "numba": numba.__version__, "numpy": np.__version__,
            "machine": platform.machine(), "processor": platform.processor(),
            "repeats": repeats}
    return {"meta": meta, "results": rows}


def summary(report):
    m = report["meta"]
    lines = [f"clip_grad_norm_, host time per call, {m['dtype']}, {m['threads']} threads "
             f"(median [min, max] ms; x = torch foreach / this)"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"  {r['tensors']:>6} tensors  {r['impl']:<20} failed: {r['error']}")
            continue
        lines.append(f"  {r['tensors']:>6} x {r['elements_each']:<6} {r['impl']:<20} "
                     f"{r['median_ms']:8.3f} [{r['min_ms']:.3f}, {r['max_ms']:.3f}]"
                     f"  x{r.get('torch_foreach_over_this', float('nan')):.2f}")
    return "\n".join(lines)
