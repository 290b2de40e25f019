"""fastopt.torch.SGD / Adagrad / RMSprop / Adam / AdamW against torch.optim itself.

torch.optim is the oracle: the table in `torch_table.py` drives the
conformance runs (every optimizer × option × param-group layout, 50 steps
of real backprop on a small MLP). Then: checkpoints move both ways between
torch.optim and fastopt.torch, LR schedulers and GradScaler work as with
torch's optimizers, complex params follow torch, and bad input raises
before anything is written.
"""
import io

import pytest
import torch

import fastopt.torch
import torch_table as T
from optimizer_db import TORCH, TORCH_DB, front_kwargs, front_names
from conftest import REAL_GPU

NAMES = list(T.VARIANTS)
DTYPES = [torch.float64, torch.float32]
CUDA = REAL_GPU and torch.cuda.is_available()


def _check_twins(ref, ref_opt, got, got_opt, start, tol):
    assert T.max_param_err(got, ref) <= tol
    assert T.state_err(got_opt, ref_opt) <= tol
    # The run moved the params well beyond the tolerance: the check has teeth.
    assert T.max_param_err(start, ref) > 1e3 * tol


# --- conformance -----------------------------------------------------------
@pytest.mark.parametrize("case, dtype", T.inner_loop_rows(DTYPES))
def test_matches_torch_cpu(case, dtype):
    ref, ref_opt, got, got_opt = T.twins(case.name, case.kwargs, case.layout, dtype)
    start = T.copy_model(ref)
    x, y = T.make_data(dtype)
    want = T.train(ref, ref_opt, x, y, T.STEPS, case.layout)
    have = T.train(got, got_opt, x, y, T.STEPS, case.layout)
    assert have[-1] == pytest.approx(want[-1], rel=100 * T.TOL[dtype])
    _check_twins(ref, ref_opt, got, got_opt, start, T.TOL[dtype])
    if case.layout == "partial":   # the frozen param was never touched
        assert torch.equal(got[0].bias, start[0].bias)


@pytest.mark.skipif(not CUDA, reason="needs FASTOPT_REAL_GPU=1 and a CUDA build of torch")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", T.CASES, ids=lambda c: c.id)
def test_matches_torch_cuda(case, dtype):
    ref, ref_opt, got, got_opt = T.twins(case.name, case.kwargs, case.layout, dtype,
                                         device="cuda")
    start = T.copy_model(ref)
    x, y = T.make_data(dtype, "cuda")
    T.train(ref, ref_opt, x, y, T.STEPS, case.layout)
    T.train(got, got_opt, x, y, T.STEPS, case.layout)
    torch.cuda.synchronize()
    # torch's CUDA optimizers default to foreach kernels, which round a few
    # ulps differently; the float32 bound has room for that.
    _check_twins(ref, ref_opt, got, got_opt, start, T.TOL[dtype])
    for p in got.parameters():   # state lives with the params; step on the CPU
        for key, t in got_opt.state[p].items():
            assert t.device.type == ("cpu" if key == "step" else "cuda")


