"""Users' own rules (`fastopt.rule`, docs/custom-rules.md).

* Adam re-declared through the public API runs bit for bit as the built-in
  (Keras's form), with the shared transforms, on the CPU and under the CUDA
  simulator, single arrays and lists, float32 and float64;
* two rules that are not built in, signum (state) and AdaBelief (host-side
  scalars), match NumPy references over 50 steps in the three front ends
  (functional, torch.optim, Keras-style, and Keras 3's via fastopt.keras),
  and torch's state_dict round trip;
* their CUDA kernels compile to clean PTX (a child process, no simulator);
  a rule the GPU cannot compile is reported there;
* numbers written in a rule are typed to the arrays' dtype; float64 that
  reaches a float32 kernel otherwise is reported with its line;
* an edited rule in a fresh process recompiles (Numba's cache statistics);
* bad rules are refused with messages that name the problem.
"""
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastopt
import ptx_probe
from conftest import Target, to_host
from fastopt import RuleError, functional as F, sign

REPO = pathlib.Path(__file__).resolve().parents[1]


def _examples():
    spec = importlib.util.spec_from_file_location(
        "custom_rules", REPO / "examples" / "custom_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EX = _examples()
SHAPES = (1, 7, 33)
DTYPES = (np.float32, np.float64)
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _draw(rng, dtype, shapes=SHAPES, slots=2, positive=()):
    out = []
    for n in shapes:
        p = rng.standard_normal(n).astype(dtype)
        states = [np.abs(rng.standard_normal(n)).astype(dtype) * 1e-2 if k in positive
                  else np.zeros(n, dtype) for k in range(slots)]
        out.append((p, states))
    return out


# -- Adam through the public API is the built-in, bit for bit ----------------
ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7)
# Plain; decoupled decay (a scalar: the plain kernel); coupled decay, clipping,
# scaling and maximize (one kernel with the l2 and clip flags).
OPTIONS = [{}, dict(weight_decay=0.01),
           dict(weight_decay=0.01, decoupled_weight_decay=False, clip_value=0.5,
                grad_scale=0.5, maximize=True)]


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "decoupled", "transforms"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_adam_redeclared_is_the_builtin_bit_for_bit(target, dtype, options):
    if target == "cuda" and options is not OPTIONS[2]:
        pytest.skip("the simulator runs one option set (it pays per thread)")
    on = Target(target)
    rng = np.random.default_rng(1)
    steps = 3 if target == "cuda" else 20
    # On the CPU, lists with the plain kernels only (the transforms are the same
    # element step; each CPU variant's list kernel is one more compile).
    forms = ("single",) if target == "cpu" and options is OPTIONS[2] else ("single", "list")
    for form in forms:
        mine = _draw(rng, dtype)
        theirs = [(p.copy(), [s.copy() for s in st]) for p, st in mine]
        mine = [(on.put(p), [on.put(s) for s in st]) for p, st in mine]
        theirs = [(on.put(p), [on.put(s) for s in st]) for p, st in theirs]
        for t in range(1, steps + 1):
            grads = [on.put(rng.standard_normal(n).astype(dtype)) for n in SHAPES]
            if form == "single":
                for (p, (m, v)), (q, (m2, v2)), g in zip(mine, theirs, grads):
                    EX.adam(p, g, m, v, step=t, **ADAM, **options)
                    F.adam(q, g, m2, v2, step=t, convention="keras", **ADAM, **options)
            else:
                EX.adam([p for p, _ in mine], grads, [s[0] for _, s in mine],
                        [s[1] for _, s in mine], step=t, **ADAM, **options)
                F.adam([p for p, _ in theirs], grads, [s[0] for _, s in theirs],
                       [s[1] for _, s in theirs], step=t, convention="keras",
                       **ADAM, **options)
        for (p, st), (q, st2) in zip(mine, theirs):
            for a, b in zip([p, *st], [q, *st2]):
                np.testing.assert_array_equal(to_host(a), to_host(b))


# -- two rules that are not built in, against NumPy ---------------------------
def _signum_ref(p, g, states, t, dt, lr=1e-2, beta=0.9):
    (m,) = states
    b = dt(beta)
    m[...] = b * m + (dt(1) - b) * g
    p[...] = p - dt(lr) * np.sign(m)


