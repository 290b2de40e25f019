"""Numba's threading layers side by side: fastopt's CPU speed under each.

    python benchmarks/threading_layers.py [--layers omp,tbb] [--rounds 3]
        [--optimizers adam,sgd] [--sizes 1e5,1e6,1e7] [--threads 2] [--out FILE]

The layer is fixed per process, so each round runs ``python -m fastopt.bench``
once per layer in fresh processes (NUMBA_THREADING_LAYER set), alternating
which layer goes first, and keeps fastopt's and the floor kernel's median and
fastest call. Printed per (optimizer, size, statistic): the median over rounds
of each layer's figure, the ratio to the first layer, and the range of that
ratio over the rounds (a difference inside it is noise). The fastest call is
the figure for a quiet machine; the median shows what sharing the cores
costs. The JSON keeps every run's figures.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def _run(layer, args):
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "fastopt.bench", "--optimizers", args.optimizers,
               "--sizes", args.sizes, "--threads", str(args.threads), "--peers", "none",
               "--no-overhead", "--cold-start", "none", "--no-progress", "--out", out]
        env = {**os.environ, "NUMBA_THREADING_LAYER": layer}
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "fastopt-bench-cpu.json")) as f:
            report = json.load(f)
    got = report["meta"]["numba_threading_layer"]
    if got != layer:
        raise SystemExit(f"asked for the {layer} layer, the run used {got}")
    return {f"{r['optimizer']} {r['size']:.0e} {r['impl']} {stat}": r[f"{stat}_s"]
            for r in report["results"] if r["status"] == "ok" for stat in ("median", "min")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="omp,tbb")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--optimizers", default="adam,sgd")
    parser.add_argument("--sizes", default="1e5,1e6,1e7")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    layers = args.layers.split(",")
    runs = {layer: [] for layer in layers}
    for r in range(args.rounds):
        order = layers if r % 2 == 0 else layers[::-1]
        for layer in order:
            runs[layer].append(_run(layer, args))
            print(f"round {r + 1}/{args.rounds}: {layer} done", file=sys.stderr)
    base = layers[0]
    print(f"{args.threads} threads, {args.rounds} rounds, medians over rounds of "
          "each run's median or fastest call; ratio to", base)
    print("| case | " + " | ".join(layers) + " | ratio range |")
    print("|---|" + "---|" * (len(layers) + 1))
    for case in runs[base][0]:
        times = {layer: [run[case] for run in runs[layer]] for layer in layers}
        med = {layer: statistics.median(t) for layer, t in times.items()}
        cells = [f"{med[base] * 1e3:.3f} ms"] + [
            f"{med[layer] * 1e3:.3f} ms ({med[layer] / med[base]:.3f}x)"
            for layer in layers[1:]]
        spread = [t / b for layer in layers[1:]
                  for t, b in zip(times[layer], times[base])]
        print(f"| {case} | " + " | ".join(cells)
              + f" | {min(spread):.2f}-{max(spread):.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
