"""fastopt.torch with ``flat=True``: params, grads and state as views of one
buffer per (device, dtype), one kernel call per buffer per step.

torch.optim is the oracle again: the whole conformance table runs flat, and
so do the ways a training loop can undo the layout between steps (grads set
to None, params re-pointed, a checkpoint loaded), each of which must still
give torch's numbers. The counts prove which path ran.
"""
import io
import pickle

import pytest
import torch

import fastopt.torch
import torch_table as T
from fastopt import _accel

DTYPES = [torch.float64, torch.float32]


def _flat(name, params, kwargs):
    return getattr(fastopt.torch, name)(params, **kwargs, flat=True)


def _count_flat_steps(opt):
    """Wrap `opt`'s flat step; returns the list whose length counts calls."""
    calls, step = [], opt._step_flat

    def counted(*args):
        calls.append(1)
        return step(*args)
    opt._step_flat = counted
    return calls


def _twins(name, kwargs, layout="one_group", dtype=torch.float64):
    ref, ref_opt, got, _ = T.twins(name, kwargs, layout, dtype)
    got_opt = _flat(name, T.param_groups(got, name, kwargs, layout), kwargs)
    return ref, ref_opt, got, got_opt


def _assert_same(ref, ref_opt, got, got_opt, tol):
    assert T.max_param_err(got, ref) <= tol
    assert T.state_err(got_opt, ref_opt) <= tol


# The flat layout's own code is per layout, not per option set.
@pytest.mark.parametrize("case, dtype", T.inner_loop_rows(DTYPES, every_option=False))
def test_flat_matches_torch_cpu(case, dtype):
    ref, ref_opt, got, got_opt = _twins(case.name, case.kwargs, case.layout, dtype)
    start = T.copy_model(ref)
    flat_steps = _count_flat_steps(got_opt)
    x, y = T.make_data(dtype)
    T.train(ref, ref_opt, x, y, T.STEPS, case.layout)
    T.train(got, got_opt, x, y, T.STEPS, case.layout)
    _assert_same(ref, ref_opt, got, got_opt, T.TOL[dtype])
    assert T.max_param_err(start, ref) > 1e3 * T.TOL[dtype]
    # Laid out after the first step in which every trainable param had a
    # gradient ("partial": after the late one's first); READY from then on.
    groups = 2 if case.layout == "two_groups" else 1
    late = T.LATE_STEPS if case.layout == "partial" else 0
    assert len(flat_steps) == groups * (T.STEPS - 1 - late)
    if case.layout == "partial":   # the frozen param stayed out, untouched
        assert torch.equal(got[0].bias, start[0].bias)
        assert got[0].bias.grad is None


def _storage(t):
    return t.untyped_storage().data_ptr()


def test_layout_is_one_buffer_per_dtype_and_one_kernel_call_each():
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3).double())
    model[1].register_forward_hook(lambda m, i, out: out.double())
    opt = fastopt.torch.Adam(model.parameters(), lr=1e-2, flat=True)
    x = torch.randn(8, 5)
    for _ in range(2):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    calls = []
    # A buffer's NumPy view takes the single-array accelerator's check (the
    # step is all-or-nothing: the kernel runs after every call is checked);
    # a run through the accelerator alone returns whether it ran.
    counted = {"cpu": "one", "multi_cpu": "many", "single": "one"}

    def observer(kind, variant, fn):
        if fn is None or kind == "many":
            return fn
        if kind == "single":
            return lambda *a: fn(*a) and not calls.append("one")
        return lambda *a: calls.append(counted[kind]) or fn(*a)

    with _accel.observe(observer):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    assert calls == ["one", "one"]      # float32 and float64: a buffer each
    for dtype in (torch.float32, torch.float64):
        params = [p for p in model.parameters() if p.dtype == dtype]
        for tensors in ([p for p in params], [p.grad for p in params],
                        [opt.state[p]["exp_avg"] for p in params],
                        [opt.state[p]["step"] for p in params]):
            assert len({_storage(t) for t in tensors}) == 1
        # back to back, in order
        offsets = [p.storage_offset() for p in params]
        assert offsets == [sum(q.numel() for q in params[:k]) for k in range(len(params))]


