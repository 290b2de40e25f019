"""Plain NumPy peers: the update as a user would first write it.

Whole-array expressions with their temporaries, in place on the same arrays
fastopt updates, in the case's convention (torch's, or Keras's for the
optimizers only Keras has) and hyperparameters (from `cases.CASES`).
NumPy runs these on one thread whatever the thread count.
"""
import numpy as np


def _adam(a, k, t, amsgrad=False, wd=0.0):
    p, g, m, v = a["param"], a["grad"], a["exp_avg"], a["exp_avg_sq"]
    lr, b1, b2, eps = k["lr"], k["beta1"], k["beta2"], k["eps"]
    if wd:
        p *= 1 - lr * wd
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
    if amsgrad:
        np.maximum(a["max_exp_avg_sq"], v, out=a["max_exp_avg_sq"])
        v = a["max_exp_avg_sq"]
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)


def _rmsprop(a, k, t):
    p, g, s = a["param"], a["grad"], a["square_avg"]
    alpha = k["alpha"]
    s[:] = alpha * s + (1 - alpha) * g * g
    if k.get("centered"):
        avg = a["grad_avg"]
        avg[:] = alpha * avg + (1 - alpha) * g
        denom = np.sqrt(s - avg * avg) + k["eps"]
    else:
        denom = np.sqrt(s) + k["eps"]
    if k.get("momentum"):
        buf = a["momentum_buffer"]
        buf[:] = k["momentum"] * buf + g / denom
        p -= k["lr"] * buf
    else:
        p -= k["lr"] * g / denom


def _adagrad(a, k, t):
    p, g, s = a["param"], a["grad"], a["state_sum"]
    s += g * g
    p -= k["lr"] * g / (np.sqrt(s) + k["eps"])


def _sgd(a, k, t):
    p, g = a["param"], a["grad"]
    if k.get("momentum"):
        buf = a["momentum_buffer"]
        buf[:] = k["momentum"] * buf + g
        p -= k["lr"] * buf
    else:
        p -= k["lr"] * g


def _nadam(a, k, t, psi=4e-3):
    p, g, m, v = a["param"], a["grad"], a["exp_avg"], a["exp_avg_sq"]
    lr, b1, b2, eps = k["lr"], k["beta1"], k["beta2"], k["eps"]
    product = np.float32(1.0)       # torch keeps it in float32
    for i in range(1, t + 1):
        product = product * np.float32(b1 * (1 - 0.5 * 0.96 ** (i * psi)))
    mu, mu_next = (b1 * (1 - 0.5 * 0.96 ** (i * psi)) for i in (t, t + 1))
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v / (1 - b2 ** t)) + eps
    p -= lr * (1 - mu) / (1 - float(product)) * g / denom
    p -= lr * mu_next / (1 - float(product) * mu_next) * m / denom


def _asgd(a, k, t):
    p, g, ax = a["param"], a["grad"], a["ax"]
    lr, lambd, alpha, t0 = k["lr"], k["lambd"], k["alpha"], k["t0"]
    # torch's state before step t, stored in float32
    eta = float(np.float32(lr / (1 + lambd * lr * (t - 1)) ** alpha))
    mu = float(np.float32(1 / max(1, t - 1 - t0))) if t > 1 else 1.0
    p *= 1 - lambd * eta
    p -= eta * g
    if mu == 1:
        ax[:] = p
    else:
        ax += (p - ax) * mu


def _ftrl(a, k, t):
    """Keras's Ftrl, as its update_step writes it."""
    p, g, n, z = a["param"], a["grad"], a["accumulator"], a["linear"]
    lr, q = k["lr"], -k.get("lr_power", -0.5)
    l1, l2, l2s, beta = (k.get(key, 0.0) for key in ("l1", "l2", "l2_shrinkage", "beta"))
    new_n = n + g * g
    new_pow = new_n ** q
    z += (g + 2 * l2s * p) - ((new_pow - n ** q) / lr) * p
    quadratic = new_pow / lr + 2 * (l2 + beta / (2 * lr))
    p[:] = (np.clip(z, -l1, l1) - z) / quadratic
    n[:] = new_n


