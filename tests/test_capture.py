"""Capturable steps (`fastopt._capture`, `kernels.capture`) and the STREAM
kernels (`kernels.stream`).

* every spec's device scalars (`fastopt.spec.StepScalars`) are its host
  scalars, bit for bit in float64, at every step;
* fastopt.torch with ``capturable=True`` (on the CPU: the same semantics)
  follows torch.optim's non-capturable trajectories within float32 rounding
  over 50 steps, one row per capturable optimizer, step kept as torch keeps
  it (a float32 0-d tensor on the param's device), checkpoints both ways;
* the CUDA kernels under the simulator (a grid of several blocks, run one
  after another: a count written by any block but the last would be read by
  the next): step and lr from one-element device arrays, the scalars
  computed in the kernel, the count advanced once per call, single arrays
  and lists with one count per tensor; GradScaler's found_inf and scale read
  in the kernel (an overflow: nothing written, the count kept; else the
  gradient divided and written back, as the CPU twin does);
* the PTX of the capturable kernels and of STREAM's (compiled with no GPU):
  clean, 128-bit loads, the counter's atomic, and the packed launcher's
  layout against the ``.entry`` byte for byte, with no allocation, copy or
  synchronisation on a repeated call (nothing a CUDA graph could not hold).
"""
import copy
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fastopt.functional as F
import fastopt.torch as FT
from fastopt.specs import SPECS

CAPTURABLE = ["Adam", "AdamW", "Adamax", "RAdam", "RMSprop", "Adadelta", "Rprop"]
# torch's capturable optimizers fastopt does not capture: their scalars are
# running values kept on the host (fastopt.spec.Scalar), not functions of t.
NOT_CAPTURABLE = ["NAdam", "ASGD"]


def test_device_scalars_are_the_host_scalars():
    covered = set()
    for spec in SPECS:
        if spec.device is None:
            continue
        covered.add(spec.name)
        for convention in ("keras", "torch"):
            front = getattr(spec, convention)
            if front is None:
                continue
            d = front.defaults()
            h = {x.name: d.get(x.name, x.default) for x in spec.hypers}
            h.update(lr=0.01, weight_decay=0.0)
            h = SimpleNamespace(**h)
            for step in [*range(1, 61), 1000, 123457]:
                assert spec.device.host(h, convention, step) == \
                    tuple(spec.scalars(h, convention, step)), (spec.name, convention, step)
    assert covered == {c.lower() for c in CAPTURABLE}


ROWS = {"Adam": dict(lr=0.01, weight_decay=0.1), "AdamW": dict(lr=0.01),
        "Adamax": dict(lr=0.01), "RAdam": dict(lr=0.01),
        "RMSprop": dict(lr=0.01, momentum=0.5, centered=True),
        "Adadelta": dict(lr=0.5), "Rprop": dict(lr=0.01)}


def _train(cls, kw, steps=50, optimizer=None, params=None, seed=1):
    if params is None:
        torch.manual_seed(0)
        params = [torch.randn(7).requires_grad_(), torch.randn(3, 2).requires_grad_()]
    opt = optimizer or cls(params, **kw)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return params, opt


def _close(a, b):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CAPTURABLE)
def test_torch_capturable_follows_torch(name):
    kw = ROWS[name]
    ref, _ = _train(getattr(torch.optim, name), kw)
    lr = {"lr": torch.tensor(kw["lr"])} if name in ("Adam", "AdamW") else {}
    mine, opt = _train(getattr(FT, name), {**kw, **lr, "capturable": True})
    _close(ref, mine)
    for p in mine:
        step = opt.state[p]["step"]
        assert step.dtype == torch.float32 and step.device == p.device and step.dim() == 0
        assert float(step) == 50.0


@pytest.mark.parametrize("name", NOT_CAPTURABLE)
def test_capturable_refused_where_scalars_live_on_the_host(name):
    with pytest.raises(ValueError, match="capturable=True"):
        getattr(FT, name)([torch.zeros(2, requires_grad=True)], capturable=True)


