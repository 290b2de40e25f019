"""fastopt on Keras 3 models (torch backend), against Keras's own optimizers.

* the classic training loop, verbatim (``apply_gradients(zip(grads,
  model.trainable_variables))``), with the framework-free classes
  (``fastopt.Adam``) and with `fastopt.keras`;
* ``model.compile`` / ``model.fit`` with `fastopt.keras`, Keras's base
  options included (EMA, gradient accumulation, schedules, loss scaling,
  exclusion from weight decay), matched on the loss history;
* ``model.save`` / ``keras.saving.load_model`` mid-training, continued.
"""
import functools
import os
import sys

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
if keras.backend.backend() != "torch":
    pytest.skip("these run Keras on its torch backend", allow_module_level=True)

import fastopt  # noqa: E402
import fastopt.keras  # noqa: E402
from fastopt.specs import SPECS  # noqa: E402

CLASSES = [spec.keras.cls for spec in SPECS if spec.keras is not None]
# Options of each class beyond its defaults, so that every slot is in use.
OPTIONS = {"SGD": dict(learning_rate=0.01, momentum=0.9, nesterov=True),
           "RMSprop": dict(momentum=0.5, centered=True),
           "Adam": dict(amsgrad=True)}


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1)])


def _data(n=96):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 6)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


def _training_loop(optimizer, steps=50, scale_loss=False):
    """The classic training loop (``apply_gradients``), with torch's autograd
    for the tape (and Keras's loss scaling, ``optimizer.scale_loss``, if asked)."""
    model = _model()
    x, y = (torch.as_tensor(a) for a in _data(32))
    for _ in range(steps):
        for v in model.trainable_variables:
            v.value.grad = None
        loss = keras.losses.mean_squared_error(y, model(x)).mean()
        (optimizer.scale_loss(loss) if scale_loss else loss).backward()
        grads = [v.value.grad for v in model.trainable_variables]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return [v.numpy() for v in model.weights]


def _close(got, want, tol, rtol=0.0):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=tol)


@pytest.mark.parametrize("module", ["fastopt", "fastopt.keras"])
@pytest.mark.parametrize("cls", CLASSES)
def test_training_loop(cls, module):
    kwargs = OPTIONS.get(cls, {})
    got = _training_loop(getattr(sys.modules[module], cls)(**kwargs))
    _close(got, _keras_training_loop(cls), 1e-5)


@functools.lru_cache(maxsize=None)
def _keras_training_loop(cls):
    """Keras's run of `test_training_loop`, once for both fastopt modules."""
    return _training_loop(getattr(keras.optimizers, cls)(**OPTIONS.get(cls, {})))


def _fit(optimizer, epochs=3, model=None, **kwargs):
    model = model or _model()
    model.compile(optimizer=optimizer, loss="mse")
    x, y = _data()
    history = model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0,
                        **kwargs)
    return model, history.history["loss"]


def _schedule():
    return keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=4, decay_rate=0.5)


# (class, constructor options, wrap in LossScaleOptimizer, exclusion names)
FIT_CASES = [(cls, OPTIONS.get(cls, {}), False, None) for cls in CLASSES] + [
    ("Adam", dict(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3), False, None),
    ("Adam", dict(amsgrad=True, use_ema=True), False, None),     # no free slot: Keras's EMA
    ("SGD", dict(momentum=0.5, use_ema=True, gradient_accumulation_steps=2), False, None),
    ("SGD", dict(momentum=0.9, gradient_accumulation_steps=2), False, None),
    ("AdamW", dict(weight_decay=0.1, gradient_accumulation_steps=3), False, None),
    ("Adam", dict(learning_rate=_schedule()), False, None),
    ("RMSprop", dict(learning_rate=lambda: 0.01), False, None),
    ("Adam", dict(clipnorm=0.1), True, None),
    ("AdamW", dict(weight_decay=0.5), False, ["bias"]),
    ("Lion", dict(weight_decay=0.1, global_clipnorm=0.5), False, None),
]


def _make(module, cls, options, loss_scale, exclude):
    optimizer = getattr(module, cls)(**options)
    if exclude:
        optimizer.exclude_from_weight_decay(var_names=exclude)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


@pytest.mark.parametrize("cls, options, loss_scale, exclude", FIT_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(FIT_CASES)])
def test_fit(cls, options, loss_scale, exclude):
    want_model, want = _fit(_make(keras.optimizers, cls, options, loss_scale, exclude))
    got_model, got = _fit(_make(fastopt.keras, cls, options, loss_scale, exclude))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    _close([v.numpy() for v in got_model.weights],
           [v.numpy() for v in want_model.weights], 1e-5)
    got_state = [v.numpy() for v in got_model.optimizer.variables]
    want_state = [v.numpy() for v in want_model.optimizer.variables]
    assert len(got_state) == len(want_state)
    _close(got_state, want_state, 1e-5, rtol=1e-5)   # Ftrl's linear grows to ~1e2


