"""fastopt's Keras-style optimizers on TensorFlow variables (docs/tensorflow.md).

The loop TensorFlow users write, ``opt.apply_gradients(zip(grads, vars))``
after a GradientTape, with fastopt's optimizer: the variables are updated in
place through DLPack views of their buffers (`fastopt._tensorflow`). The
oracles in this process are Keras 3's Adam on the backend Keras runs on here
(torch, by conftest), fed gradients that TensorFlow computes from its
variables, and TensorFlow's own Adam kernel (``tf.compat.v1.train``'s
ResourceApplyAdam); Keras 3's Adam on its TensorFlow backend is the oracle of
`tensorflow_keras_worker`, run in a process of its own. Skipped where TensorFlow is not installed.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

import fastopt  # noqa: E402
from fastopt import _tensorflow  # noqa: E402
from oracles import max_rel_error  # noqa: E402

STEPS = 50
LR, BETA_1, BETA_2, EPS = 0.0078125, 0.875, 0.9990234375, 2.0**-20
TOL = {np.float32: 1e-5, np.float64: 1e-12}
SHAPES = [(3, 7), (7,), (7, 1), (1,)]     # an MLP's weights: odd sizes, size 1


def fastopt_adam():
    return fastopt.Adam(learning_rate=LR, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPS)


def tf_adam():
    return tf.compat.v1.train.AdamOptimizer(LR, BETA_1, BETA_2, EPS)


def initial(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def batch(dtype):
    rng = np.random.default_rng(1)
    return (tf.constant(rng.standard_normal((16, 3)).astype(dtype)),
            tf.constant(rng.standard_normal((16, 1)).astype(dtype)))


def loss_of(w, x, y):
    h = tf.tanh(x @ w[0] + w[1])
    return tf.reduce_mean((h @ w[2] + w[3] - y) ** 2)


def train(optimizer, dtype, compiled=None, between=None):
    """STEPS steps of the TensorFlow loop; the variables' final values.

    compiled: None (eager), "function" or "xla": how the gradients are computed.
    between:  called with the variables after each step.
    """
    w = [tf.Variable(a) for a in initial(dtype)]
    x, y = batch(dtype)

    def gradients():
        with tf.GradientTape() as tape:
            loss = loss_of(w, x, y)
        return tape.gradient(loss, w)

    if compiled:
        gradients = tf.function(gradients, jit_compile=compiled == "xla")
    for _ in range(STEPS):
        grads = gradients()
        optimizer.apply_gradients(zip(grads, w))
        if between is not None:
            between(w)
    return [v.numpy() for v in w]


def assert_close(got, want, dtype):
    errors = [max_rel_error(g, v) for g, v in zip(got, want)]
    assert max(errors) <= TOL[dtype], errors


def keras_train(dtype):
    """`train`'s loop with Keras 3's Adam (the suite's oracle, on whichever
    backend Keras runs here) stepping its own variables, the gradients
    computed by TensorFlow from their values."""
    keras = pytest.importorskip("keras")
    w = [keras.Variable(a, dtype=np.dtype(dtype).name) for a in initial(dtype)]
    opt = keras.optimizers.Adam(learning_rate=LR, beta_1=BETA_1, beta_2=BETA_2,
                                epsilon=EPS)
    x, y = batch(dtype)

    def host(v):
        value = v.value
        return value.detach().cpu().numpy() if hasattr(value, "detach") else v.numpy()

    for _ in range(STEPS):
        values = [tf.constant(host(v)) for v in w]
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = loss_of(values, x, y)
        grads = tape.gradient(loss, values)
        opt.apply_gradients([(keras.ops.convert_to_tensor(g.numpy()), v)
                             for g, v in zip(grads, w)])
    return [host(v).copy() for v in w]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("compiled", [None, "function", "xla"])
def test_the_tensorflow_loop_matches_keras_adam(dtype, compiled):
    want = keras_train(dtype)
    got = train(fastopt_adam(), dtype, compiled)
    assert_close(got, want, dtype)


def test_the_tensorflow_loop_matches_tensorflows_adam():
    """TensorFlow's own Adam kernel; float32 (its beta powers are float32
    even for float64 variables)."""
    want = train(tf_adam(), np.float32)
    got = train(fastopt_adam(), np.float32)
    assert_close(got, want, np.float32)


def test_tensorflows_own_writes_between_steps():
    """assign moves a variable's buffer, assign_add may: each step writes
    whichever buffer the variable holds then."""
    def touch(w):
        w[0].assign(w[0] * 1.0)        # a new buffer, same values
        w[1].assign_add(tf.zeros_like(w[1]))

    want = train(tf_adam(), np.float32, between=touch)
    got = train(fastopt_adam(), np.float32, between=touch)
    assert_close(got, want, np.float32)


def test_apply_without_params_uses_the_variables():
    """`apply(grads)` steps the variables of the last call, not last step's
    views of buffers that TensorFlow has since replaced."""
    v = tf.Variable(np.ones(5, np.float32))
    opt, ref = fastopt_adam(), tf_adam()
    r = tf.Variable(np.ones(5, np.float32))
    g = tf.constant(np.linspace(-1, 1, 5).astype(np.float32))
    opt.apply_gradients([(g, v)])
    ref.apply_gradients([(g, r)])
    v.assign(v + 1.0)
    r.assign(r + 1.0)
    opt.apply([g])
    ref.apply_gradients([(g, r)])
    assert_close([v.numpy()], [r.numpy()], np.float32)


def test_copy_on_read_variables_are_written_back():
    """A variable read sparsely (tf.gather on the variable) is in copy-on-read
    mode: each read is a copy, so it is stepped in a copy and assigned."""
    rng = np.random.default_rng(2)
    table0 = rng.standard_normal((11, 3)).astype(np.float32)
    ids = tf.constant([1, 4, 4, 9])        # a repeated id: summed, as in a dense gradient

    def run(optimizer):
        table = tf.Variable(table0)
        for k in range(STEPS):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(table, ids) ** 2) * (k % 3 + 1)
            grad = tape.gradient(loss, table)
            assert isinstance(grad, tf.IndexedSlices)
            optimizer.apply_gradients([(grad, table)])
        return table

    table = run(fastopt_adam())
    want = run(tf_adam())
    first, second = (np.from_dlpack(table.read_value()) for _ in range(2))
    assert first.ctypes.data != second.ctypes.data    # copy-on-read mode indeed
    assert_close([table.numpy()], [want.numpy()], np.float32)


def test_keras_variables_and_state():
    """A Keras 3 variable whose value is a tf.Variable; the state is NumPy."""
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Keras runs on another backend here (tensorflow_keras_worker "
                    "covers Keras on TensorFlow)")
    k = keras.Variable(np.ones(4, np.float32))
    opt = fastopt_adam()
    opt.apply_gradients([(tf.ones(4), k)])
    assert float(k.numpy()[0]) < 1.0
    assert isinstance(opt.state_dict()["m/0"], np.ndarray)


def test_the_state_is_numpy_and_loads():
    v = tf.Variable(np.ones(3, np.float32))
    opt = fastopt_adam()
    opt.apply_gradients([(tf.fill([3], 0.5), v)])
    state = opt.state_dict()
    fresh = fastopt_adam()
    fresh.load_state_dict(state)
    u = tf.Variable(v.numpy())
    opt.apply_gradients([(tf.fill([3], 0.25), v)])
    fresh.apply_gradients([(tf.fill([3], 0.25), u)])
    np.testing.assert_array_equal(u.numpy(), v.numpy())


def test_a_read_held_across_the_step_sees_it():
    """The documented difference from TensorFlow's optimizers: a tensor read
    before the step and still held shares the buffer (TensorFlow would copy
    the buffer before writing, so the tensor would keep its old value).
    var.numpy() is a copy, and keeps it."""
    v = tf.Variable(np.zeros(3, np.float32))
    held, copied = v.read_value(), v.numpy()
    fastopt.SGD(learning_rate=1.0).apply_gradients([(tf.ones(3), v)])
    np.testing.assert_array_equal(v.numpy(), -np.ones(3, np.float32))
    np.testing.assert_array_equal(held.numpy(), v.numpy())
    np.testing.assert_array_equal(copied, np.zeros(3, np.float32))


# -- what is refused, before anything is written ---------------------------------

def test_inside_a_tf_function():
    v = tf.Variable(np.ones(3, np.float32))
    opt = fastopt_adam()

    @tf.function
    def step():
        opt.apply_gradients([(tf.ones(3), v)])

    with pytest.raises(TypeError, match=r"Adam\(\): params\[0\] is a symbolic .*"
                                         "call apply_gradients outside it"):
        step()
    assert not opt.built


@pytest.mark.parametrize("param, message", [
    (lambda: tf.ones(3), r"params\[1\] is a tf.Tensor, which TensorFlow never changes"),
    (lambda: tf.Variable([1, 2, 3]), r"params\[1\] must be float32 or float64, got int32"),
    (lambda: tf.Variable(tf.ones(3, tf.float16)),
     r"params\[1\] must be float32 or float64, got float16"),
])
def test_bad_params_change_nothing(param, message):
    good = tf.Variable(np.ones(3, np.float32))
    opt = fastopt_adam()
    with pytest.raises(TypeError, match=r"Adam\(\): " + message):
        opt.apply_gradients([(tf.ones(3), good), (tf.ones(3), param())])
    np.testing.assert_array_equal(good.numpy(), np.ones(3, np.float32))
    assert not opt.built and opt.iterations == 0


def test_a_gradient_sharing_a_params_buffer():
    """A gradient may be a variable's own buffer (here a custom gradient
    returns another variable's value): the overlap check refuses it."""
    v = tf.Variable(np.ones(4, np.float32))
    u = tf.Variable(np.full(4, 3.0, np.float32))

    @tf.custom_gradient
    def through(x):
        return tf.identity(x), lambda dy: u.read_value()

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(through(v)) + tf.reduce_sum(u)
    gv, gu = tape.gradient(loss, [v, u])
    with pytest.raises(ValueError, match="share"):
        fastopt_adam().apply_gradients([(gv, v), (gu, u)])
    np.testing.assert_array_equal(u.numpy(), np.full(4, 3.0, np.float32))


