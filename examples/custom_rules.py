"""Optimizers declared with `fastopt.rule` (docs/custom-rules.md).

* `adam`: Keras's Adam re-declared, which runs bit for bit as
  ``fastopt.functional.adam(..., convention="keras")``;
* `signum`: sign-based momentum (Bernstein et al. 2018), a rule with state;
* `adabelief`: AdaBelief (Zhuang et al. 2020), a rule with host-side scalars
  (its bias corrections, functions of the step).

Time a rule next to the built-in::

    python -m fastopt.bench --optimizers adam_keras --rule examples/custom_rules.py:adam
"""
import math

import fastopt
from fastopt import sign


def _adam_scalars(step, lr, beta1, beta2):
    # In float64 on the host, once a step: exactly what the built-in computes.
    c1 = 1.0 - beta1 ** step
    sqrt_c2 = math.sqrt(1.0 - beta2 ** step)
    return {"alpha": lr * sqrt_c2 / c1,
            "one_minus_beta1": 1.0 - beta1, "one_minus_beta2": 1.0 - beta2}


@fastopt.rule(state=("m", "v"),
              hyper={"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7},
              scalars=_adam_scalars)
def adam(p, g, m, v, alpha, beta1, one_minus_beta1, beta2, one_minus_beta2, eps):
    """Adam, Keras's form: p ← p − α·m / (sqrt(v) + ε), α = lr·sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ)."""
    m = beta1 * m + one_minus_beta1 * g
    v = beta2 * v + one_minus_beta2 * (g * g)
    return p - alpha * m / (math.sqrt(v) + eps), m, v


@fastopt.rule(state=("m",), hyper={"lr": 1e-3, "beta": 0.9})
def signum(p, g, m, lr, beta):
    """Signum: m ← β·m + (1 − β)·g;  p ← p − lr·sign(m)."""
    m = beta * m + (1 - beta) * g
    return p - lr * sign(m), m


def _adabelief_scalars(step, lr, beta1, beta2):
    return {"step_size": lr / (1.0 - beta1 ** step),
            "inv_sqrt_c2": 1.0 / math.sqrt(1.0 - beta2 ** step)}


@fastopt.rule(state=("m", "s"),
              hyper={"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-16},
              scalars=_adabelief_scalars)
def adabelief(p, g, m, s, step_size, inv_sqrt_c2, beta1, beta2, eps):
    """AdaBelief: m ← β₁·m + (1 − β₁)·g;  s ← β₂·s + (1 − β₂)·(g − m)² + ε;
    p ← p − lr/(1 − β₁ᵗ) · m / (sqrt(s)/sqrt(1 − β₂ᵗ) + ε)."""
    m = beta1 * m + (1 - beta1) * g
    d = g - m
    s = beta2 * s + (1 - beta2) * (d * d) + eps
    return p - step_size * m / (math.sqrt(s) * inv_sqrt_c2 + eps), m, s