def test_checkpoints_both_ways():
    kw = dict(lr=0.01, weight_decay=0.1)
    whole, _ = _train(torch.optim.Adam, kw, steps=30)
    # torch.optim (non-capturable) -> fastopt capturable: step moved to the param's device
    half, oracle = _train(torch.optim.Adam, kw, steps=20)
    ps = [p.detach().clone().requires_grad_() for p in half]
    mine = FT.Adam(ps, capturable=True, **kw)
    mine.load_state_dict(copy.deepcopy(oracle.state_dict()))   # (torch shares tensors)
    assert mine.state[ps[0]]["step"].dtype == torch.float32
    _train(None, None, steps=10, optimizer=mine, params=ps, seed=2)
    # fastopt capturable -> torch.optim
    half2, mine2 = _train(FT.Adam, {**kw, "capturable": True}, steps=20)
    ps2 = [p.detach().clone().requires_grad_() for p in half2]
    back = torch.optim.Adam(ps2, **kw)
    saved = copy.deepcopy(mine2.state_dict())    # the groups carry capturable=True, which torch
    for group in saved["param_groups"]:   # refuses on the CPU
        group["capturable"] = False
    back.load_state_dict(saved)
    _train(None, None, steps=10, optimizer=back, params=ps2, seed=2)
    # the oracle's own continuation
    _train(None, None, steps=10, optimizer=oracle, params=half, seed=2)
    del whole
    _close(half, ps)
    _close(half, ps2)


def test_torch_refusals_in_torchs_words():
    p = torch.zeros(3, requires_grad=True)
    opt = FT.Adam([p], capturable=True)
    p.grad = torch.ones(3)
    opt.state[p]["step"] = torch.zeros((), device="meta")
    with pytest.raises(AssertionError, match="If capturable=True, params and state_steps "
                                             "must be on supported devices"):
        opt.step()


def test_functional_refusals():
    p, g, m, v = (np.zeros(4, np.float32) for _ in range(4))
    hypers = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, convention="torch")
    with pytest.raises(ValueError, match="stochastic_rounding"):
        F.adam(p, g, m, v, step=np.zeros(1, np.float32), stochastic_rounding=True, **hypers)
    with pytest.raises(ValueError, match="not supported by nadam"):
        F.nadam(p, g, m, v, step=np.zeros(1, np.float32), **hypers)
    with pytest.raises(ValueError, match="different values"):
        F.adam([p, p.copy()], [g, g], [m, m.copy()], [v, v.copy()],
               step=[np.zeros(1, np.float32), np.ones(1, np.float32)], **hypers)
    with pytest.raises(TypeError, match="one-element"):
        F.adam(p, g, m, v, step=np.zeros(2, np.float32), **hypers)
    cuda = _sim()
    dp, dg, dm, dv = (cuda.to_device(a) for a in (p, g, m, v))
    host_step = np.zeros(1, np.float32)
    with pytest.raises(TypeError, match="step must be a one-element float32 array on the "
                                        "params' GPU"):
        F.adam(dp, dg, dm, dv, step=host_step, **hypers)
    with pytest.raises(ValueError, match="step is a GPU array, the params are host arrays"):
        F.adam(p, g, m, v, step=cuda.to_device(host_step), **hypers)
    with pytest.raises(TypeError, match="lr must be a one-element float32 array"):
        F.adam(dp, dg, dm, dv, step=cuda.to_device(host_step),
               **{**hypers, "lr": cuda.to_device(np.zeros(1))})
    with pytest.raises(ValueError, match="one for all params or one per param"):
        F.adam([dp], [dg], [dm], [dv], step=[cuda.to_device(host_step)] * 2, **hypers)
    # GradScaler's arrays: with a capturable step only, float32 beside the params
    with pytest.raises(ValueError, match="found_inf and loss_scale .* need a capturable step"):
        F.adam(p, g, m, v, step=1, found_inf=np.zeros(1, np.float32), **hypers)
    with pytest.raises(TypeError, match="loss_scale must be a one-element float32 array"):
        F.adam(p, g, m, v, step=host_step, loss_scale=np.ones(1), **hypers)
    with pytest.raises(TypeError, match="found_inf must be a one-element float32 array on "
                                        "the params' GPU"):
        F.adam(dp, dg, dm, dv, step=cuda.to_device(host_step), found_inf=host_step, **hypers)
    assert host_step[0] == 0 and not p.any()    # nothing written


# -- the CUDA kernels, under the simulator ----------------------------------
def _sim():
    from numba import cuda
    return cuda


