"""Can a tf.Variable's CPU buffer be written in place from outside TensorFlow?

Each check prints one line: what was tried, and what was seen. Run with
TensorFlow installed (tensorflow-cpu): python benchmarks/tensorflow/probe_aliasing.py
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def ptr(a):
    return np.asarray(a).__array_interface__["data"][0] if not isinstance(a, int) else a


class _Writable:
    """A writable NumPy view's base: the read-only DLPack import it keeps alive."""

    def __init__(self, ro):
        self.ro = ro
        self.__array_interface__ = dict(ro.__array_interface__, data=(ptr(ro), False))


def alias(t):
    """A writable NumPy array over eager tensor `t`'s buffer: NumPy imports
    TF's DLPack capsule read-only, so the view is rebuilt writable over it."""
    return np.asarray(_Writable(np.from_dlpack(t)))


def buf(v):
    """The address of the buffer a read of variable `v` returns."""
    return ptr(np.from_dlpack(v.read_value()))


def show(what, value):
    print(f"{what:<72} {value}")


print("tensorflow", tf.__version__, "numpy", np.__version__)
v = tf.Variable(np.arange(4, dtype=np.float32))

# -- the routes to a host array -------------------------------------------------
n1, n2 = v.numpy(), v.numpy()
show("var.numpy(): two calls share an address", ptr(n1) == ptr(n2))
show("var.numpy(): address == the variable's buffer", ptr(n1) == buf(v))
show("var.numpy(): writeable", n1.flags.writeable)
a = np.asarray(v)
show("np.asarray(var) (__array__): address == buffer", ptr(a) == buf(v))
m = np.asarray(memoryview(v.read_value()))
show("np.asarray(memoryview(read)): address == buffer, writeable",
     (ptr(m) == buf(v), m.flags.writeable))
show("tf.Variable has __dlpack__", hasattr(v, "__dlpack__"))
for name, read in [("var.read_value()", v.read_value), ("var.value()", v.value),
                   ("tf.convert_to_tensor(var)", lambda: tf.convert_to_tensor(v)),
                   ("tf.identity(var)", lambda: tf.identity(v))]:
    d = np.from_dlpack(read())
    show(f"np.from_dlpack({name}): address == buffer, writeable",
         (ptr(d) == buf(v), d.flags.writeable))
try:
    d = np.from_dlpack(v)
    show("np.from_dlpack(var)", (ptr(d) == buf(v), d.flags.writeable))
except Exception as e:
    show("np.from_dlpack(var)", f"{type(e).__name__}: {e}")
try:
    tf.experimental.dlpack.to_dlpack(v)
    show("tf.experimental.dlpack.to_dlpack(var)", "accepted")
except Exception as e:
    show("tf.experimental.dlpack.to_dlpack(var)", f"{type(e).__name__}: {str(e)[:40]}")
d = np.from_dlpack(v.read_value())
try:
    d.flags.writeable = True
    show("from_dlpack(read).flags.writeable = True", "allowed")
except ValueError as e:
    show("from_dlpack(read).flags.writeable = True", f"ValueError: {e}")

# -- a write through the DLPack view ----------------------------------------------
v = tf.Variable(np.arange(4, dtype=np.float32))
w = alias(v.read_value())
w += 10
del w
show("write through from_dlpack(read): var.numpy() after", v.numpy())
show("  ... tf.reduce_sum(var) in eager", float(tf.reduce_sum(v)))


@tf.function
def total(x):
    return tf.reduce_sum(x)


@tf.function(jit_compile=True)
def total_xla(x):
    return tf.reduce_sum(x * 1.0)


show("  ... in a tf.function (traced before the next write)", float(total(v)))
show("  ... in a tf.function with jit_compile=True", float(total_xla(v)))
w = alias(v.read_value())
w += 100
del w
show("second write: tf.function sees it", float(total(v)))
show("second write: XLA function sees it", float(total_xla(v)))

