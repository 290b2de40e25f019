"""Numba's on-disk cache: a second process compiles nothing and is still right.

Binding a generic loop to per-optimizer rules can defeat the cache (recompiling
in every process) or, worse, serve one variant another's code. Two fresh
processes run every case of the optimizer table on the CPU against its oracle,
with one empty temporary cache directory. The first compiles and saves; the
second must load every CPU kernel it uses from the cache, as the dispatchers'
own statistics say, with no compilation, and still match every oracle.
"""
import json
import os
import subprocess
import sys

import numpy as np

SHAPE = (7, 13)
STEPS = 20
TOL = {"float32": 1e-5, "float64": 1e-12}


def _run_cases():
    """Run every case (float32, float64) against its oracle; print a JSON summary."""
    import oracles
    from optimizer_table import CASES, fastopt_step, make_state, oracle
    from oracles import max_rel_error

    from fastopt.kernels import cpu, variants

    worst = {}
    rng = np.random.default_rng(0)
    for case in CASES:
        for dtype in (np.float32, np.float64):
            param = rng.standard_normal(SHAPE).astype(dtype)
            grads = [rng.standard_normal(SHAPE).astype(dtype) for _ in range(STEPS)]
            p, state = param.copy(), make_state(case, SHAPE, dtype)
            for step, g in enumerate(grads, start=1):
                fastopt_step(case, p, g, state, step)
            want, _ = oracles.run(oracle(case), param, grads)
            err = max_rel_error(p, want, float(np.abs(param).max()))
            worst[f"{case.id}/{dtype.__name__}"] = err
    hits = misses = 0
    compiled = []
    for variant, kern in cpu._kernels.items():
        hits += sum(kern.stats.cache_hits.values())
        misses += sum(kern.stats.cache_misses.values())
        if kern.stats.cache_misses:
            compiled.append(variant.key)
    signatures = sum(len(k.signatures) for k in cpu._kernels.values())
    print(json.dumps({"hits": hits, "misses": misses, "signatures": signatures,
                      "compiled": compiled, "fingerprint": variants.FINGERPRINT,
                      "errors": worst}))


def _fresh_process(cache_dir):
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir),
           "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.splitlines()[-1])


def _check_errors(run):
    for name, err in run["errors"].items():
        assert err <= TOL[name.rsplit("/", 1)[1]], f"{name}: error {err:.3g}"


def test_second_process_loads_every_kernel_from_cache(tmp_path):
    first = _fresh_process(tmp_path)
    assert first["signatures"] > 0
    assert first["misses"] == first["signatures"], "first process should compile"
    _check_errors(first)

    second = _fresh_process(tmp_path)
    assert second["fingerprint"] == first["fingerprint"], \
        "kernel sources changed between the two processes"
    assert second["signatures"] == first["signatures"]
    assert second["misses"] == 0, f"recompiled instead of loaded: {second['compiled']}"
    assert second["hits"] == second["signatures"]
    _check_errors(second)


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "torch")
    _run_cases()
