"""fastopt.torch.Adam as ZeroRedundancyOptimizer's optimizer_class, under DDP.

Two processes (gloo, 127.0.0.1 only) train the MLP of `torch_table` for 20
steps, each on its half of every mini-batch; the result must equal
single-process torch.optim.Adam on the whole mini-batches (float64). The
processes are bounded in time and killed on overrun: a failure never hangs.
"""
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import torch_table as T
import torch_distributed_worker as W

WORLD = 2
TIMEOUT_S = 240

pytestmark = [pytest.mark.slow,   # two processes start torch and Numba each
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                 reason="torch.distributed with gloo is not available")]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(out_dir):
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(here, "torch_distributed_worker.py"),
         str(rank), str(WORLD), str(port), str(out_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(WORLD)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"distributed run took over {TIMEOUT_S} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{out[-4000:]}"


def test_zero_redundancy_ddp_matches_single_process_adam(tmp_path):
    _run_ranks(tmp_path)
    result = torch.load(tmp_path / "result.pt")

    ref = T.make_model(torch.float64)
    start = T.copy_model(ref)
    ref_opt = torch.optim.Adam(ref.parameters(), **W.KWARGS)
    x, y = T.make_data(torch.float64)
    T.train(ref, ref_opt, x, y, W.STEPS)

    got = T.make_model(torch.float64)
    with torch.no_grad():
        for p, q in zip(got.parameters(), result["params"]):
            p.copy_(q)
    print("ZeRO+DDP vs single-process torch.optim.Adam:", T.max_param_err(got, ref),
          "rank param counts:", [n for _, n in result["ranks"]])
    assert T.max_param_err(got, ref) <= 1e-12
    assert T.max_param_err(start, ref) > 1e-6
    # Each rank ran fastopt's Adam on its own shard of the params (ZeRO-1) ...
    assert [name for name, _ in result["ranks"]] == ["Adam"] * WORLD
    counts = [n for _, n in result["ranks"]]
    assert all(n > 0 for n in counts) and sum(counts) == len(list(ref.parameters()))
    # ... and the consolidated state is torch.optim.Adam's, key for key.
    assert T.state_err(_Saved(result["optim"]), ref_opt) <= 1e-12


class _Saved:
    def __init__(self, state_dict):
        self._sd = state_dict

    def state_dict(self):
        return self._sd
