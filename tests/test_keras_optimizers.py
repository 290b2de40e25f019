"""fastopt's Keras-style classes (SGD, Adagrad, ..., Ftrl, ScheduleFreeAdamW)
against Keras 3 itself.

Keras (torch backend) is the oracle: the table in `keras_table.py` drives the
conformance runs on the CPU and, smaller, on the CUDA path under the
simulator. Then: checkpoints resume bit for bit, configs round-trip (also
to and from Keras), and bad input raises before anything is written.
"""
import numpy as np
import pytest

import fastopt
import keras_table as T
from conftest import CPU, CUDA, REAL_GPU, slow_unless, targets_slow_beyond
from optimizer_db import KERAS, KERAS_DB, keras_kwargs, keras_names

NAMES = list(T.VARIANTS)


# --- conformance -----------------------------------------------------------
def _paired(case):
    """Each option set with no base option, and each base option (weight
    decay, the clips, a schedule) on the optimizer's first option set. The
    base options act before the rule and after it in the same code for
    every rule and flag (`kernels.variants.element_step`), so their cross
    product with the option sets compiled and ran the same code again (about
    two minutes of CI)."""
    if case.id.endswith("-clipvalue") and case.id in _CLIPPED_IN_FUNCTIONAL_TABLE:
        return False
    return case.id.endswith("-none") or case.id.startswith(
        f"{case.name}-{next(iter(T.VARIANTS[case.name]))}-")


def _clipvalue_rows_run_by_the_functional_table():
    """The ids of the clipvalue rows whose kernel variant (rule, flags and
    the clip transform) `optimizer_table` already runs with ``clip_value``
    in the Keras convention against Keras. The class row would compile the
    same element step again in the list form (a list runner per variant,
    ~8 s of CI each), and the list form's clip is the same code for every
    rule: the rows whose variant the functional table lacks keep it, and
    the class's clipvalue plumbing, checked."""
    from optimizer_table import CASES as FUNCTIONAL

    def variant(info, values):
        values = {"lr": T.LR, **info.spec.keras.defaults(), **values}
        args = [values.get(h.name, default) for h, default in info.spec.arguments]
        return info.spec.settings(info.name, args + [KERAS])[0]

    by_name = {info.name: info for info in KERAS_DB}
    done = {variant(by_name[c.fn], c.hyper)
            for c in FUNCTIONAL if c.convention == KERAS and "clip_value" in c.hyper
            and c.fn in by_name}
    return {f"{info.spec.keras.cls}-{option}-clipvalue"
            for info in KERAS_DB for option, values in info.keras.items()
            if variant(info, {**values, "clip_value": 0.25}) in done}


_CLIPPED_IN_FUNCTIONAL_TABLE = _clipvalue_rows_run_by_the_functional_table()


# The inner loop: each option set without a base option, each base option on
# the first option set in float64.
@pytest.mark.parametrize("case, dtype", [
    slow_unless(c.id.endswith("-none") or dtype == "float64", c, dtype, id=f"{c.id}-{dtype}")
    for c in T.CASES if _paired(c) for dtype in ("float64", "float32")])
def test_matches_keras_cpu(case, dtype):
    params, grads = T.make_problem(1, dtype)
    want = T.run_keras(case.name, case.make_kwargs(), params, grads)
    got = T.run_fastopt(case.name, case.make_kwargs(), params, grads, CPU)
    assert all(g.dtype == np.dtype(dtype) for g in got)
    tol = case.tol64 if dtype == "float64" else T.TOL32
    assert T.rel_err(got, want) <= tol
    # The run moved the params well beyond the tolerance: the check has teeth.
    assert T.rel_err(params, want) > 1e3 * tol


# Under the simulator each launch costs ~10 ms: fewer cases, fewer steps;
# each base option once (the norm clips' reductions are the dearest to
# simulate: AdamW runs without one, SGD has global_clipnorm).
CUDA_CASES = [c for c in T.CASES if c.id in {
    "SGD-nesterov-global_clipnorm", "Adagrad-init-clipnorm",
    "RMSprop-centered-momentum-clipvalue", "Adam-amsgrad-schedule",
    "AdamW-plain-none", "SGD-momentum-weight_decay",
    "Ftrl-regularized-clipvalue", "ScheduleFreeAdamW-warmup-weight_decay"}]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", [slow_unless(c.id == "SGD-momentum-weight_decay", c, id=c.id)
                                  for c in CUDA_CASES])
