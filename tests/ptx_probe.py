"""What the PTX tests share: compile every variant in a subprocess, read its PTX.

`numba.cuda.compile_ptx` needs the real CUDA target, so the compiling runs in
a child process with the simulator off (tests/conftest.py turns it on). The
child emits one JSON record per variant and dtype; `records` collects them.
Under pytest-xdist the workers share the compiling (`run_jobs`), and start
it when the session starts (`start_early`).
"""
import contextlib
import json
import os
import re
import subprocess
import sys
import threading

from fastopt.kernels import PRE, RULES, all_variants

DTYPES = ("float32", "float64")


def _probed(v):
    """Whether the PTX tests compile variant `v`: every rule with every
    combination of its flags, plain; and, with every rule's flags all on,
    the gradient transforms (clip and coupled decay together) and the
    moving average. The transforms and the average are the same code before
    and after any rule (`kernels.variants.element_step`), so their other
    combinations would compile the same instructions again: about 2.5 times
    as many kernels, minutes of CI. With every flag on a rule has its most
    code and registers and the same arrays as the plain kernel of those
    flags; with its flags off (probed plain) the transforms' own code is the
    same as with them on (36 more compiles, ~30 s of CI, showed nothing)."""
    plain = not (v.clip or v.l2 or v.ema)
    return plain or (all(v.flags) and (v.clip == v.l2) and not (v.ema and v.clip))


VARIANTS = [v for v in all_variants() if _probed(v)]
# Arithmetic, conversion or memory access in a precision (``{}``: f32 or f64):
# what float creep looks like. libdevice's double pow and exp test their
# argument's range by reading its high word as a float32 (mov.b32, abs.f32,
# setp.f32), which computes nothing in float32 and is not matched.
_IN_PRECISION = (r"\b(?:add|sub|mul|mad|fma|div|rcp|sqrt|rsqrt|ex2|lg2|sin|cos|tanh"
                 r"|min|max|neg|cvt|ld|st)(?:\.\w+)*\.{}\b")


def variant_id(variant):
    return variant.key.rsplit("-", 1)[0]    # without the source fingerprint


def probe(kernel_function, arrays_signature, extra_facts=lambda ptx: {}, variants=None):
    """In the child: compile `kernel_function(variant)` for every variant (of
    `variants`, default `VARIANTS`) and dtype, with ``arrays_signature(dt)``
    the argument types before the scalar tuples, and emit each record
    (`run_jobs`)."""
    from numba import cuda, types

    def compile_one(job):
        variant, name = job
        dt = getattr(types, name)
        sig = (*arrays_signature(dt), types.UniTuple(dt, len(PRE)),
               types.UniTuple(dt, len(RULES[variant.rule].hyper)))
        ptx, _ = cuda.compile_ptx(kernel_function(variant), sig, cc=(9, 0))
        bits = name[-2:]
        return {
            "key": variant.key, "dtype": name,
            "local": ".local" in ptx,
            "other_precision": bool(re.search(
                _IN_PRECISION.format("f64" if bits == "32" else "f32"), ptx)),
            "loads": len(re.findall(rf"ld\.global(?:\.nc)?\.f{bits}", ptx)),
            "stores": ptx.count(f"st.global.f{bits}"),
            "params": entry_params(ptx),
            "vector_loads": len(re.findall(
                r"ld\.global(?:\.nc)?\.v4\.f32" if bits == "32"
                else r"ld\.global(?:\.nc)?\.v2\.f64", ptx)),
            "vector_stores": len(re.findall(
                r"st\.global\.v4\.f32" if bits == "32" else r"st\.global\.v2\.f64", ptx)),
            **extra_facts(ptx),
        }

    run_jobs([(v, name) for v in (variants or VARIANTS) for name in DTYPES], compile_one)


# Sharing the compiles between pytest-xdist workers. Each worker that runs a
# PTX module needs all of its records; compiling them in every worker doubled
# the PTX tests' CPU time (minutes). The jobs are cut into chunks; each
# worker's child claims the chunks no one has claimed (a non-blocking lock
# per chunk), writes their records to a file, and the parents then read every
# chunk, waiting on the lock of any chunk still being compiled elsewhere.
_CHUNKS = 12
_SHARE = "FASTOPT_PTX_SHARE"


