"""Stochastic rounding of bfloat16 stores (``stochastic_rounding=True,
seed=``): unbiased, reproducible by seed, the same bits on the CPU and the
CUDA simulator, and a bfloat16 training run that follows float32 where
round-to-nearest stalls."""
import numpy as np
import pytest

import fastopt.functional as F

ml_dtypes = pytest.importorskip("ml_dtypes")

BF16 = np.dtype(ml_dtypes.bfloat16)
SGD = dict(momentum=0.0, nesterov=False, convention="torch")
ADAM = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, convention="torch")


def _round(x, seed, step=1):
    """`x` (float32) written to a bfloat16 model copy with stochastic rounding
    (SGD with lr 0 on master weights: one kernel call)."""
    model = np.zeros(x.size, BF16)
    F.sgd(x.copy(), np.zeros(x.size, np.float32), step=step, lr=0.0, model=model,
          stochastic_rounding=True, seed=seed, **SGD)
    return model


def test_unbiased_and_reproducible():
    x = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    rounded = _round(x, seed=7)
    err = rounded.astype(np.float64) - x
    assert abs(err.mean()) < 4 * err.std() / np.sqrt(x.size)
    nearest = x.astype(BF16)
    # Each value is one of its two neighbours, about a quarter not the nearest.
    assert np.all(np.abs(err) < 2 * np.abs(nearest.astype(np.float64) - x) + 1e-30
                  + np.abs(x) * 2.0 ** -7)
    assert 0.2 < (rounded.view(np.uint16) != nearest.view(np.uint16)).mean() < 0.3
    small = x[:4099]
    again = _round(small, seed=7)
    assert np.array_equal(again.view(np.uint16), rounded[:4099].view(np.uint16))
    assert not np.array_equal(_round(small, seed=8).view(np.uint16), again.view(np.uint16))
    assert not np.array_equal(_round(small, seed=7, step=2).view(np.uint16),
                              again.view(np.uint16))


def test_bf16_training_follows_float32_where_nearest_stalls():
    """SGD on bfloat16 params at 1.0 (resolution 2**-7) with lr·g = 1e-4: to
    nearest, every step rounds back to 1.0; stochastically, the mean follows
    float32's 1 - 200e-4."""
    n, steps = 4096, 200
    near, sr = np.ones(n, BF16), np.ones(n, BF16)
    ref = np.ones(n, np.float32)
    g = np.ones(n, BF16)
    for step in range(1, steps + 1):
        F.sgd(near, g, step=step, lr=1e-4, **SGD)
        F.sgd(sr, g, step=step, lr=1e-4, stochastic_rounding=True, seed=3, **SGD)
        F.sgd(ref, g.astype(np.float32), step=step, lr=1e-4, **SGD)
    assert np.all(near.astype(np.float32) == 1.0)
    assert abs(sr.astype(np.float64).mean() - ref.mean()) < 1e-3
    assert ref.mean() < 0.9805


def test_rules_out_other_dtypes():
    p = np.ones(4, np.float32)
    with pytest.raises(TypeError, match=r"sgd\(\): stochastic_rounding=True rounds "
                                        r"bfloat16 .* param has none"):
        F.sgd(p, p.copy(), step=1, lr=0.1, stochastic_rounding=True, **SGD)
    with pytest.raises(TypeError, match=r"sgd\(\): seed must be an int"):
        F.sgd(p, p.copy(), step=1, lr=0.1, stochastic_rounding=True, seed=1.5, **SGD)
    assert (p == 1).all()


def test_cuda_simulator_matches_cpu():
    """Adam on bfloat16 params and state with stochastic rounding: the CUDA
    kernels (simulator) give the CPU's bits, single and list form (a
    one-tensor list is the single call's)."""
    import numba
    from numba import cuda
    if not numba.config.ENABLE_CUDASIM:
        pytest.skip("needs Numba's CUDA simulator (tests/conftest.py turns it on)")
    rng = np.random.default_rng(2)
    n = 37
    arrays = [rng.standard_normal(n).astype(BF16), rng.standard_normal(n).astype(BF16),
              (rng.random(n) * 0.1).astype(BF16), (rng.random(n) * 0.1).astype(BF16)]
    kw = dict(step=3, stochastic_rounding=True, seed=11, **ADAM)
    host = [a.copy() for a in arrays]
    one = [[a.copy()] for a in arrays]
    split = [[a[:5].copy(), a[5:].copy()] for a in arrays]
    dev = [cuda.to_device(a) for a in arrays]
    dsplit = [[cuda.to_device(x) for x in parts] for parts in split]
    for args in (host, one, split, dev, dsplit):
        F.adam(*args, **kw)
    for c in range(4):
        bits = host[c].view(np.uint16)
        assert np.array_equal(one[c][0].view(np.uint16), bits)
        assert np.array_equal(dev[c].copy_to_host().view(np.uint16), bits)
        got = np.concatenate([x.copy_to_host().view(np.uint16) for x in dsplit[c]])
        assert np.array_equal(got, np.concatenate([x.view(np.uint16) for x in split[c]]))
    assert not np.array_equal(host[0].view(np.uint16), arrays[0].view(np.uint16))


def test_torch_option():
    """fastopt.torch: ``opt.stochastic_rounding = True`` on a model with
    bfloat16 and float32 params rounds the bfloat16 ones stochastically
    (equal to the functional call with the same seed and step) and leaves
    the float32 ones as without it."""
    import torch

    import fastopt.torch as FT
    torch.manual_seed(0)
    half = torch.full((300,), 1.0, dtype=torch.bfloat16, requires_grad=True)
    full = torch.ones(5, requires_grad=True)
    opt = FT.SGD([half, full], lr=1e-4)
    opt.stochastic_rounding, opt.seed = True, 5
    half.grad, full.grad = torch.ones_like(half), torch.ones_like(full)
    opt.step()
    expect = np.ones(300, BF16)
    # SGD keeps no step count: its steps so far are mixed into the seed.
    F.sgd([expect], [np.ones(300, BF16)], step=1, lr=1e-4, stochastic_rounding=True,
          seed=5 + (1 << 32), **SGD)
    assert np.array_equal(half.detach().view(torch.int16).numpy(), expect.view(np.int16))
    assert (half != 1).any() and torch.equal(full.detach(), torch.full((5,), 1 - 1e-4))
