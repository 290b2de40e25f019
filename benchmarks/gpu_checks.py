"""GPU checks that are programs, not tests: run under compute-sanitizer, and the
Adam kernel's SASS. Needs a real CUDA GPU and CuPy.

    compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 1 \\
        python benchmarks/gpu_checks.py sanitize
    python benchmarks/gpu_checks.py sass OUTDIR

`sanitize` runs every row of the optimizer table (3 steps, float32 and
float64, odd sizes that leave partial blocks, chunk edges and grid-stride
tails) through the single-array and the list kernels (lists of CuPy arrays
and of torch tensors on the same memory), requires them to agree bit for
bit, and runs the device norm reduction against NumPy. `sass` writes the
SASS of Adam's single-array and many-tensor kernels and prints their
registers, local memory and global load/store widths.
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


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "sanitize"
    if what == "sanitize":
        sanitize()
    elif what == "sass":
        sass(sys.argv[2] if len(sys.argv) > 2 else "sass")
    else:
        sys.exit(f"unknown check {what!r}: sanitize or sass")
