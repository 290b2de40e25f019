"""fp32 master weights in one pass (``model=``): the float32 master follows
pure float32 training on the same (cast) gradients bit for bit, and the
16-bit model copy is the master rounded to nearest (ml_dtypes' and NumPy's
casts), single and list form, CPU and the CUDA simulator."""
import numpy as np
import pytest

import fastopt.functional as F

ml_dtypes = pytest.importorskip("ml_dtypes")

BF16 = np.dtype(ml_dtypes.bfloat16)
KW = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, convention="torch")


def _bits(a):
    return a.view(np.uint16 if a.itemsize == 2 else np.uint32)


@pytest.mark.parametrize("model_dtype,grad_dtype", [(BF16, BF16), (np.float16, np.float32)],
                         ids=["bf16", "f16-f32grad"])
def test_master_equals_float32_training(model_dtype, grad_dtype):
    rng = np.random.default_rng(0)
    sizes = (1, 37)
    start = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    master = [p.copy() for p in start]                       # single arrays
    masters = [p.copy() for p in start]                      # the list form
    pure = [p.copy() for p in start]                         # float32 training
    state = {k: [[np.zeros(n, np.float32) for n in sizes] for _ in range(2)]
             for k in ("single", "list", "pure")}
    model = [p.astype(model_dtype) for p in start]
    models = [p.astype(model_dtype) for p in start]
    for step in range(1, 21):
        grads = [rng.standard_normal(n).astype(grad_dtype) for n in sizes]
        for k, g in enumerate(grads):
            F.adam(master[k], g, state["single"][0][k], state["single"][1][k], step=step,
                   model=model[k], weight_decay=0.01, **KW)
            F.adam(pure[k], g.astype(np.float32), state["pure"][0][k],
                   state["pure"][1][k], step=step, weight_decay=0.01, **KW)
        F.adam(masters, grads, *state["list"], step=step, model=models,
               weight_decay=0.01, **KW)
    for k in range(len(sizes)):
        assert np.array_equal(_bits(master[k]), _bits(pure[k]))
        assert np.array_equal(_bits(masters[k]), _bits(pure[k]))
        for kind in ("single", "list"):
            for s, ref in zip(state[kind], state["pure"]):
                assert np.array_equal(_bits(s[k]), _bits(ref[k]))
        rounded = pure[k].astype(model_dtype)
        assert np.array_equal(_bits(model[k]), _bits(rounded))
        assert np.array_equal(_bits(models[k]), _bits(rounded))


def test_model_with_ema_and_slot_order():
    """SGD with momentum: the moving average takes the first free slot, the
    model copy the next; both written from the same updated master."""
    rng = np.random.default_rng(1)
    p = rng.standard_normal(9).astype(np.float32)
    ref, buf, ref_buf = p.copy(), np.zeros(9, np.float32), np.zeros(9, np.float32)
    ema, ref_ema, model = p.copy(), p.copy(), p.astype(BF16)
    kw = dict(lr=0.1, momentum=0.9, nesterov=False, convention="keras", ema_momentum=0.5)
    g = rng.standard_normal(9).astype(np.float32)
    F.sgd(p, g, buf, step=1, ema=ema, model=model, **kw)
    F.sgd(ref, g, ref_buf, step=1, ema=ref_ema, **kw)
    assert np.array_equal(p, ref) and np.array_equal(ema, ref_ema)
    assert np.array_equal(_bits(model), _bits(ref.astype(BF16)))


def test_bad_model_inputs_write_nothing():
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    m, v = np.zeros(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(TypeError, match=r"adam\(\): model \(the model copy of master "
                                        r"weights\) must be float16 or bfloat16, got float32"):
        F.adam(p, g, m, v, step=1, model=np.zeros(4, np.float32), **KW)
    p64 = np.ones(4)
    with pytest.raises(TypeError, match=r"adam\(\): param \(the master weights\) must be "
                                        r"float32 when a model copy is given, got float64"):
        F.adam(p64, np.ones(4), np.zeros(4), np.zeros(4), step=1,
               model=np.zeros(4, BF16), **KW)
    with pytest.raises(ValueError, match=r"adam\(\): model needs a free state slot"):
        F.adam(p, g, m, v, step=1, model=np.zeros(4, BF16), max_exp_avg_sq=m.copy(),
               amsgrad=True, **KW)
    assert (p == 1).all() and (p64 == 1).all() and (m == 0).all()


def test_cuda_simulator_matches_cpu():
    import numba
    from numba import cuda
    if not numba.config.ENABLE_CUDASIM:
        pytest.skip("needs Numba's CUDA simulator (tests/conftest.py turns it on)")
    rng = np.random.default_rng(2)
    n = 37
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(BF16)
    m, v = (rng.random(n) * 0.1).astype(np.float32), (rng.random(n) * 0.1).astype(np.float32)
    model = np.zeros(n, BF16)
    host = [a.copy() for a in (p, g, m, v, model)]
    dev = [cuda.to_device(a) for a in (p, g, m, v, model)]
    lists = [[cuda.to_device(a[:5].copy()), cuda.to_device(a[5:].copy())]
             for a in (p, g, m, v, model)]
    for arrays in (host, dev, lists):
        F.adam(*arrays[:4], step=3, model=arrays[4], **KW)
    for h, d, parts in zip(host, dev, lists):
        got = d.copy_to_host()
        joined = np.concatenate([x.copy_to_host() for x in parts])
        assert np.array_equal(_bits(h), _bits(got))
        assert np.array_equal(_bits(h), _bits(joined))
    assert np.array_equal(_bits(host[4]), _bits(host[0].astype(BF16)))


@pytest.mark.parametrize("name,options,dtype", [
    ("AdamW", {"weight_decay": 0.1}, "bfloat16"), ("SGD", {}, "float16")])
def test_torch_master_weights(name, options, dtype):
    """fastopt.torch with ``master_weights = True`` on 16-bit params: the
    float32 masters (in state_dict) equal float32 training bit for bit, the
    params are the masters rounded to nearest, and a checkpoint loads into a
    new optimizer (masters and state kept float32) that continues the same."""
    import copy

    import torch

    import fastopt.torch as FT
    dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    shapes = [(7,), (3, 5), (1,)]
    model = [torch.randn(s).to(dtype).requires_grad_() for s in shapes]
    ref = [p.detach().float().requires_grad_() for p in model]
    opt = getattr(FT, name)(model, lr=1e-2, **options)
    opt.master_weights = True
    ropt = getattr(FT, name)(ref, lr=1e-2, **options)

    def steps(opt, count):
        for _ in range(count):
            grads = [torch.randn(s).to(dtype) for s in shapes]
            for a, b, g in zip(model, ref, grads):
                a.grad, b.grad = g.clone(), g.float()
            opt.step()
            ropt.step()

    steps(opt, 6)
    again = getattr(FT, name)(model, lr=1e-2, **options)
    again.master_weights = True
    again.load_state_dict(copy.deepcopy(opt.state_dict()))
    steps(again, 4)
    for a, b in zip(model, ref):
        state = again.state[a]
        assert state["master_param"].dtype == torch.float32
        assert torch.equal(state["master_param"], b)
        assert torch.equal(a.detach().view(torch.int16), b.detach().to(dtype).view(torch.int16))
        for key, value in ropt.state[b].items():
            if key != "step":
                assert value.dtype == torch.float32 and torch.equal(state[key], value)