def test_momentum_turned_on_mid_training_matches_torch():
    """SGD momentum set between steps (the one new state slot torch.optim
    itself accepts mid-training): the buffer is created and seeded from the
    gradient as torch does, though every other state already exists."""
    ref, ref_opt, got, got_opt = T.twins("SGD", {}, "one_group", torch.float64)
    start = T.copy_model(ref)
    x, y = T.make_data(torch.float64)
    for model, opt in ((ref, ref_opt), (got, got_opt)):
        T.train(model, opt, x, y, 3)
        opt.param_groups[0]["momentum"] = 0.9
        T.train(model, opt, x, y, 5, first=3)
    _check_twins(ref, ref_opt, got, got_opt, start, T.TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_complex_params_match_torch(name, dtype):
    """torch updates complex params as (real, imag) pairs: so does fastopt."""
    option = "amsgrad" if "amsgrad" in T.VARIANTS[name] else list(T.VARIANTS[name])[-1]
    kwargs = T.VARIANTS[name][option]
    gen = torch.Generator().manual_seed(3)
    w0 = torch.randn(3, 4, dtype=dtype, generator=gen)
    x = torch.randn(4, 6, dtype=dtype, generator=gen)
    y = torch.randn(3, 6, dtype=dtype, generator=gen)
    runs = []
    for cls in (getattr(torch.optim, name), getattr(fastopt.torch, name)):
        w = torch.nn.Parameter(w0.clone())
        opt = cls([w], **kwargs)
        for _ in range(20):
            opt.zero_grad()
            (w @ x - y).abs().pow(2).sum().backward()
            opt.step()
        runs.append((w, opt))
    (ref, ref_opt), (got, got_opt) = runs
    tol = T.TOL[torch.float64 if dtype == torch.complex128 else torch.float32]
    assert T.rel_err(got, ref) <= tol
    assert T.state_err(got_opt, ref_opt) <= tol
    assert T.rel_err(w0, ref) > 1e3 * tol


# --- checkpoints -----------------------------------------------------------
def _interchange_kwargs(name):
    """The option set that resumes through a checkpoint (`optimizer_db`'s
    ``interchange``: the one with the most state)."""
    return T.VARIANTS[name][T.INTERCHANGE[name]]


def _roundtrip(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize("direction", ["torch_to_fastopt", "fastopt_to_torch"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_interchange(name, direction):
    """Train 10 steps with one library, resume with the other: identical to
    training 20 steps with torch.optim alone, resumed through its own
    checkpoint at step 10 (torch's load casts state tensors to their
    param's dtype: NAdam's float32 ``mu_product`` and ASGD's ``eta`` and
    ``mu`` continue in float64 for float64 params; for the others the
    resume changes nothing)."""
    kwargs = _interchange_kwargs(name)
    layout = "two_groups"
    x, y = T.make_data()
    first, second = ("torch", "fastopt") if direction == "torch_to_fastopt" else (
        "fastopt", "torch")
    ref = T.make_model()
    ref_opt = T.build("torch", name, ref, kwargs, layout)
    T.train(ref, ref_opt, x, y, 10, layout)
    ref_opt.load_state_dict(_roundtrip(ref_opt.state_dict()))
    T.train(ref, ref_opt, x, y, 10, layout, first=10)

    model = T.make_model()
    opt = T.build(first, name, model, kwargs, layout)
    T.train(model, opt, x, y, 10, layout)
    checkpoint = _roundtrip({"model": model.state_dict(), "opt": opt.state_dict()})
    resumed = T.make_model(seed=7)   # other init: everything comes from the checkpoint
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt = T.build(second, name, resumed, {}, layout)   # defaults: overwritten
    resumed_opt.load_state_dict(checkpoint["opt"])
    assert resumed_opt.param_groups[0]["lr"] == T.GROUP_OVERRIDES[name]["lr"]
    T.train(resumed, resumed_opt, x, y, 10, layout, first=10)
    assert T.max_param_err(resumed, ref) <= 1e-12
    assert T.state_err(resumed_opt, ref_opt) <= 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_fresh_state_dict_matches_torch(name):
    """Before any step (Adagrad builds its state eagerly, the others lazily)."""
    kwargs = T.VARIANTS[name]["plain"]
    ref, ref_opt, got, got_opt = T.twins(name, kwargs, "two_groups")
    assert T.state_err(got_opt, ref_opt) == 0.0
    assert got_opt.state_dict()["param_groups"] == ref_opt.state_dict()["param_groups"]


def test_adamw_stays_decoupled_after_loading_an_adam_checkpoint():
    model = T.make_model()
    adam = torch.optim.Adam(model.parameters(), weight_decay=0.1)
    for lib in (torch.optim, fastopt.torch):
        opt = lib.AdamW(model.parameters())
        opt.load_state_dict(adam.state_dict())
        assert opt.param_groups[0]["decoupled_weight_decay"] is True


# --- LR schedulers and GradScaler ----------------------------------------------
SCHEDULES = {
    "StepLR": ("Adam", lambda opt: torch.optim.lr_scheduler.StepLR(opt, 7, gamma=0.5)),
    "LambdaLR": ("Adagrad", lambda opt: torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 1.0 / (1 + k))),
    # OneCycleLR also cycles momentum (SGD) and betas[0] (Adam) per step.
    "OneCycleLR-SGD": ("SGD", lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=T.STEPS)),
    "OneCycleLR-Adam": ("Adam", lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.02, total_steps=T.STEPS)),
    "CosineAnnealingLR": ("RMSprop", lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=20)),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_lr_scheduler_matches_torch(schedule):
    name, make = SCHEDULES[schedule]
    kwargs = T.VARIANTS[name]["momentum" if name == "SGD" else "plain"]
    ref, ref_opt, got, got_opt = T.twins(name, kwargs, "two_groups")
    start = T.copy_model(ref)
    x, y = T.make_data()
    lrs = []
    for model, opt in ((ref, ref_opt), (got, got_opt)):
        sched = make(opt)
        seen = []
        for _ in range(T.STEPS):
            opt.zero_grad()
            T.loss_of(model, x, y).backward()
            opt.step()
            sched.step()
            seen.append([g["lr"] for g in opt.param_groups])
        lrs.append(seen)
    assert lrs[0] == lrs[1] and len({tuple(v) for v in lrs[0]}) > 3
    _check_twins(ref, ref_opt, got, got_opt, start, 1e-12)


INF_STEPS = (3, 4, 9)


@pytest.mark.parametrize("name", NAMES)
def test_grad_scaler_skips_inf_steps_like_torch(name):
    """torch.amp.GradScaler("cpu"): a step whose gradients hold inf/NaN is
    skipped (params and state untouched), the scale backs off; the rest of
    the run equals torch's."""
    kwargs = T.VARIANTS[name]["plain"]
    dtype = torch.float32
    ref, ref_opt, got, got_opt = T.twins(name, kwargs, "one_group", dtype)
    x, y = T.make_data(dtype)
    for model, opt in ((ref, ref_opt), (got, got_opt)):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=3)
        for k in range(20):
            opt.zero_grad()
            scaler.scale(T.loss_of(model, x, y)).backward()
            if k in INF_STEPS:
                model[2].weight.grad[0, 0] = float("inf") if k % 2 else float("nan")
            before = [p.detach().clone() for p in model.parameters()]
            state_before = _roundtrip(opt.state_dict())
            scale = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            moved = any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
            assert moved == (k not in INF_STEPS)
            if k in INF_STEPS:
                assert scaler.get_scale() == scale / 2
                assert T.state_err(opt, _StateDict(state_before)) == 0.0
    _check_twins(ref, ref_opt, got, got_opt, T.make_model(dtype), T.TOL[dtype])


