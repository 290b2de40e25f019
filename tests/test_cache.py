"""Numba's on-disk cache: a second process compiles nothing and is still right.

Binding a generic loop to per-optimizer rules can defeat the cache (recompiling
in every process) or, worse, serve one variant another's code. Two fresh
processes run the first case of each optimizer and convention of the table
on the CPU, with one empty temporary cache directory. The first compiles and
saves, and matches every oracle; the second must load every CPU kernel it
uses from the cache, as the dispatchers' own statistics say, with no
compilation, and give the first's params bit for bit (the same machine code:
no oracle, nor Keras and torch imported, needed a second time).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

# Fresh processes that compile every kernel of the table: minutes.
pytestmark = pytest.mark.slow

SHAPE = (7, 13)
STEPS = 20
TOL = {"float32": 1e-5, "float64": 1e-12}


def _run_cases(check_oracles):
    """Run the first case of each optimizer and convention (in float32 and
    float64 in turn), against its oracle if `check_oracles`; print a JSON
    summary with the final params. (Every case compiled 2 minutes
    of kernels; one per rule and convention exercises the cache the same way,
    and `test_variants_cached_by_different_processes_stay_apart` keeps one
    rule's variants apart.)"""
    from optimizer_table import CASES, fastopt_step, make_state, oracle

    from fastopt.kernels import cpu, variants

    worst, params = {}, {}
    rng = np.random.default_rng(0)
    first = {}
    for case in CASES:
        first.setdefault((case.fn, case.convention), case)
    # One dtype per case, the two in turn: the cache keys both alike, and
    # both dtypes of every case would double the compiling.
    for k, case in enumerate(first.values()):
        for dtype in ((np.float32, np.float64)[k % 2],):
            param = rng.standard_normal(SHAPE).astype(dtype)
            grads = [rng.standard_normal(SHAPE).astype(dtype) for _ in range(STEPS)]
            p, state = param.copy(), make_state(case, param)
            for step, g in enumerate(grads, start=1):
                fastopt_step(case, p, g, state, step)
            params[f"{case.id}/{dtype.__name__}"] = p.ravel().tolist()
            if check_oracles:
                import oracles
                want, _ = oracles.run(oracle(case), param, grads)
                err = oracles.max_rel_error(p, want, float(np.abs(param).max()))
                worst[f"{case.id}/{dtype.__name__}"] = err
    from fastopt import _accel
    # What a call enters from Python: the single-array path's jitted
    # check-and-run functions (the kernels compiled into them), and the
    # kernels the Python path calls. An entry never called has no signature.
    entries = [(f"run:{v.key}:{loop}", run.func)
               for v, plan in _accel.SINGLE.items() if plan[0] is not None
               for loop, run in enumerate(plan[0])]
    entries += [(v.key, kern) for kernels in (cpu._kernels, cpu._serial)
                for v, kern in kernels.items()]
    hits = misses = signatures = 0
    compiled = []
    for name, dispatcher in entries:
        hits += sum(dispatcher.stats.cache_hits.values())
        misses += sum(dispatcher.stats.cache_misses.values())
        signatures += len(dispatcher.signatures)
        if dispatcher.stats.cache_misses:
            compiled.append(name)
    runners = sorted(name for name, d in entries if name.startswith("run:") and d.signatures)
    print(json.dumps({"hits": hits, "misses": misses, "signatures": signatures,
                      "runners": runners, "compiled": compiled,
                      "fingerprint": variants.FINGERPRINT, "errors": worst,
                      "params": params}))


def _fresh_process(cache_dir, *args):
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir),
           "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.splitlines()[-1])


def _check_errors(run):
    for name, err in run["errors"].items():
        assert err <= TOL[name.rsplit("/", 1)[1]], f"{name}: error {err:.3g}"


def test_second_process_loads_every_kernel_from_cache(tmp_path):
    first = _fresh_process(tmp_path, "oracles")
    assert first["signatures"] > 0
    assert first["misses"] == first["signatures"], "first process should compile"
    assert first["errors"].keys() == first["params"].keys()
    _check_errors(first)

    second = _fresh_process(tmp_path)
    assert second["fingerprint"] == first["fingerprint"], \
        "kernel sources changed between the two processes"
    assert second["runners"] == first["runners"] != []
    assert second["misses"] == 0, f"recompiled instead of loaded: {second['compiled']}"
    assert second["hits"] == second["signatures"] > 0
    assert second["params"] == first["params"]      # bit for bit (JSON floats round-trip)


# RMSprop variants whose compiled loops have one signature (5 hyperparameters,
# float64 arrays): only the variant key tells them apart, by a rule flag
# (centered) or by a transform (coupled_l2) from the plain one. (A fourth,
# momentum, was a second rule flag: one more fresh process, ~10 s of CI.)
_TWINS = {"plain": {}, "centered": {"centered": True}, "coupled_l2": {"weight_decay": 0.1}}


def _run_twins(names):
    """Three float64 RMSprop steps of each named variant, on one array and on
    a list of 10 (the list form's compiled walk-and-run); print the params."""
    from fastopt import functional as F

    out = {}
    for name in names:
        kwargs = _TWINS[name]
        for count in (None, 10):
            rng = np.random.default_rng(1)

            def arrays(fill):
                made = [fill(64) for _ in range(count or 1)]
                return made if count else made[0]

            p = arrays(rng.standard_normal)
            states = {"grad_avg": arrays(np.zeros) if "centered" in kwargs else None}
            square_avg = arrays(np.zeros)
            for step in (1, 2, 3):
                F.rmsprop(p, arrays(rng.standard_normal), square_avg, **states,
                          step=step, lr=0.01, alpha=0.9, eps=1e-8, convention="torch",
                          **kwargs)
            out[f"{name}/{count or 'one'}"] = np.asarray(p).tolist()
    print(json.dumps(out))


def test_variants_cached_by_different_processes_stay_apart(tmp_path):
    """Each variant compiled alone in its own process (so that Numba's
    per-process names of their loops coincide), then all loaded in one:
    each must still run its own code."""
    alone = {}
    for name in _TWINS:
        alone.update(_fresh_process(tmp_path, "twins", name))
    together = _fresh_process(tmp_path, "twins", *_TWINS)
    assert together == alone


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "torch")
    if sys.argv[1:2] == ["twins"]:
        _run_twins(sys.argv[2:])
    else:
        _run_cases(check_oracles=sys.argv[1:2] == ["oracles"])


_HOLDS_LOCK = """
import fcntl, sys
with open(sys.argv[1], "a") as f:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("held")
    else:
        print("free")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_cache_writes_hold_the_index_lock(tmp_path, monkeypatch):
    """Every cache write of a fastopt function holds ``<index>.lock``
    (`kernels.cache`): another process asking for it while Numba saves is
    refused. Without it, two processes adding two versions of one function
    at once can leave an index entry naming the other's code."""
    import numba

    from fastopt.kernels.cache import lock_writes

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    dispatcher = numba.njit(cache=True)(lambda x: x + 1)
    cache_file = dispatcher._cache._cache_file
    seen = []

    def save(key, data):    # stands for Numba's: asks another process
        seen.append(subprocess.run(
            [sys.executable, "-c", _HOLDS_LOCK, cache_file._index_path + ".lock"],
            capture_output=True, text=True, timeout=60).stdout.strip())

    cache_file.save = save
    lock_writes(dispatcher)
    cache_file.save("key", "data")
    assert seen == ["held"]
    save("key", "data")      # and released after
    assert seen == ["held", "free"]
