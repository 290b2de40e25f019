"""16-bit params, grads and state (float32 math): fastopt against torch.

torch's fused CPU optimizers (Adam, AdamW, SGD, Adagrad) compute 16-bit
params in float32 and round each result once, as fastopt does; its foreach
forms (every other optimizer) round every intermediate op to 16 bits, so
their trajectories drift from any float32-math implementation. The table
test reports, per case, the elements whose bits differ after 50 steps and
the largest difference in 16-bit ulps (README, "Differences from the
libraries"); fused cases must be bit-equal.
"""
import re

import numpy as np
import pytest
import torch

import fastopt.functional as F
import fastopt.torch as FT

ml_dtypes = pytest.importorskip("ml_dtypes")

SHAPES = [(7,), (33, 5), (1,)]
STEPS = 50
FUSED = {"Adam", "AdamW", "SGD", "Adagrad"}
CASES = [("Adam", {}), ("Adam", {"amsgrad": True, "weight_decay": 0.01}),
         ("AdamW", {"weight_decay": 0.1}), ("SGD", {"momentum": 0.9}),
         ("Adagrad", {}), ("RMSprop", {}), ("Adamax", {}), ("NAdam", {}),
         ("RAdam", {}), ("Adadelta", {}), ("ASGD", {}), ("Rprop", {})]
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def ulps(a, b):
    """Per element, how many 16-bit values lie between a and b (same format)."""
    def ordered(t):
        bits = t.detach().contiguous().view(torch.int16).numpy().astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFF), bits)
    return np.abs(ordered(a).ravel() - ordered(b).ravel())


def _store_loop(store):
    import numba

    @numba.njit(error_model="numpy")
    def run(x, out):
        for i in range(x.size):      # vectorized: the kernels' form of each store
            out[i] = store(x[i])
    return run


def test_conversions_are_the_libraries_casts():
    """The CPU kernels' 16-bit stores, in a loop LLVM vectorizes, and their
    Python twins (the simulator's) against ml_dtypes' and NumPy's casts, on
    every 16-bit high half with the low halves where rounding turns (ties,
    just below and above them) and random ones. NaN: a NaN of the same sign,
    quiet, whose top payload bits are kept (ml_dtypes makes every NaN 0x7FC0;
    torch's vectorized casts 0xFFFF)."""
    from fastopt.kernels import storage
    rng = np.random.default_rng(0)
    high = np.arange(1 << 16, dtype=np.uint32) << 16
    low = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)
    bits = np.concatenate([(high[:, None] | low).ravel(),
                           high | rng.integers(0, 1 << 16, high.size, dtype=np.uint32)])
    x = bits.view(np.float32)
    nan = np.isnan(x)
    for fmt, dtype, host in (("bf16", ml_dtypes.bfloat16, False),
                             ("bf16", ml_dtypes.bfloat16, True),
                             ("f16", np.float16, False)):
        load, store = storage.codec(fmt, host=host)
        out = np.empty(x.size, np.uint16)
        _store_loop(store)(x, out)
        with np.errstate(invalid="ignore", over="ignore"):
            want = x.astype(dtype).view(np.uint16)
        assert np.array_equal(out[~nan], want[~nan]), fmt
        back = out.view(dtype).astype(np.float32)
        assert np.isnan(back[nan]).all()
        if fmt == "bf16":
            assert np.array_equal(out[nan], (bits[nan] >> 16 | 0x40).astype(np.uint16))
        py_store = storage.codec(fmt, python=True)[1]
        some = rng.choice(x.size, 3000)
        some = some[~nan[some]] if fmt == "f16" else some   # NaN payloads: NumPy's own
        with np.errstate(invalid="ignore", over="ignore"):
            assert np.array_equal([py_store(v) for v in x[some]], out[some]), fmt
        loaded = np.empty(x.size, np.float32)
        _store_loop(load)(out, loaded)
        assert np.array_equal(loaded.view(np.uint32)[~nan],
                              out.view(dtype).astype(np.float32).view(np.uint32)[~nan])