def test_simulated_single_array_step_and_lr_on_the_device():
    """AdamW, decoupled decay from a device lr, 50 steps: torch.optim's
    trajectory; the count advanced once per call by a grid of 2 blocks."""
    cuda = _sim()
    rng = np.random.default_rng(0)
    n = 70
    p0 = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(50)]
    tp = torch.tensor(p0, requires_grad=True)
    oracle = torch.optim.AdamW([tp], lr=0.01, weight_decay=0.1)
    p, m, v = (cuda.to_device(x) for x in (p0, np.zeros(n, np.float32),
                                          np.zeros(n, np.float32)))
    step, lr = cuda.to_device(np.zeros(1, np.float32)), cuda.to_device(np.full(1, 0.01,
                                                                               np.float32))
    for k, g in enumerate(grads):
        tp.grad = torch.tensor(g)
        oracle.step()
        F.adamw(p, cuda.to_device(g), m, v, step=step, lr=lr, weight_decay=0.1, beta1=0.9,
                beta2=0.999, eps=1e-8, convention="torch")
        assert step.copy_to_host()[0] == k + 1
    np.testing.assert_allclose(p.copy_to_host(), tp.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_simulated_lists_one_count_per_tensor():
    """RAdam over 3 tensors whose counts differ (rectification switches on
    at a different step for each), 8 steps: each tensor's trajectory is the
    functional's with its own int step; each count advanced once per call."""
    cuda = _sim()
    rng = np.random.default_rng(1)
    sizes, first = [1, 5, 33], [0, 2, 5]
    p0 = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    hyp = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, convention="torch")
    ps = [cuda.to_device(x) for x in p0]
    ms = [cuda.to_device(np.zeros(n, np.float32)) for n in sizes]
    vs = [cuda.to_device(np.zeros(n, np.float32)) for n in sizes]
    steps = [cuda.to_device(np.full(1, s, np.float32)) for s in first]
    host = [(x.copy(), np.zeros_like(x), np.zeros_like(x)) for x in p0]
    for _ in range(8):
        gs = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        F.radam(ps, [cuda.to_device(g) for g in gs], ms, vs, step=steps, **hyp)
        for k, (g, (p, m, v)) in enumerate(zip(gs, host)):
            F.radam(p, g, m, v, step=first[k] + 1, **hyp)
        first = [s + 1 for s in first]
    assert [float(s.copy_to_host()[0]) for s in steps] == [8.0, 10.0, 13.0]
    for d, (p, _, _) in zip(ps, host):   # (float32 ρₜ against the host's float64)
        np.testing.assert_allclose(d.copy_to_host(), p, rtol=1e-5, atol=1e-5)


def test_simulated_grad_scaler_found_inf_and_unscale():
    """GradScaler's found_inf and scale in device memory, the kernel reading
    them (single array, then a list): found_inf set, nothing is written and
    the count stays; cleared, each gradient is divided by the scale and
    written back, and params and state are the CPU twin's (the same kernel
    variant on the host) bit for bit."""
    cuda = _sim()
    rng = np.random.default_rng(3)
    hyp = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1,
               convention="torch")
    sizes = [70, 5]
    p0 = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    g0 = [(rng.standard_normal(n) * 1000).astype(np.float32) for n in sizes]
    scale = np.full(1, 1000.0, np.float32)    # not a power of 2: a division, not 1/s
    for many in (False, True):
        k = 2 if many else 1
        cols = [[cuda.to_device(x) for x in p0[:k]], [cuda.to_device(x) for x in g0[:k]],
                [cuda.to_device(np.zeros(n, np.float32)) for n in sizes[:k]],
                [cuda.to_device(np.zeros(n, np.float32)) for n in sizes[:k]]]
        args = cols if many else [c[0] for c in cols]
        step = cuda.to_device(np.full(1, 4, np.float32))
        found = cuda.to_device(np.ones(1, np.float32))
        F.adam(*args, step=step, found_inf=found, loss_scale=cuda.to_device(scale), **hyp)
        assert step.copy_to_host()[0] == 4
        for col, want in zip(cols, [p0, g0, None, None]):
            for d, w in zip(col, want or [np.zeros(n, np.float32) for n in sizes]):
                assert np.array_equal(d.copy_to_host(), w)
        found.copy_to_device(np.zeros(1, np.float32))
        F.adam(*args, step=step, found_inf=found, loss_scale=cuda.to_device(scale), **hyp)
        assert step.copy_to_host()[0] == 5
        for j in range(k):
            host = [p0[j].copy(), g0[j].copy(), np.zeros(sizes[j], np.float32),
                    np.zeros(sizes[j], np.float32)]
            F.adam(*host, step=np.full(1, 4, np.float32), loss_scale=scale, **hyp)
            assert np.array_equal(host[1], g0[j] / scale[0])    # as torch divides
            for col, h in zip(cols, host):
                assert np.array_equal(col[j].copy_to_host(), h)


