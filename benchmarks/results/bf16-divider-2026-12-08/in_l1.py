"""float32 Adam's arithmetic on one core with its data in L1/L2: the exact
loop, the same loop under fastmath (LLVM's square-root estimate), and the
loop without its square root and division. ns per 16 elements, best of 5.
Run: python in_l1.py"""
import numpy as np, numba, time, math, sys
from numba import njit

def make(fm, div=True):
    @njit(fastmath=fm, error_model="numpy")
    def step(p, g, m, v, a, b1, omb1, b2, omb2, eps, reps):
        for r in range(reps):
            for i in range(p.size):
                gi = g[i]
                mi = b1 * m[i] + omb1 * gi
                vi = b2 * v[i] + omb2 * (gi * gi)
                if div:
                    p[i] = p[i] - a * mi / (math.sqrt(vi) + eps)
                else:
                    p[i] = p[i] - a * mi * (vi + eps)
                m[i] = mi; v[i] = vi
    return step

for n in (1024, 2048, 16384):
    rng = np.random.default_rng(0)
    f = np.float32
    args = (f(1e-3), f(.9), f(.1), f(.999), f(.001), f(1e-8))
    for name, fn in [("exact", make(False)), ("fast", make(True)), ("nodiv", make(False, False))]:
        arrs = [rng.random(n, dtype=np.float32) for _ in range(4)]
        fn(*arrs, *args, 1)
        reps = 4_000_000 // n
        best = 1e9
        for r in range(5):
            t = time.perf_counter()
            fn(*arrs, *args, reps)
            best = min(best, (time.perf_counter() - t) / reps)
        print(n, name, f"{best / n * 16 * 1e9:.2f} ns/16")