def test_is_tensorflow(monkeypatch):
    v = tf.Variable(np.ones(2, np.float32))
    assert _tensorflow.is_tensorflow(v)
    assert _tensorflow.is_tensorflow(tf.ones(2))
    assert _tensorflow.is_tensorflow(tf.IndexedSlices(tf.ones((1, 2)), tf.constant([0])))
    assert not _tensorflow.is_tensorflow(np.ones(2))
    assert not _tensorflow.is_tensorflow(None)
    assert _tensorflow.any_tensorflow([np.ones(2), v])
    assert not _tensorflow.any_tensorflow([np.ones(2), None])
    # While TensorFlow is not loaded, False without importing it.
    monkeypatch.delitem(sys.modules, "tensorflow")
    assert not _tensorflow.is_tensorflow(v)
    assert not _tensorflow.any_tensorflow([v])
    assert "tensorflow" not in sys.modules


def test_keras_on_tensorflow():
    """The classic TensorFlow loop (GradientTape, Keras Sequential, apply_gradients) with
    fastopt.Adam against Keras 3's Adam on its TensorFlow backend: a dense
    model eager and in a tf.function, embedding models with unique and with
    repeated ids (tensorflow_keras_worker)."""
    pytest.importorskip("keras")
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, os.path.join(here, "tensorflow_keras_worker.py")],
                          env=env, cwd=here, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    checked = {k: e for k, e in errors.items() if not k.startswith("info:")}
    assert len(checked) == 4 and max(checked.values()) <= 1e-5, errors