def test_native_bf16_store_is_the_integer_one_on_every_input():
    """The CPU kernels' bfloat16 store through AVX512-BF16's conversion
    (`kernels.storage.bf16_store_native`, which must repair what the
    instruction flushes) against the integer rounding, on all 2^32 float32
    bit patterns, in a vectorized loop as the kernels run it."""
    import numba
    from fastopt.kernels import storage
    if not storage.HOST_BF16:
        pytest.skip("the CPU has no AVX512-BF16 (the kernels use the integer store)")
    native, exact = storage.bf16_store_native, storage.bf16_bits

    @numba.njit(parallel=True, error_model="numpy")
    def mismatches(chunk):
        count = 0
        for c in numba.prange(1 << 16):
            for low in range(0, 1 << 16, chunk):
                for k in range(chunk):
                    b = numba.uint32((c << 16) | (low + k))
                    x = storage._bits_float(b)
                    count += numba.int64(native(x) != exact(b))
        return count

    assert mismatches(4096) == 0
    # In a kernel: bfloat16 Adam's loop converts 16 values an instruction.
    # (A kernel loaded from the disk cache has no assembly: an uncached twin.)
    from fastopt.kernels import cpu, variant
    v = variant("adam", (False, True), storage=("bf16",) * 3)
    cached = cpu.kernel(v, parallel=False)
    options = {k: o for k, o in cached.targetoptions.items() if k not in ("cache", "nopython")}
    kern = numba.njit(**options)(cached.py_func)
    a = np.zeros(64, np.uint16)
    kern((a.ctypes.data,) * 5, 64, storage.host_like(v.columns), (1.0, 0, 0, 1.0, 0, 1.0),
         (1e-3, 0.9, 0.1, 0.999, 0.001, 1e-8))
    asm = kern.inspect_asm(kern.signatures[0])
    assert re.search(r"vcvtneps2bf16\s+%zmm", asm), "the native store did not vectorize"


def _trajectories(name, options, dtype, state_dtype=None):
    torch.manual_seed(0)
    start = [torch.randn(s, dtype=dtype) for s in SHAPES]
    ref = [p.clone().requires_grad_() for p in start]
    mine = [p.clone().requires_grad_() for p in start]
    form = {"fused": True} if name in FUSED else {"foreach": True}
    theirs = getattr(torch.optim, name)(ref, lr=1e-2, **options, **form)
    ours = getattr(FT, name)(mine, lr=1e-2, **options)
    ours.state_dtype = state_dtype
    for _ in range(STEPS):
        grads = [torch.randn(s, dtype=dtype) for s in SHAPES]
        for a, b, g in zip(ref, mine, grads):
            a.grad, b.grad = g.clone(), g.clone()
        theirs.step()
        ours.step()
    return ref, mine, ours


@pytest.mark.parametrize("fmt", DTYPES)
@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{len(o)}" for n, o in CASES])
def test_against_torch(name, options, fmt, record_property):
    ref, mine, _ = _trajectories(name, options, DTYPES[fmt])
    d = np.concatenate([ulps(a, b) for a, b in zip(ref, mine)])
    differ, worst = int((d != 0).sum()), int(d.max())
    record_property("bits", f"{name} {options} {fmt}: {differ}/{d.size} differ, max {worst} ulp")
    print(f"\n{name} {options} {fmt} vs torch "
          f"{'fused' if name in FUSED else 'foreach'}: {differ}/{d.size} differ, "
          f"max {worst} ulp")
    if name in ("Adam", "AdamW"):
        assert differ == 0
    assert all(not torch.isnan(b).any() for b in mine)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_is_float32_math_rounded_once(nesterov):
    """torch's fused CPU SGD with momentum on 16-bit tensors of 8+ elements
    differs from float32 math by hundreds of ulps (its vectorized path; its
    foreach form is within 1 ulp, and its 7-element scalar path is exact):
    fastopt is checked against torch's float32 SGD on the same values,
    rounded once, instead."""
    torch.manual_seed(0)
    p, g = torch.randn(165, dtype=torch.bfloat16), torch.randn(165, dtype=torch.bfloat16)
    x, ref = p.clone().requires_grad_(), p.float().requires_grad_()
    x.grad, ref.grad = g.clone(), g.float()
    FT.SGD([x], lr=1e-2, momentum=0.9, nesterov=nesterov).step()
    torch.optim.SGD([ref], lr=1e-2, momentum=0.9, nesterov=nesterov).step()
    assert ulps(x, ref.detach().to(torch.bfloat16)).max() == 0


