"""The optimizers whose step is a program of passes (`fastopt.spec.Program`):
Lamb, Adafactor, Muon, against Keras 3 (torch backend) and torch.optim.

Each row builds fastopt's class and the library's with the same arguments,
runs both 50 steps on the same random gradients over params of every shape
kind (size 1, 1-D, square, tall, wide, 4-D) and compares: float64 to
`TOL64` (lr, betas and decays exactly representable in float32 where Keras
rounds them to float32: Keras's ops turn Python floats into float32
constants), float32 to 1e-5.
"""
import copy
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("fastopt.keras runs on Keras's torch backend", allow_module_level=True)

import fastopt.keras  # noqa: E402
import fastopt.torch  # noqa: E402
from fastopt import functional  # noqa: E402

SHAPES = [(1,), (7,), (5, 5), (9, 3), (3, 9), (2, 3, 3, 4)]
STEPS = 50
TOL32 = 1e-5

_LAMB = dict(learning_rate=2.0 ** -7, beta_1=0.875, beta_2=1.0 - 2.0 ** -10)

# (class, kwargs, float64 tolerance)
_ADAFACTOR = dict(learning_rate=2.0 ** -7, beta_2_decay=-0.75)
# Keras's Adafactor takes means (``ops.mean``: the row and column means of
# g², rms(p), rms(u), mean(r)), and Keras 3.15's torch backend computes a
# mean in ``result_type(x.dtype, "float32")``, which is float32 for float64
# x: the oracle's float64 trajectory carries float32 roundings, so float64
# is compared at float32's bound.
_ADAFACTOR_TOL64 = 1e-6

_MUON = dict(learning_rate=2.0 ** -7, momentum=0.9375, adam_beta_1=0.875,
             adam_beta_2=1.0 - 2.0 ** -10, weight_decay=2.0 ** -8, adam_weight_decay=2.0 ** -6)

KERAS_ROWS = {
    "lamb": ("Lamb", _LAMB, 1e-12),
    "lamb-wd": ("Lamb", dict(_LAMB, weight_decay=2.0 ** -8), 1e-12),
    "lamb-clip-ema": ("Lamb", dict(_LAMB, clipvalue=0.25, use_ema=True), 1e-12),
    "lamb-clipnorm": ("Lamb", dict(_LAMB, clipnorm=0.5), 1e-12),
    "adafactor": ("Adafactor", _ADAFACTOR, _ADAFACTOR_TOL64),
    "adafactor-options": ("Adafactor", dict(_ADAFACTOR, epsilon_1=2.0 ** -20, epsilon_2=0.25,
                                            clip_threshold=0.5, relative_step=False,
                                            weight_decay=2.0 ** -8), _ADAFACTOR_TOL64),
    "adafactor-clipvalue": ("Adafactor", dict(_ADAFACTOR, clipvalue=0.25, use_ema=True),
                            _ADAFACTOR_TOL64),
    # Keras's Muon: the matrices by Muon (Newton-Schulz in the variable's
    # dtype, bit for bit), the others by its AdamW step; "embedding_wide"
    # excluded by exclude_embeddings, "tall" by exclude_layers below.
    "muon": ("Muon", _MUON, 1e-12),
    "muon-options": ("Muon", dict(_MUON, exclude_layers=["tall"], exclude_embeddings=False,
                                  adam_lr_ratio=0.5, nesterov=False, rms_rate=None,
                                  ns_steps=3, muon_a=3.0, muon_b=-3.25, muon_c=1.25,
                                  epsilon=2.0 ** -20, adam_weight_decay=None,
                                  clipvalue=0.25), 1e-12),
    "muon-exclude-wd": ("Muon", dict(_MUON, weight_decay=None), 1e-12),
}
# Variable names (Keras's Muon excludes by name)
NAMES = ["bias", "vector", "kernel", "tall", "embedding_wide", "conv"]


def _grads(rng, shapes, dtype):
    return [torch.tensor(rng.standard_normal(s).astype(dtype)) for s in shapes]


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float(((a - b).abs() / (1.0 + b.abs())).max())


def _rows(rows):
    """(row, dtype) pairs: every row in float64 (the tight bound), the first
    row of each optimizer in float32 too (the kernels of float32; the
    options' code is the same in both dtypes, and each row costs seconds of
    Keras or torch per step)."""
    seen = set()
    for row, (cls, *_) in rows.items():
        yield row, np.float64
        if cls not in seen:
            seen.add(cls)
            yield row, np.float32