def _adabelief_ref(p, g, states, t, dt, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8):
    m, s = states
    b1, b2, e = dt(beta1), dt(beta2), dt(eps)
    step_size = dt(lr / (1.0 - beta1 ** t))
    inv_sqrt_c2 = dt(1.0 / math.sqrt(1.0 - beta2 ** t))
    m[...] = b1 * m + (dt(1) - b1) * g
    d = g - m
    s[...] = b2 * s + (dt(1) - b2) * (d * d) + e
    p[...] = p - step_size * m / (np.sqrt(s) * inv_sqrt_c2 + e)


# lr exactly a float32 (Keras keeps its learning rate in a float32 variable)
RULES = {"signum": (EX.signum, _signum_ref, dict(lr=2.0 ** -7, beta=0.9), 1),
         "adabelief": (EX.adabelief, _adabelief_ref,
                       dict(lr=2.0 ** -7, beta1=0.9, beta2=0.999, eps=1e-8), 2)}
STEPS = 50


def _grads(rng, dtype, t):
    return [rng.standard_normal(n).astype(dtype) for n in SHAPES]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", RULES)
def test_rule_matches_numpy_in_every_front_end(name, dtype):
    import torch

    fn, ref, hyper, slots = RULES[name]
    rng = np.random.default_rng(2)
    start = _draw(rng, dtype, slots=slots)
    grads = [_grads(rng, dtype, t) for t in range(STEPS)]
    expected = [(p.copy(), [s.copy() for s in st]) for p, st in start]
    for t in range(1, STEPS + 1):
        for (p, st), g in zip(expected, grads[t - 1]):
            ref(p, g, st, t, dtype, **hyper)

    def close(got, want):
        np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])

    # functional, single arrays and lists
    single = [(p.copy(), [s.copy() for s in st]) for p, st in start]
    lists = [(p.copy(), [s.copy() for s in st]) for p, st in start]
    for t in range(1, STEPS + 1):
        for (p, st), g in zip(single, grads[t - 1]):
            fn(p, g, *st, step=t, **hyper)
        fn([p for p, _ in lists], grads[t - 1],
           *[[st[k] for _, st in lists] for k in range(slots)], step=t, **hyper)
    for got in (single, lists):
        for (p, st), (q, st2) in zip(got, expected):
            close(p, q)
            for a, b in zip(st, st2):
                close(a, b)

    # torch.optim: state in its state dict under the rule's names
    params = [torch.nn.Parameter(torch.tensor(p)) for p, _ in start]
    opt = fn.torch(params, **hyper)
    for t in range(1, STEPS + 1):
        for w, g in zip(params, grads[t - 1]):
            w.grad = torch.tensor(g)
        opt.step()
        if t == STEPS // 2:   # the checkpoint continues identically
            saved = opt.state_dict()
            opt = fn.torch(params, **hyper)
            opt.load_state_dict(saved)
    state = opt.state_dict()["state"]
    for k, (w, (q, st2)) in enumerate(zip(params, expected)):
        close(w.detach().numpy(), q)
        assert state[k]["step"].item() == STEPS
        for slot, b in zip(fn.spec.slots, st2):
            close(state[k][slot.torch].numpy(), b)

    # Keras-style: learning_rate, Keras's argument name
    keras_hyper = {("learning_rate" if k == "lr" else k): v for k, v in hyper.items()}
    opt = fn.keras(**keras_hyper)
    weights = [p.copy() for p, _ in start]
    for t in range(1, STEPS + 1):
        opt.apply_gradients(zip(grads[t - 1], weights))
    for w, (q, _) in zip(weights, expected):
        close(w, q)

    # Keras 3 (fastopt.keras): a keras.optimizers.Optimizer over Keras variables
    import keras
    opt = fn.keras3(**keras_hyper)
    variables = [keras.Variable(p.copy(), dtype=np.dtype(dtype).name) for p, _ in start]
    for t in range(1, STEPS + 1):
        opt.apply_gradients(zip([torch.tensor(g) for g in grads[t - 1]], variables))
    for v, (q, _) in zip(variables, expected):
        close(keras.ops.convert_to_numpy(v), q)
    assert opt.get_config()["beta" if name == "signum" else "beta2"] == hyper[
        "beta" if name == "signum" else "beta2"]


