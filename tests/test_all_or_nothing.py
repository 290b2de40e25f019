"""Every step is all or nothing, in every front end.

A step can be several kernel calls: fastopt.torch's param groups and
step-count buckets, the Keras-style optimizers' per-variable ``clipnorm``
groups. Each case below makes a step whose *last* call is refused, and
checks that the step raised and left params, state, step counters and the
optimizer's built-ness exactly as they were; then that the same optimizer,
given a good step, still matches a twin that never saw the bad one.
"""
import copy
import re

import numpy as np
import pytest
import torch

import fastopt
import fastopt.torch


# --- fastopt.torch -------------------------------------------------------------
def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(),
                               torch.nn.Linear(6, 2)).double()


def _backward(model, seed=1):
    torch.manual_seed(seed)
    model.zero_grad()
    model(torch.randn(5, 4, dtype=torch.float64)).square().sum().backward()


def _snapshot(model, opt):
    return ([p.detach().clone() for p in model.parameters()],
            copy.deepcopy(opt.state_dict()))


def _assert_unchanged(model, opt, snapshot):
    params, state = snapshot
    for p, want in zip(model.parameters(), params):
        assert torch.equal(p, want)
    got = opt.state_dict()
    assert got["state"].keys() == state["state"].keys()
    for k, s in state["state"].items():
        assert got["state"][k].keys() == s.keys()
        for key, value in s.items():
            assert torch.equal(got["state"][k][key], value), (k, key)


def _two_groups(model, **kwargs):
    return fastopt.torch.Adam([{"params": model[0].parameters()},
                               {"params": model[2].parameters(), "lr": 1e-2}],
                              lr=1e-3, **kwargs)


@pytest.mark.parametrize("first_step", [True, False], ids=["first", "later"])
def test_torch_second_group_grad_aliasing_its_param_writes_nothing(first_step):
    model = _model()
    opt = _two_groups(model)
    if not first_step:
        _backward(model)
        opt.step()
    _backward(model, seed=2)
    bad = model[2].weight
    bad.grad = bad.detach()      # the gradient is the param's own memory
    before = _snapshot(model, opt)
    where = re.escape("param_groups[1]['params'][0]")    # in torch's words
    with pytest.raises(ValueError, match=f"^fastopt.torch.Adam: the gradient of {where} "
                                         f"shares memory with {where};"):
        opt.step()
    _assert_unchanged(model, opt, before)
    if first_step:      # no zero state left behind by the refused first step
        assert len(opt.state) == 0


def test_torch_overlapping_params_in_a_later_group_write_nothing():
    model = _model()
    buffer = torch.zeros(12, dtype=torch.float64)
    a, b = (torch.nn.Parameter(buffer[0:8]), torch.nn.Parameter(buffer[4:12]))
    opt = fastopt.torch.SGD([{"params": model.parameters()}, {"params": [a, b]}],
                            lr=0.1, momentum=0.9)
    _backward(model)
    a.grad, b.grad = torch.ones(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=re.escape(
            "param_groups[1]['params'][1] shares memory with param_groups[1]['params'][0]")):
        opt.step()
    _assert_unchanged(model, opt, before)
    assert torch.equal(buffer, torch.zeros(12, dtype=torch.float64))


def test_torch_nan_step_in_a_later_group_writes_nothing():
    """A checkpoint whose state['step'] is NaN is refused before group 0 moves."""
    model = _model()
    opt = _two_groups(model)
    _backward(model)
    opt.step()
    opt.state[model[2].bias]["step"].fill_(float("nan"))
    _backward(model, seed=2)
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"state\['step'\] must be a whole number"):
        opt.step()
    params, state = before
    for p, want in zip(model.parameters(), params):
        assert torch.equal(p, want)
    for k, s in state["state"].items():
        got = opt.state_dict()["state"][k]
        for key, value in s.items():
            assert torch.equal(got[key], value) or (
                key == "step" and got[key].isnan() and value.isnan())


