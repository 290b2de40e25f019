"""Dispatch overhead and cold start of fastopt's CPU path.

Overhead: many `fastopt.functional` calls on a small array, minus the same
compiled kernel called directly with the arguments the dispatcher passed it
(captured once by a spy), is what checking and dispatching cost per call.
Because that difference inherits the kernel's own jitter (thread wake-ups on a
busy machine), the rest alone is timed too: the same calls with the kernel
left out (the fast path's jitted check still runs).

Cold start: fresh interpreters (``python -c _CHILD``, so that nothing of
fastopt is imported before the clock starts) time ``import fastopt`` and the
first step of each optimizer, once with an empty Numba cache and once with
that cache warm.
"""
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import fastopt.functional
from .. import _accel, _hostscan
from ..kernels import cpu
from .cases import CASES
from ..bench_shapes import MODELS
from .timing import draw_arrays, make_host_sets

OVERHEAD_N = 1000


def fastopt_call(case, arrays, step):
    """One `fastopt.functional` step of `case` on a buffer set."""
    fastopt_step(case, arrays)(step=step)


def fastopt_step(case, arrays):
    """``step(step=t)``: `case`'s `fastopt.functional` call on a buffer set,
    every argument but the step bound once, so that the timed call carries
    no more of the harness's own work than the floor kernel's call does."""
    fn = getattr(fastopt.functional, case.fastopt)
    states = {slot: arrays[slot] for slot in case.slots}
    if getattr(case, "master", False):
        states["model"] = arrays["model"]
    if getattr(case, "sr", False):
        states["stochastic_rounding"] = True
    return functools.partial(fn, arrays["param"], arrays["grad"], **states,
                             convention=case.convention, **case.kwargs)


def captured_kernel_call(case, arrays, step=2, then=None):
    """(variant, kernel, args) of the CPU kernel that one fastopt call runs.

    The common path checks and runs the kernel in one jitted call (the
    ``"single"`` accelerator, `fastopt._accel`), so the arguments are
    captured with it turned off, on the Python path, which passes the kernel
    the same ones. Both go through the pipeline's hook, `_accel.observe`.
    then(): called while the accelerator runs its check alone, without the
    kernel: what the call costs besides the kernel.
    """
    fastopt_call(case, arrays, step)          # builds the kernel and the plan
    seen = []

    def spy(kind, variant, fn):
        if kind == "single":
            return None
        if kind != "cpu":
            return fn

        def call(*args):
            seen.append((variant, fn, args))
            return fn(*args)
        return call

    def check_only(kind, variant, fn):
        if kind != "single" or fn is None:
            return fn
        return lambda ids, used, pre, hyper: _hostscan.check_one(ids, used)[0]

    with _accel.observe(spy):
        fastopt_call(case, arrays, step)
    if then is not None:
        with _accel.observe(check_only):
            then()
    if len(seen) != 1:
        raise RuntimeError(f"expected one CPU kernel call, saw {len(seen)}")
    return seen[0]


def _per_call(fn, calls, batches):
    best = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best.append((time.perf_counter() - t0) / calls)
    return float(np.median(best))


def dispatch_overhead(name, dtype, n=OVERHEAD_N, calls=2000, batches=7):
    """Per-call microseconds of fastopt, of its kernel alone, and the difference."""
    case = CASES[name]
    arrays = make_host_sets(case, n, dtype, 1)[0]
    python = []
    step = fastopt_step(case, arrays)
    variant, kern, args = captured_kernel_call(case, arrays, then=lambda: python.append(
        _per_call(lambda: step(step=5), calls, batches)))
    call_s = _per_call(lambda: step(step=5), calls, batches)
    kernel_s = _per_call(lambda: kern(*args), calls, batches)
    return {"optimizer": name, "dtype": np.dtype(dtype).name, "n": n,
            "variant": variant.key.rsplit("-", 1)[0],
            "call_us": call_s * 1e6, "kernel_us": kernel_s * 1e6,
            "overhead_us": (call_s - kernel_s) * 1e6, "python_us": python[0] * 1e6}


