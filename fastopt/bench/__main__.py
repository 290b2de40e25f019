"""Command line: ``python -m fastopt.bench`` / ``fastopt-bench``.

Example::

    python -m fastopt.bench --optimizers adam,sgd_momentum --sizes 1e6,5e7 \\
        --dtype float32,float64 --device cpu --out bench-results
"""
import argparse
import sys

from .cases import CASES, DEFAULT_OPTIMIZERS


def _list(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def _sizes(text):
    try:
        return [int(float(t)) for t in _list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be numbers like 1e6, got {text!r}")


def parser():
    p = argparse.ArgumentParser(
        prog="python -m fastopt.bench",
        description="Time fastopt's fused optimizer updates against a memory-floor "
                    "kernel and the installed peers (NumPy, torch.optim, CuPy, optax).")
    p.add_argument("--optimizers", type=_list, default=list(DEFAULT_OPTIMIZERS),
                   help=f"comma-separated, from {', '.join(CASES)} "
                        f"(default: {','.join(DEFAULT_OPTIMIZERS)})")
    p.add_argument("--sizes", type=_sizes, default=[1_000_000, 10_000_000],
                   help="comma-separated element counts (default: 1e6,1e7)")
    p.add_argument("--dtype", type=_list, default=["float32"],
                   help="comma-separated from float32, float64, bfloat16, float16 (default: "
                        "float32); a 16-bit run also times the cases adam_master "
                        "(fp32 master weights) and adam_sr (bfloat16 only)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--peers", type=_list, default=None,
                   help="comma-separated from numpy, torch, cupy, optax; 'none' for "
                        "none (default: all the device's peers that are installed)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for every implementation (default: all cores)")
    p.add_argument("--repeats", type=int, default=10,
                   help="timed runs per measurement, median reported (default: 10)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cold-start", type=_list, default=["adam"],
                   help="optimizers whose first step is timed in fresh processes "
                        "(default: adam; 'none' to skip)")
    p.add_argument("--no-overhead", action="store_true",
                   help="skip the dispatch-overhead measurement")
    p.add_argument("--out", default="bench-results",
                   help="folder for the JSON and PNG (default: ./bench-results)")
    p.add_argument("--lists", type=_list, default=None,
                   help="instead of the size sweep, time whole-model steps over "
                        "these shape lists: gpt2-small, resnet50, 200x1000 "
                        "(list form vs one flat tensor vs torch, launches counted)")
    p.add_argument("--keras", type=_list, default=None, metavar="OPTIMIZERS",
                   help="instead of the size sweep, time the optimizer step inside "
                        "Keras 3's model.fit (torch backend, 150 variables): "
                        "fastopt.keras against keras.optimizers, for these Keras "
                        "classes, e.g. Adam,SGD")
    p.add_argument("--rule", default=None, metavar="FILE.py:NAME",
                   help="also time a rule declared with fastopt.rule (FILE.py:NAME or "
                        "MODULE:NAME) on each optimizer's arrays, interleaved with the "
                        "built-in: implementation 'rule' in the report (e.g. "
                        "examples/custom_rules.py:adam with --optimizers adam_keras)")
    p.add_argument("--clip", type=_list, default=None, metavar="COUNTS",
                   help="instead of the size sweep, time a global-norm clip over "
                        "COUNTS tensors (e.g. 2000) of --clip-size elements: "
                        "fastopt.clip_grad_norm_ against torch's (foreach and loop)")
    p.add_argument("--clip-size", type=int, default=100)
    p.add_argument("--sparse-adam", default=None, metavar="ROWSxWIDTH",
                   help="instead of the size sweep, time a SparseAdam step on an "
                        "embedding table of this shape (e.g. 200000x64) from a sparse "
                        "gradient of --sparse-rows lookups, against torch.optim.SparseAdam")
    p.add_argument("--sparse-rows", type=int, default=4096)
    p.add_argument("--host-cost", action="store_true",
                   help="instead of the size sweep, time the Python side of a GPU step "
                        "(single arrays and a 150-tensor list); with --device cpu the "
                        "driver call is recorded, not made (no GPU needed)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None):
    """Entry point of ``fastopt-bench``; returns the exit status."""
    from . import report as reporting
    from .gpu import NoGPU
    from .runner import run

    args = parser().parse_args(argv)
    if args.host_cost:
        from .host_cost import main as host_cost
        host_cost("cpu" if args.device == "cpu" else "cuda", repeats=args.repeats)
        return 0
    if args.lists is not None:
        return _main_lists(args)
    if args.keras is not None:
        return _main_keras(args)
    if args.clip is not None:
        return _main_clip(args)
    if args.sparse_adam is not None:
        return _main_sparse(args)
    peers = None if args.peers is None else [
        p for p in args.peers if p != "none"]
    cold = [o for o in args.cold_start if o != "none"]
    try:
        rule = None
        if args.rule is not None:
            from .runner import load_rule
            rule = load_rule(args.rule)
        report = run(rule=rule, optimizers=args.optimizers, sizes=args.sizes,
                     dtypes=args.dtype, device=args.device, peers=peers,
                     threads=args.threads, repeats=args.repeats,
                     warmup=args.warmup, cold_start=cold,
                     overhead=not args.no_overhead, progress=not args.no_progress)
    except (NoGPU, ValueError) as err:
        print(f"fastopt.bench: error: {err}", file=sys.stderr)
        return 2
    print(reporting.summary(report))
    json_path, png_path = reporting.save(
        report, args.out, f"fastopt-bench-{report['meta']['device']}")
    print(f"\nwrote {json_path}" + (f" and {png_path}" if png_path else
                                   " (no plot: matplotlib is not installed)"))
    return 0


def _main_lists(args):
    import os

    from . import report as reporting
    from .gpu import NoGPU
    from .runner import list_report

    try:
        report = list_report(args.lists, args.optimizers, args.dtype[0], args.device,
                             args.threads, args.repeats, args.warmup,
                             progress=not args.no_progress)
    except (NoGPU, ValueError) as err:
        print(f"fastopt.bench: error: {err}", file=sys.stderr)
        return 2
    from .lists import summary
    print(summary(report["results"], report["ratios"]))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"fastopt-bench-lists-{report['meta']['device']}.json")
    reporting.write_json(report, path)
    print(f"\nwrote {path}")
    return 0


def _main_keras(args):
    import os

    from . import report as reporting
    from .keras_fit import summary
    from .runner import keras_report

    try:
        report = keras_report(args.keras, args.threads, max(args.repeats, 20),
                              max(args.warmup, 3))
    except ValueError as err:
        print(f"fastopt.bench: error: {err}", file=sys.stderr)
        return 2
    print(summary(report["results"], report["ratios"]))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "fastopt-bench-keras-cpu.json")
    reporting.write_json(report, path)
    print(f"\nwrote {path}")
    return 0


def _main_clip(args):
    import os

    from . import report as reporting
    from .clip import run_clip, summary

    report = run_clip([int(float(c)) for c in args.clip], args.clip_size, args.dtype[0],
                      args.threads, max(args.repeats, 20), args.warmup)
    print(summary(report))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "fastopt-bench-clip-cpu.json")
    reporting.write_json(report, path)
    print(f"\nwrote {path}")
    return 0


def _main_sparse(args):
    import os

    from . import report as reporting
    from .sparse import run_sparse, summary

    try:
        table = tuple(int(float(t)) for t in args.sparse_adam.lower().split("x"))
        if len(table) != 2:
            raise ValueError
    except ValueError:
        print(f"fastopt.bench: error: --sparse-adam takes ROWSxWIDTH, got "
              f"{args.sparse_adam!r}", file=sys.stderr)
        return 2
    report = run_sparse(table, args.sparse_rows, args.dtype[0], args.threads,
                        max(args.repeats, 20), max(args.warmup, 3))
    print(summary(report))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "fastopt-bench-sparse-adam-cpu.json")
    reporting.write_json(report, path)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
