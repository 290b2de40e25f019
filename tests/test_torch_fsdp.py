"""fastopt.torch on DTensor params: FSDP2 (fully_shard) and distribute_tensor.

Two spawn launches of 2 ranks (gloo on 127.0.0.1, a free port, bounded in
time, killed on overrun); what each rank checks is in `torch_fsdp_worker`.
The first trains and checkpoints; the second, in fresh processes, resumes
from the checkpoints (DCP). torch.optim is the oracle throughout.
"""
import json
import socket
import time

import pytest
import torch
import torch.distributed as dist

import torch_fsdp_worker as W

TIMEOUT_S = 300
TOL = {"float64": 1e-12, "float32": 1e-5}

pytestmark = [pytest.mark.slow,   # two processes start torch and Numba each
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                 reason="torch.distributed with gloo is not available")]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out_dir, phase):
    """`W.main` on W.WORLD spawned ranks; each rank's results."""
    import torch.multiprocessing as mp

    context = mp.start_processes(W.main, args=(W.WORLD, _free_port(), str(out_dir), phase),
                                 nprocs=W.WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"{phase}: the distributed run took over {TIMEOUT_S} s")
    finally:
        for proc in context.processes:
            if proc.is_alive():
                proc.kill()
                proc.join()
    ranks = []
    for rank in range(W.WORLD):
        with open(out_dir / f"results-{phase}{rank}.json") as f:
            ranks.append(json.load(f))
    return ranks


def test_fsdp2_and_distribute_tensor_match_torch_optim_and_resume_from_dcp(tmp_path):
    trained = _launch(tmp_path, "train")
    resumed = _launch(tmp_path, "resume")   # fresh processes
    for rank, (got, again) in enumerate(zip(trained, resumed)):
        print(f"rank {rank}: train {got['seconds']:.1f} s, resume {again['seconds']:.1f} s")
        for check, numbers in {**got, **again}.items():
            if not isinstance(numbers, dict) or check == "refusals":
                continue
            print(f"  {check}: {numbers}")
            tol = TOL["float32" if "float32" in check else "float64"]
            assert numbers["params"] <= tol, (rank, check, numbers)
            if "state" in numbers:
                assert numbers["state"] <= tol, (rank, check, numbers)
            if "moved" in numbers:
                assert numbers["moved"] > 1e-3, (rank, check, numbers)
            if "bumped" in numbers:   # the DTensors' autograd versions
                assert numbers["bumped"], (rank, check, numbers)
            if "state_types" in numbers:   # DTensor state, plain step counters
                assert numbers["state_types"] == ["DTensor", "Tensor"], (rank, check)
        mixed = got["fsdp-mlp-Adam-float32-bf16-clip"]
        assert mixed["dtypes"] == ["torch.float32"]
        assert mixed["norms"] <= 1e-5 and mixed["clipped"] > 0, mixed
        refusals = got["refusals"]
        for case, words in (("partial", "Partial(sum)"), ("grad_misplaced", "Replicate()"),
                            ("flat", "flat=True"), ("state_for_plain", "a plain tensor")):
            assert refusals[case]["untouched"], (rank, case, refusals[case])
            assert words in (refusals[case]["message"] or ""), (rank, case, refusals[case])
