"""GPU-only peers: a CuPy ElementwiseKernel of each rule, and optax under jit.

The CuPy kernels are the one-line C a user would write for the same rule
(torch convention, bias corrections folded into host scalars, as fastopt
does); they run in place on the same device buffers as fastopt. optax owns its
arrays (JAX buffers), so it gets copies, with the old ones donated to each
step so that it too updates in place.
"""
import math
import os

# JAX would take 75% of the GPU at start; the other implementations need room.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

_CUPY_RULES = {
    # name: (scalar names, state names, body)
    "adam": ("b1, omb1, b2, omb2, alpha, eps, decay", ("m", "v"),
             "p = p * decay; m = b1 * m + omb1 * g; v = b2 * v + omb2 * g * g;"
             " p = p - alpha * m / (sqrt(v) + eps);"),
    "amsgrad": ("b1, omb1, b2, omb2, alpha, eps", ("m", "v", "vmax"),
                "m = b1 * m + omb1 * g; v = b2 * v + omb2 * g * g;"
                " vmax = max(vmax, v); p = p - alpha * m / (sqrt(vmax) + eps);"),
    "rmsprop": ("lr, alpha, oma, eps", ("s",),
                "s = alpha * s + oma * g * g; p = p - lr * g / (sqrt(s) + eps);"),
    "adagrad": ("lr, eps", ("s",), "s = s + g * g; p = p - lr * g / (sqrt(s) + eps);"),
    "sgd_momentum": ("lr, mu", ("b",), "b = mu * b + g; p = p - lr * b;"),
    "sgd": ("lr", (), "p = p - lr * g;"),
}
_CUPY_RULES["adamw"] = _CUPY_RULES["adam"]


def cupy_available():
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


def optax_available():
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
    except ImportError:
        return False
    return True


def _cupy_scalars(name, case, t):
    k = case.kwargs
    if name in ("adam", "adamw", "amsgrad"):
        b1, b2 = k["beta1"], k["beta2"]
        sqrt_c2 = math.sqrt(1 - b2 ** t)
        decay = 1 - k["lr"] * k.get("weight_decay", 0.0) if name == "adamw" else 1.0
        return (b1, 1 - b1, b2, 1 - b2, k["lr"] * sqrt_c2 / (1 - b1 ** t),
                k["eps"] * sqrt_c2, decay)[: 6 if name == "amsgrad" else 7]
    if name == "rmsprop":
        return (k["lr"], k["alpha"], 1 - k["alpha"], k["eps"])
    if name == "adagrad":
        return (k["lr"], k["eps"])
    if name == "sgd_momentum":
        return (k["lr"], k["momentum"])
    return (k["lr"],)


def cupy_supports(name):
    return None if name in _CUPY_RULES else f"no CuPy kernel written for {name}"


def make_cupy(name, case, sets):
    """``call(k)``: the CuPy ElementwiseKernel step on device buffer set k."""
    import cupy
    scalars, states, body = _CUPY_RULES[name]
    params_in = ", ".join(["T g"] + [f"T {s.strip()}" for s in scalars.split(",")])
    params_out = ", ".join(["T p"] + [f"T {s}" for s in states])
    kernel = cupy.ElementwiseKernel(params_in, params_out, body,
                                    f"fastopt_bench_{name}")
    dtype = sets[0]["param"].dtype.type
    views = [[cupy.asarray(s[a]) for a in ("grad", "param", *case.slots)]
             for s in sets]
    steps = [10] * len(sets)

    def call(k):
        steps[k] += 1
        g, p, *state = views[k]
        kernel(g, *[dtype(x) for x in _cupy_scalars(name, case, steps[k])], p, *state)

    return call


_OPTAX = frozenset(["adam", "adamw", "amsgrad", "rmsprop", "adagrad", "sgd", "sgd_momentum"])


def optax_supports(name):
    return None if name in _OPTAX else f"no optax spelling written for {name}"


def make_optax(name, case, sets):
    """``(call(k), block())``: one jitted optax step on a JAX copy of set k."""
    import jax
    import jax.numpy as jnp
    import optax
    k = case.kwargs
    if name in ("adam", "adamw", "amsgrad"):
        kw = dict(learning_rate=k["lr"], b1=k["beta1"], b2=k["beta2"], eps=k["eps"])
        tx = {"adam": lambda: optax.adam(**kw),
              "amsgrad": lambda: optax.amsgrad(**kw),
              "adamw": lambda: optax.adamw(**kw, weight_decay=k["weight_decay"])}[name]()
    elif name == "rmsprop":
        tx = optax.rmsprop(k["lr"], decay=k["alpha"], eps=k["eps"])
    elif name == "adagrad":
        tx = optax.adagrad(k["lr"], eps=k["eps"])
    elif name in ("sgd", "sgd_momentum"):
        tx = optax.sgd(k["lr"], momentum=k.get("momentum"))
    else:
        raise KeyError(name)

    def step(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 2))
    live = []
    for s in sets:
        params = jnp.asarray(s["param"].copy_to_host())
        live.append([params, jnp.asarray(s["grad"].copy_to_host()), tx.init(params)])

    def call(i):
        params, grads, state = live[i]
        live[i][0], live[i][2] = step(params, grads, state)

    def block():
        jax.block_until_ready([x[0] for x in live])

    return call, block
