"""The Keras-style optimizer table, and the runs that compare fastopt with Keras.

Every row is one optimizer configuration in Keras's own argument names; the
same kwargs build ``fastopt.<Name>`` and ``keras.optimizers.<Name>`` (torch
backend), both run the same gradient stream, and the params must agree.

Values are exactly representable in float32 wherever Keras rounds them to
float32 even for float64 variables (the learning rate, weight decay, clip
bounds; see the spec's last section): lr = 2**-7, wd = 2**-8, clipvalue =
0.25, clip norms 0.5 and 1.0, a schedule of powers of two. Other
hyperparameters (betas, rho, epsilons, momentum) reach Keras's update code as
Python floats, in float64, so their defaults are kept.

Adding an optimizer = its entry in `optimizer_db` (`VARIANTS` is read from
there); adding a base option = a line in `OPTIONS`; every test iterates
`CASES`.
"""
from dataclasses import dataclass

import numpy as np

from optimizer_db import KERAS_DB, keras_kwargs

LR = 2.0 ** -7
SHAPES = [(3, 4), (5,), (2, 3, 2)]
STEPS = 50

# optimizer -> its own option sets, in Keras's names (from `optimizer_db`).
VARIANTS = {info.spec.keras.cls: {option: keras_kwargs(info.spec, values)
                                  for option, values in info.keras.items()}
            for info in KERAS_DB}


def staircase_schedule():
    """A Keras LearningRateSchedule: 2**-6 halved every 10 steps (float32-exact)."""
    import keras
    return keras.optimizers.schedules.ExponentialDecay(
        2.0 ** -6, decay_steps=10, decay_rate=0.5, staircase=True)


# base-optimizer option -> (kwargs, float64 tolerance)
OPTIONS = {
    "none": ({}, 1e-12),
    "weight_decay": ({"weight_decay": 2.0 ** -8}, 1e-12),
    "clipnorm": ({"clipnorm": 0.5}, 1e-8),
    "global_clipnorm": ({"global_clipnorm": 1.0}, 1e-8),
    "clipvalue": ({"clipvalue": 0.25}, 1e-12),
    "schedule": ({"learning_rate": staircase_schedule}, 1e-12),
}
TOL32 = 1e-5


@dataclass(frozen=True)
class Case:
    id: str
    name: str           # the class name in fastopt and in keras.optimizers
    kwargs: tuple       # sorted (key, value) pairs; callables are factories
    tol64: float

    def make_kwargs(self):
        """Fresh constructor kwargs (a new schedule object per optimizer)."""
        out = {"learning_rate": LR}
        for key, value in self.kwargs:
            out[key] = value() if callable(value) else value
        return out


def tol64(name, option):
    """The float64 tolerance of optimizer `name` with base option `option`
    (an `OPTIONS` key): the option's, unless the optimizer's entry says more."""
    return _TOL64.get(name, {}).get(option, OPTIONS[option][1])


_TOL64 = {info.spec.keras.cls: info.keras_tol64 for info in KERAS_DB}


def _cases():
    for name, variants in VARIANTS.items():
        for vid, vkw in variants.items():
            for oid, (okw, tol) in OPTIONS.items():
                if oid == "weight_decay" and "weight_decay" in vkw:
                    continue    # AdamW rows already decay
                kwargs = {**vkw, **okw}
                yield Case(f"{name}-{vid}-{oid}", name,
                           tuple(sorted(kwargs.items())), tol64(name, oid))


CASES = list(_cases())


def make_problem(seed, dtype, shapes=SHAPES, steps=STEPS):
    """Initial params and a stream of gradients (one list per step)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[(rng.standard_normal(s) * 2).astype(dtype) for s in shapes]
             for _ in range(steps)]
    return params, grads


def run_keras(name, kwargs, params, grads, *, on_step=None):
    """Final params after Keras's optimizer `name` applies `grads` (None: skipped)."""
    import keras
    import torch

    opt = getattr(keras.optimizers, name)(**kwargs)
    dtype = params[0].dtype.name
    variables = [keras.Variable(p.copy(), dtype=dtype) for p in params]
    for step, gs in enumerate(grads):
        if on_step is not None:
            on_step(opt, step)
        pairs = [(None if g is None else torch.from_numpy(g.copy()), v)
                 for g, v in zip(gs, variables)]
        opt.apply_gradients(pairs)
    assert int(opt.iterations) == len(grads)
    return [np.asarray(v.numpy()) for v in variables]


def run_fastopt(name, kwargs, params, grads, target, *, on_step=None):
    """Final params (on the host) after fastopt's optimizer `name` on `target`."""
    import fastopt

    opt = getattr(fastopt, name)(**kwargs)
    arrays = [target.put(p) for p in params]
    for step, gs in enumerate(grads):
        if on_step is not None:
            on_step(opt, step)
        opt.apply_gradients(zip([None if g is None else target.put(g) for g in gs],
                                arrays))
    assert opt.iterations == len(grads)
    return [target.get(a) for a in arrays]


def rel_err(got, want):
    """Largest error relative to the variable's scale, over all variables."""
    return max(float(np.max(np.abs(g - w)) / np.max(np.abs(w)))
               for g, w in zip(got, want))