# -- does the buffer move? ---------------------------------------------------------
v = tf.Variable(np.zeros(1000, np.float32))
b0 = buf(v)
v.assign_add(tf.ones(1000))
show("assign_add, no view held: buffer kept", buf(v) == b0)
v.assign(tf.ones(1000))
show("assign(tensor), no view held: buffer kept", buf(v) == b0)
v.assign(np.full(1000, 2, np.float32))
show("assign(numpy), no view held: buffer kept", buf(v) == b0)
held = alias(v.read_value())
v.assign_add(tf.ones(1000))
show("assign_add WITH a view held: buffer kept (no copy-on-write)", buf(v) == b0)
show("  ... the held view sees the add (stale if False)", float(held[0]) == float(v[0]))
del held
b1 = buf(v)
held = alias(v.read_value())
v.assign(tf.fill([1000], 7.0))
show("assign WITH a view held: buffer kept", buf(v) == b1)
show("  ... the held view sees the assign (stale if False)", float(held[0]) == 7.0)
del held

# -- TF's own snapshot semantics vs an outside write ---------------------------------
v = tf.Variable(np.zeros(4, np.float32))
snap = v.read_value()
v.assign_add(tf.ones(4))
show("TF's assign_add: an earlier read_value() keeps its old value", snap.numpy())
v = tf.Variable(np.zeros(4, np.float32))
snap = v.read_value()
w = alias(v.read_value())
w += 1
del w
show("outside write: an earlier read_value() keeps its old value", snap.numpy())
v = tf.Variable(np.zeros(4, np.float32))
snap = v.numpy()
w = alias(v.read_value())
w += 1
del w
show("outside write: an earlier var.numpy() keeps its old value", snap)

# -- copy-on-read mode (sparse access) ------------------------------------------------
v = tf.Variable(np.zeros((4, 2), np.float32))
b0 = buf(v)
show("before tf.gather: two reads share an address",
     ptr(alias(v.read_value())) == ptr(alias(v.read_value())))
tf.gather(v, [1])
r1, r2 = alias(v.read_value()), alias(v.read_value())
show("after tf.gather(var): two reads held at once share an address", ptr(r1) == ptr(r2))
del r1, r2
w = alias(v.read_value())
w += 5
del w
show("after tf.gather(var): write through a read's view reaches var", v.numpy()[0, 0] == 5)
v.assign(tf.zeros((4, 2)))
r1, r2 = alias(v.read_value()), alias(v.read_value())
show("after gather then assign: reads share an address again", ptr(r1) == ptr(r2))
del r1, r2
v = tf.Variable(np.zeros((4, 2), np.float32))
with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.nn.embedding_lookup(v, [0, 2]))
g = tape.gradient(loss, v)
show("embedding_lookup: gradient type", type(g).__name__)
r1, r2 = alias(v.read_value()), alias(v.read_value())
show("after embedding_lookup: two reads share an address", ptr(r1) == ptr(r2))
del r1, r2


@tf.function
def gather_in_function(x):
    return tf.gather(x, [0])


v = tf.Variable(np.zeros((4, 2), np.float32))
gather_in_function(v)
r1, r2 = alias(v.read_value()), alias(v.read_value())
show("after tf.gather inside tf.function: reads share an address", ptr(r1) == ptr(r2))
del r1, r2
v = tf.Variable(np.zeros((4, 2), np.float32))
v.scatter_add(tf.IndexedSlices(tf.ones((1, 2)), tf.constant([1])))
r1, r2 = alias(v.read_value()), alias(v.read_value())
show("after scatter_add: reads share an address", ptr(r1) == ptr(r2))
del r1, r2

# -- gradients -----------------------------------------------------------------------
v = tf.Variable(np.ones(4, np.float32))
u = tf.Variable(np.full(4, 3, np.float32))
with tf.GradientTape() as tape:
    loss = tf.reduce_sum(v * u)
gv, gu = tape.gradient(loss, [v, u])
show("grad of sum(v*u) wrt v aliases u's buffer", ptr(alias(gv)) == buf(u))


@tf.custom_gradient
def passthrough(x):
    return tf.identity(x), lambda dy: u.read_value()