def test_rule_options_are_checked_before_writing():
    p, g, m = np.ones(3, np.float32), np.ones(3, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"signum\(\): lr must be in \[0.0, inf\], got -1"):
        EX.signum(p, g, m, lr=-1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        EX.signum(p, g, m, weight_decay=-1.0)
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        import torch
        EX.signum.torch([torch.nn.Parameter(torch.ones(2))], lr=-1.0)
    with pytest.raises(TypeError, match="beta"):
        EX.signum(p, g, m, beta="0.9")
    assert (p == 1).all() and (m == 0).all()


# -- the float traps ----------------------------------------------------------
@fastopt.rule(state=("m",), hyper={"lr": 0.1})
def halves(p, g, m, lr):
    m = 0.5 * m + 0.1 * g
    return p - lr * m * 3, m


def test_numbers_in_a_rule_are_typed_to_the_arrays_dtype():
    """0.5, 0.1 and 3 are float32 in the float32 kernel: float32(0.1), not
    0.1 rounded after a float64 product."""
    p, g, m = (np.array([1.0, -2.0, 3.0], np.float32), np.array([0.3, 0.7, -1.1], np.float32),
               np.array([0.2, 0.4, 0.6], np.float32))
    import torch

    want_m = np.float32(0.5) * m + np.float32(0.1) * g
    want_p = p - np.float32(0.1) * want_m * np.float32(3)
    # torch views of the arrays: the general path, whose kernel compiles for
    # float32 alone (the NumPy fast path's compiles both dtypes at once)
    halves(*map(torch.from_numpy, (p, g, m)))
    np.testing.assert_array_equal(m, want_m)
    np.testing.assert_array_equal(p, want_p)
    assert "_fastopt_k0" in halves.source


PI = math.pi


def test_float64_in_a_float32_rule_is_reported_with_its_line():
    @fastopt.rule(hyper=("lr",))
    def creep(p, g, lr):
        return p - lr * g * PI

    with pytest.raises(RuleError, match=r"rule creep: line \d+ computes in float64 in "
                                        r"the float32 kernel \('return p - lr \* g \* PI'\)"):
        creep.check(ptx=False)


# -- bad rules ----------------------------------------------------------------
def test_bad_rules_are_named():
    with pytest.raises(RuleError, match=r"rule two: line \d+ returns 3 values; it must "
                                        r"return \(p, m\)"):
        @fastopt.rule(state=("m",), hyper=("lr",))
        def two(p, g, m, lr):
            return p, m, m

    with pytest.raises(RuleError, match=r"argument 3 is 'mom', but state 'm' must be there"):
        @fastopt.rule(state=("m",), hyper=("lr",))
        def renamed(p, g, mom, lr):
            return p, mom

    with pytest.raises(RuleError, match=r"takes 'lrr', which is neither a state array "
                                        r"\(state=\('m',\)\) nor a hyperparameter"):
        @fastopt.rule(state=("m",), hyper=("lr",))
        def typo(p, g, m, lrr):
            return p, m

    with pytest.raises(RuleError, match="a rule has at most 3"):
        fastopt.rule(state=("a", "b", "c", "d"))(lambda p, g, a, b, c, d, lr: p)

    with pytest.raises(RuleError, match="hyper must include 'lr'"):
        fastopt.rule(hyper=("eta",))(lambda p, g, eta: p)

    with pytest.raises(RuleError, match="'weight_decay' is an option every optimizer has"):
        fastopt.rule(hyper=("lr", "weight_decay"))(lambda p, g, lr, weight_decay: p)

    with pytest.raises(RuleError, match="scalars function bad takes 'stepp'"):
        def bad(stepp, lr):
            return {}
        fastopt.rule(hyper=("lr",), scalars=bad)(lambda p, g, lr: p)


def test_non_scalar_code_and_runtime_arity_are_named():
    @fastopt.rule(hyper=("lr",))
    def text(p, g, lr):
        return p - lr * float(str(g))

    with pytest.raises(RuleError, match=r"rule text: does not compile as a function of "
                                        r"float32 scalars \(Numba: "):
        text.check(ptx=False)

    @fastopt.rule(state=("m", "v"), hyper=("lr",))
    def short(p, g, m, v, lr):
        out = (p - lr * g, m)
        return out

    with pytest.raises(RuleError, match=r"rule short: returns 2 value\(s\) .* it must "
                                        r"return \(p, m, v\)"):
        short.check(ptx=False)

    def wrong(step, lr):
        return {"alpha": lr, "beta": 1.0}

    @fastopt.rule(hyper=("lr",), scalars=wrong)
    def scaled(p, g, alpha):
        return p - alpha * g

    with pytest.raises(RuleError, match=r"wrong\(\) returned 'beta', which the rule does "
                                        r"not take"):
        scaled(np.ones(2), np.ones(2), step=1, lr=0.1)


# -- the on-disk cache: an edited rule recompiles -------------------------------
CHILD = r'''
import importlib.util, json, sys
import numpy as np
from fastopt.kernels import cpu
spec = importlib.util.spec_from_file_location("user_rule", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
p, g, m = np.ones(4, np.float32), np.full(4, 0.5, np.float32), np.zeros(4, np.float32)
mod.step_rule(p, g, m, lr=0.5)
stats = cpu._serial[mod.step_rule.variant].stats   # 4 elements: the serial loop
print(json.dumps({"p": p.tolist(), "hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values())}))
'''

RULE_V1 = '''
import fastopt

@fastopt.rule(state=("m",), hyper=("lr",))
def step_rule(p, g, m, lr):
    m = m + g
    return p - lr * m, m
'''


@pytest.mark.slow
def test_an_edited_rule_recompiles_in_a_fresh_process(tmp_path):
    child, module = tmp_path / "child.py", tmp_path / "user_rule.py"
    child.write_text(CHILD)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "FASTOPT_ACCELERATORS": "0", "PYTHONPATH": str(REPO)}

    def run():
        out = subprocess.run([sys.executable, str(child), str(module)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.splitlines()[-1])

    module.write_text(RULE_V1)
    first, second = run(), run()
    assert first["misses"] >= 1 and first["p"] == [0.75] * 4
    assert second == {**first, "hits": second["hits"], "misses": 0} and second["hits"] >= 1
    module.write_text(RULE_V1.replace("m = m + g", "m = m + g + g"))
    edited = run()
    assert edited["misses"] >= 1 and edited["hits"] == 0 and edited["p"] == [0.5] * 4


# -- PTX: the rules' CUDA kernels, compiled with no GPU ------------------------
PTX_CHILD = r'''
import importlib.util, json, sys
import fastopt
spec = importlib.util.spec_from_file_location("custom_rules", sys.argv[1])
ex = importlib.util.module_from_spec(spec); spec.loader.exec_module(ex)
out = {}
for name in ("signum", "adabelief"):
    facts = getattr(ex, name).check()
    out[name] = {f"{form}-{dt}": rec for (form, dt), rec in facts.items()}

import numpy as np

@fastopt.rule(state=("m",), hyper=("lr",))
def numpy_sign(p, g, m, lr):
    m = m + g
    return p - lr * np.sign(m), m

try:
    numpy_sign.check()
except fastopt.RuleError as e:
    out["gpu_error"] = str(e)
print(json.dumps(out))
'''


@pytest.mark.slow
def test_rule_kernels_compile_to_clean_ptx(tmp_path):
    child = tmp_path / "ptx_child.py"
    child.write_text(PTX_CHILD)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, str(child), str(REPO / "examples" / "custom_rules.py")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.splitlines()[-1])
    for name in ("signum", "adabelief"):   # (Adam's math is the built-in's: test_ptx)
        assert sorted(found[name]) == ["list-float32", "list-float64", "single-float32",
                                       "single-float64"]
        for key, rec in found[name].items():
            # tests/ptx_probe.py's reading: no spills, no other precision, one
            # load per array read and one store per array written per iteration
            rec = dict(rec, other_precision=rec["float64_in_float32"] if "32" in key else False)
            ptx_probe.assert_clean(rec, getattr(EX, name).variant)
            assert rec["wide_index"], key
    assert found["gpu_error"].startswith("rule numpy_sign: does not compile for the GPU")


def test_bench_times_a_rule_beside_the_builtin():
    from fastopt.bench.runner import run

    report = run(optimizers=["adam_keras"], sizes=[1000], peers=(), repeats=1, warmup=0,
                 cold_start=(), overhead=False, progress=False, rule=EX.adam)
    impls = {r["impl"]: r["status"] for r in report["results"]}
    assert impls == {"fastopt": "ok", "rule": "ok", "floor": "ok"}
    assert "rule" in report["ratios"][0]["speedup"]