@pytest.mark.parametrize("row, dtype", list(_rows(KERAS_ROWS)))
def test_keras(row, dtype):
    cls, kwargs, tol64 = KERAS_ROWS[row]
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    theirs = [keras.Variable(p.copy(), name=n) for p, n in zip(start, NAMES)]
    ours = [keras.Variable(p.copy(), name=n) for p, n in zip(start, NAMES)]
    oracle = getattr(keras.optimizers, cls)(**kwargs)
    fused = getattr(fastopt.keras, cls)(**kwargs)
    if row == "muon-exclude-wd":   # no weight_decay, and "conv" excluded from any
        for opt in (oracle, fused):
            opt.exclude_from_weight_decay(var_names=["conv"])
    for _ in range(STEPS):
        grads = _grads(rng, SHAPES, dtype)
        oracle.apply_gradients(zip(grads, theirs))
        fused.apply_gradients(zip([g.clone() for g in grads], ours))
    tol = tol64 if dtype == np.float64 else TOL32
    for a, b in zip(ours, theirs):
        assert _rel(a.value, b.value) <= tol
    for a, b in zip(fused.variables, oracle.variables):   # the state, by Keras's order
        assert a.shape == b.shape and _rel(a.value, b.value) <= tol


def test_lamb_list_equals_single_calls():
    """One list call (one parallel region per pass) gives every tensor
    exactly what a call of its own gives; Apex's options are the torch
    convention's."""
    rng = np.random.default_rng(1)
    shapes = SHAPES + [(70_001,)]     # more than one chunk, and past the serial grain
    params = [rng.standard_normal(s) for s in shapes]
    grads = [rng.standard_normal(s) for s in shapes]
    kw = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.01, step=3)
    listed = [p.copy() for p in params]
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    functional.lamb(listed, grads, m, v, **kw)
    for p, g, q in zip(params, grads, listed):
        functional.lamb(p, g, np.zeros_like(p), np.zeros_like(p), **kw)
        np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match="use_nvlamb is a torch option"):
        functional.lamb(params[0], grads[0], m[0], v[0], **kw, use_nvlamb=True)
    with pytest.raises(ValueError, match="beta1"):
        functional.lamb(params[0], grads[0], m[0], v[0], **dict(kw, beta1=1.0))
    before = params[2].copy()
    with pytest.raises(ValueError, match=r"exp_avg\[0\] must have shape \(7,\)"):
        functional.lamb(params[1:3], grads[1:3], [m[2], m[2]], v[1:3], **kw)
    np.testing.assert_array_equal(params[2], before)


# (class, kwargs) against torch.optim; float64 to 1e-12.
TORCH_ROWS = {
    "adafactor": ("Adafactor", {}),
    "adafactor-options": ("Adafactor", dict(eps=(1e-30, 0.01), d=2.0, lr=0.3,
                                            beta2_decay=-0.5)),
    "adafactor-wd-maximize": ("Adafactor", dict(weight_decay=0.1, maximize=True)),
    "muon": ("Muon", {}),
    "muon-options": ("Muon", dict(nesterov=False, weight_decay=0.0, momentum=0.8, lr=0.02,
                                  adjust_lr_fn="match_rms_adamw",
                                  ns_coefficients=(3.0, -3.2, 1.2), ns_steps=3, eps=1e-4)),
}
# torch's Muon takes 2-D params only (it refuses others at construction).
MATRICES = [(1, 1), (5, 5), (9, 3), (3, 9), (40, 33)]


