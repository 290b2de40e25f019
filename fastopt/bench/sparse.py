"""``python -m fastopt.bench --sparse-adam 200000x64``: one SparseAdam step on
an embedding table from a sparse gradient of ``--sparse-rows`` looked-up rows
(drawn with repeats, as a batch of token ids is: the gradient has duplicate
indices and the step coalesces them), fastopt.torch.SparseAdam against
torch.optim.SparseAdam, interleaved in one run (`timing.time_interleaved`),
medians; beside them the same step's coalesce alone (torch's, which both
run) and, for scale, a dense fastopt.torch.Adam step on the whole table.

Bytes per step (float32): the touched rows' param, exp_avg and exp_avg_sq
read and written and the coalesced values read, ``7 · 4 · rows · width``;
the bandwidth figure divides that by the step's time (coalesce included).
"""
import numpy as np

from .timing import HostClock, time_interleaved


def run_sparse(table, lookups, dtype, threads, repeats, warmup):
    import numba
    import torch

    import fastopt.torch as ftorch

    if threads:
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
    nrows, width = table
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(nrows, width, generator=gen, dtype=tdtype)
    ids = torch.randint(0, nrows, (lookups,), generator=gen)
    grad = torch.sparse_coo_tensor(ids[None], torch.randn(lookups, width, generator=gen,
                                                          dtype=tdtype), (nrows, width))
    unique = int(grad.coalesce()._nnz())
    setups = {}
    for name, cls in (("fastopt", ftorch.SparseAdam), ("torch", torch.optim.SparseAdam)):
        p = w0.clone().requires_grad_()
        p.grad = grad
        setups[name] = (p, cls([p], lr=1e-3))
    dense = w0.clone().requires_grad_()
    dense.grad = torch.randn(nrows, width, generator=gen, dtype=tdtype)
    dense_opt = ftorch.Adam([dense], lr=1e-3)
    impls = {
        "fastopt.torch.SparseAdam": lambda k: setups["fastopt"][1].step(),
        "torch.optim.SparseAdam": lambda k: setups["torch"][1].step(),
        "coalesce alone": lambda k: grad.coalesce(),
        "fastopt.torch.Adam (dense table)": lambda k: dense_opt.step(),
    }
    for call in impls.values():
        for k in range(warmup):
            call(k)
    clock = HostClock()
    got = time_interleaved({n: (c, clock) for n, c in impls.items()}, 1, repeats)
    nbytes = 7 * tdtype.itemsize * unique * width
    rows = []
    for name, t in got.items():
        if isinstance(t, Exception):
            rows.append({"impl": name, "error": repr(t)})
            continue
        med = t.median
        rows.append({"impl": name, "median_ms": med * 1e3, "min_ms": min(t.times) * 1e3,
                     "max_ms": max(t.times) * 1e3,
                     "GBps": nbytes / med / 1e9 if "Sparse" in name else None})
    meta = {"device": "cpu", "dtype": dtype, "table": [nrows, width], "lookups": lookups,
            "unique_rows": unique, "bytes_per_step": nbytes,
            "threads": numba.get_num_threads(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "numba": numba.__version__,
            "numpy": np.__version__, "repeats": repeats}
    return {"meta": meta, "results": rows}


def summary(report):
    m = report["meta"]
    lines = [f"SparseAdam step, {m['table'][0]}x{m['table'][1]} {m['dtype']} table, "
             f"{m['lookups']} lookups ({m['unique_rows']} rows), {m['threads']} threads; "
             f"{m['bytes_per_step'] / 1e6:.2f} MB moved by the update (median [min, max] ms)"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"  {r['impl']:<34} failed: {r['error']}")
            continue
        bw = f"  {r['GBps']:.2f} GB/s" if r.get("GBps") else ""
        lines.append(f"  {r['impl']:<34} {r['median_ms']:8.3f} "
                     f"[{r['min_ms']:.3f}, {r['max_ms']:.3f}]{bw}")
    return "\n".join(lines)
