"""Time of the program optimizers (Lamb, Adafactor, Muon) per step on a CUDA
GPU (torch tensors), against the memory floor of the bytes each moves and
against torch.optim on the same GPU, in the same run (interleaved rounds,
medians). GPU only (benchmarks/gpu_session.sh, stage ``programs``).

    python benchmarks/programs_gpu_bench.py [--side 4096] [--rounds 15] [--out FILE]

The floor: bytes moved / the copy bandwidth measured in the same run (a
256 MiB ``Tensor.copy_``, credited 2 x nbytes). Bytes moved per step, one
side x side float32 param, n = side² elements (the CUDA passes,
`kernels.passes_cuda`; the row and column factors, O(R + C), not counted):

* Lamb: moments pass reads p, g, m, v, writes m, v; apply reads p, m, v,
  writes p: 10 x 4n.
* Adafactor, torch convention: factor launch reads p, g (and writes the
  column partials, 4n/16, which the column launch reads: + 2 x 4n/16); rms
  pass reads p, g; apply reads p, g, writes p: 7 x 4n + 4n/8.
* Adafactor, Keras convention: factor as torch's; velocity pass reads p, g,
  writes v; apply reads p, g, v, writes p: 9 x 4n + 4n/8.
* Muon: momentum pass reads p, g, B, writes B and the scratch; apply reads
  p and the scratch, writes p: 8 x 4n, plus Newton-Schulz (torch's bfloat16
  matmuls, compute-bound, as torch.optim.Muon's own).

Each pass with per-tensor sums copies them to the host (one synchronization
per such pass: Lamb 1, Adafactor 3, Muon 0), as the CPU path's host
arithmetic between passes needs them.
"""
import argparse
import json
import statistics
import time

import torch

import fastopt.torch
from fastopt import functional


def _time(fn, reps=5):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=4096, help="matrix side (side x side params)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=None, help="write the medians as JSON here")
    args = ap.parse_args()
    side, dev = args.side, "cuda"
    n = side * side
    src = torch.ones(1 << 26, device=dev)
    dst = torch.empty_like(src)

    def param():
        return torch.randn(side, side, device=dev)

    p, g = param(), param()
    m, v = torch.zeros_like(p), torch.zeros_like(p)

    def lamb():
        functional.lamb(p, g, m, v, step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7)

    def torch_pair(cls, **kw):
        a = torch.nn.Parameter(param())
        b = torch.nn.Parameter(param())
        a.grad, b.grad = param(), param()
        return (getattr(fastopt.torch, cls)([a], **kw).step,
                getattr(torch.optim, cls)([b], **kw).step)

    ada_ours, ada_torch = torch_pair("Adafactor")
    muon_ours, muon_torch = torch_pair("Muon")
    pk, gk = param(), param()
    rk, ck, vk = (torch.zeros(side, device=dev), torch.zeros(side, device=dev),
                  torch.zeros_like(pk))

    def ada_keras():
        functional.adafactor(pk, gk, rk, ck, vk, step=3, lr=1e-3, eps1=1e-30, eps2=1e-3)

    cases = {"copy": lambda: dst.copy_(src), "lamb_fastopt": lamb,
             "adafactor_torch_fastopt": ada_ours, "adafactor_torch_optim": ada_torch,
             "adafactor_keras_fastopt": ada_keras,
             "muon_fastopt": muon_ours, "muon_torch_optim": muon_torch}
    times = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            times[name].append(_time(fn))
    med = {k: statistics.median(t) for k, t in times.items()}
    bw = 2 * src.numel() * 4 / med["copy"]
    floor = {"lamb_fastopt": 40 * n, "adafactor_torch_fastopt": 28 * n + n // 2,
             "adafactor_keras_fastopt": 36 * n + n // 2, "muon_fastopt": 32 * n}
    print(f"{torch.cuda.get_device_name()}: copy {bw / 1e9:.0f} GB/s, params {side}x{side} "
          "float32, medians of", args.rounds, "rounds")
    rows = {}
    for name, t in med.items():
        row = {"ms": t * 1e3}
        extra = ""
        if name in floor:
            row.update(bytes=floor[name], floor_ms=floor[name] / bw * 1e3,
                       x_floor=t / (floor[name] / bw))
            extra = (f"  bytes {floor[name] / 1e6:.0f} MB  floor {row['floor_ms']:.3f} ms  "
                     f"x{row['x_floor']:.2f}")
        rows[name] = row
        print(f"{name:26s} {t * 1e3:8.3f} ms{extra}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "side": side,
                       "copy_GBps": bw / 1e9, "cases": rows}, f, indent=1)


if __name__ == "__main__":
    main()
