"""Smoke tests of the benchmark harness: structure, same-rule peers, no timing asserts."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastopt.bench import floor, peers_numpy, peers_torch, report as reporting
from fastopt.bench.cases import CASES
from fastopt.bench.overhead import fastopt_call
from fastopt.bench.runner import _dtype as runner_dtype, run
from fastopt.bench.timing import draw_arrays, make_host_sets, num_sets

torch = pytest.importorskip("torch")
N = 2000


@pytest.fixture(scope="module")
def small_report():
    return run(optimizers=["adam", "sgd_momentum"], sizes=[N], dtypes=["float32"],
               repeats=3, warmup=1, cold_start=(), overhead=True, progress=False)


def _copies(arrays):
    return {k: v.copy() for k, v in arrays.items()}


def _kernel_variant(case, arrays):
    """The variant of the CPU kernel a fastopt call on `arrays` runs, seen
    through the pipeline's hook with the accelerators off and the kernel not
    run: nothing compiles (`captured_kernel_call` compiles and runs it)."""
    from fastopt import _accel

    seen = []

    def spy(kind, variant, fn):
        if kind == "single":
            return None
        return (lambda *args: seen.append(variant)) if kind == "cpu" else fn

    with _accel.observe(spy):
        fastopt_call(case, arrays, 2)
    (variant,) = seen
    return variant


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_slots_are_the_variants_slots(name):
    """The byte table (`Case.slots`) names exactly the arrays the kernel touches."""
    case = CASES[name]
    if case.runs_in("float32"):    # master weights, stochastic rounding: bfloat16
        import ml_dtypes
        arrays = make_host_sets(case, 64, np.dtype(ml_dtypes.bfloat16), 1)[0]
        variant = _kernel_variant(case, arrays)
        assert (variant.model, variant.sr) == (case.master, case.sr)
        assert tuple(s for s in variant.rule_slots if s) == case.slots
        return
    arrays = make_host_sets(case, 64, np.float32, 1)[0]
    variant = _kernel_variant(case, arrays)
    assert tuple(s for s in variant.slots if s) == case.slots
    assert case.bytes_per_element(4) == 4 * (3 + 2 * sum(variant.used))


@pytest.mark.parametrize("name", sorted(CASES))
def test_keras_spelling_keeps_the_cases_state(name):
    """The Keras-style front end's row moves the bytes the row is credited
    with: one state array per slot of the case, with the case's options.
    (The Keras tables check its steps; stepping here compiled one kernel
    per case, about 5 s of CI each.)"""
    import fastopt
    case = CASES[name]
    if not case.keras:
        pytest.skip(f"Keras has no {name}")
    cls, kwargs = case.keras
    opt = getattr(fastopt, cls)(**kwargs)
    assert len(opt.state_slots()) == len(case.slots)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_peers_compute_the_same_update(name, dtype):
    """NumPy and torch peers run the rule fastopt runs (else speed ratios lie)."""
    case = CASES[name]
    if case.runs_in(np.dtype(dtype).name):
        pytest.skip(case.runs_in(np.dtype(dtype).name))
    base = make_host_sets(case, 257, dtype, 1, seed=3)[0]
    tol = dict(rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-7)
    # NumPy's peer starts at step 11, like the harness's fastopt calls.
    mine, peer = _copies(base), _copies(base)
    fastopt_call(case, mine, 11)
    peers_numpy.make(case, [peer])(0)
    for key in mine:
        np.testing.assert_allclose(peer[key], mine[key], **tol, err_msg=key)
    # torch's peer has taken one step to build its state: its next one is step 2.
    for mode in peers_torch.MODES:
        if peers_torch.supports(case, mode):
            continue
        mine, peer = _copies(base), _copies(base)
        fastopt_call(case, mine, 2)
        peers_torch.make(case, [peer], mode)(0)
        for key in mine:
            np.testing.assert_allclose(peer[key], mine[key], **tol,
                                       err_msg=f"{mode} {key}")


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam", "amsgrad"])
def test_floor_touches_exactly_the_rules_arrays(name):
    case = CASES[name]
    arrays = make_host_sets(case, 1000, np.float32, 1)[0]
    before = _copies(arrays)
    floor.make_cpu(case, [arrays])(0)
    assert np.array_equal(arrays["grad"], before["grad"])
    for key in ("param", *case.slots):
        assert not np.array_equal(arrays[key], before[key]), key
        assert np.isfinite(arrays[key]).all()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16bit_floor_leaves_every_value_as_it_was(dtype):
    """The 16-bit floor does integer arithmetic on the bits: it must not fill
    the buffers it shares with the timed implementations with denormals or
    NaNs (a float32 denormal costs a microcode assist in the next call)."""
    case = CASES["adam"]
    arrays = make_host_sets(case, 1000, runner_dtype(dtype), 1)[0]
    before = _copies(arrays)
    floor.make_cpu(case, [arrays])(0)
    for key in ("param", "grad", *case.slots):
        assert np.array_equal(arrays[key].view(np.uint16), before[key].view(np.uint16)), key


@pytest.mark.parametrize("set_bytes, llc, expected", [
    (4 << 30, 32 << 20, 1),          # far beyond the cache: one set
    (128 << 20, 32 << 20, 1),        # exactly 4 x LLC
    (16 << 20, 32 << 20, 9),         # 1 + 4 * 32 / 16
    (1000, 32 << 20, 64),            # capped
])
def test_buffer_sets_rotate_past_the_cache(set_bytes, llc, expected):
    assert num_sets(set_bytes, llc) == expected


def test_report_structure(small_report):
    meta = small_report["meta"]
    assert meta["device"] == "cpu" and meta["threads"] >= 1
    assert {"numpy", "numba", "torch"} <= set(meta["versions"])
    assert meta["cpu_model"] and meta["load_average_before"] is not None
    rows = small_report["results"]
    impls = {r["impl"] for r in rows}
    assert {"fastopt", "floor", "numpy", "torch-single", "torch-foreach",
            "torch-fused"} <= impls
    for r in rows:
        assert r["status"] == "ok", r
        assert r["repeats"] == 3
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["gbps"] > 0 and r["gbps_best"] >= r["gbps"] >= r["gbps_worst"]
        assert r["buffer_sets"] > 1      # 2000 elements fit in any cache
    adam = next(r for r in rows if r["optimizer"] == "adam")
    assert adam["bytes_per_element"] == 28
    assert [c["gbps"] > 0 for c in small_report["copy"]] == [True]
    ratios = small_report["ratios"]
    assert {(r["optimizer"], r["size"]) for r in ratios} == {("adam", N),
                                                             ("sgd_momentum", N)}
    for r in ratios:
        assert r["vs_floor"] > 0 and r["vs_torch"] > 0
        assert r["torch_reference"] == "torch-fused"
    for o in small_report["dispatch_overhead"]:
        assert o["n"] == 1000 and o["call_us"] > 0 and o["kernel_us"] > 0
        assert o["python_us"] > 0
    accelerated = small_report["accelerators"]
    assert [(a["form"], a["case"].split(",")[0]) for a in accelerated] == [
        ("single array", "single array"), ("single array", "single array"),
        ("list", "list of 200 tensors"), ("list", "list of 161 tensors")]
    for a in accelerated:
        assert a["with_us"] > 0 and a["without_us"] > 0


def test_accelerators_off_take_the_python_path():
    """`accelerator_savings`' "without" really runs without: the observer
    hands out no accelerator, and the kernel is then called from Python."""
    from fastopt import _accel
    from fastopt.bench.overhead import _without_accelerators
    case = CASES["adam"]
    arrays = make_host_sets(case, 100, np.float32, 1)[0]
    kinds = []

    def record(kind, variant, fn):
        fn = _without_accelerators(kind, variant, fn)
        kinds.append((kind, fn is None))
        return fn

    with _accel.observe(record):
        fastopt_call(case, arrays, 3)
    assert kinds == [("single", True), ("cpu", False)]


def test_table_json_and_plot(small_report, tmp_path):
    text = reporting.summary(small_report)
    assert "| optimizer | dtype | n | fastopt GB/s | floor GB/s" in text
    assert text.count("| adam | float32 |") == 1
    json_path, png_path = reporting.save(small_report, tmp_path, "run")
    with open(json_path) as f:
        assert json.load(f)["ratios"] == json.loads(json.dumps(small_report["ratios"]))
    assert png_path and os.path.getsize(png_path) > 1000


def test_rmsprop_has_no_fused_torch_form():
    assert peers_torch.supports(CASES["rmsprop"], "torch-fused")
    rows = run(optimizers=["rmsprop"], sizes=[500], repeats=2, warmup=1,
               cold_start=(), overhead=False, progress=False)
    fused = next(r for r in rows["results"] if r["impl"] == "torch-fused")
    assert fused["status"] == "unavailable"
    assert rows["ratios"][0]["torch_reference"] == "torch-foreach"


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizers=["lbfgs"]), "unknown optimizers"),
    (dict(dtypes=["int8"]), "float32, float64, bfloat16 or float16"),
    (dict(sizes=[0]), "sizes must be positive"),
    (dict(device="tpu"), "device must be"),
    (dict(peers=["jaxx"]), "unknown peers"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run(**dict(dict(sizes=[10], progress=False, cold_start=()), **kwargs))


@pytest.mark.slow   # fresh processes, cold and warm
def test_cold_start_uses_the_cache():
    from fastopt.bench.overhead import cold_start
    out = cold_start(["sgd"], np.dtype(np.float32), threads=1)
    assert out["cold_cache"]["cache_misses"] >= 1
    assert out["warm_cache"]["cache_hits"] >= 1
    assert out["warm_cache"]["cache_misses"] == 0
    assert out["warm_cache"]["first_step_s"]["sgd"] > 0


def _cli(args, code=None, env=None):
    cmd = [sys.executable, "-c", code, *args] if code else [
        sys.executable, "-m", "fastopt.bench", *args]
    return subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))


def test_cuda_is_refused_under_the_simulator():
    from fastopt.bench.__main__ import main
    if not os.environ.get("NUMBA_ENABLE_CUDASIM"):
        pytest.skip("tests run on a real GPU")
    with pytest.raises(Exception, match="NUMBA_ENABLE_CUDASIM"):
        run(device="cuda", sizes=[10], progress=False, cold_start=())
    assert main(["--device", "cuda"]) == 2


@pytest.mark.slow   # a fresh process
def test_cuda_without_a_gpu_is_refused_clearly():
    if os.environ.get("FASTOPT_REAL_GPU") == "1" or shutil.which("nvidia-smi"):
        pytest.skip("a real GPU may be present")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-m", "fastopt.bench", "--device", "cuda"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "--device cuda" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow   # a fresh process
def test_cli_runs_without_matplotlib_or_tqdm(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['tqdm'] = None\n"
            "from fastopt.bench.__main__ import main; sys.exit(main(sys.argv[1:]))")
    proc = _cli(["--optimizers", "sgd", "--sizes", "1000", "--repeats", "2",
                 "--cold-start", "none", "--no-overhead", "--out", str(tmp_path)],
                code=code)
    assert proc.returncode == 0, proc.stderr
    assert "| sgd | float32 | 1000 |" in proc.stdout
    assert "no plot" in proc.stdout
    assert "[1/" in proc.stderr          # the plain progress lines
    assert os.path.exists(tmp_path / "fastopt-bench-cpu.json")


def test_list_benchmark_counts_launches(monkeypatch):
    from fastopt.bench import lists
    monkeypatch.setitem(lists.MODELS, "tiny", lambda: [(3,), (5, 2), (1,)])
    rows, ratios = lists.run_lists(["tiny"], ["adam"], "float32", "cpu", repeats=2,
                                   warmup=1, llc=1 << 16)
    by_impl = {r["impl"]: r for r in rows}
    assert all(r["status"] == "ok" and r["elements"] == 14 for r in rows)
    assert by_impl["fastopt-list"]["launches_per_step"] == 1      # one parallel region
    assert by_impl["fastopt-flat"]["launches_per_step"] == 1
    assert by_impl["fastopt-per-tensor"]["launches_per_step"] == 3
    assert by_impl["torch-fused"]["launches_per_step"] is None    # not countable on CPU
    # The torch front end: one region a step on its table path and flat=True
    # (there a single-array call: the tensors were laid out by the first step).
    assert by_impl["fastopt.torch"]["launches_per_step"] == 1
    assert by_impl["fastopt.torch-flat"]["launches_per_step"] == 1
    assert by_impl["fastopt.keras"]["launches_per_step"] == 1      # apply_gradients
    (ratio,) = ratios
    assert ratio["list_over_flat"] > 0 and "torch-fused_over_list" in ratio
    assert ratio["fastopt.torch-flat_over_flat"] > 0
    assert ratio["fastopt.keras_over_flat"] > 0
    assert ratio["fastopt.torch_vs_torch-fused"] > 0


def test_torch_peer_over_a_list_updates_every_tensor():
    case = CASES["adam"]
    rng = np.random.default_rng(0)
    drawn = [draw_arrays(case, n, np.float64, rng) for n in (4, 7)]
    lists = {k: [d[k].copy() for d in drawn] for k in drawn[0]}
    singles = [{k: v.copy() for k, v in d.items()} for d in drawn]
    peers_torch.make(case, [lists], "torch-single")(0)
    for k, d in enumerate(drawn):       # the step moved every tensor and its state
        assert not np.array_equal(lists["param"][k], d["param"])
        assert not np.array_equal(lists["exp_avg"][k], d["exp_avg"])
    for k, single in enumerate(singles):
        peers_torch.make(case, [single], "torch-single")(0)
        for name, a in single.items():
            np.testing.assert_array_equal(lists[name][k], a)


def test_keras_fit_benchmark_times_both_optimizers():
    pytest.importorskip("keras")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from fastopt.bench.keras_fit import run_keras_fit, summary
    rows, ratios = run_keras_fit(["Adam"], repeats=2, warmup=1, blocks=2, width=8,
                                 rounds=2)
    assert {(r["impl"], r["what"]) for r in rows} == {
        (impl, what) for impl in ("keras", "fastopt.keras")
        for what in ("step", "train_step")}
    assert all(r["median_s"] > 0 and r["variables"] == 10 for r in rows)
    (ratio,) = ratios
    assert 0 < ratio["step_share_fastopt"] < 1 and 0 < ratio["step_share_keras"] < 1
    assert "Adam" in summary(rows, ratios)


def test_bfloat16_rows_time_fastopt_floor_and_torch_fused():
    """--dtype bfloat16: fastopt (16-bit storage), the floor over the same
    bytes and torch's fused Adam on bf16 views of the same memory; Adam
    moves 14 bytes an element (4 arrays read, 3 written, 2 bytes each)."""
    rows = run(optimizers=["adam", "adam_master", "adam_sr"], sizes=[500],
               dtypes=["bfloat16", "float32"], peers=["torch"], repeats=2, warmup=1,
               cold_start=(), overhead=False, progress=False)
    by = {(r["optimizer"], r["dtype"], r["impl"]): r for r in rows["results"]}
    for impl in ("fastopt", "floor", "torch-fused"):
        row = by["adam", "bfloat16", impl]
        assert row["status"] == "ok" and row["bytes_per_element"] == 14, row
    # Master weights: the 16-bit grad read, float32 master and 2 slots read
    # and written, the 16-bit copy written: 2 + 8 + 16 + 2 bytes. Stochastic
    # rounding moves plain bf16 Adam's 14. Neither has a torch peer, and
    # neither runs on float32 arrays.
    for case, nbytes in (("adam_master", 28), ("adam_sr", 14)):
        for impl in ("fastopt", "floor"):
            row = by[case, "bfloat16", impl]
            assert row["status"] == "ok" and row["bytes_per_element"] == nbytes, row
        assert by[case, "bfloat16", "torch-fused"]["status"] == "unavailable"
        assert by[case, "float32", "fastopt"]["status"] == "unavailable"
