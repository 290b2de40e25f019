"""Thread CPU time (time.thread_time) beside wall time of one clip call, the
clip bench's setup (8 rotated sets of 2,000 x 100 float32 params, factor
below 1 every call), one thread for numba and torch, interleaved in a
shuffled order, medians. On a loaded machine the wall figures include the
time the calling thread spent descheduled; the thread CPU time does not.

    PYTHONPATH=. python benchmarks/results/clip-cpu-2026-12-07/cpu_time.py 60
"""
import sys, time, statistics, random
import torch, numba, fastopt, fastopt.torch as ftorch
from torch.nn.utils import clip_grad_norm_ as tclip
torch.set_num_threads(1); numba.set_num_threads(1)
g = torch.Generator().manual_seed(2000)
sets = []
for _ in range(8):
    ps = [torch.zeros(100, requires_grad=True) for _ in range(2000)]
    for p in ps: p.grad = torch.randn(100, generator=g)
    sets.append(ps)
opts = [ftorch.SGD(ps, lr=0.0) for ps in sets]
n0 = float(tclip(sets[0], float("inf"))); c = [0]
def bound():
    c[0] += 1; return n0 * 0.99 ** c[0]
impls = {"fastopt": lambda k: fastopt.clip_grad_norm_(sets[k], bound()),
         "deferred": lambda k: fastopt.clip_grad_norm_(sets[k], bound(), optimizer=opts[k]),
         "torch foreach": lambda k: tclip(sets[k], bound(), foreach=True)}
for f in impls.values():
    for k in range(8): f(k)
wall = {n: [] for n in impls}; cpu = {n: [] for n in impls}
names = list(impls); rnd = random.Random(0); calls = 0
for r in range(int(sys.argv[1])):
    rnd.shuffle(names)
    for name in names:
        k = calls % 8; calls += 1
        t0 = time.perf_counter_ns(); c0 = time.thread_time_ns(); impls[name](k)
        c1 = time.thread_time_ns(); t1 = time.perf_counter_ns()
        wall[name].append((t1 - t0) / 1e6); cpu[name].append((c1 - c0) / 1e6)
for n in impls:
    print(f"{n:14s} wall median {statistics.median(wall[n]):.3f} min {min(wall[n]):.3f} | thread-cpu median {statistics.median(cpu[n]):.3f} min {min(cpu[n]):.3f} ms")
tf = statistics.median(cpu["torch foreach"])
print(f"torch foreach / fastopt (thread cpu medians): x{tf/statistics.median(cpu['fastopt']):.2f}; wall medians x{statistics.median(wall['torch foreach'])/statistics.median(wall['fastopt']):.2f}")
