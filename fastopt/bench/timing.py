"""Buffers and clocks: rotating buffer sets, CPU and CUDA timers, statistics.

A buffer set is one update's arrays (param, grad and the state slots). When a
set is smaller than a few times the last-level cache, several sets are made
and the timed calls cycle through them, so that a call never finds its data
left in cache by the previous one.
"""
import math
import os
import random
import statistics
import time
from dataclasses import dataclass

import numpy as np

CACHE_MULTIPLE = 4     # bytes touched between two uses of a set, / LLC size
MAX_SETS = 64
_FALLBACK_LLC = 32 << 20


def cpu_llc_bytes():
    """The largest CPU cache's size, from sysfs (Linux); 32 MiB if unknown."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            if not entry.startswith("index"):
                continue
            with open(os.path.join(base, entry, "size")) as f:
                text = f.read().strip()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KMG")) * scale)
    except (OSError, ValueError):
        pass
    return best or _FALLBACK_LLC


def num_sets(set_bytes, llc_bytes):
    """How many buffer sets to rotate so none is timed from cache."""
    if set_bytes >= CACHE_MULTIPLE * llc_bytes:
        return 1
    return min(MAX_SETS, 1 + math.ceil(CACHE_MULTIPLE * llc_bytes / set_bytes))


def draw_arrays(case, shape, dtype, rng, xp=np):
    """One update's arrays for `case`, by argument name, drawn with `rng` of
    array module `xp` (NumPy, or CuPy to draw on the GPU): never zeros,
    realistic magnitudes, no denormals."""
    grad = (rng.standard_normal(shape, dtype=xp.float32) * 1e-2).astype(dtype)
    param = rng.standard_normal(shape, dtype=xp.float32)
    arrays = {"param": param.astype(dtype), "grad": grad}
    state = dtype
    if getattr(case, "master", False):   # float32 master and state, a 16-bit copy
        arrays["param"], arrays["model"], state = param, param.astype(dtype), xp.float32
    for slot in case.slots:
        if case.init.get(slot) == "positive":
            arrays[slot] = (grad * grad + 1e-6).astype(state)
        else:
            arrays[slot] = (grad * 0.1).astype(state)
    return arrays


def make_host_sets(case, n, dtype, count, seed=0):
    """`count` buffer sets of random host arrays for `case` (`draw_arrays`).
    Each set is a dict by argument name."""
    rng = np.random.default_rng(seed)
    return [draw_arrays(case, n, dtype, rng) for _ in range(count)]


@dataclass
class Timing:
    """Seconds per call of `repeats` timed calls (after warm-up)."""

    times: list

    @property
    def median(self):
        return statistics.median(self.times)

    def as_dict(self, nbytes):
        """Times and the effective bandwidths they give for `nbytes` moved."""
        med, lo, hi = self.median, min(self.times), max(self.times)
        return {"median_s": med, "min_s": lo, "max_s": hi, "repeats": len(self.times),
                "gbps": nbytes / med / 1e9, "gbps_best": nbytes / lo / 1e9,
                "gbps_worst": nbytes / hi / 1e9}


class HostClock:
    """Times one call with the host clock (CPU implementations)."""

    def synchronize(self):
        pass

    def measure(self, fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def warm_up(call, nsets, warmup, timer):
    """Visit every set at least once: compilation, first-touch page faults."""
    for k in range(max(warmup, nsets)):
        call(k % nsets)
    timer.synchronize()


def time_interleaved(impls, nsets, repeats):
    """Time warmed-up implementations round-robin, one call each per round,
    in an order drawn anew each round (seeded, so runs repeat).

    impls: name -> ``(call(k), timer)``, `timer` a `HostClock` or a GPU timer
    from gpu.py. Shared machines drift (other tenants, memory-bandwidth
    regimes); interleaving gives every implementation the same conditions, so
    their ratios hold even when the absolute figures wander. Returns name ->
    `Timing`, or name -> the exception a call raised.
    """
    times = {name: [] for name in impls}
    failed = {}
    calls = 0    # one rotation over all calls: no call finds the last one's set in cache
    names = list(impls)
    order = random.Random(0)
    for r in range(repeats):
        # A call inherits its predecessor's state (torch's OpenMP threads spin
        # for a while after a call and share the cores), so the order is drawn
        # anew each round: a fixed cyclic order would give every
        # implementation the same predecessor in every round.
        order.shuffle(names)
        for name in names:
            call, timer = impls[name]
            if name in failed:
                continue
            k = calls % nsets
            calls += 1
            try:
                times[name].append(timer.measure(lambda: call(k)))
            except Exception as err:  # a broken peer must not end the run
                failed[name] = err
    return {name: failed.get(name) or Timing(times[name]) for name in impls}
