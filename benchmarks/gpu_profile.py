"""Where a small GPU call's time goes, and how the launch shape moves bandwidth.

    python benchmarks/gpu_profile.py

1. Host time per call at 2**16 float32 (Adam, CuPy arrays), for fastopt's
   public call and for its pieces: the bare kernel launch with addresses,
   `cuda.get_current_device()`, and a CuPy ElementwiseKernel for scale; then
   the top of a cProfile of the public call.
2. Adam at 2**28 float32 for several (threads per block, blocks per SM):
   effective GB/s, median of 10 event-timed calls each.
"""
import cProfile
import pstats
import statistics
import time

import cupy
import numpy as np
from numba import cuda

import fastopt.functional as F
from fastopt.kernels import cuda as kcuda
from fastopt.kernels import variant

KW = dict(step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, convention="torch")


def _arrays(n):
    rng = cupy.random.default_rng(0)
    p, g = rng.standard_normal(n, dtype=cupy.float32), rng.standard_normal(n, dtype=cupy.float32)
    return p, g, g * 0.1, g * g + 1e-6


def host_us(fn, calls=2000):
    for _ in range(50):
        fn()
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def main():
    p, g, m, v = _arrays(1 << 16)
    which = variant("adam", (False, True))
    addrs = tuple(a.data.ptr for a in (p, g, m, v, p))
    pre = tuple(np.float32(x) for x in (1, 0, 0, 1))
    F.adam(p, g, m, v, **KW)
    cuda.synchronize()
    kern = kcuda.kernel(which)
    sig_hyper = next(iter(kern.overloads))[3]
    hyper = tuple(np.float32(0.5) for _ in range(sig_hyper.count))
    blocks, threads = kcuda.launch_config(p.size)
    ew = cupy.ElementwiseKernel("T g, T b", "T p", "p = p - b * g", "fastopt_profile_sgd")
    b = np.float32(1e-3)
    rows = {
        "fastopt.functional.adam": lambda: F.adam(p, g, m, v, **KW),
        "bare numba launch (addresses)": lambda: kern[blocks, threads, 0](
            addrs, p.size, pre, hyper),
        "launch_config(n)": lambda: kcuda.launch_config(p.size),
        "cuda.get_current_device()": cuda.get_current_device,
        "cupy ElementwiseKernel (sgd)": lambda: ew(g, b, p),
    }
    print("host time per call, 2**16 float32:")
    for name, fn in rows.items():
        print(f"  {name:32s} {host_us(fn):8.1f} us", flush=True)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(2000):
        F.adam(p, g, m, v, **KW)
    cuda.synchronize()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(22)

    n = 1 << 28
    p, g, m, v = _arrays(n)
    start, end = cuda.event(), cuda.event()
    print("Adam 2**28 float32, GB/s by (threads, blocks per SM):")
    for threads in (128, 256, 512, 1024):
        for per_sm in (2, 4, 8, 16, 32):
            if threads * per_sm > 8192:
                continue
            kcuda.THREADS, kcuda.BLOCKS_PER_SM = threads, per_sm
            kcuda._max_blocks.clear()
            times = []
            for _ in range(12):
                start.record()
                F.adam(p, g, m, v, **KW)
                end.record()
                end.synchronize()
                times.append(cuda.event_elapsed_time(start, end) / 1e3)
            med = statistics.median(times[2:])
            print(f"  threads {threads:4d} blocks/SM {per_sm:2d}: "
                  f"{28 * n / med / 1e9:7.1f} GB/s", flush=True)


if __name__ == "__main__":
    main()
