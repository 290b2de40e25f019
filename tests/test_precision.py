"""Hyperparameters are checked in the precision the kernel computes in.

A value finite in float64 that a float32 kernel would receive as inf (or a
positive one it would receive as 0) is refused with its name, and nothing
is written; float64 arrays take the same value, as torch.optim does.
"""
import numpy as np
import pytest
import torch

import fastopt
import fastopt.functional as F
import fastopt.torch

ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


def _adam_arrays(dtype, n=4):
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    return [p, g, np.zeros(n, dtype), np.zeros(n, dtype)]


@pytest.mark.parametrize("call, match", [
    (lambda a: F.sgd(*a[:2], step=1, lr=1e39), r"sgd\(\): lr=1e\+39 overflows float32"),
    (lambda a: F.sgd(*a[:2], step=1, lr=0.1, grad_scale=1e39),
     r"grad_scale=1e\+39 overflows float32"),
    (lambda a: F.adam(*a, step=1, **dict(ADAM, eps=1e-50)),
     r"adam\(\): eps=1e-50 rounds to 0 in float32 and must be > 0"),
    (lambda a: F.sgd(*a[:2], step=1, lr=1e30, weight_decay=1e10),
     r"decoupled decay factor 1 − lr·weight_decay = -1e\+40, which overflows float32"),
    (lambda a: F.adam(*a, step=1, **dict(ADAM, lr=3e38, beta1=0.999), convention="torch"),
     r"kernel's alpha = .*, which overflows float32"),
], ids=["lr", "grad_scale", "eps", "lr-times-wd", "bias-corrected-step"])
def test_float32_refuses_what_it_cannot_hold(call, match):
    arrays = _adam_arrays(np.float32)
    before = [a.copy() for a in arrays]
    with pytest.raises(ValueError, match=match):
        call(arrays)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b, strict=True)


def test_a_list_with_any_float32_tensor_is_refused_whole():
    ps = [np.ones(3, np.float64), np.ones(3, np.float32)]
    gs = [np.ones(3, np.float64), np.ones(3, np.float32)]
    with pytest.raises(ValueError, match="lr=1e\\+39 overflows float32"):
        F.sgd(ps, gs, step=1, lr=1e39)
    for p in ps:
        np.testing.assert_array_equal(p, np.ones(3, p.dtype))


def test_float64_takes_the_same_values_as_torch():
    rng = np.random.default_rng(1)
    p, g = rng.standard_normal(5), rng.standard_normal(5)
    want = torch.tensor(p, requires_grad=True)
    want.grad = torch.tensor(g)
    torch.optim.SGD([want], lr=1e39).step()
    F.sgd(p, g, step=1, lr=1e39, convention="torch")
    np.testing.assert_array_equal(p, want.detach().numpy())


def test_negative_grad_scale_is_refused():
    p, g = np.ones(3), np.ones(3)
    with pytest.raises(ValueError, match=r"grad_scale must be in \[0.0, inf\], got -1.0"):
        F.sgd(p, g, step=1, lr=0.1, grad_scale=-1.0)
    np.testing.assert_array_equal(p, np.ones(3))


def test_step_past_float64_counting_is_refused_by_name():
    arrays = _adam_arrays(np.float64)
    with pytest.raises(ValueError, match=r"step must be <= 2\*\*53, got an integer of 401"):
        F.adam(*arrays, step=10 ** 400, **ADAM)
    with pytest.raises(ValueError, match=r"step must be <= 2\*\*53, got 9007199254740993"):
        F.adam(*arrays, step=2 ** 53 + 1, **ADAM)


def test_torch_front_end_refuses_before_writing():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = fastopt.torch.SGD(model.parameters(), lr=1e39)
    model(torch.randn(4, 3)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"^fastopt.torch.SGD: lr=1e\+39 overflows float32"):
        opt.step()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(learning_rate=1e39), r"^Adam\(\): learning_rate=1e\+39 overflows float32"),
    (dict(epsilon=1e-50), r"^Adam\(\): epsilon=1e-50 rounds to 0 in float32"),
])
def test_keras_style_names_the_value_in_keras_words(kwargs, match):
    params = [np.ones(8, np.float32)]
    opt = fastopt.Adam(**kwargs)
    with pytest.raises(ValueError, match=match):
        opt.apply_gradients(zip([np.full(8, 0.5, np.float32)], params))
    np.testing.assert_array_equal(params[0], np.ones(8, np.float32))
    assert not opt.built and opt.iterations == 0