class _StateDict:
    """A saved state_dict, as `T.state_err` wants an optimizer."""

    def __init__(self, state_dict):
        self._sd = state_dict

    def state_dict(self):
        return self._sd


@pytest.mark.parametrize("name", NAMES)
def test_closure_matches_torch(name):
    kwargs = T.VARIANTS[name]["plain"]
    ref, ref_opt, got, got_opt = T.twins(name, kwargs, "one_group")
    start = T.copy_model(ref)
    x, y = T.make_data()
    for _ in range(10):
        losses = []
        for model, opt in ((ref, ref_opt), (got, got_opt)):
            def closure(model=model, opt=opt):
                opt.zero_grad()
                loss = T.loss_of(model, x, y)
                loss.backward()
                return loss
            losses.append(opt.step(closure).item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    _check_twins(ref, ref_opt, got, got_opt, start, 1e-12)


def test_step_bumps_the_autograd_version_like_torch():
    """A graph that saved a param before the step refuses to backprop after it."""
    for lib in (torch.optim, fastopt.torch):
        model = T.make_model()
        opt = lib.SGD(model.parameters(), lr=0.1)
        x, y = T.make_data()
        T.loss_of(model, x, y).backward()
        stale = T.loss_of(model, x, y)   # saves the weights for backward
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            stale.backward()


# --- bad input -----------------------------------------------------------------
# Hyperparameter values: `optimizer_db`'s error inputs (test_error_input_*).
# Implementation switches fastopt refuses that torch accepts (see the README).
BAD_FOR_FASTOPT = [
    ("NAdam", {"capturable": True}, "capturable"),   # its mu_product lives on the host
    ("SGD", {"differentiable": True}, "differentiable"),
]


@pytest.mark.parametrize("name,kwargs,why", BAD_FOR_FASTOPT, ids=repr)
def test_bad_arguments_for_fastopt(name, kwargs, why):
    with pytest.raises(ValueError, match=why.split()[0]):
        getattr(fastopt.torch, name)(T.make_model().parameters(), **kwargs)


def test_wrong_types_raise_type_error():
    params = T.make_model().parameters
    with pytest.raises(TypeError, match="learning rate"):
        fastopt.torch.Adam(params(), lr="0.1")
    with pytest.raises(TypeError, match="amsgrad"):
        fastopt.torch.Adam(params(), amsgrad=1)


def _snapshot(model, opt):
    return ([p.detach().clone() for p in model.parameters()], _roundtrip(opt.state_dict()))


def _assert_untouched(model, opt, snap):
    params, state = snap
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert T.state_err(opt, _StateDict(state)) == 0.0


def _trained(name="Adam", steps=2):
    model = T.make_model()
    opt = getattr(fastopt.torch, name)(
        [{"params": model[0].parameters()}, {"params": model[2].parameters()}],
        **T.VARIANTS[name]["plain"])
    x, y = T.make_data()
    T.train(model, opt, x, y, steps)
    opt.zero_grad()
    T.loss_of(model, x, y).backward()
    return model, opt


# How a step goes wrong after construction: (make it wrong, error, message).
BAD_STEPS = {
    "negative lr in the second group": (
        lambda m, o: o.param_groups[1].__setitem__("lr", -1.0), ValueError,
        r"param_groups\[1\]: Invalid learning rate"),
    "a beta out of range in the second group": (   # a tuple: its halves checked again
        lambda m, o: o.param_groups[1].__setitem__("betas", (0.9, 1.0)), ValueError,
        r"param_groups\[1\]: Invalid beta parameter at index 1"),
    "lr of a wrong type": (
        lambda m, o: o.param_groups[1].__setitem__("lr", "big"), TypeError,
        r"param_groups\[1\]"),
    "non-contiguous gradient": (
        lambda m, o: setattr(m[2].bias, "grad", torch.zeros(3, 2, dtype=torch.float64)[:, 0]),
        ValueError, r"grad of param_groups\[1\]\['params'\]\[1\] is not contiguous"),
    "non-contiguous state": (
        lambda m, o: o.state[m[2].weight].__setitem__(
            "exp_avg", torch.zeros(16, 3, dtype=torch.float64).t()),
        ValueError, r"exp_avg.*param_groups\[1\]\['params'\]\[0\] is not contiguous"),
}


@pytest.mark.parametrize("what", list(BAD_STEPS))
def test_rejected_step_changes_nothing(what):
    """The first group is fine, the second is not: nothing at all is written."""
    make_bad, error, message = BAD_STEPS[what]
    model, opt = _trained()
    make_bad(model, opt)
    snap = _snapshot(model, opt)
    with pytest.raises(error, match=message):
        opt.step()
    _assert_untouched(model, opt, snap)


def _error_inputs():
    """Each optimizer's error inputs that its torch class has."""
    for info in TORCH_DB:
        names = front_names(info.spec.torch)
        for error in info.all_errors():
            if error.torch and TORCH in error.conventions and set(error.kwargs) <= set(names):
                yield pytest.param(info, error, id=f"{info.spec.torch.cls}-{error.id}")


@pytest.mark.parametrize("info, error", list(_error_inputs()))
def test_error_input_refused_like_torch(info, error):
    """In the constructor, as torch.optim refuses it (or, where fastopt is
    stricter, accepts it); then set in the second group of a trained
    optimizer: its step raises and writes nothing."""
    name, front = info.spec.torch.cls, info.spec.torch
    kwargs = front_kwargs(front, {**info.torch["plain"], **error.kwargs})
    with pytest.raises(error.error, match=error.torch) as ours:
        getattr(fastopt.torch, name)(T.make_model().parameters(), **kwargs)
    torch_optim = error.torch_optim_for(name)
    if torch_optim == "accepts":
        getattr(torch.optim, name)(T.make_model().parameters(), **kwargs)
    else:
        with pytest.raises(error.error) as theirs:
            getattr(torch.optim, name)(T.make_model().parameters(), **kwargs)
        if torch_optim == "same":
            assert str(theirs.value).split(":")[0] in str(ours.value)
    model, opt = _trained(name)
    snap = _snapshot(model, opt)
    opt.param_groups[1].update(front_kwargs(front, error.kwargs))
    with pytest.raises(error.error, match=r"param_groups\[1\]: " + error.torch):
        opt.step()
    _assert_untouched(model, opt, snap)


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(
        not CUDA, reason="needs FASTOPT_REAL_GPU=1 and a CUDA build of torch"))])