def test_stream_kernels_simulated():
    from fastopt.kernels import stream
    cuda = _sim()
    rng = np.random.default_rng(2)
    b, c = (rng.standard_normal(45).astype(np.float32) for _ in range(2))
    a = cuda.to_device(np.zeros(45, np.float32))
    stream.run("copy", a, cuda.to_device(b))
    np.testing.assert_array_equal(a.copy_to_host(), b)
    stream.run("triad", a, cuda.to_device(b), cuda.to_device(c), s=1.5)
    np.testing.assert_array_equal(a.copy_to_host(), b + np.float32(1.5) * c)


# -- PTX (compiled with the simulator off, in a child) and the packed layout ----
def _probed():
    """(name, kernel function, argument types) of each kernel the PTX test reads."""
    from fastopt.kernels import cuda as kc
    from fastopt.kernels import multi_cuda as mc
    from fastopt.kernels import stream
    from fastopt.kernels.variants import variant
    spec = {s.name: s for s in SPECS}
    # with GradScaler's unscale (`Variant.unscale`): the divisor, the gradient's store
    adam = variant("adam", (False, True)).captured(spec["adam"].device.fn).with_unscale
    radam = variant("radam", ()).captured(spec["radam"].device.fn).with_unscale
    f32 = np.dtype(np.float32)
    return [("capture-adam-single", kc.kernel_function(adam), kc.argtypes(adam, f32, 10)),
            ("capture-radam-multi", mc.kernel_function(radam), mc.argtypes(radam, f32, 14)),
            ("stream-copy", stream.kernel_function("copy"), stream.argtypes("copy", f32)),
            ("stream-triad", stream.kernel_function("triad"), stream.argtypes("triad", f32))]


@pytest.fixture(scope="module")
def ptx_records(tmp_path_factory):
    import ptx_probe
    return ptx_probe.records(__file__, tmp_path_factory, timeout=600)


@pytest.mark.parametrize("name", ["capture-adam-single", "capture-radam-multi",
                                  "stream-copy", "stream-triad"])
def test_ptx_clean(ptx_records, name):
    rec = ptx_records[name]
    assert not rec["local"] and not rec["f64"], rec
    assert rec["v4_loads"] >= (1 if name == "stream-copy" else 2), rec
    if name.startswith("capture"):
        # the done-counter: one fence and one atomic add per block
        assert rec["atomics"] == 1 and rec["fences"] >= 1, rec
        # param, grad (written back unscaled), exp_avg, exp_avg_sq
        assert rec["v4_stores"] >= 4, rec


@pytest.fixture
def recorder():
    from fastopt import _repeat
    from fastopt.bench.host_cost import RecordedArray
    from fastopt.kernels import launch
    rec = launch.Recorder()
    calls = {"to_device": 0, "synchronize": 0}
    to_device, synchronize = rec.to_device, rec.synchronize

    def counted_to_device(host, stream):
        calls["to_device"] += 1
        return to_device(host, stream)

    def counted_synchronize(stream):
        calls["synchronize"] += 1
        return synchronize(stream)

    rec.to_device, rec.synchronize, rec.calls = counted_to_device, counted_synchronize, calls
    old = launch.use(rec)
    _repeat.FIXED[RecordedArray] = None
    yield rec, RecordedArray
    launch.use(old)
    _repeat.FIXED.pop(RecordedArray, None)
    _repeat.clear()