def test_state_dtype_float32():
    """bf16 params with float32 state: torch fused Adam on float32 copies of
    the same bf16 params cannot serve as oracle (its params are float32), so
    the check is the functional call's: the same state, trajectory and bits as
    fastopt's functional adam on ml_dtypes arrays with float32 state."""
    _, mine, opt = _trajectories("Adam", {}, torch.bfloat16, torch.float32)
    state = opt.state[mine[0]]
    assert state["exp_avg"].dtype == torch.float32
    assert state["exp_avg_sq"].dtype == torch.float32


@pytest.mark.parametrize("dt", [np.float16, "bf16"])
def test_numpy_arrays_single_and_list(dt):
    """NumPy float16 and ml_dtypes bfloat16 arrays, single and list form, and
    float32 params with 16-bit grads: each equals the float32 computation on
    the loaded values, rounded once."""
    dt = ml_dtypes.bfloat16 if dt == "bf16" else dt
    rng = np.random.default_rng(1)
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, convention="torch")
    for n in (1, 5, 1003):
        p = rng.standard_normal(n).astype(dt)
        g = rng.standard_normal(n).astype(dt)
        m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
        p32, m32, v32 = p.astype(np.float32), m.copy(), v.copy()
        pl, ml, vl = [p.copy(), p[:1].copy()], [m.copy(), m[:1].copy()], \
            [v.copy(), v[:1].copy()]
        gl = [g, g[:1].copy()]
        F.adam(p, g, m, v, step=1, **kw)
        F.adam(pl, gl, ml, vl, step=1, **kw)
        F.adam(p32, g, m32, v32, step=1, **kw)      # float32 params, 16-bit grads
        assert np.array_equal(p.view(np.uint16), p32.astype(dt).view(np.uint16))
        assert np.array_equal(m, m32) and np.array_equal(v, v32)
        assert np.array_equal(pl[0].view(np.uint16), p.view(np.uint16))
        assert np.array_equal(pl[1].view(np.uint16), p[:1].view(np.uint16))


def test_bad_mixes_write_nothing():
    p = np.ones(4, np.float64)
    g = np.ones(4, ml_dtypes.bfloat16)
    m, v = np.zeros(4), np.zeros(4)
    with pytest.raises(TypeError, match=r"adam\(\): grad has dtype bfloat16, expected "
                                        r"float64 like param"):
        F.adam(p, g, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    assert (p == 1).all()
    p16 = np.ones(4, np.float16)
    with pytest.raises(TypeError, match=r"exp_avg_sq has dtype float16, expected float32 "
                                        r"like exp_avg \(a call's state arrays"):
        F.adam(p16, p16.copy(), np.zeros(4, np.float32), np.zeros(4, np.float16), step=1,
               lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    assert (p16 == 1).all()


@pytest.mark.parametrize("storage", [("bf16", "bf16", "bf16"), ("f16", "f16", "f32")],
                         ids=["bf16", "f16-f32state"])
def test_cuda_simulator_matches_cpu(storage):
    """The CUDA kernels (under Numba's simulator: the plain-Python twins of
    the conversions) give the CPU kernels' bits, single and list form."""
    import numba
    from numba import cuda
    if not numba.config.ENABLE_CUDASIM:
        pytest.skip("needs Numba's CUDA simulator (tests/conftest.py turns it on)")
    dt = {"bf16": ml_dtypes.bfloat16, "f16": np.float16, "f32": np.float32}
    pd, sd = dt[storage[0]], dt[storage[2]]
    rng = np.random.default_rng(2)
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, convention="torch")
    n = 37
    p, g = rng.standard_normal(n).astype(pd), rng.standard_normal(n).astype(pd)
    m, v = (rng.random(n) * 0.1).astype(sd), (rng.random(n) * 0.1).astype(sd)
    host = [a.copy() for a in (p, g, m, v)]
    dev = [cuda.to_device(a) for a in (p, g, m, v)]
    lists = [[cuda.to_device(a[:5].copy()), cuda.to_device(a[5:].copy())]
             for a in (p, g, m, v)]
    F.adam(*host, step=3, **kw)
    F.adam(*dev, step=3, **kw)
    F.adam(*lists, step=3, **kw)
    for h, d, parts in zip(host, dev, lists):
        got = d.copy_to_host()
        joined = np.concatenate([x.copy_to_host() for x in parts])
        assert np.array_equal(h.view(np.uint16 if h.itemsize == 2 else np.uint32),
                              got.view(h.view(np.uint16 if h.itemsize == 2 else
                                              np.uint32).dtype))
        assert np.array_equal(got.view(np.uint8), joined.view(np.uint8))


def _scaled_training(make, dtype, steps=100):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3).to(dtype)
    opt = make(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=5)
    gen = torch.Generator().manual_seed(1)
    scales, grads = [], []
    for step in range(steps):
        loss = model(torch.randn(4, 8, generator=gen).to(dtype)).float().pow(2).sum()
        scaler.scale(loss).backward()
        if step % 7 == 3:       # an overflow: the step must write nothing
            model.weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        # torch's fused step leaves the gradients unscaled (a skipped one, as they were)
        grads.append([p.grad.clone() for p in model.parameters()])
        scaler.update()
        opt.zero_grad()
        scales.append(scaler.get_scale())
    return list(model.parameters()), (scales, grads), opt.state_dict()["state"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "f32"])