def test_matches_keras_cuda_simulator(case, dtype):
    params, grads = T.make_problem(2, dtype, shapes=[(3, 4), (5,)], steps=12)
    want = T.run_keras(case.name, case.make_kwargs(), params, grads)
    got = T.run_fastopt(case.name, case.make_kwargs(), params, grads, CUDA)
    tol = case.tol64 if dtype == "float64" else T.TOL32
    assert T.rel_err(got, want) <= tol


def test_cuda_norms_copy_only_the_sums_to_the_host(monkeypatch):
    """global_clipnorm on GPU arrays: the only device->host copy is the sums."""
    if REAL_GPU:
        from numba.cuda.cudadrv.devicearray import DeviceNDArray as DeviceArray
    else:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as DeviceArray

    copied = []
    original = DeviceArray.copy_to_host

    def spy(self, *args, **kwargs):
        copied.append(self.shape)
        return original(self, *args, **kwargs)

    params, grads = T.make_problem(3, "float64", shapes=[(40,), (3, 5), (7,)], steps=2)
    arrays = [CUDA.put(p) for p in params]
    opt = fastopt.Adam(learning_rate=T.LR, global_clipnorm=0.5)
    monkeypatch.setattr(DeviceArray, "copy_to_host", spy)
    for gs in grads:
        opt.apply_gradients(zip([CUDA.put(g) for g in gs], arrays))
    assert copied == [(3,), (3,)]       # one vector of 3 sums per step


@pytest.mark.parametrize("name", NAMES)
def test_none_gradient_is_skipped_like_keras(name):
    """A None gradient leaves its param (and state) alone for that step, and
    warns, as Keras does; the other params and `iterations` go on."""
    params, grads = T.make_problem(4, "float64", steps=12)
    for step, gs in enumerate(grads):
        if step % 3 == 1:
            gs[1] = None
    kwargs = {"learning_rate": T.LR, "weight_decay": 2.0 ** -8, "global_clipnorm": 1.0}
    want = T.run_keras(name, kwargs, params, grads)
    with pytest.warns(UserWarning, match=r"None for params \[1\]"):
        got = T.run_fastopt(name, kwargs, params, grads, CPU)
    assert T.rel_err(got, want) <= T.tol64(name, "global_clipnorm")


