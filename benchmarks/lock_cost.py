"""The cost of the per-optimizer lock on a Keras-style step.

    python benchmarks/lock_cost.py [--tensors 200] [--size 1000] [--batches 15]

One process, one thread, one optimizer: batches of `apply_gradients` calls
with the lock (the public method) and without it (the same method
unwrapped), alternating batch by batch, on the same arrays. Printed: each
form's median per-call time over the batches, and the difference.
"""
import argparse
import statistics
import time

import numpy as np

import fastopt
from fastopt.optimizers.base import Optimizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensors", type=int, default=200)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(args.size, dtype=np.float32) for _ in range(args.tensors)]
    grads = [rng.standard_normal(args.size, dtype=np.float32) * 1e-3 for _ in params]
    opt = fastopt.Adam()
    unlocked = Optimizer.apply.__wrapped__
    forms = {"locked": lambda: opt.apply(grads, params),
             "unlocked": lambda: unlocked(opt, grads, params)}
    for call in forms.values():
        for _ in range(20):
            call()
    times = {name: [] for name in forms}
    for b in range(args.batches):
        for name in (list(forms) if b % 2 == 0 else list(forms)[::-1]):
            call = forms[name]
            t0 = time.perf_counter()
            for _ in range(args.calls):
                call()
            times[name].append((time.perf_counter() - t0) / args.calls)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"Adam.apply on {args.tensors} float32 tensors of {args.size}: "
          + ", ".join(f"{name} {m * 1e6:.1f} µs (min {min(times[name]) * 1e6:.1f})"
                      for name, m in med.items())
          + f"; lock {(med['locked'] - med['unlocked']) * 1e6:+.2f} µs a call")


if __name__ == "__main__":
    main()
