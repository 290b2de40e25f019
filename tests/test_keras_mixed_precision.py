"""The Keras-style classes on 16-bit params (float16, bfloat16): NumPy /
ml_dtypes arrays and Keras variables of a 16-bit dtype (Keras's "bfloat16"
and "float16" dtype policies), float32 math.

Keras itself computes a 16-bit variable's update in the variable's dtype,
hyperparameters included (its bfloat16 Adam casts beta_2 = 0.999 to 1.0, so
its step size is 0 and the variables never move): no oracle for float32
math. The oracles are float32 training on the same gradients: fastopt's
own, bit for bit, and keras.optimizers' on float32 variables, within
float32's tolerance (as every Keras row of the optimizer tables).
"""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
ml_dtypes = pytest.importorskip("ml_dtypes")
import fastopt  # noqa: E402

SHAPES = [(7,), (3, 5)]
STEPS = 20
CASES = [("Adam", {"learning_rate": 1e-2}),
         ("SGD", {"learning_rate": 1e-2, "momentum": 0.9})]
DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def _grads(rng, dtype):
    return [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in SHAPES]


def _f32(grads):
    """The 16-bit gradients as float32 Keras tensors (each value exact)."""
    return [keras.ops.convert_to_tensor(g.astype(np.float32)) for g in grads]


def _bits(x, dtype):
    return np.asarray(keras.ops.convert_to_numpy(x)).astype(dtype).view(np.uint16)


@pytest.mark.parametrize("name,kw,dt", [(*CASES[0], "bfloat16"), (*CASES[0], "float16"),
                                        (*CASES[1], "bfloat16")],
                         ids=["Adam-bf16", "Adam-f16", "SGD-bf16"])
def test_master_weights_are_float32_training(name, kw, dt):
    """Keras variables of a 16-bit dtype, ``master_weights = True``: the
    masters are fastopt's float32 training on the same (16-bit) gradients
    bit for bit, and keras.optimizers' float32 training within float32's
    tolerance (Keras's torch backend orders some products differently); the
    variables are the masters rounded to nearest; a checkpoint continues the
    run bit for bit."""
    dtype, rng = DTYPES[dt], np.random.default_rng(0)
    # The masters start as the 16-bit variables' float32 values.
    start = [rng.standard_normal(s).astype(dtype).astype(np.float32) for s in SHAPES]
    ref = [keras.Variable(x) for x in start]
    pure = [x.copy() for x in start]
    mine = [keras.Variable(x, dtype=dt) for x in start]
    theirs, plain = getattr(keras.optimizers, name)(**kw), getattr(fastopt, name)(**kw)
    ours = getattr(fastopt, name)(**kw)
    ours.master_weights = True
    for step in range(STEPS):
        grads = _grads(rng, dtype)
        theirs.apply_gradients(zip(_f32(grads), ref))
        plain.apply_gradients(zip([g.astype(np.float32) for g in grads], pure))
        ours.apply_gradients(zip([keras.ops.convert_to_tensor(g, dtype=dt)
                                  for g in _f32(grads)], mine))
        if step == STEPS // 2:      # a checkpoint, loaded into a fresh optimizer
            state = ours.state_dict()
            ours = getattr(fastopt, name).from_config(ours.get_config())
            ours.master_weights = True
            ours.load_state_dict(state)
    state = ours.state_dict()
    for i, (r, p, m) in enumerate(zip(ref, pure, mine)):
        master = state[f"master/{i}"]
        assert master.dtype == np.float32
        assert np.array_equal(master.view(np.uint32), p.view(np.uint32))
        np.testing.assert_allclose(master, keras.ops.convert_to_numpy(r.value),
                                   rtol=1e-5, atol=1e-6)
        assert np.array_equal(_bits(m.value, dtype), master.astype(dtype).view(np.uint16))


@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_16bit_arrays_with_float32_state(name, kw):
    """ml_dtypes bfloat16 NumPy arrays, ``state_dtype = "float32"``: each step
    is the float32 step on the 16-bit values, rounded once (fastopt's float32
    step on float32 arrays rounded to 16 bits after each step); the default
    keeps the state in the param's dtype, as Keras does."""
    dtype, rng = ml_dtypes.bfloat16, np.random.default_rng(1)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ref = [p.astype(np.float32) for p in params]
    theirs, ours = getattr(fastopt, name)(**kw), getattr(fastopt, name)(**kw)
    ours.state_dtype = "float32"
    for _ in range(STEPS):
        grads = _grads(rng, dtype)
        theirs.apply_gradients(zip([g.astype(np.float32) for g in grads], ref))
        ours.apply_gradients(zip(grads, params))
        for r in ref:       # rounded as the 16-bit params are
            r[...] = r.astype(dtype).astype(np.float32)
    for p, r in zip(params, ref):
        assert np.array_equal(p.view(np.uint16), r.astype(dtype).view(np.uint16))
    assert {v.dtype for k, v in ours.state_dict().items() if "/" in k} == {
        np.dtype(np.float32)}
    plain = getattr(fastopt, name)(**kw)
    plain.apply_gradients(zip(_grads(rng, dtype), [p.copy() for p in params]))
    assert {v.dtype for k, v in plain.state_dict().items() if "/" in k} <= {np.dtype(dtype)}


