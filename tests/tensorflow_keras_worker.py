"""The TensorFlow training loop of `test_tensorflow`, on Keras 3's TensorFlow backend.

Run as ``KERAS_BACKEND=tensorflow python tensorflow_keras_worker.py``: the test
process runs Keras on its torch backend, and Keras picks its backend once per
process. Trains the same Keras Sequential models twice from the same weights,
with ``keras.optimizers.Adam`` and with ``fastopt.Adam``, in the loop
TensorFlow users write (GradientTape, ``apply_gradients(zip(grads,
model.trainable_variables))``), eager and (the dense model) with the gradients
in a tf.function, and prints one
JSON line: per case, the largest error of any weight (`oracles.max_rel_error`)
after `STEPS` steps.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fastopt  # noqa: E402
from oracles import max_rel_error  # noqa: E402

STEPS = 50
ADAM = {"learning_rate": 0.0078125, "beta_1": 0.875, "beta_2": 0.9990234375,
        "epsilon": 2.0**-20}


def dense_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dense(7, activation="tanh"),
                             keras.layers.Dense(1)])


def embedding_model(seed):
    # Keras's Embedding reads its table densely (no copy-on-read mode), and
    # its gradient is an IndexedSlices.
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,), dtype="int32"),
                             keras.layers.Embedding(11, 3),
                             keras.layers.Flatten(), keras.layers.Dense(1)])


def data(kind, seed=1):
    rng = np.random.default_rng(seed)
    if kind == "dense":
        x = rng.standard_normal((32, 5)).astype(np.float32)
    elif kind == "unique-ids":      # no id twice in the batch
        x = rng.permutation(11)[:8].reshape(2, 4).astype(np.int32)
    else:                           # ids repeat: IndexedSlices with duplicate indices
        x = rng.integers(0, 11, (32, 4)).astype(np.int32)
    return x, rng.standard_normal((len(x), 1)).astype(np.float32)


class DenseGradAdam(keras.optimizers.Adam):
    """Keras's Adam fed dense gradients. With duplicate indices in an
    IndexedSlices gradient, Keras 3's TensorFlow backend squares each slice
    before they are summed (v gets Σg², not (Σg)²); its torch and JAX backends,
    tf.compat.v1's Adam and fastopt use the summed, dense gradient."""

    def apply_gradients(self, grads_and_vars):
        return super().apply_gradients(
            [(tf.convert_to_tensor(g), v) for g, v in grads_and_vars])


def train(make, kind, optimizer, compiled):
    model = make(0)
    x, y = data(kind)

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        return tape.gradient(loss, model.trainable_variables)

    if compiled:
        step = tf.function(step)
    for _ in range(STEPS):
        grads = step()
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return [np.array(v.numpy()) for v in model.trainable_variables]


def main():
    assert keras.backend.backend() == "tensorflow", keras.backend.backend()
    cases = [("dense", dense_model, keras.optimizers.Adam),
             ("unique-ids", embedding_model, keras.optimizers.Adam),
             ("repeated-ids", embedding_model, DenseGradAdam)]
    out = {}
    for kind, make, oracle in cases:
        for compiled in (False, True) if kind == "dense" else (False,):
            want = train(make, kind, oracle(**ADAM), compiled)
            got = train(make, kind, fastopt.Adam(**ADAM), compiled)
            out[f"{kind}-{'tf.function' if compiled else 'eager'}"] = max(
                max_rel_error(g, w) for g, w in zip(got, want))
    # What the docstring of DenseGradAdam says, measured (not asserted).
    want = train(embedding_model, "repeated-ids", keras.optimizers.Adam(**ADAM), False)
    out["info: repeated-ids vs Keras's own IndexedSlices Adam"] = max(
        max_rel_error(g, w) for g, w in zip(train(embedding_model, "repeated-ids",
                                                  DenseGradAdam(**ADAM), False), want))
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
