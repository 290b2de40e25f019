"""fastopt.clip_grad_norm_ against torch.nn.utils.clip_grad_norm_ (the oracle):
the returned norm (value, dtype) and the clipped gradients, over lists of 1
to 2,000 tensors with empty ones, every norm type torch has, inf and NaN with
and without error_if_nonfinite; NumPy arrays and GPU arrays (simulator) too;
and the clip deferred into a fastopt.torch optimizer's step."""
import math

import numpy as np
import pytest
import torch
from torch.nn.utils import clip_grad_norm_ as torch_clip

import fastopt
import fastopt.torch as ftorch

NORMS = [2.0, 1.0, math.inf, -math.inf, 0.0, 3.0, 0.5, -1.0]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
# 70,000 elements: two chunks of the table (`_multi.CHUNK` is 65,536)
SHAPES = [(1,), (7, 3), (0,), (70_000,), (2, 3, 4), (5,)]


def _params(shapes, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        p = torch.zeros(shape, dtype=dtype, requires_grad=True)
        p.grad = torch.randn(shape, generator=g, dtype=dtype) * scale
        out.append(p)
    return out


def _twin(params):
    out = []
    for p in params:
        q = p.detach().clone().requires_grad_()
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out


def _close(got, want, tol):
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=tol, atol=0, equal_nan=True)


def _check(params, max_norm=1.0, **kw):
    mine = _twin(params)
    want = torch_clip(params, max_norm, **kw)
    got = fastopt.clip_grad_norm_(mine, max_norm, **kw)
    # float32 where any gradient is float32 (torch's norms of it are float32)
    tol = max(TOL.get(p.grad.dtype, 1e-5) for p in params if p.grad is not None) \
        if any(p.grad is not None for p in params) else 0
    _close(got, want, tol)
    for p, q in zip(params, mine):
        if p.grad is not None:
            _close(q.grad, p.grad, tol)
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("norm_type", NORMS, ids=str)
def test_norm_types_match_torch(norm_type, dtype):
    shapes = SHAPES if norm_type >= 0 and not math.isinf(norm_type) else \
        [s for s in SHAPES if 0 not in s]
    for max_norm in (0.5, 1e9):     # clipped, and left alone (factor 1)
        _check(_params(shapes, dtype, scale=0.1), max_norm, norm_type=norm_type)


@pytest.mark.parametrize("count", [1, 2, 2000])
def test_list_lengths_match_torch(count):
    rng = np.random.default_rng(count)
    shapes = [(int(n),) for n in rng.integers(0, 40, count)]
    params = _params(shapes, seed=count)
    params[0].grad = None   # torch skips params without a gradient
    _check(params, 0.25)


def test_empty_tensor_with_norm_without_identity_raises_as_torch():
    for p in (math.inf, -math.inf, -1.0):
        for foreach in (None, False):
            params = _params([(3,), (0,)])
            with pytest.raises(RuntimeError) as want:
                torch_clip(params, 1.0, p, foreach=foreach)
            with pytest.raises(RuntimeError) as got:
                fastopt.clip_grad_norm_(_twin(params), 1.0, p, foreach=foreach)
            assert str(got.value) == str(want.value)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_nonfinite_gradients(bad):
    def fresh():
        params = _params([(4,), (3,)])
        params[1].grad[1] = bad
        return params

    for p in (2.0, math.inf, 1.0):
        got = _check(fresh(), 1.0, norm_type=p)     # scaled by a 0 or NaN factor
        assert not math.isfinite(float(got))
        with pytest.raises(RuntimeError) as want:
            torch_clip(fresh(), 1.0, p, error_if_nonfinite=True)
        params = fresh()
        twin = _twin(params)
        with pytest.raises(RuntimeError) as mine:
            fastopt.clip_grad_norm_(twin, 1.0, p, error_if_nonfinite=True)
        assert str(mine.value) == str(want.value)
        for a, b in zip(twin, params):     # nothing written
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)