def run_jobs(jobs, compile_one):
    """In the child: the record ``compile_one(job)`` of every job, printed one
    JSON line each; or, when the parent shares the work (`records`), the
    records of each chunk this child claims, written to that chunk's file."""
    share = os.environ.get(_SHARE)
    if not share:
        for job in jobs:
            print(json.dumps(compile_one(job)), flush=True)
        return
    for k in range(_CHUNKS):
        with _chunk_lock(share, k, wait=False) as mine:
            if mine and not os.path.exists(_chunk_file(share, k)):
                lines = [json.dumps(compile_one(job)) for job in jobs[k::_CHUNKS]]
                with open(_chunk_file(share, k) + ".part", "w") as f:
                    f.write("\n".join(lines))
                os.replace(_chunk_file(share, k) + ".part", _chunk_file(share, k))


def _chunk_file(share, k):
    return os.path.join(share, f"chunk{k}.jsonl")


@contextlib.contextmanager
def _chunk_lock(share, k, wait):
    """Chunk `k`'s lock: yields whether it is held (always, if `wait`)."""
    import fcntl

    with open(os.path.join(share, f"chunk{k}.lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _share_dir(script, tmp_path_factory):
    """Where the workers of this pytest-xdist run share `script`'s records:
    beside their own temporary folders, in the run's (which pytest removes
    with the old ones). None outside xdist, where one child compiles
    everything."""
    if not os.environ.get("PYTEST_XDIST_TESTRUNUID") or sys.platform == "win32":
        return None
    share = tmp_path_factory.getbasetemp().parent / os.path.splitext(
        os.path.basename(script))[0]
    share.mkdir(exist_ok=True)
    return str(share)


def assert_vector(rec, variant):
    """128-bit loads and stores in the main loop (`kernels.vector`): every
    array read is loaded 16 bytes at a time (float64: each group of 4 in two
    loads) and every array written stored so, per copy of the loop; the
    scalar loop for the tail is `assert_clean`'s."""
    arrays = sum(variant.used)
    reads, writes = 2 + arrays, 1 + arrays
    per = 1 if rec["dtype"] == "float32" else 2
    copies, rest = divmod(rec["vector_stores"], writes * per)
    assert rest == 0 and copies >= 1, rec
    assert 2 * per * copies <= rec["vector_loads"] <= reads * per * copies, rec


def entry_params(ptx):
    """The PTX types of the kernel's ``.entry`` parameters, in order."""
    start = ptx.index(".entry")
    signature = ptx[ptx.index("(", start):ptx.index(")", start)]
    return re.findall(r"\.param\s+(?:\.align\s+\d+\s+)?(\.\w+)", signature)


def assert_packing(rec, variant, dtype, multi):
    """The launcher's packed parameters (`kernels.launch`) against the
    kernel's ``.entry``: the same parameters, in order, of the same types,
    and, read through each ``kernelParams`` pointer with the size the PTX
    type gives, byte for byte the values of the call's arguments."""
    import ctypes
    import struct

    import numpy as np

    from fastopt.kernels import PRE, RULES, launch
    from fastopt.kernels import cuda as kcuda
    from fastopt.kernels import multi_cuda

    dt = np.dtype(dtype)
    hyper = tuple(0.5 + k / 7 for k in range(len(RULES[variant.rule].hyper)))
    pre = tuple(-1.25 - k / 3 for k in range(len(PRE)))
    recorder = launch.Recorder()
    old = launch.use(recorder)
    try:
        if multi:
            table = np.arange(15, dtype=np.int64).reshape(3, 5) + (1 << 40)
            chunks = np.arange(12, dtype=np.int64).reshape(4, 3)
            entry = {"addrs": table, "chunks": chunks}
            multi_cuda.packed_launcher(recorder, variant, dt, entry)(7, pre, hyper)
            t_ptr, c_ptr = (a.ctypes.data for a in entry[("packed", None)][0])
            expected = (launch.array_values(t_ptr, (3, 5), 8)
                        + launch.array_values(c_ptr, (4, 3), 8) + pre + hyper)
        else:
            addrs = tuple((1 << 40) + 4096 * k for k in range(5))
            kcuda.packed_launcher(recorder, variant, dt, 12345, addrs)(7, pre, hyper)
            expected = addrs + (12345,) + pre + hyper
        (record,) = recorder.launches
    finally:
        launch.use(old)
    assert record.ptx_types == rec["params"], (record.ptx_types, rec["params"])
    assert record.stream == 7
    plan_bytes = record.raw
    assert len(plan_bytes) == len(expected)
    for j, (t, value, got) in enumerate(zip(rec["params"], expected, plan_bytes)):
        code, _ = launch._CODES[t]
        want = struct.pack(code, value)
        assert got == want, f"parameter {j} ({t}): {got.hex()} != {want.hex()}"


def _child_env(share):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if share:
        env[_SHARE] = share
    return env


def _read_chunks(share):
    """Every chunk's lines (waiting on any chunk still being compiled), and
    whether a chunk is missing."""
    lines, missing = [], False
    for k in range(_CHUNKS):
        with _chunk_lock(share, k, wait=True):
            if not os.path.exists(_chunk_file(share, k)):
                missing = True
                continue
            with open(_chunk_file(share, k)) as f:
                lines += f.read().splitlines()
    return lines, missing


def records(script, tmp_path_factory, timeout=1800):
    """Run `script` (a test module whose ``__main__`` calls `probe` or
    `run_jobs`) in a child process with the simulator off; its records keyed
    by (variant key, dtype), or by key where a record has no dtype. Where
    this worker started the script's child early (`start_early`), that
    child's chunks are read once it is done."""
    share = _share_dir(script, tmp_path_factory)
    env = _child_env(share)
    lines, missing = [], True
    early = _early.get(script)
    if share and early is not None and early.wait(timeout):
        lines, missing = _read_chunks(share)
    # Otherwise a child of this test's; a second try compiles the chunks of
    # a worker whose child failed.
    for attempt in range(2):
        if not missing:
            break
        out = subprocess.run([sys.executable, script], env=env, capture_output=True,
                             text=True, timeout=timeout)
        assert out.returncode == 0, out.stderr[-4000:]
        if not share:
            lines, missing = out.stdout.splitlines(), False
            break
        lines, missing = _read_chunks(share)
    assert not missing, f"PTX records of {script} missing after two tries"
    found = [json.loads(line) for line in lines]
    return {(r["key"], r["dtype"]) if "dtype" in r else r["key"]: r for r in found}


# Starting the compiling when the session starts. A worker that came to a
# PTX module's first test only late in the run compiled the module's chunks
# then, alone, while the other worker had finished its tests (measured, the
# whole suite on 2 cores: one core idle for the last ~100 s). Each worker
# now starts the children of the selected PTX modules in the background
# when the session starts; they claim chunks as `records`' children do.
_early = {}     # script -> Event set once this process's early child is done


def scripts_of(items):
    """The PTX modules of the selected tests `items`: those with a test that
    takes the module's ``ptx_records`` fixture, slowest first."""
    paths = {str(item.path) for item in items if "ptx_records" in item.fixturenames}
    return sorted(paths, key=lambda p: _SLOWEST.index(os.path.basename(p))
                  if os.path.basename(p) in _SLOWEST else len(_SLOWEST))


_SLOWEST = ("test_ptx.py", "test_multi_ptx.py", "test_ptx_16bit.py")


def start_early(scripts, tmp_path_factory):
    """Under pytest-xdist, run the children of `scripts` one after another in
    a background thread (their chunks shared as `records`' are); returns the
    function that stops them (at the session's end). Nothing elsewhere."""
    shares = {script: _share_dir(script, tmp_path_factory) for script in scripts}
    scripts = [script for script in scripts if shares[script]]
    running, stopped = [], threading.Event()

    def run():
        for script in scripts:
            if not stopped.is_set():
                child = subprocess.Popen([sys.executable, script], env=_child_env(shares[script]),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                running.append(child)
                if stopped.is_set():    # stopped while it started
                    child.kill()
                child.wait()
            _early[script].set()

    def stop():
        stopped.set()
        for child in running:
            child.kill()

    for script in scripts:
        _early[script] = threading.Event()
    if scripts:
        threading.Thread(target=run, daemon=True).start()
    return stop


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