def _loop(model, opt, x, y, steps, zero):
    for k in range(steps):
        zero()
        T.loss_of(model, x, y, k).backward()
        opt.step()


def test_zero_grad_keeps_the_views():
    ref, ref_opt, got, got_opt = _twins("Adam", {"lr": 0.01})
    x, y = T.make_data()
    T.train(got, got_opt, x, y, 3)
    grads = [p.grad for p in got.parameters()]
    got_opt.zero_grad()                        # set_to_none=True by default
    assert [p.grad for p in got.parameters()] == grads   # the same views ...
    assert all(torch.count_nonzero(g) == 0 for g in grads)   # ... zeroed


@pytest.mark.parametrize("name", list(T.VARIANTS))
def test_grads_set_to_none_each_step_fall_back_and_match(name):
    """model.zero_grad() sets grads to None: autograd then makes new ones,
    the layout's views are not used, the per-tensor path runs, results hold."""
    kwargs = T.VARIANTS[name]["momentum" if name in ("SGD", "RMSprop") else "plain"]
    ref, ref_opt, got, got_opt = _twins(name, kwargs)
    flat_steps = _count_flat_steps(got_opt)
    x, y = T.make_data()
    _loop(ref, ref_opt, x, y, 8, ref.zero_grad)
    _loop(got, got_opt, x, y, 8, got.zero_grad)
    assert flat_steps == []
    _assert_same(ref, ref_opt, got, got_opt, T.TOL[torch.float64])
    # Our zero_grad (T.train calls it first) puts the views back: READY
    # from the next step on, still matching.
    T.train(ref, ref_opt, x, y, 4, first=8)
    T.train(got, got_opt, x, y, 4, first=8)
    assert len(flat_steps) == 4
    _assert_same(ref, ref_opt, got, got_opt, T.TOL[torch.float64])


def test_params_repointed_between_steps_are_followed():
    """vector_to_parameters re-points every p.data: the next step notices,
    updates the params where they now are, and lays them out again."""
    ref, ref_opt, got, got_opt = _twins("Adam", {"lr": 0.01, "weight_decay": 0.1})
    flat_steps = _count_flat_steps(got_opt)
    x, y = T.make_data()
    T.train(ref, ref_opt, x, y, 3)
    T.train(got, got_opt, x, y, 3)
    assert len(flat_steps) == 2
    for model in (ref, got):
        vec = torch.nn.utils.parameters_to_vector(model.parameters()) * 0.5
        torch.nn.utils.vector_to_parameters(vec, model.parameters())
    T.train(ref, ref_opt, x, y, 3, first=3)
    T.train(got, got_opt, x, y, 3, first=3)
    assert len(flat_steps) == 4        # one per-tensor step, then flat again
    _assert_same(ref, ref_opt, got, got_opt, T.TOL[torch.float64])


def _roundtrip(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf)


def test_checkpoints_move_both_ways():
    ref, ref_opt, got, got_opt = _twins("AdamW", {"lr": 0.01, "amsgrad": True})
    x, y = T.make_data()
    T.train(ref, ref_opt, x, y, 4)
    T.train(got, got_opt, x, y, 4)
    # torch.optim resumes from the flat optimizer's checkpoint, and back
    # (through bytes: in one process, a loaded state_dict shares its tensors).
    ref_opt.load_state_dict(_roundtrip(got_opt.state_dict()))
    got_opt.load_state_dict(_roundtrip(ref_opt.state_dict()))
    flat_steps = _count_flat_steps(got_opt)
    T.train(ref, ref_opt, x, y, 4, first=4)
    T.train(got, got_opt, x, y, 4, first=4)
    assert len(flat_steps) == 3        # laid out again after the load
    _assert_same(ref, ref_opt, got, got_opt, T.TOL[torch.float64])


