"""The optimizer table: every optimizer x option x convention, once.

Each `Case` is one fastopt.functional call pattern together with the real
library optimizer that must produce the same trajectory: torch.optim for the
"torch" convention, Keras 3 (torch backend) for the "keras" convention. The
oracle's class and keyword arguments are derived from the case's
hyperparameters by renaming, so each value is written once.

Keras cases use only hyperparameters exactly representable in float32 (powers
of two, 0.875, 1 - 2**-10, ...): Keras keeps the learning rate as a float32
variable and forms ``1 - wd*lr`` and clip bounds in float32 even for float64
variables, so any other value would make a float64 comparison at 1e-12 fail
for a reason that is Keras's rounding, not fastopt's. Epsilons are Python
floats in Keras's update code and need no such care. torch.optim computes in
float64 on the host, so torch cases use ordinary values.

Adding an optimizer or option = adding a row to `CASES`: the state, the
oracle's class, its argument names and where it keeps its state come from
the optimizer's spec (`fastopt.specs`).
"""
from dataclasses import dataclass, field

import numpy as np

import fastopt.functional as F
import fastopt.specs

TORCH, KERAS = "torch", "keras"


@dataclass
class Case:
    """One row of the table.

    id:         unique, readable test id, e.g. "adam-amsgrad-torch".
    fn:         name of the fastopt.functional function.
    convention: "torch" or "keras"; also names the oracle library.
    hyper:      fastopt keyword hyperparameters (everything but `step`,
                `convention` and the arrays).
    initial_accumulator_value: Adagrad's starting state (fills `state_sum`);
                passed to the oracle under the same name.
    """

    id: str
    fn: str
    convention: str
    hyper: dict = field(default_factory=dict)
    initial_accumulator_value: float = 0.0


# --- hyperparameter sets ----------------------------------------------------
# torch: ordinary values (torch.optim works in float64 on the host).
_T_SGD = dict(lr=0.05)
_T_ADAGRAD = dict(lr=0.1, eps=1e-10)
_T_RMSPROP = dict(lr=0.01, alpha=0.99, eps=1e-8)
_T_ADAM = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
# keras: float32-exact values (see the module docstring).
_K_SGD = dict(lr=2.0**-5)
_K_ADAGRAD = dict(lr=2.0**-4, eps=1e-7)
_K_RMSPROP = dict(lr=2.0**-7, alpha=0.875, eps=1e-7)
_K_ADAM = dict(lr=2.0**-7, beta1=0.875, beta2=1.0 - 2.0**-10, eps=1e-7)
_T_ADAMAX = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)


def _case(id, fn, convention, base, **options):
    initial = options.pop("initial_accumulator_value", 0.0)
    return Case(id, fn, convention, {**base, **options}, initial)


