"""bfloat16 and float32 Adam (torch convention), 1e7 elements, 2 threads, against the
floor kernel, on 1 buffer set (140 MB: held by this VM's 480 MB last-level cache, so the
time is the update's compute) and on 8 rotated sets (1.1 GB: memory). Medians of 16,
alternating calls. Usage: python in_cache.py NSETS"""
import time, sys, numpy as np, numba, ml_dtypes
import fastopt.functional as F
from fastopt.bench import floor
from fastopt.bench.cases import CASES
from fastopt.bench.timing import make_host_sets
numba.set_num_threads(2)
n = int(1e7); nsets = int(sys.argv[1])
case = CASES["adam"]
for dt in (np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16)):
    sets = make_host_sets(case, n, dt, nsets)
    fl = floor.make_cpu(case, sets)
    def run(k, a=None):
        a = sets[k]
        F.adam(a["param"], a["grad"], a["exp_avg"], a["exp_avg_sq"], step=k+10, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, convention="torch")
    for k in range(nsets): run(k); fl(k)
    ts, tf = [], []
    for r in range(16):
        k = r % nsets
        t = time.perf_counter(); run(k); ts.append(time.perf_counter() - t)
        t = time.perf_counter(); fl(k); tf.append(time.perf_counter() - t)
    a, b = sorted(ts)[8], sorted(tf)[8]
    print(dt.name, nsets, "fastopt ms", round(a*1e3, 2), "floor ms", round(b*1e3, 2), "ratio", round(a/b, 2))