def test_mixed_dtypes_complex_half_and_no_grads():
    params = _params([(5,), (3,)], torch.float32) + _params([(4,)], torch.float64)
    c = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    c.grad = torch.randn(3, dtype=torch.complex64)
    h = torch.zeros(6, dtype=torch.float16, requires_grad=True)
    h.grad = torch.randn(6, dtype=torch.float16)
    for p in (2.0, 1.0):
        got = _check(params + [c], 0.5, norm_type=p)
        assert got.dtype == torch.float64
    _check([h] + params[:1], 0.5)
    assert float(fastopt.clip_grad_norm_([], 1.0)) == 0.0
    assert torch.equal(fastopt.clip_grad_norm_([torch.zeros(2, requires_grad=True)], 1.0),
                       torch_clip([torch.zeros(2, requires_grad=True)], 1.0))


def test_a_param_listed_twice_is_scaled_twice_as_torch():
    params = _params([(4,), (3,)])
    mine = _twin(params)
    want = torch_clip(params + params[:1], 0.1)
    got = fastopt.clip_grad_norm_(mine + mine[:1], 0.1)
    _close(got, want, 1e-5)
    for p, q in zip(params, mine):
        _close(q.grad, p.grad, 1e-5)


def test_numpy_arrays_match_torch():
    for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        params = _params(SHAPES, tdtype, seed=3, scale=0.1)
        arrays = [p.grad.numpy().copy() for p in params]
        for p_type in (2.0, math.inf):
            full = [k for k, p in enumerate(params) if p.numel() or p_type == 2.0]
            want = torch_clip(_twin([params[k] for k in full]), 0.5, p_type)
            got = fastopt.get_total_norm([arrays[k] for k in full], p_type)
            assert got.dtype == dtype
            np.testing.assert_allclose(got, float(want), rtol=TOL[tdtype])
        work = _twin(params)
        want = torch_clip(work, 0.5)
        got = fastopt.clip_grad_norm_(arrays, 0.5)
        np.testing.assert_allclose(got, float(want), rtol=TOL[tdtype])
        for a, p in zip(arrays, work):
            np.testing.assert_allclose(a, p.grad.numpy(), rtol=TOL[tdtype], atol=0)


@pytest.mark.parametrize("norm_type", [2.0, math.inf, -math.inf, 0.0, 1.5])
def test_gpu_arrays_match_torch(norm_type):
    from numba import cuda

    shapes = [(1,), (70,), (33,), (3, 5)]   # around the simulator's block
    params = _params(shapes, torch.float64, seed=4, scale=0.1)
    params[1].grad[3] = 0.0
    device = [cuda.to_device(p.grad.numpy()) for p in params]
    want = torch_clip(_twin(params), 0.3, norm_type)
    twin = _twin(params)
    torch_clip(twin, 0.3, norm_type)
    got = fastopt.clip_grad_norm_(device, 0.3, norm_type)
    np.testing.assert_allclose(got, float(want), rtol=1e-12)
    for d, p in zip(device, twin):
        np.testing.assert_allclose(d.copy_to_host(), p.grad.numpy(), rtol=1e-12, atol=0)


def _steps(opt_class, deferred, n=3):
    torch.manual_seed(0)
    params = _params([(5,), (2, 3)], torch.float64)
    opt = opt_class(params, lr=0.1)
    for k in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=p.dtype)
        if deferred:
            fastopt.clip_grad_norm_(params, 0.5, optimizer=opt)
        else:
            torch_clip(params, 0.5)
        opt.step()
    return params


