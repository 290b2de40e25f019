"""TensorFlow variables as the host arrays fastopt's kernels update in place.

What was tried and measured is in docs/tensorflow.md; in short, on the CPU
(TensorFlow 2.21):

* a read of a ``tf.Variable`` (the ``ReadVariableOp``) returns the
  variable's own buffer, and DLPack exports it without a copy; NumPy imports
  TensorFlow's (unversioned) capsule read-only, so the view is rebuilt
  writable over the same memory. A write through it is what the variable
  holds: eager reads, ``tf.function`` and XLA-compiled functions, Keras 3
  layers all see it;
* TensorFlow's own writes may move the buffer (``assign`` always does,
  ``assign_add`` when a read of it is alive): so the views are made again at
  every step, and never kept (hold the variables, not the views);
* a variable that has been read sparsely (``tf.gather`` /
  ``embedding_lookup`` on the variable itself, ``scatter_*``) is in
  *copy-on-read* mode for the rest of its life: every read is a fresh copy,
  and a write through one is lost. Two reads held at once share their
  address exactly when they are the variable's buffer, so each step checks
  that; such a variable is stepped in one read's copy, then assigned it;
* ``var.numpy()`` and ``np.asarray(var)`` are copies: no use for updates;
* DLPack of a non-numeric tensor (a resource handle) aborts the process, so
  only float variables are exported.

`is_tensorflow` never imports TensorFlow: it is False while TensorFlow is not
loaded.
"""
import contextlib
import sys

import numpy as np

_FLOATS = ("float32", "float64")
_types = None       # the TensorFlow types, once TensorFlow is loaded
_read = None        # ReadVariableOp's eager function
_known = {}         # type -> whether `is_tensorflow` holds for its instances


def is_tensorflow(x):
    """True for a TensorFlow variable, tensor or IndexedSlices, or a Keras 3
    variable on the TensorFlow backend; False (without importing TensorFlow)
    while TensorFlow is not loaded."""
    if "tensorflow" not in sys.modules:
        return False
    return isinstance(x, _tf_types())


def any_tensorflow(values):
    """Whether any of `values` `is_tensorflow`, one check per distinct type
    (a step's list of a model's params is a few types); False at once while
    TensorFlow is not loaded."""
    if "tensorflow" not in sys.modules:
        return False
    known = _known
    for t in set(map(type, values)):
        found = known.get(t)
        if found is None:
            found = known[t] = issubclass(t, _tf_types())
        if found:
            return True
    return False


@contextlib.contextmanager
def host_arrays(values, who, name="params", writable=True):
    """NumPy arrays over the buffers of `values`, for one step of the kernels.

    A context manager: ``with host_arrays(params, "Adam()") as arrays:``
    step the arrays; on a normal exit, what has to be written back is.

    values:   a list; its TensorFlow items (`is_tensorflow`) are replaced,
              anything else (NumPy arrays, None) is passed through.
    who:      the call's name in messages (``"Adam()"``).
    name:     the list's name in messages (``params[3]``).
    writable: True for params: each must be a float32/float64 ``tf.Variable``
              (or Keras 3 TF-backend variable) in host memory. Its array is a
              writable view of the variable's own buffer; for a variable in
              copy-on-read mode (read sparsely), whose every read is a fresh
              copy, it is such a copy, assigned to the variable on exit.
              False for gradients: tensors are read-only zero-copy views,
              IndexedSlices are made dense (as Keras's optimizers do),
              variables are read.

    The arrays are valid inside the block only: TensorFlow's own writes may
    move a variable's buffer, so make them again for every step, and keep
    the variables, not the arrays. A tensor read from a variable before the
    step and still held (``var.read_value()``, a persistent GradientTape)
    shares the buffer and sees the update, where TensorFlow would have kept
    its old value. Raises TypeError, naming the item, for anything fastopt
    cannot update, before any array is made.
    """
    arrays, copies = _host_arrays(values, who, name, writable)
    yield arrays
    for var, tensor in copies:
        var.assign(tensor)


