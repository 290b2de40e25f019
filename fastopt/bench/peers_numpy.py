"""Plain NumPy peers: the update as a user would first write it.

Whole-array expressions with their temporaries, in place on the same arrays
fastopt updates, torch's convention and hyperparameters (from `cases.CASES`).
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


_UPDATES = {
    "adam": lambda a, k, t: _adam(a, k, t, amsgrad=k.get("amsgrad", False)),
    "adamw": lambda a, k, t: _adam(a, k, t, wd=k["weight_decay"]),
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
    "sgd": _sgd,
    "adadelta": _adadelta,
    "radam": _radam,
    "rprop": _rprop,
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
