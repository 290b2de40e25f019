"""The measurement loop: every implementation of every case, same run."""
import datetime
import functools
import gc
import os
import platform
import sys

import numpy as np

from . import floor, peers_numpy, peers_torch
from .cases import CASES, DEFAULT_OPTIMIZERS
from .overhead import cold_start as measure_cold_start
from .overhead import accelerator_savings, dispatch_overhead, fastopt_step
from .progress import Progress
from .timing import (HostClock, cpu_llc_bytes, make_host_sets, num_sets,
                     time_interleaved, warm_up)

PEERS = {"cpu": ("numpy", "torch"), "cuda": ("torch", "cupy", "optax")}
TORCH_MODES = tuple(peers_torch.MODES)
QUIET_LOAD = 0.5        # 1-minute load average per core below which we call it quiet


def _implementations(device, peers):
    """Names of the implementations to time, fastopt and its floor first."""
    names = ["fastopt", "floor"]
    if "numpy" in peers and device == "cpu":
        names.append("numpy")
    if "torch" in peers:
        names.extend(TORCH_MODES)
    if device == "cuda":
        names.extend(p for p in ("cupy", "optax") if p in peers)
    return names


def _unavailable(impl, name, case, device, dtype=None):
    """Why `impl` cannot run `case` on `dtype` arrays here, or None."""
    from . import peers_gpu
    if (case.master or case.sr) and impl not in ("fastopt", "floor", "rule"):
        return (f"{impl} has no {'fp32 master weights' if case.master else 'stochastic rounding'}"
                " (compared with the floor alone)")
    if case.master and device != "cpu":
        return "the master-weight floor is a CPU kernel"
    if impl == "numpy" and dtype is not None and dtype.itemsize == 2:
        return "NumPy computes in the arrays' 16-bit dtype (no float32 math)"
    if impl.startswith("torch"):
        if not peers_torch.available():
            return "torch is not installed"
        return peers_torch.supports(case, impl, device)
    if impl == "cupy":
        if not peers_gpu.cupy_available():
            return "cupy is not installed"
        return peers_gpu.cupy_supports(name)
    if impl == "optax":
        if not peers_gpu.optax_available():
            return "jax/optax are not installed"
        return peers_gpu.optax_supports(name)
    return None


def _make_call(impl, name, case, sets, device, rule=None):
    """``(call(k), timer or None)`` for one implementation on the buffer sets."""
    if impl == "rule":   # a user's rule (`fastopt.rule`) on the case's arrays
        steps = [10] * len(sets)
        bound = [rule_step(rule, case, arrays) for arrays in sets]

        def call(k):
            steps[k] += 1
            bound[k](step=steps[k])
        return call, None
    if impl == "fastopt":
        steps = [10] * len(sets)
        bound = [fastopt_step(case, arrays) for arrays in sets]

        def call(k):
            steps[k] += 1
            bound[k](step=steps[k])
        return call, None
    if impl == "floor":
        return (floor.make_cpu if device == "cpu" else floor.make_gpu)(case, sets), None
    if impl == "numpy":
        return peers_numpy.make(case, sets), None
    if impl.startswith("torch"):
        call = peers_torch.make(case, sets, impl)
        if device == "cuda":
            from .gpu import TorchEventTimer
            return call, TorchEventTimer()
        return call, None
    from . import peers_gpu
    if impl == "cupy":
        return peers_gpu.make_cupy(name, case, sets), None
    if impl == "optax":
        from .gpu import SyncTimer
        call, block = peers_gpu.make_optax(name, case, sets)
        return call, SyncTimer(block)
    raise KeyError(impl)


def _default_timer(device):
    if device == "cpu":
        return HostClock()
    from .gpu import EventTimer
    return EventTimer()


def _time(call, timer, nsets, warmup, repeats, device):
    """Time one implementation alone (the copy measurement)."""
    timer = timer or _default_timer(device)
    warm_up(call, nsets, warmup, timer)
    return time_interleaved({"call": (call, timer)}, nsets, repeats)["call"]


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions():
    import numba
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "numba": numba.__version__}
    for mod in ("fastopt", "torch", "cupy", "jax", "optax", "numba_cuda"):
        if mod in sys.modules or mod == "fastopt":
            __import__(mod)
            out[mod] = getattr(sys.modules[mod], "__version__", None)
    return out


def _load():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _resolve_device(device):
    from .gpu import gpu_available, require_gpu
    if device == "auto":
        device = "cuda" if gpu_available() else "cpu"
    if device == "cuda":
        return device, require_gpu()
    if device != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    return device, None


