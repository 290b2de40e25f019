"""Can a JAX array (Keras 3's variables on its JAX backend) be updated in place from outside?

Run with jax installed (CPU): python benchmarks/tensorflow/probe_jax.py
"""
import numpy as np
import jax
import jax.numpy as jnp


def show(what, value):
    print(f"{what:<66} {value}")


def ptr(a):
    return a.__array_interface__["data"][0]


class _Writable:
    def __init__(self, ro):
        self.ro = ro
        self.__array_interface__ = dict(ro.__array_interface__, data=(ptr(ro), False))


print("jax", jax.__version__, jax.devices())
x = jnp.arange(4.0, dtype=jnp.float32)
d = np.from_dlpack(x)
show("np.from_dlpack(jax array): writeable", d.flags.writeable)
show("np.asarray(jax array): writeable; same address as DLPack",
     (np.asarray(x).flags.writeable, ptr(np.asarray(x)) == ptr(d)))
show("jax array unsafe_buffer_pointer() == DLPack address", x.unsafe_buffer_pointer() == ptr(d))
w = np.asarray(_Writable(d))
w += 10
show("write through a view rebuilt writable: x afterwards", np.asarray(x).tolist())
y = x.reshape(2, 2)
show("x.reshape(2, 2) shares x's buffer", y.unsafe_buffer_pointer() == x.unsafe_buffer_pointer())
z = jnp.asarray(x)
show("jnp.asarray(x) is x", z is x)


@jax.jit
def double(a):
    return a * 2


show("a jitted function reads the written buffer", np.asarray(double(x)).tolist())


@jax.jit
def step(p, g):
    return p - 0.5 * g


step_donating = jax.jit(lambda p, g: p - 0.5 * g, donate_argnums=0)
p = jnp.ones(1024)
g = jnp.ones(1024)
before = p.unsafe_buffer_pointer()
q = step_donating(p, g)
show("donate_argnums: output reuses the donated buffer", q.unsafe_buffer_pointer() == before)
show("donate_argnums: the donated input is deleted", p.is_deleted())
c = jnp.ones(4)
f = jax.jit(lambda: c * 1)
f()
cw = np.asarray(_Writable(np.from_dlpack(c)))
cw += 1
show("closure-captured array written after the first call: jit sees", np.asarray(f()).tolist())
show("  ... while the array itself holds", np.asarray(c).tolist())
e = jax.device_put(x)
show("jax.device_put(x) shares x's buffer", e.unsafe_buffer_pointer() == x.unsafe_buffer_pointer())