def test_torch_second_step_count_bucket_refused_writes_nothing():
    """One group, two step counts (a param that got its first gradient
    late): two calls in one step, the second refused."""
    model = _model()
    opt = fastopt.torch.Adam(model.parameters(), lr=1e-3)
    _backward(model)
    model[2].bias.grad = None        # its first step comes later
    opt.step()
    _backward(model, seed=2)
    late = model[2].bias
    late.grad = late.detach()        # the newcomer's bucket is the bad one
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match="shares memory"):
        opt.step()
    _assert_unchanged(model, opt, before)
    assert late not in opt.state


def test_torch_refused_step_then_good_step_matches_a_twin():
    model, twin = _model(), _model()
    opt, twin_opt = _two_groups(model), _two_groups(twin)
    for m, o in ((model, opt), (twin, twin_opt)):
        _backward(m)
        o.step()
    _backward(model, seed=2)
    good_grad = model[2].weight.grad
    model[2].weight.grad = model[2].weight.detach()
    with pytest.raises(ValueError):
        opt.step()
    model[2].weight.grad = good_grad
    _backward(twin, seed=2)
    opt.step()
    twin_opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    for (_, s), (_, t) in zip(opt.state.items(), twin_opt.state.items()):
        for key in s:
            assert torch.equal(s[key], t[key])


# --- Keras-style -----------------------------------------------------------------
def _arrays(seed, shapes=((3, 4), (5,), (2, 3))):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


def _keras_state(opt):
    return {k: np.array(v, copy=True) for k, v in opt.state_dict().items()}


def _assert_same_state(opt, want):
    got = opt.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], strict=True)


def test_keras_clipnorm_overlapping_params_are_refused_unwritten():
    """Without clipnorm the one list call refuses overlapping params; with
    it (one call per clip group) the step refuses them too, unwritten."""
    buffer = np.zeros(12)
    params = [buffer[0:8], buffer[4:12]]
    grads = [np.ones(8), np.full(8, 3.0)]       # different norms: two groups
    for kwargs in ({}, {"clipnorm": 1.0}):
        opt = fastopt.SGD(learning_rate=0.1, **kwargs)
        with pytest.raises(ValueError, match=r"params\[1\] shares memory with params\[0\]"):
            opt.apply_gradients(zip(grads, params))
        assert not opt.built and opt.iterations == 0
        np.testing.assert_array_equal(buffer, np.zeros(12))


def test_keras_clipnorm_later_group_refused_writes_nothing():
    """The grad of a later clip group is the memory of an earlier param."""
    params = _arrays(0)
    opt = fastopt.Adam(learning_rate=0.1, clipnorm=0.5)
    opt.apply_gradients(zip(_arrays(1), params))
    want_params = [p.copy() for p in params]
    want_state = _keras_state(opt)
    grads = _arrays(2)
    grads[2] = params[0].reshape(-1)[:6].reshape(2, 3)   # aliases params[0]
    with pytest.raises(ValueError, match=r"grads\[2\] shares memory with params\[0\]"):
        opt.apply_gradients(zip(grads, params))
    for p, want in zip(params, want_params):
        np.testing.assert_array_equal(p, want, strict=True)
    _assert_same_state(opt, want_state)
    assert opt.iterations == 1


def test_keras_refused_first_step_leaves_optimizer_unbuilt():
    """A first step refused inside its kernel call (a param overlapping
    another) builds nothing: the corrected call then builds and runs, and
    matches an optimizer that only ever saw the good call."""
    params = _arrays(0)
    alias = [params[0], params[0].reshape(-1)[:5], params[2]]
    opt = fastopt.RMSprop(learning_rate=0.01)
    with pytest.raises(ValueError, match="shares memory"):
        opt.apply_gradients(zip(_arrays(1), alias))
    assert not opt.built and opt.iterations == 0 and "num_params" not in opt.state_dict()
    twin_params = [p.copy() for p in params]
    twin = fastopt.RMSprop(learning_rate=0.01)
    grads = _arrays(1)
    opt.apply_gradients(zip(grads, params))
    twin.apply_gradients(zip(grads, twin_params))
    for p, q in zip(params, twin_params):
        np.testing.assert_array_equal(p, q, strict=True)
    _assert_same_state(opt, _keras_state(twin))
