"""One rank of `test_torch_fsdp`: fastopt.torch on DTensor params (FSDP2, distribute_tensor).

`main(rank, world, port, out_dir, phase)` is started by torch.multiprocessing
(spawn) on 2 ranks, gloo on 127.0.0.1. Every rank runs the same collectives
in the same order; checks record their numbers in ``results{rank}.json``
(the test asserts on them), so a failed comparison on one rank never leaves
the other waiting in a collective. Phases:

* ``"train"``: FSDP2 MLP (uneven and empty shards, reshard_after_forward=True)
  and transformer block (reshard_after_forward=False), float64, 30 steps of
  Adam, AdamW, SGD momentum and Adagrad, fastopt.torch vs torch.optim; the MLP
  in float32 with MixedPrecisionPolicy (bf16 compute) and torch's
  clip_grad_norm_; distribute_tensor params on a 1-D and a 2-D mesh; the
  refusals (Partial, misplaced grad, flat=True); DCP checkpoints at step 15
  (`RESUMED`) and the checkpointed runs' final shards.
* ``"resume"`` (fresh processes): the MLP's fastopt and torch.optim Adam
  checkpoints loaded into fastopt.torch, the block's fastopt AdamW checkpoint
  into torch.optim, 15 more steps each, against the uninterrupted runs.
"""
import datetime
import json
import os
import time

import torch

WORLD = 2
STEPS, SAVE_AT = 30, 15
OPTIMIZERS = {"Adam": {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.01},
              "AdamW": {"lr": 0.01, "weight_decay": 0.05, "amsgrad": True},
              "SGD": {"lr": 0.05, "momentum": 0.9, "nesterov": True},
              "Adagrad": {"lr": 0.05, "lr_decay": 0.01}}
# The runs checkpointed at SAVE_AT, and how each resumes: (checkpoint's
# optimizer, optimizer resuming from it).
RESUMED = {"mlp": ("Adam", [("fastopt", "fastopt"), ("torch", "fastopt")]),
           "block": ("AdamW", [("fastopt", "torch")])}


def _mlp():
    # Weights 5x4, 3x5, 1x3 and biases 5, 3, 1 shard unevenly over 2 ranks;
    # the last layer's (1 row) is empty on rank 1.
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3),
                               torch.nn.Tanh(), torch.nn.Linear(3, 1))


def _block():
    # No biases: attention's key bias has no gradient but rounding noise,
    # which Adam's normalisation turns into steps (torch's own two
    # implementations agree on it only by running the same ops).
    return torch.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=12,
                                            dropout=0.0, batch_first=True, bias=False)


MODELS = {"mlp": (_mlp, (16, 4), True), "block": (_block, (4, 3, 8), False)}


def _sharded(kind, dtype, mp_policy=None):
    from torch.distributed.fsdp import fully_shard
    make, _, reshard = MODELS[kind]
    torch.manual_seed(0)
    model = make().to(dtype)
    kw = {"reshard_after_forward": reshard}
    if mp_policy is not None:
        kw["mp_policy"] = mp_policy
    if kind == "mlp":   # the block is one unit: one all-gather and one
        fully_shard(model[2], **kw)   # reduce-scatter a step (CI's 2 cores)
    fully_shard(model, **kw)
    return model


def _batches(kind, dtype, rank):
    g = torch.Generator().manual_seed(100 + rank)   # each rank its own data
    shape = MODELS[kind][1]
    return [torch.randn(*shape, generator=g, dtype=dtype) for _ in range(STEPS)]


def _train(model, opt, batches, steps, clip=None, on_step=None):
    norms = []
    for k in steps:
        opt.zero_grad()
        out = model(batches[k])   # a target the model can move towards
        (out.float() - batches[k].flip(-1)[..., :out.shape[-1]]).pow(2).mean().backward()
        if clip is not None:   # torch's, on DTensor grads: the global norm
            full = _global_grad_norm(model)
            total = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            norms.append((float(_local(total.full_tensor() if hasattr(total, "full_tensor")
                                       else total)), full))
        opt.step()
        if on_step is not None:
            on_step(k + 1)
    return norms


def _global_grad_norm(model):
    """The norm of the full grads (each gathered), for clip_grad_norm_'s."""
    return float(torch.sqrt(sum(p.grad.full_tensor().double().pow(2).sum()
                                for p in model.parameters())))


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _shards(model):
    return [_local(p.detach()).clone() for p in model.parameters()]


def _max_err(a, b):
    errs = [(x.double() - y.double()).abs().max().item() for x, y in zip(a, b) if x.numel()]
    assert len(a) == len(b)
    return max(errs, default=0.0)