CASES = [
    # SGD, torch
    _case("sgd-torch", "sgd", TORCH, _T_SGD),
    _case("sgd-momentum-torch", "sgd", TORCH, _T_SGD, momentum=0.9),
    _case("sgd-nesterov-torch", "sgd", TORCH, _T_SGD, momentum=0.9, nesterov=True),
    _case("sgd-dampening-torch", "sgd", TORCH, _T_SGD, momentum=0.9, dampening=0.3),
    _case("sgd-weight-decay-torch", "sgd", TORCH, _T_SGD, weight_decay=0.01),
    _case("sgd-momentum-weight-decay-torch", "sgd", TORCH, _T_SGD, momentum=0.9,
          weight_decay=0.01),
    _case("sgd-maximize-torch", "sgd", TORCH, _T_SGD, maximize=True),
    _case("sgd-nesterov-weight-decay-maximize-torch", "sgd", TORCH, _T_SGD,
          momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True),
    # SGD, keras
    _case("sgd-keras", "sgd", KERAS, _K_SGD),
    _case("sgd-momentum-keras", "sgd", KERAS, _K_SGD, momentum=0.875),
    _case("sgd-nesterov-keras", "sgd", KERAS, _K_SGD, momentum=0.875, nesterov=True),
    _case("sgd-weight-decay-keras", "sgd", KERAS, _K_SGD, weight_decay=2.0**-4),
    _case("sgd-momentum-weight-decay-keras", "sgd", KERAS, _K_SGD, momentum=0.875,
          weight_decay=2.0**-4),
    _case("sgd-momentum-clip-keras", "sgd", KERAS, _K_SGD, momentum=0.875,
          clip_value=0.25),
    # Adagrad
    _case("adagrad-torch", "adagrad", TORCH, _T_ADAGRAD),
    _case("adagrad-initial-accumulator-torch", "adagrad", TORCH, _T_ADAGRAD,
          initial_accumulator_value=0.1),
    _case("adagrad-lr-decay-torch", "adagrad", TORCH, _T_ADAGRAD, lr_decay=0.05),
    _case("adagrad-weight-decay-maximize-torch", "adagrad", TORCH, _T_ADAGRAD,
          weight_decay=0.01, maximize=True, initial_accumulator_value=0.5),
    _case("adagrad-keras", "adagrad", KERAS, _K_ADAGRAD,
          initial_accumulator_value=0.1),                   # Keras's default
    _case("adagrad-zero-accumulator-keras", "adagrad", KERAS, _K_ADAGRAD,
          initial_accumulator_value=0.0),
    _case("adagrad-weight-decay-clip-keras", "adagrad", KERAS, _K_ADAGRAD,
          weight_decay=2.0**-8, clip_value=0.25, initial_accumulator_value=0.1),
    # RMSprop
    _case("rmsprop-torch", "rmsprop", TORCH, _T_RMSPROP),
    _case("rmsprop-momentum-torch", "rmsprop", TORCH, _T_RMSPROP, momentum=0.9),
    _case("rmsprop-centered-torch", "rmsprop", TORCH, _T_RMSPROP, centered=True),
    _case("rmsprop-centered-momentum-torch", "rmsprop", TORCH, _T_RMSPROP,
          centered=True, momentum=0.9),
    _case("rmsprop-weight-decay-maximize-torch", "rmsprop", TORCH, _T_RMSPROP,
          momentum=0.9, weight_decay=0.01, maximize=True),
    _case("rmsprop-keras", "rmsprop", KERAS, _K_RMSPROP),
    _case("rmsprop-momentum-keras", "rmsprop", KERAS, _K_RMSPROP, momentum=0.875),
    _case("rmsprop-centered-keras", "rmsprop", KERAS, _K_RMSPROP, centered=True),
    _case("rmsprop-centered-momentum-keras", "rmsprop", KERAS, _K_RMSPROP,
          centered=True, momentum=0.875),
    _case("rmsprop-weight-decay-keras", "rmsprop", KERAS, _K_RMSPROP,
          weight_decay=2.0**-8),
    # Adam, AMSGrad, AdamW
    _case("adam-torch", "adam", TORCH, _T_ADAM),
    _case("adam-amsgrad-torch", "adam", TORCH, _T_ADAM, amsgrad=True),
    _case("adam-weight-decay-torch", "adam", TORCH, _T_ADAM, weight_decay=0.01),
    _case("adam-maximize-torch", "adam", TORCH, _T_ADAM, maximize=True),
    _case("adam-decoupled-weight-decay-torch", "adam", TORCH, _T_ADAM,
          weight_decay=0.01, decoupled_weight_decay=True),
    _case("adamw-torch", "adamw", TORCH, _T_ADAM, weight_decay=0.01),
    _case("adamw-amsgrad-maximize-torch", "adamw", TORCH, _T_ADAM, weight_decay=0.01,
          amsgrad=True, maximize=True),
    _case("adam-keras", "adam", KERAS, _K_ADAM),
    _case("adam-amsgrad-keras", "adam", KERAS, _K_ADAM, amsgrad=True),
    _case("adam-clip-keras", "adam", KERAS, _K_ADAM, clip_value=0.25),
    _case("adamw-keras", "adamw", KERAS, _K_ADAM, weight_decay=2.0**-8),
    _case("adamw-amsgrad-keras", "adamw", KERAS, _K_ADAM, weight_decay=2.0**-8,
          amsgrad=True),
    # Adamax
    _case("adamax-weight-decay-maximize-torch", "adamax", TORCH, _T_ADAMAX,
          weight_decay=0.01, maximize=True),
    _case("adamax-keras", "adamax", KERAS, _K_ADAM),
]


# --- state and oracles: read off the specs --------------------------------
SPECS = {spec.name: spec for spec in fastopt.specs.SPECS}


def _settings(case):
    """The case's hyperparameters as its spec checks them (a namespace)."""
    spec = SPECS[case.fn]
    values = [case.hyper.get(h.name, default) for h, default in spec.arguments]
    return spec.settings(case.fn, values + [case.convention])[2]


def state_names(case):
    """The fastopt state arguments this case uses, in slot order."""
    return SPECS[case.fn].state_names(_settings(case))


def make_state(case, shape, dtype):
    """Initial state arrays keyed by fastopt argument name (zeros, or the
    initial value a slot names: Adagrad's accumulator), as the caller must
    set them up."""
    slots = {s.name: s for s in SPECS[case.fn].slots}
    return {name: np.full(shape, case.initial_accumulator_value
                          if isinstance(slots[name].init, str) else slots[name].init, dtype)
            for name in state_names(case)}


def fastopt_step(case, param, grad, state, step):
    """One in-place fastopt.functional call for `case` (NumPy or device arrays)."""
    getattr(F, case.fn)(param, grad, **state, step=step,
                        convention=case.convention, **case.hyper)


@dataclass
class Oracle:
    """The real optimizer for a case: `library` ("torch" or "keras"), the class
    name there, its constructor keywords, and where each fastopt state lives
    (torch: state-dict key; Keras: the variable's name suffix)."""

    library: str
    cls: str
    kwargs: dict
    states: dict


def oracle(case):
    """The torch.optim or Keras optimizer that `case` must agree with: the
    spec's front end for the case's convention names the class, its
    arguments and its state."""
    spec = SPECS[case.fn]
    front = spec.torch if case.convention == TORCH else spec.keras
    kwargs = dict(case.hyper)
    if case.fn == "adagrad":
        kwargs["initial_accumulator_value"] = case.initial_accumulator_value
    for key in spec.fixed:   # AdamW's decoupled decay is its class, not an argument
        kwargs.pop(key, None)
    renamed = {}
    for param in front.parameters():
        name = front.canonical(param.name)
        if isinstance(name, tuple):      # torch's betas
            if name[0] in kwargs:
                renamed[param.name] = tuple(kwargs.pop(n) for n in name)
        elif name in kwargs and name != param.name:
            renamed[param.name] = kwargs.pop(name)
    if case.convention == KERAS and "clip_value" in kwargs:
        renamed["clipvalue"] = kwargs.pop("clip_value")
    slots = {s.name: s for s in spec.slots}
    states = {n: getattr(slots[n], case.convention) for n in state_names(case)}
    return Oracle(case.convention, front.cls, {**kwargs, **renamed}, states)
