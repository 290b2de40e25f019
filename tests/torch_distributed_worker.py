"""One rank of `test_torch_distributed`: DDP + ZeroRedundancyOptimizer(fastopt.torch.Adam).

Run as ``python torch_distributed_worker.py RANK WORLD PORT OUT_DIR``; rank 0
writes the final params, the consolidated optimizer state and what each rank
saw to OUT_DIR. Loopback only (127.0.0.1, gloo over ``lo``); every collective
is bounded by the process group's timeout.
"""
import datetime
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import fastopt.torch
import torch_table as T

STEPS = 20
KWARGS = {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.01, "amsgrad": True}


def shard(x, k, rank, world):
    """Rank `rank`'s equal share of mini-batch `k` (torch_table's batches)."""
    rows = len(x) // T.BATCHES
    start = (k % T.BATCHES) * rows + rank * rows // world
    return x[start:start + rows // world]


def main(rank, world, port, out_dir):
    # Imported here: it warns (torch.jit deprecations) when the test imports this module.
    from torch.distributed.optim import ZeroRedundancyOptimizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        model = DDP(T.make_model(torch.float64))
        opt = ZeroRedundancyOptimizer(model.parameters(),
                                      optimizer_class=fastopt.torch.Adam, **KWARGS)
        x, y = T.make_data(torch.float64)
        for k in range(STEPS):
            opt.zero_grad()
            T.loss_of(model, shard(x, k, rank, world), shard(y, k, rank, world)).backward()
            opt.step()
        local = [type(opt.optim).__name__, len(opt.optim.state)]
        seen = [None] * world
        dist.all_gather_object(seen, local)
        opt.consolidate_state_dict(to=0)
        if rank == 0:
            torch.save({"params": [p.detach() for p in model.module.parameters()],
                        "optim": opt.state_dict(), "ranks": seen},
                       os.path.join(out_dir, "result.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