def test_fit_with_callbacks():
    """Callbacks that set the optimizer's learning rate, as Keras's do."""
    def callbacks():
        return [keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
                keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5)]

    want_model, want = _fit(keras.optimizers.Adam(), callbacks=callbacks())
    got_model, got = _fit(fastopt.keras.Adam(), callbacks=callbacks())
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert float(got_model.optimizer.learning_rate) == float(
        want_model.optimizer.learning_rate)


def test_loss_scale_optimizer_over_the_framework_free_class():
    """``LossScaleOptimizer(fastopt.Adam())``: Keras's wrapper drives the
    framework-free class through ``apply(grads, trainable_variables)``."""
    want = _training_loop(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()), 20, True)
    got = _training_loop(keras.optimizers.LossScaleOptimizer(fastopt.Adam()), 20, True)
    _close(got, want, 1e-5)


@pytest.mark.parametrize("cls", ["Adam", "SGD", "RMSprop"])
def test_save_load_continues(cls, tmp_path):
    kwargs = OPTIONS.get(cls, {})
    whole, _ = _fit(getattr(fastopt.keras, cls)(**kwargs), epochs=4)
    first, _ = _fit(getattr(fastopt.keras, cls)(**kwargs), epochs=2)
    path = tmp_path / "model.keras"
    first.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is getattr(fastopt.keras, cls)
    assert int(loaded.optimizer.iterations) == int(first.optimizer.iterations)
    x, y = _data()
    loaded.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    _close([v.numpy() for v in loaded.weights], [v.numpy() for v in whole.weights], 1e-6)
    _close([v.numpy() for v in loaded.optimizer.variables],
           [v.numpy() for v in whole.optimizer.variables], 1e-6)


def test_keras_checkpoint_loads_into_fastopt(tmp_path):
    """A model trained and saved with keras.optimizers.Adam continues under
    fastopt.keras.Adam (same state variables, same order) as under Keras."""
    model, _ = _fit(keras.optimizers.Adam(), epochs=2)
    path = tmp_path / "model.keras"
    model.save(path)
    want = keras.saving.load_model(path)
    got = keras.saving.load_model(path, compile=False)
    got.compile(optimizer=fastopt.keras.Adam(), loss="mse")
    got.optimizer.build(got.trainable_variables)
    got.optimizer.set_weights([v.numpy() for v in want.optimizer.variables])
    x, y = _data()
    for m in (want, got):
        m.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    _close([v.numpy() for v in got.weights], [v.numpy() for v in want.weights], 1e-5)


@pytest.mark.parametrize("bad", ["shape", "strided"])
def test_refused_step_writes_nothing(bad):
    """A bad gradient is refused before any variable or state is written,
    after steps that took the bulk-checked path too."""
    model = _model()
    opt = fastopt.keras.Adam()
    grads = [torch.ones(v.shape) for v in model.trainable_variables]
    opt.apply(grads, model.trainable_variables)
    opt.apply(grads, model.trainable_variables)
    before = [v.numpy().copy() for v in model.weights + opt.variables]
    shape = tuple(model.trainable_variables[0].shape)
    grads[0] = (torch.ones(3) if bad == "shape"
                else torch.ones(shape[::-1]).t())    # the shape, not contiguous
    with pytest.raises((TypeError, ValueError), match="fastopt.keras.Adam"):
        opt.apply(grads, model.trainable_variables)
    for b, v in zip(before, model.weights + opt.variables):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.parametrize("options, fused", [
    (dict(use_ema=True), True), (dict(use_ema=True, amsgrad=True), False)])
def test_moving_average_rides_in_the_update(options, fused):
    """With a state slot free, the update's own pass moves the averages
    (test_fit checks the values against Keras's)."""
    model = _model()
    opt = fastopt.keras.Adam(**options)
    grads = [torch.ones(v.shape) for v in model.trainable_variables]
    opt.apply(grads, model.trainable_variables)
    assert ("ema" in opt._fastopt.groups(opt, model.trainable_variables, False)[0].state
            ) is fused


def test_bounds_checked_at_construction():
    with pytest.raises(ValueError, match=r"fastopt.keras.Adam.*epsilon"):
        fastopt.keras.Adam(epsilon=0.0)


def test_backends_that_cannot_be_updated_in_place_are_named(monkeypatch):
    """On jax (immutable arrays) both front ends refuse by the backend's name,
    before anything is written."""
    from fastopt.keras import _fused
    variable = keras.Variable(np.ones(3, np.float32))
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ImportError, match=r"torch backend.*'jax'"):
        _fused.supported_backend()
    opt = fastopt.SGD(learning_rate=0.5)
    with pytest.raises(TypeError, match=r"SGD\(\): params\[0\] is a Keras variable on "
                                        r"the 'jax' backend"):
        opt.apply_gradients(zip([np.ones(3, np.float32)], [variable]))
    assert not opt.built and opt.iterations == 0
    np.testing.assert_array_equal(variable.numpy(), np.ones(3, np.float32))