@pytest.mark.parametrize("row, dtype", list(_rows(TORCH_ROWS)))
def test_torch(row, dtype):
    cls, kwargs = TORCH_ROWS[row]
    shapes = MATRICES if cls == "Muon" else SHAPES
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    theirs = [torch.nn.Parameter(torch.tensor(p)) for p in start]
    ours = [torch.nn.Parameter(torch.tensor(p)) for p in start]
    oracle = getattr(torch.optim, cls)(theirs, **kwargs)
    fused = getattr(fastopt.torch, cls)(ours, **kwargs)
    for _ in range(STEPS):
        for a, b, g in zip(theirs, ours, _grads(rng, shapes, dtype)):
            a.grad, b.grad = g, g.clone()
        oracle.step()
        fused.step()
    tol = 1e-12 if dtype == np.float64 else TOL32
    for a, b in zip(ours, theirs):
        assert _rel(a, b) <= tol
    # torch's state layout, so checkpoints move both ways
    mine, torch_state = fused.state_dict()["state"], oracle.state_dict()["state"]
    for k, state in torch_state.items():
        assert set(mine[k]) == set(state)
        for key, value in state.items():
            assert mine[k][key].shape == value.shape and _rel(mine[k][key], value) <= tol
    resumed = getattr(fastopt.torch, cls)(theirs, **kwargs)
    resumed.load_state_dict(oracle.state_dict())
    for a, g in zip(theirs, _grads(rng, shapes, dtype)):
        a.grad = g
    resumed.step()


def test_muon_numpy_and_refusals():
    """NumPy arrays take Muon's Newton-Schulz through NumPy's matmul, in
    their dtype (torch.optim.Muon's arithmetic in float64 apart from its
    bfloat16 iterations: compared to 5% of the step); a param that is
    not a matrix is refused, with torch's words, before anything is written."""
    rng = np.random.default_rng(2)
    p = rng.standard_normal((6, 4))
    g = rng.standard_normal((6, 4))
    ours, buf = p.copy(), np.zeros_like(p)
    functional.muon(ours, g, buf, step=1, lr=0.02, weight_decay=0.1, convention="torch")
    theirs = torch.nn.Parameter(torch.tensor(p))
    theirs.grad = torch.tensor(g)
    torch.optim.Muon([theirs], lr=0.02, weight_decay=0.1).step()
    np.testing.assert_allclose(ours, theirs.detach().numpy(), atol=0.02 * 0.05)
    vec = np.zeros(3)
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        functional.muon([ours, vec], [g, vec], [buf, vec.copy()], step=2, lr=0.02,
                        convention="torch")
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        fastopt.torch.Muon([torch.nn.Parameter(torch.zeros(3))])


# The framework-free classes (fastopt.Lamb, ...: NumPy arrays) against Keras's:
# Keras's Muon computes its norm in float32 and sums its matmuls in torch's
# order, NumPy's BLAS in its own: float64 Muon to 1e-8.
FREE_ROWS = {"Lamb": (_LAMB, 1e-12), "Adafactor": (_ADAFACTOR, _ADAFACTOR_TOL64),
             "Muon": (_MUON, 1e-8)}


@pytest.mark.parametrize("cls, dtype", [("Lamb", np.float64), ("Adafactor", np.float64),
                                        ("Muon", np.float64)])
def test_framework_free(cls, dtype):
    kwargs, tol64 = FREE_ROWS[cls]
    rng = np.random.default_rng(3)
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    theirs = [keras.Variable(p.copy()) for p in start]
    ours = [p.copy() for p in start]
    oracle = getattr(keras.optimizers, cls)(**kwargs)
    free = getattr(fastopt, cls)(**kwargs)
    for _ in range(STEPS):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        oracle.apply_gradients(zip([torch.tensor(g) for g in grads], theirs))
        free.apply_gradients(zip(grads, ours))
    tol = tol64 if dtype == np.float64 else TOL32
    for a, b in zip(ours, theirs):
        assert _rel(torch.tensor(a), b.value) <= tol
    # the state by Keras's names (slots a param lacks are absent), and a checkpoint
    state = free.state_dict()
    every, matrices, others = range(6), range(2, 6), (0, 1, 5)
    kept = {"Lamb": {"momentum": every, "velocity": every},
            "Adafactor": {"_r": matrices, "_c": matrices, "velocity": every},
            "Muon": {"momentum": every, "velocity": others}}[cls]
    assert {k for k in state if "/" in k} == {f"{n}/{i}" for n, ks in kept.items() for i in ks}
    resumed = getattr(fastopt, cls)(**kwargs)
    resumed.load_state_dict(state)
    copies = [p.copy() for p in ours]
    grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    free.apply_gradients(zip(grads, ours))
    resumed.apply_gradients(zip(grads, copies))
    for a, b in zip(ours, copies):
        np.testing.assert_array_equal(a, b)
    if cls == "Muon":
        with pytest.raises(ValueError, match="exclude_layers picks variables by name"):
            fastopt.Muon(exclude_layers=["dense"])
        with pytest.raises(ValueError, match=r"loaded state lacks velocity/0"):
            bad = {k: v for k, v in state.items() if k != "velocity/0"}
            fresh = fastopt.Muon(**kwargs)
            fresh.load_state_dict(bad)
            fresh.apply_gradients(zip(grads, copies))