def test_clip_deferred_into_a_fastopt_step_equals_clip_then_step():
    want = _steps(torch.optim.Adam, False)
    got = _steps(ftorch.Adam, True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    # the grads were left unscaled: the step took the factor
    params = _params([(5,)], torch.float64)
    opt = ftorch.SGD(params, lr=0.1)
    before = params[0].grad.clone()
    fastopt.clip_grad_norm_(params, 0.01, optimizer=opt)
    assert torch.equal(params[0].grad, before)
    # gradients changed after the clip: the step refuses
    params[0].grad.mul_(2)
    with pytest.raises(RuntimeError, match="gradients changed"):
        opt.step()
    # params the optimizer does not hold: scaled in place instead
    other = _params([(3,)], torch.float64)
    twin = _twin(other)
    fastopt.clip_grad_norm_(other, 0.01, optimizer=opt)
    torch_clip(twin, 0.01)
    assert torch.equal(other[0].grad, twin[0].grad)
    with pytest.raises(TypeError):
        fastopt.clip_grad_norm_(other, 0.01, optimizer=torch.optim.SGD(other, lr=0.1))


def test_clip_benchmark_times_every_implementation():
    from fastopt.bench.clip import run_clip, summary

    report = run_clip([30], 10, "float32", None, repeats=2, warmup=1)
    assert {r["impl"] for r in report["results"]} == {
        "fastopt", "fastopt (deferred)", "torch foreach", "torch loop"}
    assert all("median_ms" in r for r in report["results"]), report
    assert "torch foreach" in summary(report)


def test_both_host_paths_give_the_same_norms_and_see_every_change(monkeypatch):
    """Below `PARALLEL_FROM` elements the host reads the tensors as listed,
    above it over the cached table (forced here): the same partials, so the
    same bits; a gradient given new storage, replaced or listed twice is seen
    by both."""
    from fastopt import _clip

    def listing(params, twice):     # the first `twice` params listed again
        return params + params[:twice]

    def run(parallel_from, params, twice):
        monkeypatch.setattr(_clip, "PARALLEL_FROM", parallel_from)
        twin = _twin(params)
        norms = [fastopt.clip_grad_norm_(listing(twin, twice), 0.5, p)
                 for p in (2.0, 1.0, 0.5)]
        return norms + [q.grad for q in twin]

    for dtype in (torch.float32, torch.float64):
        params, twice = _params(SHAPES, dtype, seed=5, scale=0.1), 0
        for step in range(3):
            for a, b in zip(run(1 << 20, params, twice), run(0, params, twice)):
                assert torch.equal(a, b)
            mine = _twin(params)
            want = torch_clip(listing(params, twice), 0.5)
            _close(fastopt.clip_grad_norm_(listing(mine, twice), 0.5), want, TOL[dtype])
            for p, q in zip(params, mine):
                _close(q.grad, p.grad, TOL[dtype])
            if step == 0:     # new storage under one gradient, a new gradient for another
                params[1].grad.set_(torch.randn(7, 3, dtype=dtype))
                params[3].grad = torch.randn(70_000, dtype=dtype)
            twice = 2         # then two gradients listed twice: scaled twice, as torch does


def test_gradients_the_kernels_cannot_read_go_to_torch():
    class Sub(torch.Tensor):
        pass

    def fresh():
        torch.manual_seed(0)
        params = _params([(2,), (2, 3), (5,)], seed=6)
        params[1].grad = torch.randn(3, 2).t()                # not contiguous
        params[2].grad = params[2].grad.as_subclass(Sub)    # a subclass
        z = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
        z.grad = torch.randn(3, dtype=torch.complex64).conj()   # a conjugate view
        return params + [z]

    want, got = fresh(), fresh()
    # (torch's foreach mul_ refuses conjugate views: its loop is the oracle)
    _close(fastopt.clip_grad_norm_(got, 0.5).as_subclass(torch.Tensor),
           torch_clip(want, 0.5, foreach=False).as_subclass(torch.Tensor), 1e-5)
    for p, q in zip(want, got):
        assert torch.equal(q.grad.resolve_conj(), p.grad.resolve_conj())
    # a meta tensor among CPU ones has no memory to read: torch's error, never a read
    meta = torch.zeros(3, device="meta", requires_grad=True)
    meta.grad = torch.ones(3, device="meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        fastopt.clip_grad_norm_(_params([(3,)]) + [meta], 1.0)