@pytest.mark.parametrize("many", [False, True], ids=["single", "list"])
def test_packed_layout_and_no_host_round_trip(ptx_records, recorder, many):
    """The packed launch against the kernel's ``.entry``; a repeated call,
    and one with GradScaler's found_inf and scale (its launch passes their
    addresses; new tensors every step, as GradScaler makes them), allocates,
    copies, synchronises and reads back nothing."""
    rec, Recorded = recorder
    n = 37
    arrays = [Recorded(np.zeros(n, np.float32)) for _ in range(4)]
    step = Recorded(np.zeros(1, np.float32))
    lr = Recorded(np.full(1, 0.01, np.float32))
    found = Recorded(np.ones(1, np.float32))    # the host copy is never read
    scale = Recorded(np.full(1, 1024.0, np.float32))
    hyp = dict(beta1=0.9, beta2=0.999, eps=1e-8, convention="torch")
    fn = F.adam if not many else F.radam
    args = arrays if not many else [[a] for a in arrays]
    fn(*args, step=step if not many else [step], lr=lr, **hyp)
    made = dict(rec.calls)    # the first call's: the counter (and the list's tables)
    assert made["to_device"] == (4 if many else 1)
    fn(*args, step=step if not many else [step], lr=lr, **hyp)
    assert rec.calls == made   # a repeated call: no allocation, copy or synchronisation
    amp = dict(found_inf=found, loss_scale=scale)
    fn(*args, step=step if not many else [step], lr=lr, **hyp, **amp)
    made = dict(rec.calls)    # a new kernel (it unscales): its own counter (and tables)
    found, scale = Recorded(np.ones(1, np.float32)), Recorded(np.full(1, 8.0, np.float32))
    fn(*args, step=step if not many else [step], lr=lr, **hyp, found_inf=found,
       loss_scale=scale)
    assert rec.calls == made
    first, second, third, fourth = rec.launches
    want = ptx_records["capture-radam-multi" if many else "capture-adam-single"]["params"]
    assert first.ptx_types == want and third.ptx_types == want
    values = first.values
    counter = values[-4 if many else -3]
    dev = values[-6:] if many else values[-5:]
    if many:
        assert dev[1:] == [lr.host.ctypes.data, counter, 1, 0, 0]
    else:
        assert dev == [step.host.ctypes.data, lr.host.ctypes.data, counter, 0, 0]
    assert second.raw == first.raw
    assert third.values[:-2] == fourth.values[:-2]
    assert third.values[-2:] == [amp["found_inf"].host.ctypes.data,
                                 amp["loss_scale"].host.ctypes.data]
    assert fourth.values[-2:] == [found.host.ctypes.data, scale.host.ctypes.data]


def test_stream_packed_layout(ptx_records):
    from fastopt.kernels import launch, stream
    rec = launch.Recorder()
    old = launch.use(rec)
    try:
        addrs = [(1 << 40) + 4096 * k for k in range(3)]
        stream.launcher(rec, "triad", np.float32, 12345, addrs, 0.5)(7)
    finally:
        launch.use(old)
    (record,) = rec.launches
    assert record.ptx_types == ptx_records["stream-triad"]["params"]
    assert record.values == [*addrs, 12345, 0.5]


def test_stream_in_the_report():
    from fastopt.bench import report as reporting
    from fastopt.bench.runner import add_stream_ratios
    report = {"results": [{"impl": "fastopt", "status": "ok", "dtype": "float32",
                           "optimizer": "adam", "size": 1 << 28, "gbps": 3000.0}],
              "stream": [{"kernel": "copy", "dtype": "float32", "size": 1 << 28,
                          "bytes_per_element": 8, "gbps": 4000.0}]}
    add_stream_ratios(report)
    assert report["results"][0]["vs_stream_copy"] == 0.75


if __name__ == "__main__":
    import re

    from numba import cuda

    from ptx_probe import entry_params, run_jobs

    def compile_one(job):
        name, function, argtypes = job
        ptx, _ = cuda.compile_ptx(function, argtypes, cc=(9, 0))
        return {
            "key": name, "local": ".local" in ptx,
            "f64": bool(re.search(r"\.f64\b", ptx)),
            "v4_loads": len(re.findall(r"ld\.global(?:\.nc)?\.v4\.f32", ptx)),
            "v4_stores": len(re.findall(r"st\.global\.v4\.f32", ptx)),
            "atomics": len(re.findall(r"atom\.global\.add\.u32", ptx)),
            "fences": ptx.count("membar.gl") + ptx.count("fence.sc.gpu")
            + ptx.count("fence.acq_rel.gpu"),
            "params": entry_params(ptx)}

    run_jobs(_probed(), compile_one)
    sys.exit(0)