def test_adafactor_row_blocks():
    """A matrix larger than one row block (`kernels.passes._blocks`: ~64K
    elements each) is reduced by several threads: equal to torch and to
    Keras, and the same bits on 1 thread as on 2 (the partition and the
    order of the partial sums depend on the shape alone)."""
    import numba
    shape = (300, 257)     # 2 blocks, the last one shorter
    rng = np.random.default_rng(4)
    start = rng.standard_normal(shape)
    theirs = torch.nn.Parameter(torch.tensor(start))
    oracle = torch.optim.Adafactor([theirs])
    mine = {}
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            ours = torch.nn.Parameter(torch.tensor(start))
            fused = fastopt.torch.Adafactor([ours])
            grads = np.random.default_rng(5)
            for _ in range(3):
                g = torch.tensor(grads.standard_normal(shape))
                ours.grad = g
                fused.step()
                if threads == 1:
                    theirs.grad = g.clone()
                    oracle.step()
            mine[threads] = ours.detach().clone()
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert _rel(mine[1], theirs) <= 1e-12
    assert torch.equal(mine[1], mine[2])
    keras_var = keras.Variable(start.copy())
    ours = keras.Variable(start.copy())
    oracle, fused = keras.optimizers.Adafactor(), fastopt.keras.Adafactor()
    for _ in range(3):
        g = torch.tensor(rng.standard_normal(shape))
        oracle.apply_gradients([(g, keras_var)])
        fused.apply_gradients([(g.clone(), ours)])
    assert _rel(ours.value, keras_var.value) <= _ADAFACTOR_TOL64


# fastopt.torch.Lamb (Apex FusedLAMB's semantics). No torch Lamb is installed
# to compare with; where its options meet Keras's Lamb (use_nvlamb: the
# trust ratio with weight_decay 0; max_grad_norm: Keras's global_clipnorm),
# Keras is the oracle. Keras rounds its global-clip factor to float32
# (``ops.minimum`` of a Python float), hence that row's float64 bound.
_LAMB_TORCH = dict(lr=2.0 ** -7, betas=(0.875, 1.0 - 2.0 ** -10), eps=2.0 ** -20,
                   weight_decay=0.0, use_nvlamb=True, max_grad_norm=None)
_LAMB_KERAS = dict(learning_rate=2.0 ** -7, beta_1=0.875, beta_2=1.0 - 2.0 ** -10,
                   epsilon=2.0 ** -20)
LAMB_TORCH_ROWS = {
    "nvlamb": (_LAMB_TORCH, _LAMB_KERAS, 1e-12),
    "max-grad-norm": (dict(_LAMB_TORCH, max_grad_norm=2.0),
                      dict(_LAMB_KERAS, global_clipnorm=2.0), 1e-7),
}


@pytest.mark.parametrize("row, dtype", [("nvlamb", np.float64), ("max-grad-norm", np.float32)])
def test_torch_lamb_against_keras(row, dtype):
    torch_kw, keras_kw, tol64 = LAMB_TORCH_ROWS[row]
    rng = np.random.default_rng(6)
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    theirs = [keras.Variable(p.copy()) for p in start]
    ours = [torch.nn.Parameter(torch.tensor(p)) for p in start]
    oracle = keras.optimizers.Lamb(**keras_kw)
    fused = fastopt.torch.Lamb(ours, **torch_kw)
    for _ in range(STEPS):
        grads = _grads(rng, SHAPES, dtype)
        oracle.apply_gradients(zip(grads, theirs))
        for p, g in zip(ours, grads):
            p.grad = g.clone()
        fused.step()
    tol = tol64 if dtype == np.float64 else TOL32
    for a, b in zip(ours, theirs):
        assert _rel(a, b.value) <= tol