def test_a_second_optimizer_adopts_the_layout():
    model = T.make_model()
    x, y = T.make_data()
    first = fastopt.torch.SGD(model.parameters(), lr=0.1, momentum=0.9, flat=True)
    T.train(model, first, x, y, 2)
    where = [p.data_ptr() for p in model.parameters()]
    second = fastopt.torch.SGD(model.parameters(), lr=0.1, momentum=0.9, flat=True)
    flat_steps = _count_flat_steps(second)
    T.train(model, second, x, y, 3)
    assert [p.data_ptr() for p in model.parameters()] == where   # no copy
    assert len(flat_steps) == 2


def test_params_sharing_storage_are_not_flattened():
    """Two params viewing one tensor with a gap stay tied: no layout, torch's numbers."""
    results = []
    for lib in (torch.optim, fastopt.torch):
        base = torch.arange(12.0, dtype=torch.float64)
        a = torch.nn.Parameter(base[:4])
        b = torch.nn.Parameter(base[6:])
        kwargs = {"flat": True} if lib is fastopt.torch else {}
        opt = lib.Adam([a, b], lr=0.1, **kwargs)
        for _ in range(3):
            opt.zero_grad()
            (a.square().sum() + b.sin().sum()).backward()
            opt.step()
        if lib is fastopt.torch:
            assert opt._flat == {} and _storage(a) == _storage(b)
        results.append(torch.cat([a.detach(), b.detach()]))
    assert torch.allclose(results[0], results[1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64], ids=str)
def test_complex_params_flat(dtype):
    results = []
    for lib in (torch.optim, fastopt.torch):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(n, dtype=dtype)) for n in (3, 5)]
        kwargs = {"flat": True} if lib is fastopt.torch else {}
        opt = lib.Adam(params, lr=0.05, **kwargs)
        for _ in range(6):
            opt.zero_grad()
            sum((p * p.conj()).real.sum() + p.real.sum() for p in params).backward()
            opt.step()
        if lib is fastopt.torch:
            assert len(opt._flat) == 1
        results.append(torch.cat([p.detach() for p in params]))
    tol = 1e-12 if dtype == torch.complex128 else 1e-5
    assert T.rel_err(results[1], results[0]) <= tol


def test_rejected_step_leaves_the_flat_layout_untouched():
    ref, _, got, got_opt = _twins("Adam", {"lr": 0.01})
    x, y = T.make_data()
    T.train(got, got_opt, x, y, 3)
    got_opt.zero_grad()
    T.loss_of(got, x, y).backward()
    params = [p.detach().clone() for p in got.parameters()]
    state = pickle.loads(pickle.dumps(got_opt.state_dict()))
    got_opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="learning rate"):
        got_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, got.parameters()))
    for index, s in got_opt.state_dict()["state"].items():
        assert all(torch.equal(v, state["state"][index][k]) for k, v in s.items())


def test_flat_step_bumps_the_autograd_version():
    model = T.make_model()
    opt = fastopt.torch.SGD(model.parameters(), lr=0.1, flat=True)
    x, y = T.make_data()
    T.train(model, opt, x, y, 2)
    calls = _count_flat_steps(opt)
    opt.zero_grad()
    T.loss_of(model, x, y).backward()
    stale = T.loss_of(model, x, y)
    opt.step()
    assert len(calls) == 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        stale.backward()


def test_flat_survives_pickling():
    model = T.make_model()
    opt = fastopt.torch.RMSprop(model.parameters(), lr=0.01, flat=True)
    again = pickle.loads(pickle.dumps(opt))
    assert again._flat_mode is True and again._flat == {}


def test_flat_must_be_a_bool():
    with pytest.raises(TypeError, match="flat"):
        fastopt.torch.Adam(T.make_model().parameters(), flat=1)