def test_checked_groups_are_not_read_twice(monkeypatch, device):
    """A group the bulk check passed reaches the functional call marked
    checked (`fastopt._front.call`), which then reads only addresses and
    sizes, not every property again (nor, on a GPU, describes each tensor)."""
    from fastopt import _multi
    model = T.make_model(device=device)
    opt = fastopt.torch.Adam(model.parameters())
    x, y = T.make_data(device=device)
    T.train(model, opt, x, y, 2)
    T.loss_of(model, x, y).backward()
    calls = []
    for name in ("_torch_device", "_plan_device"):
        monkeypatch.setattr(_multi, name, lambda *a, name=name: calls.append(name))
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert calls == []
    assert not any(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sparse_state_is_rejected():
    """A state tensor swapped for a sparse one (no dense memory to write):
    named, and nothing is written."""
    model, opt = _trained()
    opt.state[model[2].weight]["exp_avg_sq"] = torch.zeros(
        model[2].weight.shape, dtype=torch.float64).to_sparse()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TypeError, match=r"exp_avg_sq'\] of param_groups\[1\]\['params'\]"
                                        r"\[0\] has layout torch.sparse_coo"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sparse_gradients_are_rejected():
    emb = torch.nn.Embedding(10, 4, sparse=True).double()
    dense = torch.nn.Linear(4, 1).double()
    for name in NAMES:
        opt = getattr(fastopt.torch, name)([*dense.parameters(), *emb.parameters()])
        opt.zero_grad()
        dense(emb(torch.tensor([1, 2, 3]))).sum().backward()
        snap = ([p.detach().clone() for p in (*dense.parameters(), emb.weight)],)
        with pytest.raises(TypeError, match="does not support sparse gradients"):
            opt.step()
        assert all(torch.equal(a, b) for a, b in zip(
            snap[0], (*dense.parameters(), emb.weight)))
        assert len(opt.state_dict()["state"]) == (3 if name == "Adagrad" else 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_params_step_as_torch_fused(dtype):
    """16-bit params (float32 math, state of the param's dtype) step as
    torch's fused Adam does, bit for bit (tests/test_mixed_precision.py has
    every optimizer); a state_dtype fastopt cannot store is refused with
    nothing written."""
    torch.manual_seed(0)
    model = T.make_model().to(dtype)
    twin = T.make_model().to(dtype)
    twin.load_state_dict(model.state_dict())
    opt = fastopt.torch.Adam(model.parameters())
    ref = torch.optim.Adam(twin.parameters(), fused=True)
    x = torch.randn(2, 5, dtype=dtype)
    for m, o in ((model, opt), (twin, ref)):
        m(x).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    bad = fastopt.torch.Adam(twin.parameters())
    bad.state_dtype = torch.float64
    before = [p.detach().clone() for p in twin.parameters()]
    with pytest.raises(TypeError, match="state_dtype must be None, torch.float32"):
        bad.step()
    assert len(bad.state) == 0
    assert all(torch.equal(a, b) for a, b in zip(twin.parameters(), before))


def test_non_contiguous_param_is_rejected():
    w = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64).t())
    opt = fastopt.torch.SGD([w], lr=0.1)
    w.sum().backward()
    before = w.detach().clone()
    with pytest.raises(ValueError, match="param of param_groups.* is not contiguous"):
        opt.step()
    assert torch.equal(w, before)


def test_param_on_a_device_without_kernels_is_rejected():
    w = torch.nn.Parameter(torch.zeros(3, device="meta"))
    w.grad = torch.zeros(3, device="meta")
    opt = fastopt.torch.Adam([w])
    with pytest.raises(TypeError, match=r"is on meta; fastopt runs on the CPU and on CUDA"):
        opt.step()
    assert len(opt.state) == 0


def test_add_param_group_checks_before_adding():
    model = T.make_model()
    opt = fastopt.torch.RMSprop(model[0].parameters())
    with pytest.raises(ValueError, match="Invalid alpha value"):
        opt.add_param_group({"params": model[2].parameters(), "alpha": -1.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": model[2].parameters(), "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["alpha"] == 0.99


@pytest.mark.parametrize("name", NAMES)
def test_defaults_match_torch(name):
    model = T.make_model()
    ours = getattr(fastopt.torch, name)(model.parameters())
    theirs = getattr(torch.optim, name)(model.parameters())
    assert ours.defaults == theirs.defaults
    assert isinstance(ours, torch.optim.Optimizer)
