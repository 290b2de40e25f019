"""GPU checks that are programs, not tests: run under compute-sanitizer, and the
Adam kernel's SASS. Needs a real CUDA GPU and CuPy.

    compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 1 \\
        python benchmarks/gpu_checks.py sanitize
    python benchmarks/gpu_checks.py sass OUTDIR
    python benchmarks/gpu_checks.py launcher
    python benchmarks/gpu_checks.py capture
    compute-sanitizer --tool memcheck ... python benchmarks/gpu_checks.py programs

`sanitize` runs every row of the optimizer table (3 steps, float32 and
float64, odd sizes that leave partial blocks, chunk edges and grid-stride
tails) through the single-array and the list kernels (lists of CuPy arrays
and of torch tensors on the same memory), requires them to agree bit for
bit, and runs the device norm reduction against NumPy. `sass` writes the
SASS of Adam's single-array and many-tensor kernels and prints their
registers, local memory and global load/store widths. `launcher` compares
the packed driver launcher with Numba's launch bit for bit on every case;
`capture` replays a captured 148-tensor list step against eager steps, and
runs capturable Adam under GradScaler with no host synchronisation.
`programs` runs the program optimizers (Lamb, Adafactor and Muon in both
conventions: tests/test_programs_cuda.py's cases, 3 steps, float32
and float64) on CuPy arrays, torch CUDA tensors and Numba device arrays,
over params past a chunk (65,536 elements) and of many tiles, against the
CPU path.
"""
import collections
import pathlib
import re
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SIZES = (0, 1, 65_537, 3, 300_007)   # partial blocks, chunk edges, grid-stride tails
STEPS = 3


def _torch_views(arrays):
    """Zero-copy torch CUDA tensors of CuPy arrays: the list path that reads
    torch tensors in bulk, on the same memory."""
    import torch
    return [torch.as_tensor(a, device="cuda") for a in arrays]


# How the list kernels are called: CuPy lists (each array described), torch
# lists (read in bulk), both checked against one call per array.
FORMS = {"single": None, "list": list, "torch-list": _torch_views}


