"""Loading a bad optimizer state: a clear error naming the culprit, and nothing changed.

"Nothing changed" is checked twice: the optimizer's state, counters,
learning rate, built-ness and params are as before, and it then steps
exactly as a twin that never saw the bad state.
"""
import copy

import numpy as np
import pytest

import fastopt

SHAPES = [(3, 4), (5,), (2, 3)]


def _grads(seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _stepped(steps=2):
    """A built SGD with momentum after `steps` steps, and its params."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in SHAPES]
    opt = fastopt.SGD(learning_rate=0.1, momentum=0.9)
    for k in range(steps):
        opt.apply_gradients(zip(_grads(k), params))
    return opt, params


def _snapshot(opt, params):
    return (opt.built, opt.iterations, opt.learning_rate,
            {k: np.array(v, copy=True) for k, v in opt.state_dict().items()},
            [p.copy() for p in params])


def _assert_same(a, b):
    assert a[:3] == b[:3]
    assert a[3].keys() == b[3].keys()
    for k in a[3]:
        np.testing.assert_array_equal(a[3][k], b[3][k])
    for x, y in zip(a[4], b[4]):
        np.testing.assert_array_equal(x, y)


def _assert_steps_like_a_twin(opt, params):
    twin, twin_params = _stepped()
    for k in (7, 8):
        opt.apply_gradients(zip(_grads(k), params))
        twin.apply_gradients(zip(_grads(k), twin_params))
    for p, q in zip(params, twin_params):
        np.testing.assert_array_equal(p, q)


def _with(**changes):
    def mutate(sd):
        return {**sd, **{k.replace("__", "/"): (v(sd) if callable(v) else v)
                         for k, v in changes.items()}}
    return mutate


BAD = {
    "slot beyond num_params": (_with(momentum__7=lambda sd: sd["momentum/0"]),
                               "unexpected key 'momentum/7'"),
    "index not in canonical form": (_with(momentum__01=lambda sd: sd["momentum/0"]),
                                    "unexpected key 'momentum/01'"),
    "num_params a string": (_with(num_params="three"), "num_params must be an integer"),
    "num_params an array": (_with(num_params=np.array([3])), "num_params must be an integer"),
    "num_params negative": (_with(num_params=np.array(-1)), "num_params must be an integer"),
    "num_params larger": (_with(num_params=np.array(4)), r"expected 4 \(no 'momentum/3'\)"),
    "learning_rate a string": (_with(learning_rate="fast"), "learning_rate must be a real"),
    "learning_rate an array": (_with(learning_rate=np.ones(2)), "learning_rate must be a real"),
    "learning_rate nan": (_with(learning_rate=np.array(np.nan)), "learning_rate must be finite"),
    "iterations a float": (_with(iterations=np.array(2.0)), "iterations must be an integer"),
    "optimizer not a name": (_with(optimizer=np.array(3)), "optimizer must be a class name"),
}


@pytest.mark.parametrize("mutate, match", BAD.values(), ids=list(BAD))
def test_bad_state_dict_into_a_built_optimizer(mutate, match):
    source, _ = _stepped(steps=3)
    opt, params = _stepped()
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(mutate(source.state_dict()))
    _assert_same(_snapshot(opt, params), before)
    _assert_steps_like_a_twin(opt, params)


@pytest.mark.parametrize("mutate, match", BAD.values(), ids=list(BAD))
def test_bad_state_dict_into_an_unbuilt_optimizer(mutate, match):
    source, _ = _stepped(steps=3)
    opt = fastopt.SGD(learning_rate=0.1, momentum=0.9)
    before = _snapshot(opt, [])
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(mutate(source.state_dict()))
    _assert_same(_snapshot(opt, []), before)
    assert opt._pending is None


def test_header_only_state_is_refused_where_the_optimizer_keeps_arrays():
    """Without its arrays a stepped state would resume at step 6 on zero moments."""
    header = {"optimizer": np.array("Adam"), "iterations": np.array(5),
              "learning_rate": np.array(0.01)}
    opt = fastopt.Adam()
    with pytest.raises(ValueError, match="iterations=5 but holds no"):
        opt.load_state_dict(header)
    assert not opt.built and opt.iterations == 0 and opt.learning_rate == 0.001
    # SGD without momentum keeps no arrays: its header is its whole state.
    plain = fastopt.SGD(learning_rate=0.1)
    plain.load_state_dict({**header, "optimizer": np.array("SGD")})
    assert (plain.iterations, plain.learning_rate) == (5, 0.01)


def test_a_good_load_replaces_state_kept_for_the_build():
    source, _ = _stepped(steps=3)
    opt = fastopt.SGD(learning_rate=0.1, momentum=0.9)
    opt.load_state_dict(source.state_dict())
    fresh = fastopt.SGD(learning_rate=0.1, momentum=0.9).state_dict()
    opt.load_state_dict(fresh)
    assert opt.state_dict().keys() == fresh.keys() and opt._pending is None


@pytest.mark.parametrize("damage", ["truncated", "npy", "pickled", "text"])
def test_bad_file(tmp_path, damage):
    source, _ = _stepped(steps=3)
    good = tmp_path / "good.npz"
    source.save_state(good)
    path = tmp_path / f"bad.{'npy' if damage == 'npy' else 'npz'}"
    if damage == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        match = "not a readable .npz"
    elif damage == "npy":
        np.save(path, np.ones(3))
        match = r"single array \(.npy\)"
    elif damage == "pickled":
        np.savez(path, **source.state_dict(), extra=np.array([{"a": 1}], dtype=object))
        match = "not a .npz archive of arrays"
    else:
        path.write_text("not an archive")
        match = "not a"
    opt, params = _stepped()
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match=match) as e:
        opt.load_state(path)
    assert str(path) in str(e.value)
    _assert_same(_snapshot(opt, params), before)
    opt.load_state(good)    # the good file still loads, and equals its source
    _assert_same(_snapshot(opt, []), _snapshot(source, []))


# -- fastopt.torch ------------------------------------------------------------
torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))


def _train(net, opt, steps=2, seed=1):
    data = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(8, 4, generator=data)).square().mean().backward()
        opt.step()


def _torch_snapshot(net, opt):
    sd = opt.state_dict()
    return ([p.detach().clone() for p in net.parameters()],
            {k: {n: v.clone() for n, v in s.items()} for k, s in sd["state"].items()},
            [{k: v for k, v in g.items()} for g in sd["param_groups"]])


def _torch_assert_same(a, b):
    for x, y in zip(a[0], b[0]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert a[1][k].keys() == b[1][k].keys()
        for n in a[1][k]:
            torch.testing.assert_close(a[1][k][n], b[1][k][n], rtol=0, atol=0)
    assert a[2] == b[2]


def _sgd_checkpoint(momentum):
    net = _net(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=momentum)
    _train(net, opt)
    return opt.state_dict()


def _adam_checkpoint(change):
    net = _net(1)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    _train(net, opt)
    sd = opt.state_dict()
    change(sd)
    return sd


def _set(path, value):
    def change(sd):
        *where, last = path
        target = sd
        for key in where:
            target = target[key]
        target[last] = value(target[last]) if callable(value) else value
    return change


TORCH_BAD = {
    "SGD with momentum into Adam": (lambda: _sgd_checkpoint(0.9), r"lacks \['betas', 'eps'\]"),
    "SGD without momentum into Adam": (lambda: _sgd_checkpoint(0.0), r"lacks \['betas', 'eps'\]"),
    "a foreign state key": (lambda: _adam_checkpoint(_set(("state", 0, "momentum_buffer"),
                                                          torch.zeros(3, 4))),
                            "has key 'momentum_buffer'"),
    "a state tensor of another shape": (
        lambda: _adam_checkpoint(_set(("state", 1, "exp_avg"), torch.zeros(4))),
        r"state\[1\]\['exp_avg'\] has shape \(4,\)"),
    "a bad hyperparameter": (lambda: _adam_checkpoint(_set(("param_groups", 0, "betas"),
                                                           (0.9, 1.5))),
                             "Invalid beta parameter at index 1"),
}


@pytest.mark.parametrize("checkpoint, match", TORCH_BAD.values(), ids=list(TORCH_BAD))
def test_torch_bad_checkpoint(checkpoint, match):
    net = _net()
    opt = ft.Adam(net.parameters(), lr=0.01)
    _train(net, opt)
    before = _torch_snapshot(net, opt)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(checkpoint())
    _torch_assert_same(_torch_snapshot(net, opt), before)
    # It then steps as torch.optim.Adam from the same point.
    ref_net = _net()
    ref = torch.optim.Adam(ref_net.parameters(), lr=0.01)
    _train(ref_net, ref)
    _train(net, opt, seed=2)
    _train(ref_net, ref, seed=2)
    for a, b in zip(net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(a, b)


LOADABLE = [(torch.optim.Adam, torch.optim.Adam, "Adam"),
            (torch.optim.Adam, torch.optim.AdamW, "AdamW"),
            (torch.optim.SGD, torch.optim.SGD, "SGD")]


@pytest.mark.parametrize("source_cls, ref_cls, name", LOADABLE,
                         ids=[f"{a.__name__}-into-{n}" for a, _, n in LOADABLE])
def test_torch_checkpoints_that_torch_loads_still_load(source_cls, ref_cls, name):
    """The checks refuse nothing torch.optim itself runs on: the run continues
    as torch.optim's does from the same checkpoint (AdamW stays decoupled)."""
    src_net = _net()
    src = source_cls(src_net.parameters(), lr=0.01)
    _train(src_net, src)
    nets = [_net(), _net()]
    opts = [ref_cls(nets[0].parameters(), lr=0.01),
            getattr(ft, name)(nets[1].parameters(), lr=0.01)]
    for net, opt in zip(nets, opts):
        net.load_state_dict(src_net.state_dict())
        # torch's load may keep the checkpoint's tensors: one copy each.
        opt.load_state_dict(copy.deepcopy(src.state_dict()))
        _train(net, opt, seed=2)
    for a, b in zip(*[net.parameters() for net in nets]):
        torch.testing.assert_close(a, b)
