"""What the PTX tests share: compile every variant in a subprocess, read its PTX.

`numba.cuda.compile_ptx` needs the real CUDA target, so the compiling runs in
a child process with the simulator off (tests/conftest.py turns it on). The
child prints one JSON record per variant and dtype; `records` collects them.
"""
import json
import os
import re
import subprocess
import sys

from fastopt.kernels import PRE, RULES, all_variants

DTYPES = ("float32", "float64")
# Every variant, except that the moving average (whose code follows the rule,
# apart from the gradient transforms) is compiled without clip and l2 only.
VARIANTS = [v for v in all_variants() if not (v.ema and (v.clip or v.l2))]
# Arithmetic, conversion or memory access in a precision (``{}``: f32 or f64):
# what float creep looks like. libdevice's double pow and exp test their
# argument's range by reading its high word as a float32 (mov.b32, abs.f32,
# setp.f32), which computes nothing in float32 and is not matched.
_IN_PRECISION = (r"\b(?:add|sub|mul|mad|fma|div|rcp|sqrt|rsqrt|ex2|lg2|sin|cos|tanh"
                 r"|min|max|neg|cvt|ld|st)(?:\.\w+)*\.{}\b")


def variant_id(variant):
    return variant.key.rsplit("-", 1)[0]    # without the source fingerprint


def probe(kernel_function, arrays_signature, extra_facts=lambda ptx: {}):
    """In the child: compile `kernel_function(variant)` for every variant and
    dtype, with ``arrays_signature(dt)`` the argument types before the scalar
    tuples, and print each record."""
    from numba import cuda, types

    for variant in VARIANTS:
        for name in DTYPES:
            dt = getattr(types, name)
            sig = (*arrays_signature(dt), types.UniTuple(dt, len(PRE)),
                   types.UniTuple(dt, len(RULES[variant.rule].hyper)))
            ptx, _ = cuda.compile_ptx(kernel_function(variant), sig, cc=(9, 0))
            bits = name[-2:]
            print(json.dumps({
                "key": variant.key, "dtype": name,
                "local": ".local" in ptx,
                "other_precision": bool(re.search(
                    _IN_PRECISION.format("f64" if bits == "32" else "f32"), ptx)),
                "loads": len(re.findall(rf"ld\.global(?:\.nc)?\.f{bits}", ptx)),
                "stores": ptx.count(f"st.global.f{bits}"),
                **extra_facts(ptx),
            }), flush=True)


def records(script, timeout=1800):
    """Run `script` (a test module whose ``__main__`` calls `probe`) in a child
    process with the simulator off; its records keyed by (variant key, dtype)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, script], env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    found = [json.loads(line) for line in out.stdout.splitlines()]
    return {(r["key"], r["dtype"]) if "dtype" in r else r["key"]: r for r in found}


def assert_clean(rec, variant):
    """No spills, no other precision, and a single fused pass: at most one
    float load per array read and one store per array written, per (unrolled)
    iteration."""
    assert not rec["local"], "local memory in PTX (spill or stack array)"
    assert not rec["other_precision"], "arithmetic in the other float precision"
    arrays = sum(variant.used)
    reads, writes = 2 + arrays, 1 + arrays
    # Each (unrolled) iteration stores every written array once, and loads
    # each read array at most once: a rule may skip a read on a branch that
    # is uniform over the call (ASGD's copy while μ = 1: the compiler then
    # makes a copy of the loop without that load).
    iterations, rest = divmod(rec["stores"], writes)
    assert rest == 0 and iterations >= 1, rec
    assert 2 * iterations <= rec["loads"] <= reads * iterations, rec