def rule_step(rule, case, arrays):
    """``step(step=t)``: a user's rule (the function `fastopt.rule` made)
    called as `case`'s functional call is: its state arrays are the case's
    slots in order, its hyperparameters the case's of the same names."""
    names = {h.name for h in rule.spec.hypers}
    if len(rule.spec.slots) != len(case.slots):
        raise ValueError(f"rule {rule.spec.name} keeps {len(rule.spec.slots)} state "
                         f"arrays, the case {len(case.slots)}: bench it with a case "
                         "whose slots it updates")
    return functools.partial(rule, arrays["param"], arrays["grad"],
                             *[arrays[s] for s in case.slots], convention=case.convention,
                             **{k: v for k, v in case.kwargs.items() if k in names})


def load_rule(text):
    """The rule named by ``"path/to/file.py:name"`` or ``"module:name"``."""
    import importlib
    import importlib.util

    where, _, attr = text.rpartition(":")
    if not where or not attr:
        raise ValueError(f"--rule takes FILE.py:NAME or MODULE:NAME, got {text!r}")
    if where.endswith(".py"):
        spec = importlib.util.spec_from_file_location(
            os.path.splitext(os.path.basename(where))[0], where)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    rule = getattr(module, attr)
    if not hasattr(rule, "kernel_rule"):
        raise ValueError(f"{text} is not a rule made by fastopt.rule")
    return rule


def run(optimizers=DEFAULT_OPTIMIZERS, sizes=(1_000_000, 10_000_000),
        dtypes=("float32",), device="cpu", peers=None, threads=None, repeats=10,
        warmup=2, cold_start=("adam",), overhead=True, progress=True, rule=None):
    """Time every implementation of every (optimizer, dtype, size); return the report.

    optimizers: keys of `cases.CASES`; sizes: element counts; dtypes: float32
    and/or float64; device: "cpu", "cuda" or "auto"; peers: which peers to
    try (None: all of the device's, each used when installed); threads: CPU
    threads for every implementation (None: all cores); cold_start: the
    optimizers whose first step is timed in fresh processes (() skips it);
    overhead: time the dispatch overhead on 1,000 elements (CPU only);
    rule: a user's rule (`fastopt.rule`), timed as implementation "rule" on
    every case's arrays, interleaved with the built-in (`rule_step`).
    """
    _check_optimizers(optimizers)
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    dtypes = [_dtype(d) for d in dtypes]
    if any(d.name not in ("float32", "float64", "bfloat16", "float16") for d in dtypes):
        raise ValueError("dtypes must be float32, float64, bfloat16 or float16, "
                         f"got {dtypes}")
    sizes = [int(s) for s in sizes]
    if any(s < 1 for s in sizes):
        raise ValueError(f"sizes must be positive, got {sizes}")
    device, gpu_info = _resolve_device(device)
    peers = PEERS[device] if peers is None else tuple(peers)
    bad = [p for p in peers if p not in PEERS["cpu"] + PEERS["cuda"]]
    if bad:
        raise ValueError(f"unknown peers {bad}")
    threads = _set_threads(threads)
    load_before = _load()
    llc = cpu_llc_bytes() if device == "cpu" else _gpu_l2()
    impls = _implementations(device, peers)
    if rule is not None:
        impls.insert(1, "rule")
    plan = [(d, n, o, i) for d in dtypes for n in sizes for o in optimizers
            for i in impls]
    bar = Progress(len(plan) + len(dtypes) * len(sizes), enabled=progress)
    results, copies = [], []
    for dtype in dtypes:
        for n in sizes:
            bar.describe(f"copy {dtype.name} n={n:.0e}")
            copies.append(_measure_copy(n, dtype, llc, device, warmup, repeats))
            bar.advance()
            for name in optimizers:
                case = CASES[name]
                nbytes = case.bytes_per_element(dtype.itemsize) * n
                why = case.runs_in(dtype.name)
                if why:     # e.g. master weights in a float32 run
                    results.extend({"optimizer": name, "dtype": dtype.name, "size": n,
                                    "impl": impl, "bytes_per_element": nbytes // n,
                                    "status": "unavailable", "note": why}
                                   for impl in impls)
                    bar.advance(len(impls))
                    continue
                nsets = num_sets(nbytes, llc)
                if device == "cuda":
                    from .gpu import make_device_sets
                    sets = make_device_sets(case, n, dtype, nsets)
                else:
                    sets = make_host_sets(case, n, dtype, nsets)
                rows, prepared = {}, {}
                for impl in impls:
                    bar.describe(f"{name} {dtype.name} n={n:.0e} {impl}")
                    row = rows[impl] = {
                        "optimizer": name, "dtype": dtype.name, "size": n,
                        "impl": impl, "bytes_per_element": nbytes // n,
                        "buffer_sets": nsets}
                    why = _unavailable(impl, name, case, device, dtype)
                    if why:
                        row.update(status="unavailable", note=why)
                        continue
                    try:
                        call, timer = _make_call(impl, name, case, sets, device, rule)
                        timer = timer or _default_timer(device)
                        warm_up(call, nsets, warmup, timer)
                        prepared[impl] = (call, timer)
                    except Exception as err:  # a broken peer must not end the run
                        if impl in ("fastopt", "floor", "rule"):
                            raise
                        row.update(status="error", note=f"{type(err).__name__}: {err}")
                bar.describe(f"{name} {dtype.name} n={n:.0e} timing")
                for impl, timing in time_interleaved(prepared, nsets, repeats).items():
                    if isinstance(timing, Exception):
                        if impl in ("fastopt", "floor", "rule"):
                            raise timing
                        rows[impl].update(status="error",
                                          note=f"{type(timing).__name__}: {timing}")
                    else:
                        rows[impl].update(status="ok", **timing.as_dict(nbytes))
                results.extend(rows.values())
                bar.advance(len(impls))
                del prepared
                del sets
                gc.collect()
    bar.close()

    report = {
        "schema": 1,
        "meta": _meta(device, gpu_info, threads, llc, repeats, warmup, load_before),
        "copy": copies,
        "results": results,
        "ratios": ratios(results),
    }
    if device == "cuda":   # the ceiling, in the same run: STREAM on >= 1 GiB buffers
        report["stream"] = [_measure_stream(kind, d, warmup, repeats)
                            for d in dtypes if d.name != "bfloat16"
                            for kind in ("copy", "triad")]
        add_stream_ratios(report)
    if overhead and device == "cpu":
        bar_items = [(o, d) for o in optimizers for d in dtypes]
        report["dispatch_overhead"] = [dispatch_overhead(o, d) for o, d in bar_items
                                       if not CASES[o].runs_in(d.name)]
        report["accelerators"] = accelerator_savings("adam", dtypes[0], repeats)
    if cold_start and device == "cpu":
        report["cold_start"] = measure_cold_start(list(cold_start), dtypes[0], threads)
    return report