@pytest.mark.parametrize("name", NAMES)
def test_learning_rate_changed_between_steps(name):
    """A float lr set between steps, then a plain callable `step -> lr`."""
    import keras

    class Halving(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return 2.0 ** -6 * 0.5 ** (int(step) // 4)

    def keras_change(opt, step):
        if step == 5:
            opt.learning_rate = 2.0 ** -5
        if step == 9:
            opt.learning_rate = Halving()

    def fastopt_change(opt, step):
        if step == 5:
            opt.learning_rate = 2.0 ** -5
        if step == 9:
            opt.learning_rate = lambda t: 2.0 ** -6 * 0.5 ** (t // 4)

    params, grads = T.make_problem(5, "float64", steps=16)
    kwargs = {"learning_rate": T.LR, **T.VARIANTS[name]["plain"]}
    want = T.run_keras(name, kwargs, params, grads, on_step=keras_change)
    got = T.run_fastopt(name, kwargs, params, grads, CPU, on_step=fastopt_change)
    assert T.rel_err(got, want) <= 1e-12


def test_loss_scale_factor_matches_keras():
    params, grads = T.make_problem(6, "float64", steps=10)
    kwargs = {"learning_rate": T.LR, "loss_scale_factor": 256.0, "clipnorm": 0.5}
    want = T.run_keras("Adam", kwargs, params, grads)
    got = T.run_fastopt("Adam", kwargs, params, grads, CPU)
    assert T.rel_err(got, want) <= 1e-8


def test_iterations_and_learning_rate_properties():
    opt = fastopt.Adam(learning_rate=lambda t: 0.5 ** t)
    p = np.zeros(2)
    assert opt.iterations == 0 and opt.learning_rate == 1.0
    for _ in range(3):
        opt.apply_gradients(zip([np.ones(2)], [p]))
    assert opt.iterations == 3 and opt.learning_rate == 0.125
    opt.apply([np.ones(2)])       # params remembered once built
    assert opt.iterations == 4


# --- checkpoints -----------------------------------------------------------
RESUME_CASES = [c for c in T.CASES if c.id in {
    "SGD-nesterov-none", "Adagrad-init-clipnorm", "RMSprop-centered-momentum-none",
    "Adam-amsgrad-schedule", "AdamW-plain-global_clipnorm", "Ftrl-regularized-none",
    "ScheduleFreeAdamW-warmup-weight_decay"}]


def _run(opt, arrays, grads, target):
    for gs in grads:
        opt.apply_gradients(zip([target.put(g) for g in gs], arrays))


@pytest.mark.parametrize("target", targets_slow_beyond(CPU))
@pytest.mark.parametrize("built", [False, True], ids=["fresh", "built"])
@pytest.mark.parametrize("case", RESUME_CASES, ids=lambda c: c.id)
def test_checkpoint_resumes_bit_for_bit(case, built, tmp_path, target):
    steps = 50 if target is CPU else 4    # the simulator: ~10 ms a launch
    params, grads = T.make_problem(7, "float32", steps=steps,
                                   shapes=T.SHAPES if target is CPU else [(3, 4), (5,)])
    cls = getattr(fastopt, case.name)
    half = steps // 2

    straight = cls(**case.make_kwargs())
    arrays = [target.put(p) for p in params]
    _run(straight, arrays, grads, target)
    want = [target.get(a) for a in arrays]

    first = cls(**case.make_kwargs())
    arrays = [target.put(p) for p in params]
    _run(first, arrays, grads[:half], target)
    first.save_state(tmp_path / "opt.npz")
    saved = [target.get(a) for a in arrays]     # the model's own checkpoint

    resumed = cls.from_config(first.get_config())
    arrays = [target.put(p) for p in saved]
    if built:
        resumed.build(arrays)
    resumed.load_state(tmp_path / "opt.npz")
    assert resumed.iterations == half
    _run(resumed, arrays, grads[half:], target)
    got = [target.get(a) for a in arrays]
    assert resumed.iterations == steps
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_state_dict_names_keras_slots():
    opt = fastopt.RMSprop(momentum=0.5, centered=True)
    opt.apply_gradients(zip([np.ones(3)], [np.zeros(3)]))
    sd = opt.state_dict()
    assert set(sd) == {"optimizer", "iterations", "learning_rate", "num_params",
                       "velocity/0", "momentum/0", "average_gradient/0"}
    assert int(sd["iterations"]) == 1 and str(sd["optimizer"]) == "RMSprop"


# --- config ----------------------------------------------------------------
@pytest.mark.parametrize("case", [c for c in T.CASES if c.id.endswith("-none")
                                  or c.id.endswith("clipnorm")], ids=lambda c: c.id)
def test_config_round_trips_and_loads_into_keras(case):
    import keras

    opt = getattr(fastopt, case.name)(**case.make_kwargs())
    config = opt.get_config()
    assert type(opt).from_config(config).get_config() == config
    theirs = getattr(keras.optimizers, case.name).from_config(config).get_config()
    for key, value in config.items():
        assert theirs[key] == value, key


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_keras_config_match_keras(name):
    """Same keys and defaults as Keras; a Keras config builds a fastopt optimizer."""
    import keras

    theirs = getattr(keras.optimizers, name)().get_config()
    ours = getattr(fastopt, name)().get_config()
    ignored = {"use_ema", "ema_momentum", "ema_overwrite_frequency",
               "gradient_accumulation_steps"}     # fastopt has none of these
    assert set(ours) == set(theirs) - ignored
    for key, value in ours.items():
        if key == "learning_rate":      # Keras stores it as float32
            assert np.float32(value) == theirs[key]
        elif key != "name":
            assert value == theirs[key], key
    loaded = getattr(fastopt, name).from_config(theirs).get_config()
    assert {k: loaded[k] for k in ours if k != "name"} == {
        k: theirs[k] for k in ours if k != "name"}


CONFIG_ERRORS = [
    ("unknown key", "Adam", {"beta1": 0.9}, ValueError, r"unknown argument.*beta1"),
    ("keras-only option on", "SGD", {"use_ema": True}, ValueError, "use_ema"),
    ("two clip modes", "Adam", {"clipnorm": 1.0, "clipvalue": 1.0}, ValueError,
     "only one of"),
    ("momentum > 1", "SGD", {"momentum": 1.5}, ValueError, "momentum"),
    ("nesterov not bool", "SGD", {"nesterov": 1}, TypeError, "nesterov"),
    ("beta_1 = 1", "Adam", {"beta_1": 1.0}, ValueError, "beta_1"),
    ("epsilon 0", "Adagrad", {"epsilon": 0.0}, ValueError, "epsilon"),
    ("rho > 1", "RMSprop", {"rho": 2.0}, ValueError, "rho"),
    ("negative clipnorm", "RMSprop", {"clipnorm": -1.0}, ValueError, "clipnorm"),
    ("lr string", "Adam", {"learning_rate": "0.1"}, TypeError, "learning_rate"),
    ("lr negative", "SGD", {"learning_rate": -0.1}, ValueError, "learning_rate"),
    ("AdamW decay None", "AdamW", {"weight_decay": None}, ValueError, "weight_decay"),
    ("serialised schedule", "Adam", {"learning_rate": {"class_name": "X"}},
     ValueError, "deserialise"),
]


@pytest.mark.parametrize("name, kwargs, error, match",
                         [c[1:] for c in CONFIG_ERRORS], ids=[c[0] for c in CONFIG_ERRORS])
def test_bad_config_is_refused(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        getattr(fastopt, name).from_config(kwargs)


# --- bad input: clear errors, nothing modified -------------------------------
def _state(opt, arrays):
    sd = opt.state_dict()
    return [np.array(a, copy=True) for a in arrays], {
        k: np.array(v, copy=True) for k, v in sd.items()}


def _bad_last_grad(replace):
    """Correct grads except the last, replaced: the first two params would be
    updated if the call were not checked as a whole first."""
    def make(params, grads):
        return zip(grads[:-1] + [replace(params[-1], grads[-1])], params)
    return make


def _device(x):
    return CUDA.put(x)


BAD_CALLS = [
    ("too few grads", lambda ps, gs: zip(gs[:2], ps), ValueError,
     "built for 3"),
    ("too many params", lambda ps, gs: zip(gs + [gs[0]], ps + [ps[0].copy()]),
     ValueError, "built for 3"),
    ("all None", lambda ps, gs: zip([None] * 3, ps), ValueError, "no gradients"),
    ("not pairs", lambda ps, gs: [(gs[0], ps[0]), gs[1], (gs[2], ps[2])], TypeError,
     r"takes \(grad, param\) pairs, e.g. zip\(grads, params\); item 1 is ndarray"),
    ("a triple", lambda ps, gs: [(gs[0], ps[0], ps[0])] + list(zip(gs, ps))[1:],
     TypeError, r"item 0 is tuple"),
    ("grad shape", _bad_last_grad(lambda p, g: g.reshape(-1)), ValueError,
     r"grads\[2\] has shape"),
    ("grad dtype", _bad_last_grad(lambda p, g: g.astype(np.float32)), TypeError,
     r"grads\[2\] has dtype"),
    ("grad on GPU", _bad_last_grad(lambda p, g: _device(g)), TypeError,
     r"grads\[2\] is in GPU 0, expected host memory"),
    ("grad not an array", _bad_last_grad(lambda p, g: g.tolist()), TypeError,
     r"grads\[2\] must be a NumPy array"),
    ("grad on torch's meta device", _bad_last_grad(lambda p, g: _meta(g)), TypeError,
     r"grads\[2\] must be a NumPy array .* got a torch tensor on meta"),
    ("grad not contiguous", _bad_last_grad(lambda p, g: np.asfortranarray(g)),
     ValueError, r"grads\[2\] must be C-contiguous"),
    ("grad is the param", _bad_last_grad(lambda p, g: p), ValueError,
     "shares memory"),
    ("grad NaN with clipping", _bad_last_grad(lambda p, g: np.full_like(g, np.nan)),
     ValueError, "global norm"),
    ("param shape changed", lambda ps, gs: zip(gs[:2] + [gs[2].reshape(-1)],
                                               ps[:2] + [ps[2].reshape(-1)]),
     ValueError, r"params\[2\] has shape"),
    ("param dtype changed", lambda ps, gs: zip(
        gs[:2] + [gs[2].astype(np.float32)], ps[:2] + [ps[2].astype(np.float32)]),
     TypeError, r"params\[2\] has dtype"),
    ("param moved to GPU", lambda ps, gs: zip(
        gs[:2] + [_device(gs[2])], ps[:2] + [_device(ps[2])]),
     TypeError, r"params\[2\] is in GPU 0, expected host memory at build"),
    ("param read-only", lambda ps, gs: zip(gs, ps[:2] + [_readonly(ps[2])]),
     ValueError, r"params\[2\] is read-only"),
    ("not pairs", lambda ps, gs: gs, TypeError, "pairs"),
]


def _meta(x):
    """A torch tensor with no memory at all (device "meta")."""
    torch = pytest.importorskip("torch")
    return torch.empty(x.shape, dtype=torch.float64, device="meta")


def _readonly(x):
    y = x.copy()
    y.flags.writeable = False
    return y


@pytest.mark.parametrize("clipped", [True, False], ids=["clipnorm", "fast-step"])
@pytest.mark.parametrize("name", ["SGD", "Adam"])
@pytest.mark.parametrize("make, error, match", [c[1:] for c in BAD_CALLS],
                         ids=[c[0] for c in BAD_CALLS])
def test_bad_call_changes_nothing(name, make, error, match, clipped):
    """With norm clipping the front end checks every array itself; without,
    a built optimizer's step is one list-form call (`_fast_step`), and the
    front end's checks run only when that call refuses: same messages."""
    if not clipped and "global norm" in match:
        pytest.skip("needs norm clipping")
    params, grads = T.make_problem(8, "float64", steps=2)
    kwargs = {"learning_rate": T.LR, "global_clipnorm": 1.0 if clipped else None}
    if name == "SGD":
        kwargs["momentum"] = 0.5
    opt = getattr(fastopt, name)(**kwargs)
    opt.apply_gradients(zip(grads[0], params))
    before = _state(opt, params)
    with pytest.raises(error, match=match):
        opt.apply_gradients(make(params, grads[1]))
    after = _state(opt, params)
    for b, a in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    assert before[1].keys() == after[1].keys()
    for key in before[1]:
        np.testing.assert_array_equal(after[1][key], before[1][key])
    assert opt.iterations == 1


def _error_inputs():
    """Each optimizer's error inputs that its Keras-style class has."""
    for info in KERAS_DB:
        names = keras_names(info.spec)
        for error in info.all_errors():
            if KERAS in error.conventions and set(error.kwargs) <= set(names):
                yield pytest.param(info, error, id=f"{info.spec.keras.cls}-{error.id}")


@pytest.mark.parametrize("info, error", list(_error_inputs()))
def test_error_input_refused(info, error):
    """By the constructor, in Keras's names, before any param is seen; a bad
    learning rate also when set on a built optimizer, which keeps its
    params, its state and its learning rate."""
    cls = getattr(fastopt, info.spec.keras.cls)
    names = keras_names(info.spec)
    plain = {"learning_rate": T.LR, **keras_kwargs(info.spec, info.keras["plain"])}
    prefix = rf"^{cls.__name__}\(\): "     # once: "Adam(): ", never "Adam()(): "
    # Where Keras checks the value itself, its own message (as Keras's tests match it).
    match = rf"^{error.keras}" if error.keras else rf"{prefix}{names[error.arg]} {error.match}"
    with pytest.raises(error.error, match=match):
        cls(**{**plain, **keras_kwargs(info.spec, error.kwargs)})
    if error.arg != "lr":
        return
    params, grads = T.make_problem(13, "float64", steps=1)
    opt = cls(**plain)
    opt.apply_gradients(zip(grads[0], params))
    before = _state(opt, params)
    with pytest.raises(error.error, match=rf"{prefix}learning_rate {error.match}"):
        opt.learning_rate = error.kwargs["lr"]
    after = _state(opt, params)
    for b, a in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    for key in before[1]:
        np.testing.assert_array_equal(after[1][key], before[1][key])
    assert opt.learning_rate == T.LR


def test_built_step_is_one_list_call_without_per_array_python(monkeypatch):
    """The common step after build skips the front end's own per-array
    checks (the functional list call makes them), and hands the list form
    its lists' last checked layout (its `_front.Layout`), so that no lookup
    is made; test_matches_keras_cpu compares such steps with Keras."""
    from fastopt import _multi
    params, grads = T.make_problem(8, "float64", steps=4)
    opt = fastopt.Adam(learning_rate=T.LR)
    opt.apply_gradients(zip(grads[0], params))
    checked, looked_up = [], []
    monkeypatch.setattr(type(opt), "_match_params",
                        lambda self, ps: checked.append(ps) or 1 / 0)
    entry = _multi._entry
    monkeypatch.setattr(_multi, "_entry", lambda *a: looked_up.append(1) or entry(*a))
    reused = [np.empty_like(g) for g in grads[1]]    # a loop's gradient buffers
    for g in grads[1:]:
        for buffer, value in zip(reused, g):
            buffer[...] = value
        opt.apply_gradients(zip(reused, params))
    assert checked == [] and opt.iterations == 4
    assert len(looked_up) == 1      # the first fast step's lists were new


def test_bad_first_call_leaves_optimizer_unbuilt():
    params, grads = T.make_problem(9, "float64", steps=1)
    opt = fastopt.Adam()
    bad = grads[0][:2] + [grads[0][2].astype(np.float32)]
    with pytest.raises(TypeError, match=r"grads\[2\] has dtype"):
        opt.apply_gradients(zip(bad, params))
    assert not opt.built and opt.iterations == 0


def test_bad_schedule_value_changes_nothing():
    p = np.ones(3)
    opt = fastopt.SGD(learning_rate=lambda t: float("nan"))
    with pytest.raises(ValueError, match="schedule returned nan"):
        opt.apply_gradients(zip([np.ones(3)], [p]))
    assert (p == 1).all() and opt.iterations == 0


BAD_STATES = [
    ("other optimizer", lambda sd: {**sd, "optimizer": np.array("SGD")}, "from a SGD"),
    ("slot missing", lambda sd: {k: v for k, v in sd.items() if "hat" not in k},
     "0 arrays for velocity_hat, expected 3"),
    ("unknown slot", lambda sd: {**sd, "accumulator/0": sd["momentum/0"]},
     "unexpected key 'accumulator/0'"),
    ("missing iterations", lambda sd: {k: v for k, v in sd.items()
                                       if k != "iterations"}, "lacks"),
    ("wrong shape", lambda sd: {**sd, "momentum/1": np.zeros(4)}, "momentum/1"),
    ("wrong dtype", lambda sd: {**sd, "velocity/0": sd["velocity/0"].astype(np.float32)},
     "velocity/0"),
]


@pytest.mark.parametrize("mutate, match", [c[1:] for c in BAD_STATES],
                         ids=[c[0] for c in BAD_STATES])
def test_bad_state_dict_changes_nothing(mutate, match):
    params, grads = T.make_problem(10, "float64", steps=2)
    source = fastopt.Adam(amsgrad=True)
    source.apply_gradients(zip(grads[0], [p.copy() for p in params]))
    target = fastopt.Adam(amsgrad=True)
    target.apply_gradients(zip(grads[1], params))
    before = _state(target, params)[1]
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(mutate(source.state_dict()))
    after = _state(target, params)[1]
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


def test_state_loaded_before_build_is_checked_against_params():
    params, grads = T.make_problem(11, "float64", steps=1)
    source = fastopt.Adagrad()
    source.apply_gradients(zip(grads[0], [p.copy() for p in params]))
    fresh = fastopt.Adagrad()
    fresh.load_state_dict(source.state_dict())
    other = [np.zeros(3), np.zeros(5), np.zeros(12)]
    with pytest.raises(ValueError, match=r"accumulator/0 is float64\[3, 4\]"):
        fresh.apply_gradients(zip([np.ones(3), np.ones(5), np.ones(12)], other))
    assert not fresh.built and all((o == 0).all() for o in other)


def test_torch_cpu_tensors_update_in_place_like_numpy():
    """torch CPU tensors (even requiring grad) take the host path, state in torch."""
    import torch

    params, grads = T.make_problem(12, "float32", steps=5)
    tensors = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = fastopt.RMSprop(learning_rate=T.LR, momentum=0.5, clipnorm=0.5)
    for gs in grads:
        opt.apply_gradients(zip([torch.from_numpy(g) for g in gs], tensors))
    assert isinstance(opt._state[0]["velocity"], torch.Tensor)
    want = T.run_fastopt("RMSprop", {"learning_rate": T.LR, "momentum": 0.5,
                                     "clipnorm": 0.5}, params, grads, CPU)
    for t, w in zip(tensors, want):
        np.testing.assert_array_equal(t.detach().numpy(), w)