def _host_arrays(values, who, name, writable):
    """`host_arrays`'s arrays, and its [(variable, written copy)] to assign."""
    tf = sys.modules["tensorflow"]
    types = _tf_types()
    out, copies = [], []
    for i, x in enumerate(values):
        if not isinstance(x, types):
            out.append(x)
            continue
        item = f"{who}: {name}[{i}]"
        if not tf.executing_eagerly():
            raise TypeError(
                f"{item} is a symbolic TensorFlow value (the call is inside a "
                "tf.function); fastopt updates variables eagerly: compile the "
                "loss and gradients with tf.function and call apply_gradients "
                "outside it")
        x = _variable(tf, x, item)
        if isinstance(x, tf.Variable):
            if writable:
                array, copy = _alias(tf, x, item)
                if copy is not None:
                    copies.append((x, copy))
            else:
                array = _view(_read_var(x), item)
        elif writable:
            raise TypeError(f"{item} is a tf.{type(x).__name__.replace('Eager', '')}, "
                            "which TensorFlow never changes; pass the tf.Variable "
                            "it was read from")
        else:
            if isinstance(x, tf.IndexedSlices):
                x = tf.convert_to_tensor(x)
            _check_numeric(x, item)
            array = _view(x, item)
        out.append(array)
    return out, copies


def _tf_types():
    global _types
    if _types is None:
        tf = sys.modules["tensorflow"]
        # The core Tensor type is also the base of Keras 3's TF-backend Variable.
        _types = (tf.Variable, tf.IndexedSlices, tf.__internal__.types.Tensor)
    return _types


def _variable(tf, x, item):
    """The tf.Variable behind a Keras 3 variable; anything else unchanged."""
    if isinstance(x, (tf.Variable, tf.Tensor, tf.IndexedSlices)):
        return x
    value = getattr(x, "value", None)   # a Keras 3 Variable's backend value
    if not isinstance(value, tf.Variable):
        raise TypeError(f"{item} is a Keras variable whose value is a "
                        f"{type(value).__name__} here (a stateless or autocast "
                        "scope); fastopt updates the tf.Variable itself: call "
                        "apply_gradients outside such scopes")
    return value


def _check_numeric(x, item):
    # DLPack of a resource or string tensor aborts the process: check first.
    dtype = x.dtype
    if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        raise TypeError(f"{item} has dtype {dtype.name}; fastopt reads float32 "
                        "or float64")


def _read_var(var):
    """The variable's current value, a ReadVariableOp of its handle (not
    recorded as a use of the variable, unlike ``var.value()``)."""
    global _read
    if _read is None:
        try:    # the generated op, without tf.raw_ops's wrapper (7 µs, not 14)
            from tensorflow.python.ops.gen_resource_variable_ops import read_variable_op
            _read = read_variable_op
        except ImportError:
            raw = sys.modules["tensorflow"].raw_ops.ReadVariableOp
            _read = lambda handle, dtype: raw(resource=handle, dtype=dtype)  # noqa: E731
    return _read(var.handle, var.dtype)


def _view(tensor, item):
    """A read-only NumPy view of an eager CPU tensor (DLPack, no copy)."""
    try:
        return np.from_dlpack(tensor)
    except (BufferError, RuntimeError, TypeError) as e:
        raise TypeError(f"{item} is a {tensor.dtype.name} tensor on {tensor.device}, "
                        f"which has no host view ({e})") from None


def _alias(tf, var, item):
    """(a writable array over `var`'s buffer, None), or for a variable in
    copy-on-read mode (a writable array over a fresh copy, that copy)."""
    if isinstance(var, tf.distribute.DistributedValues):
        raise TypeError(f"{item} is a distributed variable ({type(var).__name__}), "
                        "one copy per replica; fastopt updates single variables")
    if var.dtype.name not in _FLOATS:
        raise TypeError(f"{item} must be float32 or float64, got {var.dtype.name}")
    first, second = _read_var(var), _read_var(var)
    if first.__dlpack_device__()[0] != 1:   # kDLCPU
        raise TypeError(f"{item} is on {var.device}; fastopt updates TensorFlow "
                        "variables in host memory only")
    a, b = np.from_dlpack(first), np.from_dlpack(second)
    # Two reads held at once share an address exactly when they are the
    # variable's buffer; in copy-on-read mode each is a fresh copy.
    shared = a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    return np.asarray(_Writable(a)), (None if shared or not a.size else first)


class _Writable:
    """The base of a writable view over a read-only DLPack import: NumPy
    marks every unversioned DLPack capsule read-only, TensorFlow's included.
    Holding the import holds TensorFlow's reference to the buffer."""

    __slots__ = ("held", "__array_interface__")

    def __init__(self, held):
        self.held = held
        face = held.__array_interface__
        self.__array_interface__ = {"shape": face["shape"], "typestr": face["typestr"],
                                    "data": (face["data"][0], False), "version": 3}