def list_report(models, optimizers, dtype, device, threads=None, repeats=10,
                warmup=2, progress=True):
    """The many-tensor benchmark (`lists.run_lists`) with the run's metadata."""
    from ..bench_shapes import MODELS
    from .lists import run_lists
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown shape lists {unknown}; choose from {sorted(MODELS)}")
    _check_optimizers(optimizers)
    device, gpu_info = _resolve_device(device)
    threads = _set_threads(threads)
    llc = cpu_llc_bytes() if device == "cpu" else _gpu_l2()
    bar = Progress(len(models) * len(optimizers), enabled=progress)
    load_before = _load()
    rows, ratios = run_lists(models, optimizers, dtype, device, repeats, warmup, llc, bar)
    bar.close()
    return {"schema": 1, "kind": "lists",
            "meta": _meta(device, gpu_info, threads, llc, repeats, warmup, load_before),
            "results": rows, "ratios": ratios}


def keras_report(optimizers, threads=None, repeats=20, warmup=3):
    """The Keras model.fit benchmark (`keras_fit.run_keras_fit`) with the
    run's metadata."""
    from .keras_fit import run_keras_fit
    threads = _set_threads(threads)
    load_before = _load()
    rows, ratios = run_keras_fit(optimizers, repeats, warmup)
    return {"schema": 1, "kind": "keras",
            "meta": _meta("cpu", None, threads, cpu_llc_bytes(), repeats, warmup,
                          load_before),
            "results": rows, "ratios": ratios}


def _check_optimizers(optimizers):
    unknown = [o for o in optimizers if o not in CASES]
    if unknown:
        raise ValueError(f"unknown optimizers {unknown}; choose from {sorted(CASES)}")


def _set_threads(threads):
    """The same CPU thread count for Numba and torch (None: all cores)."""
    import numba
    threads = threads or numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(threads)
    if peers_torch.available():
        import torch
        torch.set_num_threads(threads)
    return threads


