"""The program optimizers (Lamb, Adafactor, Muon) on the CUDA path, under
Numba's simulator: the same steps as on the CPU (tests/test_programs.py
holds the CPU path to Keras and torch.optim), single and list, float64 to
1e-12 and float32 to 1e-5 (the per-tensor sums are reduced in another
order, and in the kernel's dtype); bad input refused before anything is
written; and every new kernel's PTX (compiled with no GPU) clean.

Small arrays and few steps: the simulator runs each GPU thread as a Python
thread.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fastopt import functional
from fastopt.specs import ADAFACTOR, LAMB, MUON

cuda = pytest.importorskip("numba.cuda")
pytestmark = pytest.mark.skipif(os.environ.get("FASTOPT_REAL_GPU") == "1",
                                reason="the simulator's tests (a real GPU: gpu_checks)")

TOL = {np.float64: 1e-12, np.float32: 1e-5}
STEPS = 2
SPECS = {"lamb": LAMB, "adafactor": ADAFACTOR, "muon": MUON}
# 1-D, odd sizes, square, tall, wide, 4-D (the simulator's tiles are
# kernels.passes_cuda.SIM_TILE_ROWS = 4 rows: one, two and three of them)
SHAPES = [(1,), (7,), (5, 5), (9, 3), (3, 9), (2, 3, 2, 4)]
MATRICES = [(1, 1), (5, 5), (9, 3), (3, 9)]
KERAS_MUON = [(5, 3), (7,), (2, 3, 4)]
TORCH_LAMB = [(1,), (7,), (9, 3)]

CASES = {   # name: (optimizer, convention, kwargs, shapes)
    "lamb": ("lamb", "keras", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7,
                                   weight_decay=0.01, clip_value=1.5), SHAPES),
    "adafactor-keras": ("adafactor", "keras", dict(lr=0.01, eps1=1e-30, eps2=1e-3,
                                                   weight_decay=0.01), SHAPES),
    "adafactor-torch": ("adafactor", "torch", dict(lr=0.01, eps1=None, eps2=1e-3,
                                                   clip_threshold=1.0, weight_decay=0.1,
                                                   maximize=True), SHAPES),
    "muon": ("muon", "torch", dict(lr=0.02, weight_decay=0.1), MATRICES),
    "muon-plain": ("muon", "torch", dict(lr=0.02, momentum=0.8, nesterov=False,
                                         adjust_lr=1), MATRICES),
    # Keras's Muon: a matrix without a velocity (its Muon step), a vector and
    # a 3-D param with one (its AdamW step), in one call
    "muon-keras": ("muon", "keras", dict(lr=0.01, weight_decay=0.1), KERAS_MUON),
    # Apex FusedLAMB's semantics: its defaults (decoupled weight decay);
    # no bias correction nor grad averaging (no weight decay: the ratio is
    # 1); use_nvlamb with L2 weight decay, maximized
    "lamb-torch": ("lamb", "torch", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-6,
                                         weight_decay=0.01, decoupled_weight_decay=True),
                   TORCH_LAMB),
    "lamb-torch-plain": ("lamb", "torch", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-6,
                                               bias_correction=False, grad_averaging=False),
                         TORCH_LAMB),
    "lamb-torch-nvlamb": ("lamb", "torch", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-6,
                                                use_nvlamb=True, weight_decay=0.01,
                                                decoupled_weight_decay=False, maximize=True),
                          TORCH_LAMB),
}


def _states(spec, convention, shape, dtype):
    out = {}
    for slot in spec.slots:
        s = slot.shape_for(shape, convention)
        out[slot.name] = None if s is None else np.zeros(s, dtype)
    return out


def _run(case, dtype, as_list, steps=STEPS, shapes=None, put=None):
    """(host params and states, device params and states) after `steps` steps
    (the single form: a call per tensor, on two of the case's shapes;
    float32: a 1-D, a tall and a 4-D param, where they are taken). put: how
    an array goes to the GPU (Numba's ``to_device``; benchmarks/gpu_checks.py
    passes CuPy's and torch's)."""
    name, convention, kwargs, case_shapes = CASES[case]
    put = put or cuda.to_device
    if shapes is None:
        shapes = case_shapes
        if not as_list:
            shapes = shapes[1:3]
        elif dtype == np.float32 and shapes is SHAPES:
            shapes = [(7,), (9, 3), (2, 3, 2, 4)]
    spec, fn = SPECS[name], getattr(functional, name)
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    host_p = [p.copy() for p in params]
    host_s = [_states(spec, convention, s, dtype) for s in shapes]
    dev_p = [put(p) for p in params]
    dev_s = [{k: None if v is None else put(v) for k, v in st.items()} for st in host_s]
    for step in range(1, steps + 1):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        kw = dict(kwargs, step=step, convention=convention)
        for p, s, g in ((host_p, host_s, grads), (dev_p, dev_s, [put(g) for g in grads])):
            if as_list:
                fn(p, g, **{k: [st[k] for st in s] for k in s[0]}, **kw)
            else:
                for pk, gk, sk in zip(p, g, s):   # a slot this param has not: a placeholder
                    fn(pk, gk, **{k: np.zeros(0) if v is None else v for k, v in sk.items()},
                       **kw)
    return host_p, host_s, dev_p, dev_s


def _to_host(a):
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    if hasattr(a, "get"):                   # CuPy
        return a.get()
    return a.detach().cpu().numpy()         # torch


def assert_close(host_p, host_s, dev_p, dev_s, tol):
    """Every param and state of the GPU run within `tol` of the host's."""
    for hp, dp, hs, ds in zip(host_p, dev_p, host_s, dev_s):
        pairs = [(hp, dp)] + [(v, ds[k]) for k, v in hs.items() if v is not None]
        for want, got in pairs:
            got = _to_host(got)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("case, dtype, as_list", [
    *[(c, np.float64, True) for c in CASES],
    *[(c, np.float32, True) for c in ("lamb", "adafactor-keras", "adafactor-torch", "muon",
                                      "muon-keras", "lamb-torch")],
    *[(c, np.float64, False) for c in ("lamb", "adafactor-torch", "muon")],
])
def test_simulator_equals_cpu(case, dtype, as_list):
    assert_close(*_run(case, dtype, as_list), TOL[dtype])