def _state_err(got, want):
    """Max difference of two optimizers' state (local shards), or inf if
    their keys, types or placements differ."""
    sg, sw = got.state_dict()["state"], want.state_dict()["state"]
    if sg.keys() != sw.keys():
        return float("inf")
    err = 0.0
    for k in sw:
        if sg[k].keys() != sw[k].keys():
            return float("inf")
        for key, w in sw[k].items():
            g = sg[k][key]
            if type(g) is not type(w) or getattr(g, "placements", None) != getattr(
                    w, "placements", None):
                return float("inf")
            err = max(err, _max_err([_local(g)], [_local(w)]))
    return err


def _optimizer(module, name, model):
    return getattr(module, name)(model.parameters(), **OPTIMIZERS[name])


def _phase_train(rank, out_dir, results):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.fsdp import MixedPrecisionPolicy

    t0 = time.perf_counter()
    import fastopt.torch
    results["seconds-import"] = time.perf_counter() - t0

    def saver(tag, model, opt):
        def on_step(k):
            if k == SAVE_AT:
                msd, osd = get_state_dict(model, opt)
                dcp.save({"model": msd, "optim": osd},
                         checkpoint_id=os.path.join(out_dir, f"ckpt-{tag}"))
        return on_step

    final = {}
    for kind in MODELS:
        batches = _batches(kind, torch.float64, rank)
        for name in OPTIMIZERS:
            runs, t0 = {}, time.perf_counter()
            for tag, module in (("torch", torch.optim), ("fastopt", fastopt.torch)):
                model = _sharded(kind, torch.float64)
                opt = _optimizer(module, name, model)
                resumed, ways = RESUMED[kind]
                on_step = (saver(f"{kind}-{tag}", model, opt)
                           if resumed == name and tag in {w for w, _ in ways} else None)
                _train(model, opt, batches, range(STEPS), on_step=on_step)
                runs[tag] = model, opt
                if resumed == name:
                    final[f"{kind}-{tag}"] = _shards(model)
            (mt, ot), (mf, of) = runs["torch"], runs["fastopt"]
            results[f"seconds-{kind}-{name}"] = time.perf_counter() - t0
            results[f"fsdp-{kind}-{name}-float64"] = {
                "params": _max_err(_shards(mf), _shards(mt)), "state": _state_err(of, ot),
                "moved": _max_err(_shards(mt), _shards(_sharded(kind, torch.float64)))}
    torch.save(final, os.path.join(out_dir, f"final{rank}.pt"))

    # float32 sharded params, bf16 compute, torch's clip_grad_norm_ on DTensor grads.
    t0 = time.perf_counter()
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    batches = _batches("mlp", torch.float32, rank)
    runs = {}
    for tag, module in (("torch", torch.optim), ("fastopt", fastopt.torch)):
        model = _sharded("mlp", torch.float32, policy)
        opt = _optimizer(module, "Adam", model)
        norms = _train(model, opt, batches, range(STEPS), clip=0.5)
        runs[tag] = model, opt, norms
    (mt, ot, nt), (mf, of, nf) = runs["torch"], runs["fastopt"]
    results["fsdp-mlp-Adam-float32-bf16-clip"] = {
        "params": _max_err(_shards(mf), _shards(mt)), "state": _state_err(of, ot),
        "norms": max(abs(a - b) / b for a, b in nf + nt),
        "clipped": sum(n > 0.5 for _, n in nt),
        "dtypes": sorted({str(p.dtype) for p in mf.parameters()}
                         | {str(v.dtype) for s in of.state.values() for k, v in s.items()
                            if k != "step"})}
    results["seconds-mixed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _distribute_tensor_checks(results)
    _refusals(results)
    results["seconds-rest"] = time.perf_counter() - t0


def _distribute_tensor_checks(results):
    """distribute_tensor params, no FSDP: Replicate, Shard(1) uneven, Shard(0)
    empty on rank 1, on a 1-D mesh; (Replicate, Shard(0)) on a 2-D mesh."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    import fastopt.torch

    mesh1 = init_device_mesh("cpu", (WORLD,))
    mesh2 = init_device_mesh("cpu", (1, WORLD), mesh_dim_names=("dp", "tp"))
    layout = [((3, 5), mesh1, [Replicate()]), ((3, 5), mesh1, [Shard(1)]),
              ((1, 4), mesh1, [Shard(0)]), ((4, 3), mesh2, [Replicate(), Shard(0)])]
    g = torch.Generator().manual_seed(7)   # the same on every rank: global values
    start = [torch.randn(*shape, generator=g, dtype=torch.float64) for shape, _, _ in layout]
    grads = [[torch.randn(*shape, generator=g, dtype=torch.float64) for shape, _, _ in layout]
             for _ in range(5)]
    for name in OPTIMIZERS:
        runs = []
        for module in (torch.optim, fastopt.torch):
            # (clones: a Replicate DTensor's local tensor may be the tensor given)
            params = [torch.nn.Parameter(distribute_tensor(t.clone(), mesh, pl))
                      for t, (_, mesh, pl) in zip(start, layout)]
            opt = getattr(module, name)(params, **OPTIMIZERS[name])
            for step in grads:
                for p, full, (_, mesh, pl) in zip(params, step, layout):
                    p.grad = distribute_tensor(full, mesh, pl)
                opt.step()
            runs.append((params, opt))
        (pt, ot), (pf, of) = runs
        results[f"distribute_tensor-{name}"] = {
            "params": _max_err([_local(p.detach()) for p in pf], [_local(p.detach()) for p in pt]),
            "state": _state_err(of, ot),
            "bumped": min(p._version for p in pf) >= len(grads),   # autograd told
            "moved": _max_err([_local(p.detach()) for p in pf],
                              [_local(distribute_tensor(t, mesh, pl))
                               for t, (_, mesh, pl) in zip(start, layout)])}


def _refusals(results):
    """What cannot work is refused before anything is written; all local."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard

    import fastopt.torch

    mesh = init_device_mesh("cpu", (WORLD,))
    local = torch.arange(6, dtype=torch.float64).reshape(2, 3)

    def attempt(p_placement, g_placement, **kw):
        p = torch.nn.Parameter(DTensor.from_local(local.clone(), mesh, [p_placement],
                                                  run_check=False))
        p.grad = DTensor.from_local(torch.ones(p.shape if g_placement.is_replicate()
                                               else local.shape, dtype=torch.float64),
                                    mesh, [g_placement], run_check=False)
        plain = torch.nn.Parameter(local.clone())
        plain.grad = torch.ones_like(plain)
        opt = fastopt.torch.Adam([plain, p], lr=0.1, **kw)
        try:
            opt.step()
            message = None
        except (TypeError, ValueError) as e:
            message = f"{type(e).__name__}: {e}"
        print(message)
        untouched = (torch.equal(p.to_local(), local) and torch.equal(plain.detach(), local)
                     and not opt.state)
        return {"message": message, "untouched": untouched}

    results["refusals"] = {
        "partial": attempt(Partial(), Partial()),
        "grad_misplaced": attempt(Shard(0), Replicate()),
        "flat": attempt(Shard(0), Shard(0), flat=True)}

    # A sharded model's state for a plain param (a DTensor's address is 0).
    plain = torch.nn.Parameter(local.clone())
    plain.grad = torch.ones_like(plain)
    opt = fastopt.torch.Adam([plain], lr=0.1)
    zeros = torch.zeros(1, 3, dtype=torch.float64)
    opt.state[plain] = {"step": torch.tensor(1.0),
                        **{key: DTensor.from_local(zeros.clone(), mesh, [Shard(0)],
                                                   run_check=False)
                           for key in ("exp_avg", "exp_avg_sq")}}
    try:
        opt.step()
        message = None
    except (TypeError, ValueError) as e:
        message = f"{type(e).__name__}: {e}"
    results["refusals"]["state_for_plain"] = {
        "message": message,
        "untouched": (torch.equal(plain.detach(), local) and float(opt.state[plain]["step"]) == 1
                      and torch.equal(opt.state[plain]["exp_avg"].to_local(), zeros))}


def _phase_resume(rank, out_dir, results):
    """Each checkpoint into fresh objects of fresh processes, 15 more steps."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    import fastopt.torch

    final = torch.load(os.path.join(out_dir, f"final{rank}.pt"))
    modules = {"fastopt": fastopt.torch, "torch": torch.optim}
    for kind, (name, ways) in RESUMED.items():
        batches = _batches(kind, torch.float64, rank)
        for saved, into in ways:
            module, continued = modules[into], saved   # equal to the run saved
            model = _sharded(kind, torch.float64)
            opt = _optimizer(module, name, model)
            msd, osd = get_state_dict(model, opt)   # runs a zero-lr step to make state
            state = {"model": msd, "optim": osd}
            dcp.load(state, checkpoint_id=os.path.join(out_dir, f"ckpt-{kind}-{saved}"))
            set_state_dict(model, opt, model_state_dict=state["model"],
                           optim_state_dict=state["optim"])
            _train(model, opt, batches, range(SAVE_AT, STEPS))
            results[f"resume-{kind}-{name}-{saved}-into-{module.__name__}"] = {
                "params": _max_err(_shards(model), final[f"{kind}-{continued}"]),
                "state_types": sorted({type(v).__name__ for s in opt.state.values()
                                       for v in s.values()})}


def main(rank, world, port, out_dir, phase):
    # Before fastopt (Numba) is imported: one thread each, two ranks on 2 cores.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                      NUMBA_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    results, start = {}, time.perf_counter()
    try:
        {"train": _phase_train, "resume": _phase_resume}[phase](rank, out_dir, results)
        results["seconds"] = time.perf_counter() - start
        with open(os.path.join(out_dir, f"results-{phase}{rank}.json"), "w") as f:
            json.dump(results, f, indent=1)
        dist.barrier()
    finally:
        dist.destroy_process_group()