def _compare(label, got, want, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
    err = float(np.abs(got - want).max(initial=0.0)) / scale
    if not err <= tol:
        raise AssertionError(f"{label}: GPU differs from CPU by {err:.3g}")


def sanitize():
    import cupy
    from optimizer_table import CASES, fastopt_step, make_state

    from fastopt.kernels import norms
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for case in CASES:
            host = [rng.standard_normal(n).astype(dtype) for n in SIZES]
            grads = [[cupy.asarray(rng.standard_normal(n).astype(dtype)) for n in SIZES]
                     for _ in range(STEPS)]
            states = [make_state(case, (n,), dtype) for n in SIZES]
            runs = {}
            for form in FORMS:
                params = [cupy.asarray(h) for h in host]
                state = {k: [cupy.asarray(s[k]) for s in states] for k in states[0]}
                for step, g in enumerate(grads, start=1):
                    if form == "single":
                        for t in range(len(SIZES)):
                            fastopt_step(case, params[t], g[t],
                                         {k: v[t] for k, v in state.items()}, step)
                        continue
                    as_form = FORMS[form]
                    fastopt_step(case, as_form(params), as_form(g),
                                 {k: as_form(v) for k, v in state.items()}, step)
                runs[form] = {"param": params, **state}
            cupy.cuda.Device().synchronize()
            for form in list(FORMS)[1:]:
                for name, single in runs["single"].items():
                    for t, (x, y) in enumerate(zip(single, runs[form][name])):
                        x, y = cupy.asnumpy(x), cupy.asnumpy(y)
                        if not (np.array_equal(x, y, equal_nan=True)
                                and np.isfinite(x).all()):
                            raise AssertionError(f"{case.id} {name}[{t}]: {form} form "
                                                 "differs from single calls or is not finite")
            print(f"ok {np.dtype(dtype).name} {case.id}", flush=True)
        arrays = [cupy.asarray(rng.standard_normal(n).astype(dtype)) for n in SIZES]
        got = norms.sum_squares_device(arrays)
        want = [np.dot(cupy.asnumpy(a).astype(np.float64), cupy.asnumpy(a)) for a in arrays]
        _compare(f"norms {np.dtype(dtype).name}", got, np.array(want), np.float32)
        print(f"ok {np.dtype(dtype).name} norms", flush=True)
    print("sanitize: every case ran; both list forms equal single calls")


def _sass_summary(sass):
    widths = collections.Counter()
    for op in re.findall(r"\b(LDG|STG)(\.[A-Z0-9.]+)?", sass):
        widths["".join(op)] += 1
    return dict(widths), ("LDL" in sass or "STL" in sass)


def sass(outdir):
    import cupy

    import fastopt.functional as F
    from fastopt.kernels import cuda as single, multi_cuda
    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for dtype in (np.float32, np.float64):
        p = [cupy.ones(1000, dtype) for _ in range(2)]
        g = [cupy.ones(1000, dtype) for _ in range(2)]
        m = [cupy.zeros(1000, dtype) for _ in range(2)]
        v = [cupy.zeros(1000, dtype) for _ in range(2)]
        kw = dict(step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, convention="torch")
        F.adam(p[0], g[0], m[0], v[0], **kw)
        F.adam(p, g, m, v, **kw)
    kernels = [("single", w, k) for w, k in single._kernels.items()]
    kernels += [("multi", w, k) for w, k in multi_cuda._kernels.items()]
    for label, which, kern in kernels:
        for args, compiled in kern.overloads.items():
            dtype = next(str(t.dtype) for t in args
                         if "float" in str(getattr(t, "dtype", "")))
            name = f"{'-'.join(which.key.split('-')[:4])}-{label}-{dtype}"
            text = compiled.inspect_sass()
            (out / f"{name}.sass").write_text(text)
            widths, local = _sass_summary(text)
            print(f"{name}: registers {compiled.regs_per_thread}, "
                  f"local bytes {compiled.local_mem_per_thread}, "
                  f"LDL/STL {'yes' if local else 'none'}, global ops {widths}",
                  flush=True)


def launcher():
    """The packed driver launcher (`kernels.launch`) against Numba's own,
    bit for bit: every row of the optimizer table, single arrays and a CuPy
    list, 3 steps, float32 and float64."""
    import cupy
    from optimizer_table import CASES, fastopt_step, make_state

    from fastopt import _repeat
    from fastopt.kernels import launch
    rng = np.random.default_rng(1)
    driver = launch.backend()
    assert driver is not None and driver.name == "driver", driver
    for dtype in (np.float32, np.float64):
        for case in CASES:
            host = [rng.standard_normal(n).astype(dtype) for n in SIZES]
            grads = [[rng.standard_normal(n).astype(dtype) for n in SIZES]
                     for _ in range(STEPS)]
            states = [make_state(case, (n,), dtype) for n in SIZES]
            runs = []
            for backend in (None, driver):
                launch.use(backend)
                _repeat.clear()
                params = [cupy.asarray(h) for h in host]
                state = {k: [cupy.asarray(s[k]) for s in states] for k in states[0]}
                lists = [[cupy.asarray(h) for h in host],
                         {k: [cupy.asarray(s[k]) for s in states] for k in states[0]}]
                for step, g in enumerate(grads, start=1):
                    g = [cupy.asarray(x) for x in g]
                    for t in range(len(SIZES)):
                        fastopt_step(case, params[t], g[t],
                                     {k: v[t] for k, v in state.items()}, step)
                    fastopt_step(case, lists[0], g, lists[1], step)
                cupy.cuda.Device().synchronize()
                runs.append([cupy.asnumpy(a) for a in params + lists[0]]
                            + [cupy.asnumpy(a) for v in state.values() for a in v])
            for x, y in zip(*runs):
                if not np.array_equal(x, y, equal_nan=True):
                    raise AssertionError(f"{case.id}: driver launcher differs from Numba's")
            print(f"ok {np.dtype(dtype).name} {case.id}", flush=True)
    launch.use(driver)
    print("launcher: the driver launcher equals Numba's launch on every case")


def capture(tensors=148):
    """A whole list step captured with torch.cuda.graph and replayed, equal
    to eager steps bit for bit: SGD with momentum (its scalars do not change
    after the first step; step-dependent scalars in device memory, the
    capturable form, are not built yet), on `tensors` torch tensors."""
    import torch

    import fastopt.functional as F
    rng = np.random.default_rng(2)
    sizes = [int(n) for n in rng.integers(1, 70_000, tensors)]
    kw = dict(lr=0.01, momentum=0.9, convention="torch")

    def model():
        torch.manual_seed(0)
        return ([torch.randn(n, device="cuda") for n in sizes],
                [torch.zeros(n, device="cuda") for n in sizes],
                [torch.zeros(n, device="cuda") for n in sizes])

    feed = [[torch.randn(n, device="cuda") for n in sizes] for _ in range(6)]
    eager, graphed = model(), model()
    for p, g, m in (eager, graphed):     # step 1 (the first, special step) and step 2
        for k, step in ((0, 1), (1, 2)):
            for dst, src in zip(g, feed[k]):
                dst.copy_(src)
            F.sgd(p, g, m, step=step, **kw)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    p, g, m = graphed
    with torch.cuda.graph(graph):
        F.sgd(p, g, m, step=3, **kw)
    for k in range(2, 6):
        for dst, src in zip(graphed[1], feed[k]):
            dst.copy_(src)
        graph.replay()
        for dst, src in zip(eager[1], feed[k]):
            dst.copy_(src)
        F.sgd(*eager, step=k + 1, **kw)
    torch.cuda.synchronize()
    for name, a, b in zip(("param", "grad", "momentum_buffer"), eager, graphed):
        for t, (x, y) in enumerate(zip(a, b)):
            if not torch.equal(x, y):
                raise AssertionError(f"{name}[{t}]: replayed graph differs from eager steps")
    print(f"capture: a {tensors}-tensor SGD-momentum step captured and replayed 4 times, "
          "equal to eager")


def capture_adam(tensors=148):
    """fastopt.torch.Adam(capturable=True, lr as a tensor): a whole step
    captured with torch.cuda.graph and replayed, equal to eager capturable
    steps bit for bit, and the counts advanced by the replays; then against
    torch.optim.Adam (non-capturable) within float32 rounding."""
    import torch

    import fastopt.torch as FT
    rng = np.random.default_rng(3)
    sizes = [int(n) for n in rng.integers(1, 70_000, tensors)]

    def model():
        torch.manual_seed(0)
        return [torch.randn(n, device="cuda", requires_grad=True) for n in sizes]

    feed = [[torch.randn(n, device="cuda") for n in sizes] for _ in range(8)]
    eager, graphed, ref = model(), model(), model()
    lr = torch.tensor(1e-3, device="cuda")
    opts = [FT.Adam(eager, lr=lr, capturable=True, weight_decay=0.01),
            FT.Adam(graphed, lr=lr.clone(), capturable=True, weight_decay=0.01)]
    oracle = torch.optim.Adam(ref, lr=1e-3, weight_decay=0.01)
    for k in range(2):     # warm-up steps (state made, tables built) on both
        for params, opt in zip((eager, graphed), opts):
            for p, g in zip(params, feed[k]):
                p.grad = g.clone()
            opt.step()
        for p, g in zip(ref, feed[k]):
            p.grad = g.clone()
        oracle.step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        with torch.cuda.graph(graph):
            opts[1].step()
    torch.cuda.current_stream().wait_stream(s)
    for k in range(2, 8):
        for ps in (eager, graphed, ref):
            for p, g in zip(ps, feed[k]):
                p.grad.copy_(g)
        graph.replay()
        opts[0].step()
        oracle.step()
    torch.cuda.synchronize()
    for t, (x, y) in enumerate(zip(eager, graphed)):
        if not torch.equal(x, y):
            raise AssertionError(f"param[{t}]: replayed capturable Adam differs from eager")
    steps = {float(opts[1].state[p]["step"]) for p in graphed}
    if steps != {8.0}:
        raise AssertionError(f"replayed steps counted {steps}, expected 8")
    worst = max(float((x - y).abs().max()) for x, y in zip(eager, ref))
    if worst > 1e-5:
        raise AssertionError(f"capturable Adam differs from torch.optim.Adam by {worst}")
    print(f"capture: a {tensors}-tensor capturable Adam step captured and replayed 6 "
          f"times, equal to eager; counts 8; torch.optim.Adam within {worst:.1e}")


def capture_amp(tensors=40, steps=12):
    """fastopt.torch.Adam(capturable=True) under torch.amp.GradScaler on
    CUDA, with injected infs: no host synchronisation in the step
    (``torch.cuda.set_sync_debug_mode("error")`` around ``scaler.step``: the
    kernel reads found_inf and the scale), and against torch's fused
    capturable Adam under the same scaler: the same skipped steps, scales
    and counts, the gradients it leaves (unscaled; a skipped step's as they
    were) bit for bit, params within float32 rounding."""
    import torch

    import fastopt.torch as FT
    rng = np.random.default_rng(4)
    sizes = [int(n) for n in rng.integers(1, 70_000, tensors)]

    def run(make, watch):
        torch.manual_seed(0)
        params = [torch.randn(n, device="cuda", requires_grad=True) for n in sizes]
        opt = make(params)
        scaler = torch.amp.GradScaler("cuda", init_scale=1000.0, growth_interval=3)
        gen = torch.Generator(device="cuda").manual_seed(1)
        trace = []
        for k in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, device="cuda", generator=gen) * scaler.get_scale()
            if k % 5 == 2:
                params[k % tensors].grad[0] = float("inf")
            if watch and k >= 2:    # state made: the step must not synchronise
                torch.cuda.set_sync_debug_mode("error")
            try:
                scaler.step(opt)
            finally:
                torch.cuda.set_sync_debug_mode(0)
            trace.append((scaler.get_scale(), [p.grad.clone() for p in params]))
            scaler.update()
        counts = {float(opt.state[p]["step"]) for p in params}
        return params, trace, counts

    kw = dict(lr=1e-3, weight_decay=0.01, capturable=True)
    ref, ref_trace, ref_counts = run(lambda ps: torch.optim.Adam(ps, fused=True, **kw), False)
    got, got_trace, got_counts = run(lambda ps: FT.Adam(ps, **kw), True)
    if got_counts != ref_counts:
        raise AssertionError(f"counts {got_counts}, torch fused {ref_counts}")
    for k, ((s1, g1), (s2, g2)) in enumerate(zip(ref_trace, got_trace)):
        if s1 != s2:
            raise AssertionError(f"step {k}: scale {s2}, torch fused {s1}")
        for t, (x, y) in enumerate(zip(g1, g2)):
            if not torch.equal(x, y):
                raise AssertionError(f"step {k}: grad[{t}] differs from torch fused's")
    worst = max(float((x - y).abs().max()) for x, y in zip(ref, got))
    if worst > 1e-5:
        raise AssertionError(f"params differ from torch fused capturable Adam by {worst}")
    print(f"capture amp: {tensors}-tensor capturable Adam under GradScaler, {steps} steps "
          f"(skipped ones included) without a host synchronisation; scales, counts "
          f"{sorted(got_counts)} and grads equal to torch fused; params within {worst:.1e}")