with tf.GradientTape() as tape:
    loss = tf.reduce_sum(passthrough(v))
gv = tape.gradient(loss, v)
show("custom gradient returning u.read_value(): grad aliases u's buffer",
     ptr(alias(gv)) == buf(u))

# -- tf.convert_to_tensor(numpy) and assign(numpy): does TF keep NumPy's memory? -----
host = np.zeros(1024, np.float32)
t = tf.convert_to_tensor(host)
show("tf.convert_to_tensor(numpy): shares the NumPy buffer", ptr(alias(t)) == ptr(host))
v = tf.Variable(np.zeros(1024, np.float32))
v.assign(host)
show("var.assign(numpy): the variable then aliases the NumPy array", buf(v) == ptr(host))
host += 1
show("  ... a later write to the NumPy array changes var", float(v[0]) == 1.0)

# -- float64, and a variable of a Keras 3 layer ------------------------------------
v = tf.Variable(np.zeros(3, np.float64))
w = alias(v.read_value())
w += 1
del w
show("float64 variable: write reaches var", v.numpy())
import keras  # noqa: E402

show("keras", f"{keras.__version__} backend {keras.backend.backend()}")
layer = keras.layers.Dense(3)
layer.build((None, 2))
k = layer.kernel
show("Keras 3 kernel: type; .value type", (type(k).__module__ + "." + type(k).__name__,
                                           type(k.value).__name__))
show("Keras 3 kernel: isinstance tf.Variable", isinstance(k, tf.Variable))
w = alias(k.value.read_value())
w[...] = 1
del w
show("Keras 3 kernel: write through k.value's read reaches the layer",
     np.asarray(layer(np.ones((1, 2), np.float32))).tolist())
try:
    w = np.from_dlpack(k)
    show("np.from_dlpack(keras variable)", (ptr(w) == buf(k.value), w.flags.writeable))
except Exception as e:
    show("np.from_dlpack(keras variable)", f"{type(e).__name__}: {e}")

# -- tensors that outlive the step --------------------------------------------------
v = tf.Variable(np.full(4, 2, np.float32))
with tf.GradientTape(persistent=True) as tape:
    loss = tf.reduce_sum(v * v)
g1 = tape.gradient(loss, v)
w = alias(v.read_value())
w += 1
del w
g2 = tape.gradient(loss, v)
show("persistent tape: d(sum v*v)/dv before, after an outside write",
     (g1.numpy().tolist(), g2.numpy().tolist()))


@tf.function
def give_read(x):
    return x.read_value()


@tf.function
def give_identity(x):
    return tf.identity(x)


@tf.function
def give_double(x):
    return 2 * x


v = tf.Variable(np.zeros(1024, np.float32))
for name, fn in [("read_value()", give_read), ("tf.identity(var)", give_identity),
                 ("2 * var", give_double)]:
    show(f"tf.function returning {name}: result aliases the buffer",
         ptr(alias(fn(v))) == buf(v))
gc_initial = tf.Variable(np.zeros(1000, np.float32))
b0 = buf(gc_initial)
gc_initial.assign_add(tf.ones(1000))
show("fresh 1,000-element variable: first assign_add moves the buffer", buf(gc_initial) != b0)
import gc  # noqa: E402

gc_initial = tf.Variable(np.zeros(1000, np.float32))
gc.collect()
b0 = buf(gc_initial)
gc_initial.assign_add(tf.ones(1000))
show("  ... after gc.collect() (the initial value was garbage in a cycle)",
     buf(gc_initial) != b0)

# -- Keras 3 layers that read sparsely ------------------------------------------------
emb = keras.layers.Embedding(10, 3)
emb.build((None,))
with tf.GradientTape() as tape:
    out = tf.reduce_sum(emb(np.array([1, 2, 2])))
g = tape.gradient(out, emb.trainable_variables)[0]
ev = emb.embeddings.value
r1, r2 = alias(ev.read_value()), alias(ev.read_value())
show("Keras Embedding: gradient type; reads still share an address",
     (type(g).__name__, ptr(r1) == ptr(r2)))
del r1, r2