def _meta(device, gpu_info, threads, llc, repeats, warmup, load_before):
    """What a report says of its run: machine, versions, load, date."""
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "device": device, "gpu": gpu_info, "cpu_model": _cpu_model(),
        "cores": os.cpu_count(), "threads": threads,
        "numba_threading_layer": _threading_layer(),
        "last_level_cache_bytes": llc, "repeats": repeats, "warmup": warmup,
        "load_average_before": load_before, "load_average_after": _load(),
        "versions": _versions(), "argv": sys.argv,
    }
    loads = [x for x in (load_before, meta["load_average_after"]) if x]
    meta["quiet"] = bool(loads) and max(
        max(x[0], x[1]) for x in loads) < QUIET_LOAD * (os.cpu_count() or 1)
    return meta


def _threading_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:   # no parallel region has run yet
        return None


def _gpu_l2():
    from .gpu import l2_bytes
    return l2_bytes()


def _dtype(name):
    """A NumPy dtype by name; "bfloat16" is ml_dtypes'. 16-bit runs (params,
    grads and state all bfloat16 or float16, or a case's own layout,
    `Case.master`) use fastopt's 16-bit storage, float32 math."""
    if str(name) == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _measure_stream(kind, dtype, warmup, repeats):
    """STREAM's `kind` kernel (`kernels.stream`, GPU) on >= 1 GiB buffers."""
    from .gpu import make_stream
    call, n, moved = make_stream(kind, dtype)
    timing = _time(call, None, 1, warmup, repeats, "cuda")
    del call
    gc.collect()
    return {"kernel": kind, "dtype": dtype.name, "size": n,
            "bytes_per_element": moved // n, **timing.as_dict(moved)}


def add_stream_ratios(report):
    """Each ok fastopt row's effective bandwidth as a fraction of STREAM
    copy's in its dtype (``vs_stream_copy``), where STREAM was measured."""
    copy = {s["dtype"]: s["gbps"] for s in report.get("stream", ())
            if s["kernel"] == "copy"}
    for row in report["results"]:
        if row.get("impl") == "fastopt" and row.get("status") == "ok" \
                and row["dtype"] in copy:
            row["vs_stream_copy"] = row["gbps"] / copy[row["dtype"]]


def _measure_copy(n, dtype, llc, device, warmup, repeats):
    nbytes = 2 * dtype.itemsize * n
    nsets = num_sets(nbytes, llc)
    rng = np.random.default_rng(1)
    src = [rng.standard_normal(n).astype(dtype) for _ in range(nsets)]
    if device == "cpu":
        dst = [np.empty_like(s) for s in src]

        if dtype.itemsize == 2:     # Numba reads 16-bit arrays as uint16
            src = [a.view(np.uint16) for a in src]
            dst = [a.view(np.uint16) for a in dst]

        def call(k):
            floor.cpu_copy(dst[k], src[k])
        impl = "copy (numba prange)"
    else:
        from .gpu import make_copy, to_device_sets
        call = make_copy(to_device_sets([{"param": s} for s in src]))
        impl = "copy (device to device)"
    timing = _time(call, None, nsets, warmup, repeats, device)
    return {"dtype": dtype.name, "size": n, "impl": impl, "buffer_sets": nsets,
            "bytes_per_element": 2 * dtype.itemsize, **timing.as_dict(nbytes)}


def ratios(results):
    """Per (optimizer, dtype, size): fastopt against its floor and its peers.

    vs_floor = fastopt time / floor time (target <= 1.10); vs_torch = torch
    time / fastopt time, against torch's fused form where it has one, else
    its foreach form (target >= 1.0); speedup[impl] = impl time / fastopt time.
    """
    groups = {}
    for r in results:
        if r["status"] == "ok":
            groups.setdefault((r["optimizer"], r["dtype"], r["size"]), {})[
                r["impl"]] = r["median_s"]
    out = []
    for (name, dtype, n), t in groups.items():
        if "fastopt" not in t:
            continue
        mine = t["fastopt"]
        ref = next((m for m in ("torch-fused", "torch-foreach") if m in t), None)
        row = {"optimizer": name, "dtype": dtype, "size": n,
               "vs_floor": mine / t["floor"] if "floor" in t else None,
               "torch_reference": ref,
               "vs_torch": t[ref] / mine if ref else None,
               "speedup": {i: ti / mine for i, ti in t.items() if i != "fastopt"}}
        row["meets_floor_target"] = (row["vs_floor"] is not None
                                     and row["vs_floor"] <= 1.10)
        row["meets_torch_target"] = ref is not None and row["vs_torch"] >= 1.0
        out.append(row)
    return out