def test_torch_lamb_options_and_checkpoint():
    """Apex's options that no installed library has (bias_correction,
    grad_averaging, adam_w_mode, the trust ratio only where weight decay is
    on) run, and a checkpoint continues bit for bit; Apex's state layout:
    exp_avg, exp_avg_sq per param, the step count in the param group,
    adam_w_mode / use_nvlamb / set_grad_none on the optimizer."""
    rng = np.random.default_rng(7)
    shapes = [(5, 4), (6,)]
    for kwargs in (dict(bias_correction=False, grad_averaging=False, weight_decay=0.1),
                   dict(adam_w_mode=False, weight_decay=0.1, max_grad_norm=0.5),
                   dict(weight_decay=0.0)):
        params = [torch.nn.Parameter(torch.tensor(rng.standard_normal(s))) for s in shapes]
        opt = fastopt.torch.Lamb(params, **kwargs)
        for _ in range(3):
            for p in params:
                p.grad = torch.tensor(rng.standard_normal(p.shape))
            opt.step()
        saved = opt.state_dict()
        assert saved["param_groups"][0]["step"] == 3
        assert set(saved["param_groups"][0]) == {"lr", "bias_correction", "betas", "eps",
                                                 "weight_decay", "grad_averaging",
                                                 "max_grad_norm", "step", "params"}
        assert set(saved["state"][0]) == {"exp_avg", "exp_avg_sq"}
        copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
        resumed = fastopt.torch.Lamb(copies, **kwargs)
        resumed.load_state_dict(copy.deepcopy(saved))   # torch keeps the tensors it is given
        for p, q in zip(params, copies):
            p.grad = torch.tensor(rng.standard_normal(p.shape))
            q.grad = p.grad.clone()
        opt.step()
        resumed.step()
        for p, q in zip(params, copies):
            assert torch.equal(p, q) and bool(torch.isfinite(p).all())
    opt.zero_grad()
    assert params[0].grad is None       # set_grad_none=True
    with pytest.raises(RuntimeError, match="does not support the AMSGrad variant"):
        fastopt.torch.Lamb(params, amsgrad=True)
    with pytest.raises(ValueError, match="max_grad_norm"):
        fastopt.torch.Lamb(params, max_grad_norm=0.0)


# Every pass of every program, Keras's forms and torch's, over tensors large
# enough for the parallel kernels (`kernels.passes`: from SERIAL_BELOW
# elements a pass takes its parallel twin): a vector and a matrix.
_BIG = [(40_000,), (200, 200)]
_BIG_ROWS = [("keras", "Lamb", dict(weight_decay=2.0 ** -8)),
             ("keras", "Adafactor", dict(_ADAFACTOR)),
             ("keras", "Muon", dict(_MUON)),
             ("torch", "Lamb", {}),
             ("torch", "Adafactor", dict(weight_decay=0.1)),
             ("torch", "Muon", {})]


@pytest.mark.parametrize("front, cls, kwargs", _BIG_ROWS,
                         ids=[f"{f}-{c}" for f, c, _ in _BIG_ROWS])
def test_parallel_passes_equal_serial_ones(front, cls, kwargs, monkeypatch):
    """Each pass's parallel kernel gives its serial twin's bits (its sums
    are added in chunk order, whatever the threads)."""
    from fastopt.kernels import passes
    shapes = _BIG if cls != "Muon" or front == "keras" else _BIG[1:]   # torch's: matrices

    def two_steps():
        rng = np.random.default_rng(6)
        start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        if front == "keras":
            params = [p.copy() for p in start]
            opt = getattr(fastopt, cls)(**kwargs)
            for _ in range(2):
                opt.apply_gradients(zip([rng.standard_normal(s).astype(np.float32)
                                         for s in shapes], params))
            return params
        params = [torch.nn.Parameter(torch.tensor(p)) for p in start]
        opt = getattr(fastopt.torch, cls)(params, **kwargs)
        for _ in range(2):
            for p, g in zip(params, _grads(rng, shapes, np.float32)):
                p.grad = g
            opt.step()
        return [p.detach().numpy() for p in params]

    picked, pick = [], passes.kernel

    def kernel(table, name, elements):
        kern = pick(table, name, elements)
        picked.append((name, kern is table[name][1]))
        return kern

    monkeypatch.setattr(passes, "kernel", kernel)
    parallel = two_steps()
    first, picked[:] = list(picked), []
    monkeypatch.setattr(passes, "parallel_for", lambda n: False)
    serial = two_steps()
    assert first and all(p for _, p in first)
    assert picked == [(name, False) for name, _ in first]
    for a, b in zip(parallel, serial):
        np.testing.assert_array_equal(a, b)
