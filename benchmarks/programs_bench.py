"""Time of the program optimizers (Lamb, Adafactor, Muon) per step, CPU,
against the memory floor of the bytes each moves and against torch in the
same run (interleaved rounds, medians).

    PYTHONPATH=. python benchmarks/programs_bench.py [--n 1000] [--rounds 15]

The floor: bytes moved / the copy bandwidth measured in the same run
(`fastopt.bench.floor.cpu_copy` over a 64 MiB buffer, credited 2 x nbytes).
Bytes moved per step, float32, n elements (matrices R x C, R·C = n; the
row/column factors are O(R + C) and not counted):

* Lamb: pass 1 reads p, g, m, v and writes m, v; pass 2 reads p, m, v and
  writes p: 10 x 4n (fastopt.torch.Lamb with Apex's max_grad_norm: + the
  global norm's read of g, 11 x 4n; no torch peer is installed).
* Adafactor, torch convention: factor pass reads p, g; rms pass reads p, g;
  apply reads p, g and writes p: 7 x 4n.
* Adafactor, Keras convention: factor pass reads p, g; velocity pass reads
  p, g and writes v; apply reads p, g, v and writes p: 9 x 4n.
* Muon: pass 1 reads p, g, B and writes B and the scratch; apply reads p
  and the scratch and writes p: 8 x 4n, plus Newton-Schulz (matmuls,
  compute-bound: 5 x (2 + 2) matmuls of min(R,C)^2·max(R,C)-ish flops).
"""
import argparse
import statistics
import time

import numpy as np
import torch

import fastopt.torch
from fastopt import functional
from fastopt.bench.floor import cpu_copy


def _time(fn, reps=3):
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="matrix side (n x n params)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--only", default=None,
                    help="comma-separated name prefixes of the cases to run (the copy always "
                         "runs): e.g. adafactor")
    args = ap.parse_args()
    side = args.n
    rng = np.random.default_rng(0)
    src = np.ones(1 << 24, np.float32)
    dst = np.empty_like(src)
    n = side * side

    def param():
        return rng.standard_normal((side, side)).astype(np.float32)

    # Lamb (functional, Keras convention)
    p, g = param(), param()
    m, v = np.zeros_like(p), np.zeros_like(p)

    def lamb():
        functional.lamb(p, g, m, v, step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7)

    # Adafactor and Muon, torch front ends and torch.optim, on the same kind of params
    def torch_pair(cls, **kw):
        a = torch.nn.Parameter(torch.tensor(param()))
        b = torch.nn.Parameter(torch.tensor(param()))
        a.grad, b.grad = torch.tensor(param()), torch.tensor(param())
        return getattr(fastopt.torch, cls)([a], **kw).step, getattr(torch.optim, cls)([b], **kw).step

    ada_ours, ada_torch = torch_pair("Adafactor")
    lp = torch.nn.Parameter(torch.tensor(param()))
    lp.grad = torch.tensor(param())
    lamb_torch = fastopt.torch.Lamb([lp]).step     # Apex's defaults: max_grad_norm=1.0
    muon_ours, muon_torch = torch_pair("Muon")
    pk, gk = param(), param()
    rk, ck, vk = np.zeros(side, np.float32), np.zeros(side, np.float32), np.zeros_like(pk)

    def ada_keras():
        functional.adafactor(pk, gk, rk, ck, vk, step=3, lr=1e-3, eps1=1e-30, eps2=1e-3)

    cases = {"copy": lambda: cpu_copy(dst, src), "lamb": lamb, "lamb_torch_fastopt": lamb_torch,
             "adafactor_torch_fastopt": ada_ours, "adafactor_torch_optim": ada_torch,
             "adafactor_keras_fastopt": ada_keras,
             "muon_fastopt": muon_ours, "muon_torch_optim": muon_torch}
    if args.only:
        keep = tuple(args.only.split(","))
        cases = {k: f for k, f in cases.items() if k == "copy" or k.startswith(keep)}
    times = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            times[name].append(_time(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    bw = 2 * src.nbytes / med["copy"]
    floor = {"lamb": 40 * n, "lamb_torch_fastopt": 44 * n, "adafactor_torch_fastopt": 28 * n,
             "adafactor_keras_fastopt": 36 * n, "muon_fastopt": 32 * n}
    print(f"threads {torch.get_num_threads()}, copy {bw / 1e9:.1f} GB/s, params {side}x{side} float32")
    for name, t in med.items():
        extra = ""
        if name in floor:
            extra = f"  bytes {floor[name] / 1e6:.0f} MB  floor {floor[name] / bw * 1e3:.3f} ms  x{t / (floor[name] / bw):.2f}"
        print(f"{name:26s} {t * 1e3:8.3f} ms{extra}")


if __name__ == "__main__":
    main()