def programs():
    """`kernels.passes_cuda` on a GPU against the CPU path (see the module
    docstring). Muon on torch tensors runs Newton-Schulz in bfloat16 (cuBLAS
    on the GPU, NumPy in the dtype on the host side of the comparison):
    compared to 5% of the step (lr 0.02); on CuPy and Numba arrays (CuPy's
    matmul in the dtype), to 1e-4."""
    import cupy
    import torch
    from numba import cuda
    from test_programs_cuda import CASES, TOL, _run, assert_close

    shapes = [(1,), (70_001,), (257, 129), (40, 1), (3, 2000), (2, 3, 33, 17), (0, 5)]
    matrices = [(1, 1), (257, 129), (129, 257), (64, 64)]
    puts = {"cupy": cupy.asarray, "numba": cuda.to_device,
            "torch": lambda a: torch.tensor(a, device="cuda")}
    for case, (name, convention, *_) in CASES.items():
        case_shapes = shapes
        if name == "muon":    # Keras's: vectors and stacks take its AdamW step
            case_shapes = matrices + ([(70_001,), (2, 3, 33, 17)] if convention == "keras"
                                      else [])
        for dtype in (np.float32, np.float64):
            for form, put in puts.items():
                tol = TOL[dtype]
                if name == "muon":
                    tol = 0.02 * 0.05 if form == "torch" else 1e-4
                assert_close(*_run(case, dtype, True, steps=STEPS,
                                   shapes=case_shapes, put=put),
                             tol)
                print(f"programs {case} {np.dtype(dtype).name} {form}: ok", flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "sanitize"
    if what == "sanitize":
        sanitize()
    elif what == "sass":
        sass(sys.argv[2] if len(sys.argv) > 2 else "sass")
    elif what == "launcher":
        launcher()
    elif what == "capture":
        capture()
        capture_adam()
        capture_amp()
    elif what == "programs":
        programs()
    else:
        sys.exit(f"unknown check {what!r}: sanitize, sass, launcher, capture or programs")
