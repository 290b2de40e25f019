"""Host time of one optimizer step over N float32 params of 100 elements
(wall clock, medians of 30 steps, the three optimizers interleaved, 2
threads): fastopt.torch.Adam against torch.optim.Adam fused and foreach.
Usage: python step_cost.py  (prints one line per N)."""
import statistics
import time

import torch

import fastopt.torch as ftorch

torch.set_num_threads(2)


def params(n, size=100):
    out = [torch.zeros(size, requires_grad=True) for _ in range(n)]
    for p in out:
        p.grad = torch.randn(size)
    return out


for n in (1, 150, 2000):
    opts = {"fastopt": ftorch.Adam(params(n), lr=1e-3),
            "torch fused": torch.optim.Adam(params(n), lr=1e-3, fused=True),
            "torch foreach": torch.optim.Adam(params(n), lr=1e-3, foreach=True)}
    for opt in opts.values():
        for _ in range(5):
            opt.step()
    times = {name: [] for name in opts}
    for _ in range(30):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    print(n, {name: round(statistics.median(t) * 1e6, 1) for name, t in times.items()},
          "(µs)")