def _without_accelerators(kind, variant, fn):
    """`_accel.observe`'s observer that turns the accelerators off."""
    return None if kind in ("single", "many") else fn


ACCELERATED = (("single array", lambda: 1_000), ("single array", lambda: 1_000_000),
               ("list", lambda: MODELS["200x1000"]()), ("list", lambda: MODELS["resnet50"]()))


def accelerator_savings(name, dtype, rounds=15):
    """What the accelerators (`fastopt._accel`) save on one `fastopt.functional`
    step: the same step with them and without (the Python path), alternating,
    on single arrays of 1,000 and 1e6 elements and on lists (200 tensors of
    1,000 elements; ResNet-50's 161 tensors). Medians of per-step µs."""
    case, rows = CASES[name], []
    for form, shape in ACCELERATED:
        shape = shape()
        if form == "list":
            rng = np.random.default_rng(0)
            drawn = [draw_arrays(case, s, dtype, rng) for s in shape]
            arrays = {k: [d[k] for d in drawn] for k in drawn[0]}
            label = f"list of {len(shape)} tensors, {sum(map(np.prod, shape)):,} elements"
        else:
            arrays = make_host_sets(case, shape, dtype, 1)[0]
            label = f"single array, {shape:,} elements"
        step = fastopt_step(case, arrays)
        times = {"on": [], "off": []}
        for k in range(2 * rounds + 2):      # the first two warm both paths up
            mode = ("on", "off")[k % 2]
            with _accel.observe(None if mode == "on" else _without_accelerators):
                step(step=5)                 # after the switch: lookups rebuilt
                t0 = time.perf_counter()
                step(step=5)
                elapsed = time.perf_counter() - t0
            if k >= 2:
                times[mode].append(elapsed * 1e6)
        on, off = (float(np.median(times[m])) for m in ("on", "off"))
        rows.append({"optimizer": name, "dtype": np.dtype(dtype).name, "form": form,
                     "case": label, "with_us": on, "without_us": off,
                     "saved_pct": 100.0 * (off - on) / off})
    return rows


def cold_start(names, dtype, threads):
    """First-step seconds in fresh processes: empty Numba cache, then warm."""
    out = {"optimizers": list(names), "dtype": np.dtype(dtype).name}
    with tempfile.TemporaryDirectory(prefix="fastopt-bench-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS=str(threads))
        for label in ("cold_cache", "warm_cache"):
            cmd = [sys.executable, "-c", _CHILD, np.dtype(dtype).name, *names]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"cold-start subprocess failed:\n{proc.stderr}")
            out[label] = dict(json.loads(proc.stdout.strip().splitlines()[-1]),
                              process_s=wall)
    return out


_CHILD = """
import sys, time
t0 = time.perf_counter()
import fastopt.functional
import_s = time.perf_counter() - t0
from fastopt.bench.overhead import child
child(import_s, sys.argv[1], sys.argv[2:])
"""


def child(import_s, dtype, names):
    """In a fresh process: time each optimizer's first step; print JSON."""
    first = {}
    for name in names:
        case = CASES[name]
        arrays = make_host_sets(case, OVERHEAD_N, np.dtype(dtype), 1)[0]
        t0 = time.perf_counter()
        fastopt_call(case, arrays, 1)
        first[name] = time.perf_counter() - t0
    # The common path's jitted check-and-run functions, and the kernels the
    # Python path calls (loaded only if some call took it).
    kernels = list(cpu._kernels.values()) + list(cpu._serial.values()) + [
        run.func for plan in _accel.SINGLE.values() if plan[0] is not None for run in plan[0]]
    print(json.dumps({
        "import_s": import_s, "first_step_s": first,
        "cache_hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
        "cache_misses": sum(sum(k.stats.cache_misses.values()) for k in kernels)}))