def test_bad_device_input_refused_before_any_write():
    """A wrong shape, a host array among GPU ones, a non-matrix for Muon:
    refused in the caller's words, nothing written."""
    rng = np.random.default_rng(3)
    p = [cuda.to_device(rng.standard_normal(s)) for s in [(4, 3), (5,)]]
    g = [cuda.to_device(rng.standard_normal(s)) for s in [(4, 3), (5,)]]
    before = [a.copy_to_host() for a in p]
    kw = dict(step=1, lr=0.01, eps1=1e-30, eps2=1e-3, convention="torch")
    rows, cols = cuda.to_device(np.zeros((4, 1))), cuda.to_device(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"col_var\[0\] must have shape \(1, 3\)"):
        functional.adafactor(p, g, [rows, None], [rows, None],
                             [None, cuda.to_device(np.zeros(5))], **kw)
    with pytest.raises(TypeError, match=r"variance\[1\] is on the host, param\[0\] on GPU 0"):
        functional.adafactor(p, g, [rows, None], [cols, None], [None, np.zeros(5)], **kw)
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        functional.muon(p, g, [cuda.to_device(np.zeros(s)) for s in [(4, 3), (5,)]], step=1,
                        lr=0.02, convention="torch")
    for a, b in zip(p, before):
        np.testing.assert_array_equal(a.copy_to_host(), b)


# -- PTX --------------------------------------------------------------------
def _probe():
    """In a child process (the simulator off): compile every launch of
    `kernels.passes_cuda` to sm_90 PTX; one JSON record each."""
    from numba import cuda as real, types

    from fastopt.kernels import passes_cuda as pc

    table = types.Array(types.int64, 2, "C")
    hypers = {"lamb_moments": 8, "lamb_apply": 8, "lamb_moments_torch": 9,
              "lamb_apply_torch": 9, "muon_momentum": 6, "scaled_add": 6,
              "muon_momentum_keras": 12, "muon_apply_keras": 12, "muon_adamw_keras": 12}
    launches = list(pc.ELEMENTWISE) + [n for names in pc.LAUNCHES.values() for n in names]
    # float32, where float64 would creep in (float64's code is the same
    # source; each launch's float64 build is compiled by the simulator's
    # tests' real-GPU twin, benchmarks/gpu_checks.py)
    for name, dtype in [(n, "float32") for n in launches]:
        dt = getattr(types, dtype)
        a1, a2 = types.Array(dt, 1, "C"), types.Array(dt, 2, "C")
        if name in pc.ELEMENTWISE:
            sig = (table, table, a2, types.UniTuple(dt, 6),
                   types.UniTuple(dt, hypers.get(name, 5)), a2)
        else:
            sig = (table, table, table, a2, a1, types.UniTuple(dt, 6), types.UniTuple(dt, 5),
                   a2, a1)
        ptx, _ = real.compile_ptx(pc.kernel_function(name, dtype), sig, cc=(9, 0))
        other = "f64" if dtype == "float32" else "f32"
        print(json.dumps({
            "kernel": f"{name}-{dtype}", "local": ".local" in ptx,
            "other_precision": bool(re.search(_IN_PRECISION.format(other), ptx)),
            "wide_address": bool(re.search(r"shl\.b64|mul\.wide", ptx)),
            "stores": ptx.count(f"st.global.f{dtype[-2:]}")}), flush=True)


_IN_PRECISION = (r"\b(?:add|sub|mul|mad|fma|div|rcp|sqrt|rsqrt|ex2|lg2|min|max|neg|cvt|ld|st)"
                 r"(?:\.\w+)*\.{}\b")


def test_passes_compile_clean_to_ptx():
    """No local memory, no arithmetic in the other precision, element
    addresses in 64 bits, and every launch writes something."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, __file__], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == 20
    for r in records:
        assert not r["local"] and not r["other_precision"], r
        assert r["wide_address"] and r["stores"] >= 1, r


if __name__ == "__main__":
    _probe()
