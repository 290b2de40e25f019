"""Keras 3 variables as the arrays they hold.

The classic Keras loop passes ``model.trainable_variables``: `keras.Variable`s, not
arrays. On Keras's torch backend a variable's value is a torch tensor (a
``torch.nn.Parameter``) that Keras itself updates in place, and on its numpy
backend a NumPy array: fastopt updates those. On tensorflow it is a
``tf.Variable``, which `fastopt._tensorflow` views anew at each step
(docs/tensorflow.md). On jax the value is an immutable array, which nothing
outside XLA may write: a clear error names the backend.
"""
import sys


def keras_values(fn, arrays, what):
    """`arrays` with each Keras variable replaced by its value (the list
    itself when there is none). Raises TypeError naming ``what[i]`` for a
    variable whose backend fastopt cannot update in place."""
    keras = sys.modules.get("keras")
    if keras is None:
        return arrays
    variable = keras.Variable
    if not any([isinstance(a, variable) for a in arrays]):
        return arrays
    backend = keras.backend.backend()
    if backend == "tensorflow":    # tf.Variables: `fastopt._tensorflow`, per step
        return arrays
    if backend not in ("torch", "numpy"):
        k = next(i for i, a in enumerate(arrays) if isinstance(a, variable))
        raise TypeError(
            f"{fn}: {what}[{k}] is a Keras variable on the {backend!r} backend, whose "
            "value fastopt cannot update in place; fastopt updates Keras variables on "
            "the torch, tensorflow (CPU) and numpy backends, and NumPy, CuPy, Numba, "
            "torch and TensorFlow arrays")
    return [a.value if isinstance(a, variable) else a for a in arrays]
