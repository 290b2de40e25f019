"""CPU: Adam fp32 over a model's tensor list vs one flat tensor of the same size.

For each shape list (fastopt.bench_shapes): the list form of
``fastopt.functional.adam`` over N separate arrays, one call per tensor, and
the reference measured in the same run: one flat array of the same total
size. Reports medians (min, max) of >= 10 timed steps after warm-up, the ratio
list / flat, and the kernel calls per step, counted by wrapping the kernel
objects (each many-tensor kernel call is one parallel region).

    python benchmarks/multi_tensor_cpu.py [--models gpt2-small resnet50 200x1000]
"""
import argparse
import json
import os
import platform
import statistics
import time

import numba
import numpy as np

import fastopt
import fastopt._multi
import fastopt.functional as F
from fastopt.bench_shapes import MODELS
from fastopt.kernels import cpu, multi_cpu

HYPER = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7)


class _Count:
    """Counts calls of the kernels that `get` hands out."""

    def __init__(self, module):
        self.module, self.get, self.calls = module, module.kernel, 0

    def __enter__(self):
        def counted(variant):
            kern = self.get(variant)

            def call(*args):
                self.calls += 1
                return kern(*args)
            return call
        self.module.kernel = counted
        return self

    def __exit__(self, *exc):
        self.module.kernel = self.get


def _arrays(shapes, rng):
    p = [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]
    g = [rng.uniform(-1e-2, 1e-2, s).astype(np.float32) for s in shapes]
    m = [rng.uniform(-1e-3, 1e-3, s).astype(np.float32) for s in shapes]
    v = [rng.uniform(1e-6, 1e-5, s).astype(np.float32) for s in shapes]
    return p, g, m, v


def _time(step, runs):
    for t in range(1, 4):                     # warm-up: compile, caches, pages
        step(t)
    times = []
    for t in range(4, 4 + runs):
        t0 = time.perf_counter()
        step(t)
        times.append(time.perf_counter() - t0)
    return times


def _summary(times):
    return {"median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "runs": len(times)}


def measure(name, runs):
    shapes = MODELS[name]()
    total = sum(int(np.prod(s)) for s in shapes)
    rng = np.random.default_rng(0)
    lists = _arrays(shapes, rng)
    flat = [a[0] for a in _arrays([(total,)], rng)]

    def many(t):
        F.adam(*lists, step=t, **HYPER)

    def one(t):
        F.adam(*flat, step=t, **HYPER)

    def per_tensor(t):
        for p, g, m, v in zip(*lists):
            F.adam(p, g, m, v, step=t, **HYPER)

    with _Count(multi_cpu) as count_many:
        many(1)
    with _Count(cpu) as count_per_tensor:
        per_tensor(1)
    out = {"tensors": len(shapes), "elements": total,
           "list_calls_per_step": count_many.calls,
           "per_tensor_calls_per_step": count_per_tensor.calls}
    # Interleave the three so that load changes hit them alike.
    results = {"list": [], "flat": [], "per_tensor": []}
    for _ in range(2):
        for key, fn in (("flat", one), ("list", many), ("per_tensor", per_tensor)):
            results[key] += _time(fn, runs // 2 + 1)
    for key, times in results.items():
        out[key] = _summary(times)
    out["ratio_list_over_flat"] = out["list"]["median_s"] / out["flat"]["median_s"]
    out["ratio_per_tensor_over_flat"] = (out["per_tensor"]["median_s"]
                                         / out["flat"]["median_s"])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    report = {"fastopt": fastopt.__version__, "numba": numba.__version__,
              "numpy": np.__version__, "machine": platform.processor() or platform.machine(),
              "threads": numba.get_num_threads(), "chunk": fastopt._multi.CHUNK,
              "load_average_before": os.getloadavg(), "date": time.strftime("%F %T"),
              "models": {}}
    for name in args.models:
        r = report["models"][name] = measure(name, args.runs)
        print(f"{name:11s} {r['tensors']:4d} tensors {r['elements']:>11,d} elements: "
              f"list {r['list']['median_s'] * 1e3:8.3f} ms "
              f"[{r['list']['min_s'] * 1e3:.3f}-{r['list']['max_s'] * 1e3:.3f}], "
              f"flat {r['flat']['median_s'] * 1e3:8.3f} ms "
              f"[{r['flat']['min_s'] * 1e3:.3f}-{r['flat']['max_s'] * 1e3:.3f}], "
              f"per-tensor {r['per_tensor']['median_s'] * 1e3:8.3f} ms; "
              f"list/flat {r['ratio_list_over_flat']:.3f}, "
              f"per-tensor/flat {r['ratio_per_tensor_over_flat']:.3f}; "
              f"parallel regions per step: list {r['list_calls_per_step']}, "
              f"per-tensor {r['per_tensor_calls_per_step']}", flush=True)
    report["load_average_after"] = os.getloadavg()
    print(f"threads {report['threads']}, load average before {report['load_average_before']}, "
          f"after {report['load_average_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