def _schedule_free_adamw(a, k, t):
    """Keras's ScheduleFreeAdamW (torch backend: x from the updated momentum)."""
    y, g, z, v = a["param"], a["grad"], a["momentum"], a["velocity"]
    b1, b2, warmup = k["beta1"], k["beta2"], k.get("warmup_steps", 0)
    lr = k["lr"] * min(t / warmup, 1.0) if warmup > 0 else k["lr"]
    v += (g * g - v) * (1 - b2)
    z -= lr * g / (np.sqrt(v / (1 - b2 ** t)) + k["eps"])
    x = (y - (1 - b1) * z) / b1
    x = (1 - 1 / t) * x + z / t
    y[:] = (1 - b1) * z + b1 * x


def _adadelta(a, k, t):
    p, g, s, d = a["param"], a["grad"], a["square_avg"], a["acc_delta"]
    rho, eps = k["rho"], k["eps"]
    s[:] = rho * s + (1 - rho) * g * g
    delta = np.sqrt(d + eps) / np.sqrt(s + eps) * g
    d[:] = rho * d + (1 - rho) * delta * delta
    p -= k["lr"] * delta


def _radam(a, k, t):
    p, g, m, v = a["param"], a["grad"], a["exp_avg"], a["exp_avg_sq"]
    lr, b1, b2, eps = k["lr"], k["beta1"], k["beta2"], k["eps"]
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2 ** t / c2
    if rho_t > 5:
        rect = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                       / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        p -= lr * m / c1 * rect * np.sqrt(c2) / (np.sqrt(v) + eps)
    else:
        p -= lr * m / c1


def _rprop(a, k, t):
    p, g, prev, size = a["param"], a["grad"], a["prev"], a["step_size"]
    c = g * prev
    size *= np.where(c > 0, k["etaplus"], np.where(c < 0, k["etaminus"], 1.0))
    np.clip(size, k["step_size_min"], k["step_size_max"], out=size)
    g = np.where(c < 0, 0.0, g)
    p -= np.sign(g) * size
    prev[:] = g


def _adamax(a, k, t):
    p, g, m, u = a["param"], a["grad"], a["exp_avg"], a["exp_inf"]
    b1 = k["beta1"]
    m[:] = b1 * m + (1 - b1) * g
    np.maximum(k["beta2"] * u, np.abs(g) + k["eps"], out=u)
    p -= k["lr"] / (1 - b1 ** t) * m / u


def _lion(a, k, t):
    """Keras's Lion."""
    p, g, m = a["param"], a["grad"], a["momentum"]
    b1, b2 = k["beta1"], k["beta2"]
    p -= k["lr"] * np.sign(b1 * m + (1 - b1) * g)
    m[:] = b2 * m + (1 - b2) * g


_UPDATES = {
    "adam": lambda a, k, t: _adam(a, k, t, amsgrad=k.get("amsgrad", False)),
    "adamw": lambda a, k, t: _adam(a, k, t, wd=k["weight_decay"]),
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
    "sgd": _sgd,
    "adamax": _adamax,
    "lion": _lion,
    "nadam": _nadam,
    "asgd": _asgd,
    "adadelta": _adadelta,
    "radam": _radam,
    "rprop": _rprop,
    "ftrl": _ftrl,
    "schedule_free_adamw": _schedule_free_adamw,
}


def make(case, sets):
    """``call(k)``: one NumPy step of `case` on buffer set k."""
    update = _UPDATES[case.fastopt]
    kwargs = case.kwargs
    steps = [10] * len(sets)

    def call(k):
        steps[k] += 1
        update(sets[k], kwargs, steps[k])

    return call