def test_16bit_errors_name_the_argument():
    """master_weights on a float32 param, a bad state_dtype, a float64 param
    with a 16-bit grad: a clear error, nothing written."""
    p32 = np.ones(3, np.float32)
    opt = fastopt.Adam()
    opt.master_weights = True
    with pytest.raises(TypeError, match=r"master_weights keeps float32 masters of float16 "
                                        r"or bfloat16 params; params\[0\] is float32"):
        opt.apply_gradients([(np.ones(3, np.float32), p32)])
    assert (p32 == 1).all() and not opt.built
    p16 = np.ones(3, np.float16)
    opt = fastopt.Adam()
    opt.state_dtype = "float64"
    with pytest.raises(TypeError, match=r"state_dtype must be None .* or 'float32', "
                                        r"got 'float64'"):
        opt.apply_gradients([(np.ones(3, np.float16), p16)])
    assert (p16 == 1).all()
    p64 = np.ones(3)
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float16, expected float64"):
        fastopt.Adam().apply_gradients([(np.ones(3, np.float16), p64)])
    assert (p64 == 1).all()


# -- fastopt.keras (model.compile / model.fit) on a 16-bit model ---------------
def _keras_model(policy):
    """A small model whose variables are of `policy`'s dtype."""
    keras.utils.set_random_seed(0)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                                 keras.layers.Dense(1)])
    finally:
        keras.config.set_dtype_policy(previous)


def _fused():
    if keras.backend.backend() != "torch":
        pytest.skip("fastopt.keras runs on Keras's torch backend")
    import fastopt.keras
    return fastopt.keras


@pytest.mark.parametrize("name,kw,dt", [("Adam", {"learning_rate": 1e-2}, "bfloat16"),
                                        ("AdamW", {"learning_rate": 1e-2}, "float16")],
                         ids=["Adam-bf16", "AdamW-f16"])
def test_fastopt_keras_master_weights_are_float32_training(name, kw, dt):
    """fastopt.keras on a model built under the "bfloat16" / "float16" policy,
    ``master_weights=True``: float32 masters and state (optimizer variables),
    the masters equal fastopt.keras's float32 training on the same 16-bit
    gradients bit for bit, and the variables are the masters rounded to
    nearest. AdamW's weight decay splits the biases off (excluded), so both
    calls of a step carry masters."""
    import torch
    cls = getattr(_fused(), name)
    model = _keras_model(dt)
    assert {v.dtype for v in model.trainable_variables} == {dt}
    pure = [keras.Variable(v.numpy().astype(np.float32), name=v.name)
            for v in model.trainable_variables]
    ours, ref = cls(**kw, master_weights=True), cls(**kw)
    if name == "AdamW":
        ours.exclude_from_weight_decay(var_names=["bias"])
        ref.exclude_from_weight_decay(var_names=["bias"])
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(16, 6)).astype("float32"))
    for _ in range(STEPS):
        for v in model.trainable_variables:
            v.value.grad = None
        keras.losses.mean_squared_error(x[:, :1], model(x)).mean().backward()
        grads = [v.value.grad for v in model.trainable_variables]
        ours.apply_gradients(zip(grads, model.trainable_variables))
        ref.apply_gradients(zip([g.float() for g in grads], pure))
    assert {v.dtype for v in ours.variables if v.path.endswith(("_momentum", "_velocity"))} \
        == {"float32"}
    masters = [v for v in ours.variables if v.path.endswith("_master")]
    assert len(masters) == len(pure)
    for m, p, v in zip(masters, pure, model.trainable_variables):
        assert m.dtype == "float32"
        assert torch.equal(m.value.view(torch.int32), p.value.view(torch.int32))
        assert torch.equal(v.value.view(torch.int16), m.value.to(v.value.dtype).view(torch.int16))


def test_fastopt_keras_master_weights_fit_save_load(tmp_path):
    """model.compile / model.fit with master weights on a bfloat16 model; the
    masters are optimizer variables, so model.save / load_model continues the
    run bit for bit. ``state_dtype="float32"`` keeps float32 state and no
    masters. (Under "mixed_bfloat16" the variables are float32 already.)"""
    fused = _fused()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = x[:, :1] * 0.5

    def fit(model, epochs):
        model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0)
        return model

    whole = _keras_model("bfloat16")
    whole.compile(optimizer=fused.Adam(learning_rate=1e-2, master_weights=True), loss="mse")
    history = whole.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    first = _keras_model("bfloat16")
    first.compile(optimizer=fused.Adam(learning_rate=1e-2, master_weights=True), loss="mse")
    path = tmp_path / "model.keras"
    fit(first, 2).save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.optimizer.master_weights is True
    fit(loaded, 2)
    for a, b in zip(loaded.weights + loaded.optimizer.variables,
                    whole.weights + whole.optimizer.variables):
        assert a.dtype == b.dtype and np.array_equal(keras.ops.convert_to_numpy(a.value),
                                                     keras.ops.convert_to_numpy(b.value))
    assert sum(v.path.endswith("_master") for v in loaded.optimizer.variables) == 4

    state = _keras_model("bfloat16")
    state.compile(optimizer=fused.Adam(learning_rate=1e-2, state_dtype="float32"), loss="mse")
    fit(state, 1)
    assert [v.dtype for v in state.optimizer.variables[2:]] == ["float32"] * 8
    with pytest.raises(ValueError, match="state_dtype must be None .* or 'float32'"):
        fused.Adam(state_dtype="float64")
    assert {v.dtype for v in _keras_model("mixed_bfloat16").trainable_variables} == {"float32"}
