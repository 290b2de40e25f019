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

The rows are `optimizer_db`'s functional option sets (adding an optimizer or
option = a row there); the state, the oracle's class, its argument names and
where it keeps its state come from the optimizer's spec (`fastopt.specs`).
"""
from dataclasses import dataclass, field

import numpy as np

import fastopt.functional as F
from fastopt.spec import PARAM
from optimizer_db import DB, KERAS, SPECS, TORCH, front_kwargs, keras_kwargs


@dataclass
class Case:
    """One row of the table.

    id:         unique, readable test id, e.g. "adam-amsgrad-torch".
    fn:         name of the fastopt.functional function.
    convention: "torch" or "keras"; also names the oracle library.
    hyper:      fastopt keyword hyperparameters (everything but `step`,
                `convention` and the arrays).
    initial_accumulator_value: the starting state of a slot that a
                hyperparameter fills (Adagrad's `state_sum`, Ftrl's
                `accumulator`); passed to the oracle under the same name.
    """

    id: str
    fn: str
    convention: str
    hyper: dict = field(default_factory=dict)
    initial_accumulator_value: float = 0.0


def _cases():
    """`optimizer_db`'s functional option sets, one `Case` each."""
    for info in DB:
        for convention, options in info.functional.items():
            for option, hyper in options.items():
                hyper = dict(hyper)
                initial = hyper.pop("initial_accumulator_value", 0.0)
                parts = [info.name] + ([] if option == "plain" else [option]) + [convention]
                yield Case("-".join(parts), info.name, convention, hyper, initial)


CASES = list(_cases())


# --- state and oracles: read off the specs --------------------------------
def _settings(case):
    """The case's hyperparameters as its spec checks them (a namespace)."""
    spec = SPECS[case.fn]
    values = [case.hyper.get(h.name, default) for h, default in spec.arguments]
    return spec.settings(case.fn, values + [case.convention])[2]


def state_names(case):
    """The fastopt state arguments this case uses, in slot order."""
    return SPECS[case.fn].state_names(_settings(case))


def make_state(case, param):
    """Initial state arrays for `param` keyed by fastopt argument name
    (zeros, the initial value a slot names: Adagrad's accumulator, Rprop's
    step size from lr, or a copy of the param: ScheduleFreeAdamW's momentum),
    as the caller must set them up."""
    slots = {s.name: s for s in SPECS[case.fn].slots}

    def initial(slot):
        if slot.init is PARAM:
            return param.copy()
        fill = slot.init
        if isinstance(fill, str):   # a hyperparameter's name: the case's value of it
            fill = case.hyper.get(fill, case.initial_accumulator_value)
        return np.full(param.shape, fill, param.dtype)

    return {name: initial(slots[name]) for name in state_names(case)}


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
    for slot in spec.slots:     # a slot filled from a front-end-only option (Adagrad, Ftrl)
        if isinstance(slot.init, str) and not spec.hyper(slot.init).functional:
            kwargs[slot.init] = case.initial_accumulator_value
    for key in spec.fixed:   # AdamW's decoupled decay is its class, not an argument
        kwargs.pop(key, None)
    kwargs = (keras_kwargs(spec, kwargs) if case.convention == KERAS
              else front_kwargs(front, kwargs))
    slots = {s.name: s for s in spec.slots}
    states = {n: getattr(slots[n], case.convention) for n in state_names(case)}
    return Oracle(case.convention, front.cls, kwargs, states)
