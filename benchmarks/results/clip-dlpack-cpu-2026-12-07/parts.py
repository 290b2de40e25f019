"""Where one fastopt.clip_grad_norm_ call over 2,000 x 100 float32 gradients
spends its time, phase by phase (wall clock, medians of 320 calls over 8
rotated sets of params, 1 torch thread). With `after-torch`, each timed call
follows a torch foreach clip of another set, as in the bench's interleaved
run. Usage: python parts.py [after-torch]"""
import operator
import statistics
import sys
import time

import numpy as np
import torch

import fastopt
from fastopt import _clip
from fastopt.kernels import multi_norms

torch.set_num_threads(1)
n, size, nsets = 2000, 100, 8
after_torch = sys.argv[1:] == ["after-torch"]
gen = torch.Generator().manual_seed(0)
sets = []
for _ in range(nsets):
    params = [torch.zeros(size, requires_grad=True) for _ in range(n)]
    for p in params:
        p.grad = torch.randn(size, generator=gen)
    sets.append(params)
grad_of = operator.attrgetter("grad")
parts = {}


def mark(name, t0):
    t1 = time.perf_counter_ns()
    parts.setdefault(name, []).append(t1 - t0)
    return t1


def one_call(params):
    """clip_grad_norm_(params, 1e-3), its phases timed."""
    t = time.perf_counter_ns()
    grads = [g for g in map(grad_of, params) if g is not None]
    t = mark("p.grad of each param", t)
    group = _clip._dense_cpu_group(grads, torch)
    t = mark("the host group (type, ids, DLPack read)", t)
    norms = group.norms(multi_norms.L2, 2.0)
    t = mark("norm kernel", t)
    total = multi_norms.combine(_clip._rounded(norms, group.norm_dtype, torch),
                                multi_norms.L2, 2.0)
    t = mark("norms combined", t)
    torch.tensor(total, dtype=torch.float32)
    t = mark("0-d result tensor", t)
    coef = _clip._coef(np.float32(total), 1e-3)
    t = mark("factor", t)
    group.scale(coef)
    t = mark("scale kernel", t)
    torch.autograd.graph.increment_version(grads)
    mark("version counters", t)


for k in range(nsets):
    one_call(sets[k])
    fastopt.clip_grad_norm_(sets[k], 1e-3)
    torch.nn.utils.clip_grad_norm_(sets[k], 1e-3, foreach=True)
whole = []
for _ in range(40):
    for k in range(nsets):
        if after_torch:
            torch.nn.utils.clip_grad_norm_(sets[(k + 3) % nsets], 1e-3, foreach=True)
        one_call(sets[k])
    for k in range(nsets):
        if after_torch:
            torch.nn.utils.clip_grad_norm_(sets[(k + 3) % nsets], 1e-3, foreach=True)
        t0 = time.perf_counter_ns()
        fastopt.clip_grad_norm_(sets[k], 1e-3)
        whole.append(time.perf_counter_ns() - t0)
print("after a torch foreach clip" if after_torch else "warm (fastopt calls only)")
for name, times in parts.items():
    print(f"  {name:42s} {statistics.median(times) / 1e3:7.1f} µs")
print(f"  {'sum of the phases':42s} {sum(statistics.median(v) for v in parts.values()) / 1e3:7.1f} µs")
print(f"  {'one clip_grad_norm_ call':42s} {statistics.median(whole) / 1e3:7.1f} µs")
