"""Scalars of state kept on the host (`fastopt.spec.Scalar`, `fastopt._hostscalars`):
NAdam's ``mu_product`` (torch) / ``u_product`` (Keras), ASGD's ``eta`` and ``mu``.

The table tests derive them from the step; here the functional call is
handed the library's own state and must advance it exactly as the library
does, and the front ends keep it where the library does.
"""
import numpy as np
import pytest
import torch

import fastopt
import fastopt.functional as F
import fastopt.torch


def _torch_run(cls, kwargs, steps, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(7, dtype=dtype, generator=gen)
    grads = [torch.randn(7, dtype=dtype, generator=gen) for _ in range(steps)]
    opt = cls([p], foreach=False, **kwargs)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p, opt.state[p], grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_nadam_given_torch_state_tensors_continues_exactly(dtype):
    """torch's state at step 5, handed to the functional call (the 0-d
    mu_product tensor itself): 5 more steps equal torch's, and the tensor
    holds torch's value, bit for bit."""
    kwargs = dict(lr=0.01, momentum_decay=6e-3)
    ref, ref_state, grads = _torch_run(torch.optim.NAdam, kwargs, 10, dtype)
    p, state, _ = _torch_run(torch.optim.NAdam, kwargs, 5, dtype)
    m, v, product = (state[k].clone() for k in ("exp_avg", "exp_avg_sq", "mu_product"))
    for t, g in enumerate(grads[5:], 6):
        F.nadam(p.numpy(), g.numpy(), m.numpy(), v.numpy(), step=t, lr=0.01, beta1=0.9,
                beta2=0.999, eps=1e-8, momentum_decay=6e-3, mu_product=product,
                convention="torch")
    assert product.dtype == torch.float32 and product.item() == ref_state["mu_product"].item()
    torch.testing.assert_close(p, ref, rtol=1e-6 if dtype == torch.float32 else 1e-13,
                               atol=0)


def test_asgd_given_torch_state_tensors_continues_exactly():
    kwargs = dict(lr=0.05, t0=3, lambd=0.01)
    ref, ref_state, grads = _torch_run(torch.optim.ASGD, kwargs, 10, torch.float64)
    p, state, _ = _torch_run(torch.optim.ASGD, kwargs, 5, torch.float64)
    ax, eta, mu = (state[k].clone() for k in ("ax", "eta", "mu"))
    for t, g in enumerate(grads[5:], 6):
        F.asgd(p.numpy(), g.numpy(), ax.numpy(), step=t, eta=eta, mu=mu,
               convention="torch", **kwargs)
    assert eta.item() == ref_state["eta"].item() and mu.item() == ref_state["mu"].item()
    torch.testing.assert_close(p, ref, rtol=1e-13, atol=0)
    torch.testing.assert_close(ax, ref_state["ax"], rtol=1e-13, atol=0)


def test_keras_u_product_is_keras_s_float32_value():
    """Keras keeps u_product in the params' dtype; a float32 one-element
    array passed to the functional call is advanced as Keras does it, and
    the Keras-style optimizer keeps the same value in its state_dict."""
    import keras
    var = keras.Variable(np.zeros(3, np.float32), dtype="float32")
    opt = keras.optimizers.Nadam(beta_1=0.875)
    mine = fastopt.Nadam(beta_1=0.875)
    p, m, v = np.zeros(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32)
    product = np.ones((), np.float32)
    for t in range(1, 41):
        g = np.full(3, 0.5, np.float32)
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
        mine.apply_gradients([(g, np.zeros(3, np.float32))])
        F.nadam(p, g, m, v, step=t, lr=1e-3, beta1=0.875, beta2=0.999, eps=1e-7,
                mu_product=product)
    want = float(opt._u_product.value.item())
    assert float(product) == want
    saved = mine.state_dict()["u_product"]
    assert saved.dtype == np.float32 and float(saved) == want


def test_list_call_takes_one_value_and_advances_every_array():
    params = [np.ones(3), np.ones(4)]
    grads = [np.full(3, 0.5), np.full(4, 0.5)]
    states = [[np.zeros(3), np.zeros(4)] for _ in range(2)]
    products = [np.ones(()), np.ones(())]
    F.nadam(params, grads, *states, step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
            mu_product=products, convention="torch")
    assert float(products[0]) == float(products[1]) < 1.0
    before = [p.copy() for p in params]
    products[1][...] = 0.5
    with pytest.raises(ValueError, match=r"^nadam\(\): mu_product holds different values"):
        F.nadam(params, grads, *states, step=2, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                mu_product=products, convention="torch")
    assert all(np.array_equal(a, b) for a, b in zip(params, before))


def test_a_refused_call_leaves_the_value():
    product = np.full((), 0.5)
    with pytest.raises(ValueError):
        F.nadam(np.ones(3), np.ones(4), np.zeros(3), np.zeros(3), step=2, lr=1e-3,
                beta1=0.9, beta2=0.999, eps=1e-8, mu_product=product, convention="torch")
    assert float(product) == 0.5


def test_torch_state_has_torch_s_keys_dtypes_and_values():
    model = torch.nn.Linear(3, 2).double()
    for name in ("NAdam", "ASGD"):
        ours = getattr(fastopt.torch, name)(model.parameters())
        theirs = getattr(torch.optim, name)(model.parameters())
        for opt in (ours, theirs):
            model.zero_grad()
            model(torch.ones(1, 3, dtype=torch.float64)).sum().backward()
            opt.step()
        a, b = ours.state_dict()["state"][0], theirs.state_dict()["state"][0]
        assert list(a) == list(b)
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        for key in ("mu_product", "eta", "mu"):
            if key in b:
                assert a[key].item() == b[key].item(), key