def test_grad_scaler_against_torch_fused_adam(dtype):
    """torch.amp.GradScaler hands grad_scale and found_inf to fastopt.torch
    (_step_supports_amp_scaling): 100 steps with injected infs give torch
    fused Adam's skipped steps, scales, step counts and the gradients it
    leaves (unscaled; a skipped step's as they were); bf16 params and state
    bit for bit, float32 within 1e-6 (fastopt's float32 Adam orders the bias
    corrections as torch's foreach form does, not its fused one)."""
    ref, ref_scales, ref_state = _scaled_training(
        lambda ps: torch.optim.Adam(ps, lr=1e-2, fused=True), dtype)
    got, got_scales, got_state = _scaled_training(lambda ps: FT.Adam(ps, lr=1e-2), dtype)
    assert got_scales[0] == ref_scales[0]
    for a, b in zip(ref_scales[1], got_scales[1]):    # grads after each step
        for x, y in zip(a, b):
            if dtype == torch.bfloat16:
                assert torch.equal(x, y)
            else:   # from params within 1e-6 (below): unscaled, not 2**10 off
                torch.testing.assert_close(y, x, rtol=1e-3, atol=1e-3)
    for k in ref_state:
        for key in ref_state[k]:
            a, b = ref_state[k][key], got_state[k][key]
            if dtype == torch.bfloat16 or key == "step":
                assert torch.equal(a, b), (k, key)
            else:
                torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    for a, b in zip(ref, got):
        if dtype == torch.bfloat16:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_torch_16bit_lists_plan_once(monkeypatch):
    """fastopt.torch on bfloat16 params, and with master weights (float32
    masters beside 16-bit grads): the tables of a layout are built at the
    first step and reused after, as float32's; a list of torch tensors with
    a bad dtype mix still names it, writing nothing."""
    from fastopt import _multi
    built = []
    original = _multi._plan_stored_host
    monkeypatch.setattr(_multi, "_plan_stored_host",
                        lambda *a, **k: built.append(1) or original(*a, **k))
    for master in (False, True):
        params = [torch.ones(s, dtype=torch.bfloat16, requires_grad=True) for s in SHAPES]
        opt = FT.Adam(params, lr=1e-2)
        opt.master_weights = master
        for p in params:      # the same grads each step (zero_grad(set_to_none=False))
            p.grad = torch.full_like(p, 0.5)
        for _ in range(3):
            opt.step()
        assert len(built) == 1, master
        assert all((p.detach().float() < 1).all() for p in params)
        built.clear()
    p, g = [torch.ones(3, dtype=torch.float64)], [torch.ones(3, dtype=torch.bfloat16)]
    with pytest.raises(TypeError, match=r"grad\[0\] has dtype bfloat16, expected float64"):
        F.adam(p, g, [torch.zeros(3, dtype=torch.float64)], [torch.zeros(3, dtype=torch.float64)],
               step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    assert (p[0] == 1).all()


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_grad_scaler_capturable_against_torch_fused(name):
    """capturable=True: GradScaler's found_inf and grad_scale go to the
    kernel as tensors (read there on a GPU, by the host here, the CPU's
    twin) and the kernel divides and writes the gradient back. Against
    torch's fused step (non-capturable: torch refuses capturable on the
    CPU) under the same scaler and injected infs: the same skipped steps,
    scales, step counts (float32 tensors on the param's device, not
    advanced by a skipped step) and the gradients it leaves; params and
    state within float32 rounding (the capturable step's scalars are
    float32)."""
    kw = dict(lr=1e-2, weight_decay=0.1)
    ref, (ref_scales, ref_grads), ref_state = _scaled_training(
        lambda ps: getattr(torch.optim, name)(ps, fused=True, **kw), torch.float32, 40)
    got, (got_scales, got_grads), got_state = _scaled_training(
        lambda ps: getattr(FT, name)(ps, capturable=True, **kw), torch.float32, 40)
    assert got_scales == ref_scales
    for a, b in zip(ref_grads, got_grads):   # (a skipped step's: still scaled by ~2**10)
        finite = all([bool(torch.isfinite(x).all()) for x in a])
        for x, y in zip(a, b):
            torch.testing.assert_close(y, x, rtol=1e-3, atol=1e-3 if finite else 1.0)
    for k in ref_state:
        assert got_state[k]["step"].dtype == torch.float32
        assert float(got_state[k]["step"]) == float(ref_state[k]["step"]) == 40 - 6   # 6 steps with an inf
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(got_state[k][key], ref_state[k][key],
                                       rtol=1e-5, atol=1e-5)
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["bf16", "bf16-sr", "f16-f32", "master-bf16"])
def test_parallel_blocks_equal_serial_loop(layout):
    """From `kernels.cpu.SERIAL_BELOW` elements the CPU loop runs in parallel
    blocks of `kernels.cpu.BLOCK`, each prefetching ahead
    (`kernels.cpu.block`): over a size that ends mid-block, the serial
    loop's bits for every 16-bit layout, stochastic rounding's per-element
    random bits included."""
    from fastopt.kernels import RULES, cpu, storage, variant
    layouts = {"bf16": ("bf16", "bf16", "bf16"), "bf16-sr": ("bf16", "bf16", "bf16"),
               "f16-f32": ("f16", "f16", "f32"), "master-bf16": ("f32", "bf16", "f32", "bf16")}
    v = variant("adam", (False, True), storage=layouts[layout],
                model=layout.startswith("master"), sr=layout.endswith("sr"))
    n = cpu.SERIAL_BELOW + 3 * cpu.BLOCK + 37
    rng = np.random.default_rng(4)
    fmt_dtype = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}
    columns = [(rng.random(n) * (0.1 if c > 1 else 1)).astype(fmt_dtype[f])
               for c, f in enumerate(v.columns)]
    columns[1] = rng.standard_normal(n).astype(fmt_dtype[v.columns[1]])
    runs = []
    for parallel in (True, False):
        arrays = [a.copy() for a in columns]
        used = [arrays[0], arrays[1], *(a if u else arrays[0]
                                        for a, u in zip(arrays[2:], v.used))]
        bits = [a.view(np.uint16) if a.itemsize == 2 else a for a in used]
        addrs = tuple(a.ctypes.data for a in bits)
        pre = (1.0, 0.0, 0.0, 1.0, 0.0, 1.0) + ((123.0, 45.0) if v.sr else ())
        hyper = (1e-2, 0.9, 0.1, 0.999, 0.001, 1e-8)
        assert len(hyper) == len(RULES["adam"].hyper)
        cpu.kernel(v, parallel=parallel)(addrs, n, storage.host_like(v.columns), pre, hyper)
        runs.append([a.view(np.uint8) for a, u in zip(arrays, (True, True, *v.used)) if u])
    for blocks, serial in zip(*runs):
        assert np.array_equal(blocks, serial)
    assert not np.array_equal(runs[0][0], columns[0].view(np.uint8))
