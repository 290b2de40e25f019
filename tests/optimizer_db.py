"""Every optimizer's test rows, one entry each: the test suite's OptimizerInfo.

An entry (`OptimizerInfo`) is keyed by its spec (`fastopt.specs.SPECS`) and
holds, in fastopt's words (``lr``, ``beta1``, ``eps``, ``clip_value``):

* functional:   option sets of `fastopt.functional`, per convention, checked
                against torch.optim / Keras (`optimizer_table`);
* keras, torch: option sets of the Keras-style and torch classes, checked
                against Keras / torch.optim (`keras_table`, `torch_table`); their
                Keras and torch argument names come from the spec's `Front`s
                (None where that library has no such optimizer);
* torch_group, interchange: the torch front's second param group, and the
                option set that resumes through a checkpoint;
* lists:        list-form calls, each with the kernel rule it must select;
* calls:        one valid functional call per convention with all the state in
                use, which bad input breaks one thing of;
* errors:       bad hyperparameter values (`ErrorInput`), each refused by every
                front end that has the option;
* dtypes.

Adding an optimizer = its spec, then one entry in `DB`; every test iterates
these rows, and `test_optimizer_db` fails for a spec without an entry.

Keras rows (functional "keras" and `keras`) keep the learning rate, weight
decay and clip bound exactly representable in float32 (see `optimizer_table`:
Keras forms those in float32 even for float64 variables, so any other value
would fail a 1e-12 comparison for Keras's rounding, not fastopt's).
"""
from dataclasses import dataclass, field

import numpy as np

import fastopt.specs
from fastopt.specs import (ADADELTA, ADAGRAD, ADAM, ADAMAX, ADAMW, ASGD, FTRL, LION, NADAM,
                           RADAM, RMSPROP, RPROP, SCHEDULE_FREE_ADAMW, SGD)

TORCH, KERAS = "torch", "keras"
DTYPES = (np.float32, np.float64)
# The Keras base class's options, by fastopt name (every Keras optimizer has them).
KERAS_BASE = {"weight_decay": "weight_decay", "clip_value": "clipvalue"}


@dataclass(frozen=True)
class ErrorInput:
    """A hyperparameter value every front end with the option refuses.

    kwargs:  fastopt names -> values, overriding a valid call's.
    error:   the exception type (the same in every front end).
    arg:     the argument the message names, in fastopt's words; the
             functional and Keras-style messages say ``<fn>(): <its name in
             that front end> <match>``.
    torch:   fastopt.torch's message (torch's words, e.g. "Invalid learning
             rate: -0.001"), None where the torch class has no such option.
    keras:   the Keras-style class's message where Keras checks the value
             itself (Keras's words, e.g. Ftrl's "`learning_rate_power` needs
             to be negative or zero. ..."), None where fastopt's is used.
    torch_optim: what torch.optim does with the same arguments: "same" (the
             same type, and its message before the first colon in ours),
             "type" (the same type in its own words), "accepts" (fastopt is
             stricter, as the README says); or {class name: that}, "same"
             for the classes it leaves out.
    conventions: those the functional call refuses it under (only those
             fronts run it).
    """

    id: str
    kwargs: dict
    error: type
    arg: str
    match: str
    torch: str = None
    torch_optim: str = "same"
    conventions: tuple = (KERAS, TORCH)
    keras: str = None

    def torch_optim_for(self, cls):
        """What torch.optim.`cls` does with these arguments (see above)."""
        if isinstance(self.torch_optim, dict):
            return self.torch_optim.get(cls, "same")
        return self.torch_optim


# Every optimizer's: the step count, the shared options, the convention.
COMMON_ERRORS = (
    ErrorInput("step-zero", dict(step=0), ValueError, "step", r"must be >= 1"),
    ErrorInput("step-float", dict(step=1.0), TypeError, "step", r"must be an int"),
    ErrorInput("step-bool", dict(step=True), TypeError, "step", r"must be an int"),
    ErrorInput("lr-negative", dict(lr=-1e-3), ValueError, "lr", r"must be in [\[(]0.0, inf\]",
               torch=r"Invalid learning rate: -0.001"),
    ErrorInput("lr-nan", dict(lr=float("nan")), ValueError, "lr", r"must be finite",
               torch=r"Invalid learning rate: nan",
               torch_optim={"SGD": "accepts"}),     # its check is lr < 0
    ErrorInput("lr-inf", dict(lr=float("inf")), ValueError, "lr", r"must be finite",
               torch=r"Invalid learning rate: inf", torch_optim="accepts"),
    ErrorInput("lr-string", dict(lr="0.1"), TypeError, "lr", r"must be a real number",
               torch=r"learning rate must be a real number, got str", torch_optim="type"),
    ErrorInput("weight-decay-negative", dict(weight_decay=-0.1), ValueError, "weight_decay",
               r"must be in", torch=r"Invalid weight_decay value: -0.1"),
    ErrorInput("clip-negative", dict(clip_value=-1.0), ValueError, "clip_value", r"must be in"),
    ErrorInput("grad-scale-nan", dict(grad_scale=float("nan")), ValueError, "grad_scale",
               r"must be finite"),
    ErrorInput("maximize-not-bool", dict(maximize=1), TypeError, "maximize",
               r"must be True or False", torch=r"maximize must be True or False, got 1",
               torch_optim="accepts"),
    ErrorInput("convention-unknown", dict(convention="jax"), ValueError, "convention",
               r"must be 'keras' or 'torch'"),
)


def _eps_positive(value):
    """eps = `value` <= 0, where fastopt needs eps > 0 (torch allows 0)."""
    return ErrorInput(f"eps-{'zero' if value == 0 else 'negative'}", dict(eps=value),
                      ValueError, "eps", r"must be in \(0.0, inf\]",
                      torch=rf"Invalid epsilon value \(fastopt needs eps > 0\): {value}",
                      torch_optim="accepts" if value == 0 else "same")


def _beta(index, value):
    """One of Adam's and Adamax's betas out of [0, 1)."""
    name = f"beta{index + 1}"
    return ErrorInput(f"{name}-{'one' if value == 1 else 'negative'}", {name: value},
                      ValueError, name, r"must be in \[0.0, 1.0\)" if value == 1 else "must be in",
                      torch=rf"Invalid beta parameter at index {index}: {value}")


def _momentum_negative(value, id="momentum-negative"):
    return ErrorInput(id, dict(momentum=value), ValueError, "momentum", r"must be in",
                      torch=rf"Invalid momentum value: {value}")


_ADAM_ERRORS = (_eps_positive(0.0), _beta(0, 1.0), _beta(1, -0.5))


@dataclass(frozen=True)
class ListRow:
    """A list-form call (`test_multi_tensor`): `hyper` under `convention`,
    state filled with `init`; it must run kernel rule `rule`."""

    id: str
    rule: str
    convention: str
    hyper: dict
    init: float = 0.0


@dataclass(frozen=True)
class OptimizerInfo:
    """One optimizer's rows (see the module docstring). Option sets map an
    option id to fastopt-named values; functional ids drop "plain"."""

    spec: object
    functional: dict
    keras: dict                 # None: Keras has no such optimizer
    lists: tuple
    calls: dict
    torch: dict = None          # None: torch.optim has no such optimizer
    torch_group: dict = None
    interchange: str = None
    errors: tuple = ()
    dtypes: tuple = DTYPES
    keras_tol64: dict = field(default_factory=dict)   # Keras base option -> float64 tolerance

    @property
    def name(self):
        return self.spec.name

    def all_errors(self):
        return COMMON_ERRORS + self.errors


def _on(base, options):
    """Each option set of `options` on top of the shared `base` values."""
    return {option: {**base, **values} for option, values in options.items()}


_T_ADAM = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
# float32-exact where Keras rounds (see the module docstring)
_K_ADAM = dict(lr=2.0**-7, beta1=0.875, beta2=1.0 - 2.0**-10, eps=1e-7)
_ADAM_LIST = dict(lr=1e-3, beta1=0.9, beta2=0.999)
_TORCH_BETAS = {"plain": dict(lr=0.01),
                "betas_eps": dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6)}

DB = (
    OptimizerInfo(
        SGD,
        functional={
            TORCH: _on(dict(lr=0.05), {
                "plain": {}, "momentum": dict(momentum=0.9),
                "nesterov": dict(momentum=0.9, nesterov=True),
                "dampening": dict(momentum=0.9, dampening=0.3),
                "weight-decay": dict(weight_decay=0.01),
                "momentum-weight-decay": dict(momentum=0.9, weight_decay=0.01),
                "maximize": dict(maximize=True),
                "nesterov-weight-decay-maximize": dict(momentum=0.9, nesterov=True,
                                                       weight_decay=0.01, maximize=True)}),
            KERAS: _on(dict(lr=2.0**-5), {
                "plain": {}, "momentum": dict(momentum=0.875),
                "nesterov": dict(momentum=0.875, nesterov=True),
                "weight-decay": dict(weight_decay=2.0**-4),
                "momentum-weight-decay": dict(momentum=0.875, weight_decay=2.0**-4),
                "momentum-clip": dict(momentum=0.875, clip_value=0.25)}),
        },
        keras={"plain": {}, "momentum": dict(momentum=0.5),
               "nesterov": dict(momentum=0.5, nesterov=True)},
        torch=_on(dict(lr=0.05), {
            "plain": {}, "momentum": dict(momentum=0.9),
            "dampening": dict(momentum=0.9, dampening=0.3),
            "nesterov": dict(momentum=0.9, nesterov=True),
            "weight_decay": dict(momentum=0.5, weight_decay=0.01),
            "maximize": dict(momentum=0.9, maximize=True)}),
        torch_group=dict(lr=0.02, momentum=0.5, weight_decay=0.02),
        interchange="dampening",
        lists=(ListRow("sgd", "sgd", KERAS, dict(lr=0.1, maximize=True)),
               ListRow("sgd-keras-nesterov", "sgd_momentum_keras", KERAS,
                       dict(lr=0.1, momentum=0.9, nesterov=True, clip_value=0.5)),
               ListRow("sgd-torch", "sgd_momentum_torch", TORCH,
                       dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01))),
        calls={KERAS: dict(step=1, lr=0.1, momentum=0.9, nesterov=True),
               TORCH: dict(step=2, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)},
        errors=(
            _momentum_negative(-0.1),
            _momentum_negative(-0.5, "momentum-minus-half"),      # torch's optim_db
            ErrorInput("momentum-above-one", dict(momentum=1.5), ValueError, "momentum",
                       r"must be in \[0.0, 1.0\]", conventions=(KERAS,)),
            ErrorInput("dampening-in-keras", dict(dampening=0.5, nesterov=False), ValueError,
                       "dampening", r"is a torch option", conventions=(KERAS,)),
            ErrorInput("dampening-above-one", dict(dampening=2.0), ValueError, "dampening",
                       r"must be in \[0.0, 1.0\]", torch=r"Invalid dampening value: 2.0",
                       torch_optim="accepts", conventions=(TORCH,)),
            ErrorInput("nesterov-without-momentum",
                       dict(nesterov=True, momentum=0.0, dampening=0.0), ValueError,
                       "nesterov", r"requires momentum > 0",
                       torch=r"Nesterov momentum requires a momentum and zero dampening",
                       conventions=(TORCH,)),
            ErrorInput("nesterov-with-dampening", dict(nesterov=True, momentum=0.9, dampening=0.1),
                       ValueError, "nesterov", r"requires momentum > 0 and dampening == 0",
                       torch=r"Nesterov momentum requires a momentum and zero dampening",
                       conventions=(TORCH,)),
        ),
    ),
    OptimizerInfo(
        ADAGRAD,
        functional={
            TORCH: _on(dict(lr=0.1, eps=1e-10), {
                "plain": {}, "initial-accumulator": dict(initial_accumulator_value=0.1),
                "lr-decay": dict(lr_decay=0.05),
                "weight-decay-maximize": dict(weight_decay=0.01, maximize=True,
                                              initial_accumulator_value=0.5)}),
            KERAS: _on(dict(lr=2.0**-4, eps=1e-7), {
                "plain": dict(initial_accumulator_value=0.1),     # Keras's default
                "zero-accumulator": dict(initial_accumulator_value=0.0),
                "weight-decay-clip": dict(weight_decay=2.0**-8, clip_value=0.25,
                                          initial_accumulator_value=0.1)}),
        },
        keras={"plain": {}, "init": dict(initial_accumulator_value=0.25, eps=1e-6)},
        torch=_on(dict(lr=0.05), {
            "plain": {}, "lr_decay": dict(lr_decay=0.01),
            "initial_accumulator_value": dict(initial_accumulator_value=0.1, eps=1e-6),
            "weight_decay": dict(weight_decay=0.01), "maximize": dict(maximize=True)}),
        torch_group=dict(lr=0.02, lr_decay=0.05, weight_decay=0.02),
        interchange="initial_accumulator_value",
        lists=(ListRow("adagrad-keras", "adagrad_keras", KERAS, dict(lr=0.1, eps=1e-7),
                       init=0.1),
               ListRow("adagrad-torch", "adagrad_torch", TORCH,
                       dict(lr=0.1, eps=1e-10, lr_decay=0.01))),
        calls={KERAS: dict(step=1, lr=0.1, eps=1e-7),
               TORCH: dict(step=1, lr=0.1, eps=1e-10, lr_decay=0.01)},
        errors=(
            _eps_positive(0.0), _eps_positive(-1e-10),
            ErrorInput("lr-decay-negative", dict(lr_decay=-0.5), ValueError, "lr_decay",
                       r"must be in", torch=r"Invalid lr_decay value: -0.5",
                       conventions=(TORCH,)),                      # torch's optim_db
            ErrorInput("lr-decay-in-keras", dict(lr_decay=0.01), ValueError, "lr_decay",
                       r"is a torch option", conventions=(KERAS,)),
            ErrorInput("initial-accumulator-negative", dict(initial_accumulator_value=-1),
                       ValueError, "initial_accumulator_value", r"must be in",
                       torch=r"Invalid initial_accumulator_value value: -1"),
        ),
    ),
    OptimizerInfo(
        RMSPROP,
        functional={
            TORCH: _on(dict(lr=0.01, alpha=0.99, eps=1e-8), {
                "plain": {}, "momentum": dict(momentum=0.9), "centered": dict(centered=True),
                "centered-momentum": dict(centered=True, momentum=0.9),
                "weight-decay-maximize": dict(momentum=0.9, weight_decay=0.01,
                                              maximize=True)}),
            KERAS: _on(dict(lr=2.0**-7, alpha=0.875, eps=1e-7), {
                "plain": {}, "momentum": dict(momentum=0.875), "centered": dict(centered=True),
                "centered-momentum": dict(centered=True, momentum=0.875),
                "weight-decay": dict(weight_decay=2.0**-8)}),
        },
        keras={"plain": {}, "momentum": dict(momentum=0.5), "centered": dict(centered=True),
               "centered-momentum": dict(centered=True, momentum=0.5)},
        torch=_on(dict(lr=0.005), {
            "plain": {}, "alpha": dict(alpha=0.9, eps=1e-6), "momentum": dict(momentum=0.5),
            "centered": dict(centered=True),
            "centered_momentum": dict(centered=True, momentum=0.5),
            "weight_decay": dict(weight_decay=0.01), "maximize": dict(maximize=True)}),
        torch_group=dict(lr=0.002, alpha=0.95, weight_decay=0.02),
        interchange="alpha",
        lists=(ListRow("rmsprop-keras-centered-momentum", "rmsprop_keras", KERAS,
                       dict(lr=1e-3, alpha=0.9, eps=1e-7, momentum=0.5, centered=True)),
               ListRow("rmsprop-torch", "rmsprop_torch", TORCH,
                       dict(lr=1e-2, alpha=0.99, eps=1e-8, grad_scale=0.5))),
        calls={KERAS: dict(step=1, lr=1e-3, alpha=0.9, eps=1e-7, momentum=0.5, centered=True),
               TORCH: dict(step=2, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.5,
                           centered=True)},
        errors=(
            _eps_positive(0.0), _eps_positive(-1),
            ErrorInput("alpha-above-one", dict(alpha=1.5), ValueError, "alpha",
                       r"must be in \[0.0, 1.0\]",
                       torch=r"Invalid alpha value \(fastopt needs 0 <= alpha <= 1\): 1.5",
                       torch_optim="accepts"),
            ErrorInput("alpha-negative", dict(alpha=-0.1), ValueError, "alpha", r"must be in",
                       torch=r"Invalid alpha value \(fastopt needs 0 <= alpha <= 1\): -0.1"),
            _momentum_negative(-0.1),
            _momentum_negative(-1.0, "momentum-minus-one"),       # torch's optim_db
        ),
    ),
    OptimizerInfo(
        ADAM,
        functional={
            TORCH: _on(_T_ADAM, {
                "plain": {}, "amsgrad": dict(amsgrad=True),
                "weight-decay": dict(weight_decay=0.01), "maximize": dict(maximize=True),
                "decoupled-weight-decay": dict(weight_decay=0.01,
                                               decoupled_weight_decay=True)}),
            KERAS: _on(_K_ADAM, {"plain": {}, "amsgrad": dict(amsgrad=True),
                                 "clip": dict(clip_value=0.25)}),
        },
        keras={"plain": {}, "amsgrad": dict(amsgrad=True)},
        torch={**_TORCH_BETAS, "amsgrad": dict(lr=0.01, amsgrad=True),
               "weight_decay": dict(lr=0.01, weight_decay=0.05),
               "decoupled_weight_decay": dict(lr=0.01, weight_decay=0.05,
                                              decoupled_weight_decay=True),
               "maximize": dict(lr=0.01, maximize=True, amsgrad=True)},
        torch_group=dict(lr=0.003, beta1=0.5, beta2=0.9, weight_decay=0.02),
        interchange="amsgrad",
        lists=(ListRow("adam-keras", "adam", KERAS, dict(**_ADAM_LIST, eps=1e-7)),
               ListRow("adam-torch-amsgrad-l2", "adam", TORCH,
                       dict(**_ADAM_LIST, eps=1e-8, amsgrad=True, weight_decay=0.01))),
        calls={KERAS: dict(step=1, **_ADAM_LIST, eps=1e-7, amsgrad=True),
               TORCH: dict(step=3, **_ADAM_LIST, eps=1e-8, amsgrad=True)},
        errors=_ADAM_ERRORS,
    ),
    OptimizerInfo(
        ADAMW,
        functional={
            TORCH: _on(_T_ADAM, {"plain": dict(weight_decay=0.01),
                                 "amsgrad-maximize": dict(weight_decay=0.01, amsgrad=True,
                                                          maximize=True)}),
            KERAS: _on(_K_ADAM, {"plain": dict(weight_decay=2.0**-8),
                                 "amsgrad": dict(weight_decay=2.0**-8, amsgrad=True)}),
        },
        # Keras's default weight_decay 0.004 is not float32-exact.
        keras={"plain": dict(weight_decay=2.0**-8),
               "amsgrad": dict(weight_decay=2.0**-8, amsgrad=True)},
        torch={"plain": dict(lr=0.01), "amsgrad": dict(lr=0.01, amsgrad=True, weight_decay=0.1),
               "maximize": dict(lr=0.01, maximize=True)},
        torch_group=dict(lr=0.003, beta1=0.5, beta2=0.9, weight_decay=0.2),
        interchange="amsgrad",
        lists=(ListRow("adamw-keras-clip", "adam", KERAS,
                       dict(**_ADAM_LIST, eps=1e-7, weight_decay=0.004, clip_value=1.0)),),
        calls={KERAS: dict(step=1, **_ADAM_LIST, eps=1e-7, weight_decay=0.004,
                           clip_value=1.0),
               TORCH: dict(step=2, **_ADAM_LIST, eps=1e-8, weight_decay=0.01, amsgrad=True)},
        errors=_ADAM_ERRORS,
    ),
    OptimizerInfo(
        ADAMAX,
        functional={
            TORCH: _on(_T_ADAM, {"weight-decay-maximize": dict(weight_decay=0.01,
                                                               maximize=True)}),
            KERAS: _on(_K_ADAM, {"plain": {}}),
        },
        keras={"plain": {}},
        torch={**_TORCH_BETAS,
               "weight_decay_maximize": dict(lr=0.01, weight_decay=0.05, maximize=True)},
        torch_group=dict(lr=0.003, beta1=0.5, beta2=0.9, weight_decay=0.02),
        interchange="betas_eps",
        lists=(ListRow("adamax-torch", "adamax", TORCH,
                       dict(**_ADAM_LIST, eps=1e-8, weight_decay=0.01)),),
        calls={KERAS: dict(step=1, **_ADAM_LIST, eps=1e-7),
               TORCH: dict(step=1, **_ADAM_LIST, eps=1e-8, weight_decay=0.01)},
        errors=(
            _beta(0, 1.0),
            ErrorInput("beta2-one", dict(beta1=0.0, beta2=1.0), ValueError, "beta2",
                       r"must be in \[0.0, 1.0\)",
                       torch=r"Invalid beta parameter at index 1: 1.0"),   # torch's optim_db
            ErrorInput("eps-negative", dict(eps=-1e-8), ValueError, "eps",
                       r"must be in \[0.0, inf\]", torch=r"Invalid epsilon value: -1e-08"),
        ),
    ),
    OptimizerInfo(         # Keras only: torch.optim has no Lion
        LION,
        functional={KERAS: _on(dict(lr=2.0**-7, beta1=0.875, beta2=0.96875), {
            "plain": {}, "weight-decay-clip": dict(weight_decay=2.0**-8, clip_value=0.25)})},
        keras={"plain": {}, "betas": dict(beta1=0.5, beta2=0.75)},
        lists=(ListRow("lion-keras", "lion", KERAS,
                       dict(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.01)),),
        calls={KERAS: dict(step=1, lr=1e-3, beta1=0.9, beta2=0.99)},
        errors=(
            ErrorInput("beta1-zero", dict(beta1=0.0), ValueError, "beta1",
                       r"must be in \(0.0, 1.0\]", conventions=(KERAS,)),
            ErrorInput("beta2-above-one", dict(beta2=1.5), ValueError, "beta2",
                       r"must be in \[0.0, 1.0\]", conventions=(KERAS,)),
            ErrorInput("torch-convention", dict(convention=TORCH), ValueError, "lion",
                       r"is Keras's optimizer", conventions=(KERAS,)),
        ),
    ),
    OptimizerInfo(
        NADAM,
        functional={
            TORCH: _on(_T_ADAM, {
                "plain": {}, "momentum-decay": dict(momentum_decay=6e-3),
                "weight-decay": dict(weight_decay=0.1),
                "decoupled-weight-decay": dict(weight_decay=0.1, momentum_decay=6e-3,
                                               decoupled_weight_decay=True),
                "maximize": dict(weight_decay=0.1, maximize=True)}),
            KERAS: _on(_K_ADAM, {"plain": {},
                                 "weight-decay-clip": dict(weight_decay=2.0**-8,
                                                           clip_value=0.25)}),
        },
        keras={"plain": {}, "betas_eps": dict(beta1=0.8, beta2=0.99, eps=1e-6)},
        torch={**_TORCH_BETAS, "momentum_decay": dict(lr=0.01, momentum_decay=6e-3),
               "weight_decay": dict(lr=0.01, weight_decay=0.1),
               "decoupled_weight_decay": dict(lr=0.01, weight_decay=0.1, momentum_decay=6e-3,
                                              decoupled_weight_decay=True),
               "maximize": dict(lr=0.01, weight_decay=0.1, maximize=True)},
        torch_group=dict(lr=0.003, beta1=0.5, beta2=0.9, weight_decay=0.02,
                         momentum_decay=0.01),
        interchange="decoupled_weight_decay",
        lists=(ListRow("nadam-torch", "nadam", TORCH,
                       dict(**_ADAM_LIST, eps=1e-8, weight_decay=0.01)),
               ListRow("nadam-keras-clip", "nadam", KERAS,
                       dict(**_ADAM_LIST, eps=1e-7, clip_value=0.5))),
        calls={KERAS: dict(step=1, **_ADAM_LIST, eps=1e-7),
               TORCH: dict(step=3, **_ADAM_LIST, eps=1e-8, momentum_decay=6e-3)},
        errors=_ADAM_ERRORS + (
            ErrorInput("beta1-one-beta2-zero", dict(beta1=1.0, beta2=0.0), ValueError,
                       "beta1", r"must be in \[0.0, 1.0\)",
                       torch=r"Invalid beta parameter at index 0: 1.0"),   # torch's optim_db
            ErrorInput("momentum-decay-negative", dict(momentum_decay=-0.2), ValueError,
                       "momentum_decay", r"must be in",
                       torch=r"Invalid momentum_decay value: -0.2",
                       conventions=(TORCH,)),                       # torch's optim_db
            ErrorInput("momentum-decay-in-keras", dict(momentum_decay=0.01), ValueError,
                       "momentum_decay", r"is a torch option", conventions=(KERAS,)),
            ErrorInput("mu-product-nan", dict(mu_product=float("nan")), ValueError,
                       "mu_product", r"must be finite"),
            ErrorInput("mu-product-above-one", dict(mu_product=1.5), ValueError,
                       "mu_product", r"must be in \[0.0, 1.0\]"),
            ErrorInput("mu-product-string", dict(mu_product="1"), TypeError, "mu_product",
                       r"must be a real number"),
            ErrorInput("mu-product-bool", dict(mu_product=True), TypeError, "mu_product",
                       r"must be a real number"),
        ),
    ),
    OptimizerInfo(         # torch only: Keras has no ASGD
        ASGD,
        functional={TORCH: _on(dict(lr=0.05), {
            "plain": {}, "lambd": dict(lambd=0.1), "t0": dict(t0=10),
            "t0-negative-alpha": dict(t0=-3, alpha=1.5),
            "weight-decay-maximize": dict(weight_decay=0.1, maximize=True)})},
        keras=None,
        torch=_on(dict(lr=0.05), {
            "plain": {}, "lambd": dict(lambd=0.1), "t0": dict(t0=20),
            "alpha_t0": dict(alpha=0.5, t0=5),
            "weight_decay": dict(weight_decay=0.1), "maximize": dict(maximize=True)}),
        torch_group=dict(lr=0.02, lambd=0.01, t0=3, weight_decay=0.02),
        interchange="alpha_t0",
        lists=(ListRow("asgd-torch", "asgd", TORCH,
                       dict(lr=0.01, lambd=0.01, t0=1, weight_decay=0.01)),),
        calls={TORCH: dict(step=3, lr=0.01, lambd=0.01, t0=1)},
        errors=(
            ErrorInput("lambd-negative", dict(lambd=-0.1), ValueError, "lambd",
                       r"must be in \[0.0, inf\]",
                       torch=r"Invalid lambd value \(fastopt needs lambd >= 0\): -0.1",
                       torch_optim="accepts", conventions=(TORCH,)),
            ErrorInput("t0-nan", dict(t0=float("nan")), ValueError, "t0", r"must be finite",
                       torch=r"Invalid t0 value: nan", torch_optim="accepts",
                       conventions=(TORCH,)),
            ErrorInput("eta-negative", dict(eta=-1.0), ValueError, "eta",
                       r"must be in \[0.0, inf\]", conventions=(TORCH,)),
            ErrorInput("mu-zero", dict(mu=0.0), ValueError, "mu", r"must be in \(0.0, 1.0\]",
                       conventions=(TORCH,)),
            ErrorInput("keras-convention", dict(convention=KERAS), ValueError, "asgd",
                       r"is torch's optimizer", conventions=(TORCH,)),
        ),
    ),
)



def _keras_nonnegative(id, name, keras_name, value=-0.1):
    """A value Keras's Ftrl refuses itself (>= 0), in its words."""
    return ErrorInput(id, {name: value}, ValueError, name, r"must be in \[0.0, inf\]",
                      conventions=(KERAS,),
                      keras=rf"`{keras_name}` needs to be positive or zero\. "
                            rf"Received: {keras_name}={value}\.$")


# float32-exact where Keras rounds (its Python-float constants: -lr_power,
# 2*l2_shrinkage and the l1 bounds become float32 tensors even for float64).
_K_FTRL = dict(lr=2.0**-4, initial_accumulator_value=0.1)
# Keras's ScheduleFreeAdamW casts its betas to the variable's dtype (float32-
# exact betas keep that rounding out of float32 rows), and forms the warmup
# factor min(t / warmup_steps, 1) in float32 even for float64 variables
# (a power of two for warmup_steps keeps it exact).
_K_SF = dict(lr=2.0**-7, beta1=0.875, beta2=1.0 - 2.0**-10, eps=1e-8)

DB += (
    OptimizerInfo(         # Keras only: torch.optim has no Ftrl
        FTRL,
        functional={KERAS: _on(_K_FTRL, {
            "plain": {},                                   # lr_power -0.5: the sqrt form
            "power": dict(lr_power=-0.25),                 # the general power
            "power-zero": dict(lr_power=0.0),              # a fixed learning rate
            "zero-accumulator": dict(initial_accumulator_value=0.0),
            "regularized": dict(lr_power=-0.75, l1=0.5, l2=0.25, l2_shrinkage=2.0**-5,
                                beta=0.5),
            "weight-decay-clip": dict(weight_decay=2.0**-8, clip_value=0.25, l1=2.0**-3)})},
        keras={"plain": {}, "regularized": dict(lr_power=-0.25, l1=2.0**-4, l2=0.125,
                                                l2_shrinkage=2.0**-6, beta=0.25,
                                                initial_accumulator_value=0.5)},
        lists=(ListRow("ftrl-keras", "ftrl", KERAS, dict(lr=0.1, l1=0.01, beta=0.1),
                       init=0.1),
               ListRow("ftrl-keras-power", "ftrl", KERAS,
                       dict(lr=0.1, lr_power=-0.25, l2=0.01, l2_shrinkage=0.01), init=0.1)),
        calls={KERAS: dict(step=1, lr=0.1, lr_power=-0.25, l1=0.01, l2=0.01)},
        # Keras forms a norm clip's factor in float32 even for float64 variables;
        # Ftrl's param is a function of the summed gradients (not a sum of
        # lr-scaled steps), so that rounding (~6e-8) shows in it at full size.
        keras_tol64={"clipnorm": 1e-7, "global_clipnorm": 1e-7},
        errors=(
            ErrorInput("lr-zero", dict(lr=0.0), ValueError, "lr", r"must be in \(0.0, inf\]",
                       conventions=(KERAS,)),
            ErrorInput("lr-power-positive", dict(lr_power=0.1), ValueError, "lr_power",
                       r"must be in \[-inf, 0.0\]", conventions=(KERAS,),
                       keras=r"`learning_rate_power` needs to be negative or zero\. "
                             r"Received: learning_rate_power=0.1\.$"),
            ErrorInput("lr-power-nan", dict(lr_power=float("nan")), ValueError, "lr_power",
                       r"must be finite", conventions=(KERAS,)),
            _keras_nonnegative("initial-accumulator-negative", "initial_accumulator_value",
                               "initial_accumulator_value"),
            _keras_nonnegative("l1-negative", "l1", "l1_regularization_strength"),
            _keras_nonnegative("l2-negative", "l2", "l2_regularization_strength"),
            _keras_nonnegative("l2-shrinkage-negative", "l2_shrinkage",
                               "l2_shrinkage_regularization_strength", -1),
            ErrorInput("beta-negative", dict(beta=-0.5), ValueError, "beta",
                       r"must be in \[0.0, inf\]", conventions=(KERAS,)),
            ErrorInput("torch-convention", dict(convention=TORCH), ValueError, "ftrl",
                       r"is Keras's optimizer", conventions=(KERAS,)),
        ),
    ),
    OptimizerInfo(         # Keras only: torch.optim has no Schedule-Free AdamW
        SCHEDULE_FREE_ADAMW,
        functional={KERAS: _on(_K_SF, {
            "plain": {}, "warmup": dict(warmup_steps=16),
            "betas": dict(beta1=0.5, beta2=0.75, eps=1e-6, warmup_steps=1),
            "beta1-one": dict(beta1=1.0),
            "weight-decay-clip": dict(weight_decay=2.0**-8, clip_value=0.25,
                                      warmup_steps=4)})},
        keras={"plain": {}, "warmup": dict(warmup_steps=8),
               "betas": dict(beta1=0.75, beta2=0.875, eps=1e-6)},
        lists=(ListRow("schedule-free-adamw-keras", "schedule_free_adamw", KERAS,
                       dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, warmup_steps=3,
                            weight_decay=0.01)),),
        calls={KERAS: dict(step=2, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                           warmup_steps=5)},
        errors=(
            ErrorInput("beta1-zero", dict(beta1=0.0), ValueError, "beta1",
                       r"must be in \(0.0, 1.0\]", conventions=(KERAS,)),
            ErrorInput("beta2-one", dict(beta2=1.0), ValueError, "beta2",
                       r"must be in \[0.0, 1.0\)", conventions=(KERAS,)),
            ErrorInput("eps-zero", dict(eps=0.0), ValueError, "eps",
                       r"must be in \(0.0, inf\]", conventions=(KERAS,)),
            ErrorInput("warmup-negative", dict(warmup_steps=-1), ValueError, "warmup_steps",
                       r"must be in \[0.0, inf\]", conventions=(KERAS,)),
            ErrorInput("warmup-float", dict(warmup_steps=2.5), TypeError, "warmup_steps",
                       r"must be an int", conventions=(KERAS,)),
            ErrorInput("torch-convention", dict(convention=TORCH), ValueError,
                       "schedule_free_adamw", r"is Keras's optimizer", conventions=(KERAS,)),
        ),
    ),
    OptimizerInfo(
        ADADELTA,
        functional={
            TORCH: _on(dict(lr=1.0, rho=0.9, eps=1e-6), {
                "plain": {}, "rho": dict(rho=0.95, weight_decay=0.9),    # torch's optim_db
                "weight-decay-maximize": dict(weight_decay=0.1, maximize=True)}),
            KERAS: _on(dict(lr=1.0, rho=0.95, eps=1e-7), {
                "plain": {}, "weight-decay-clip": dict(weight_decay=2.0**-8, clip_value=0.25)}),
        },
        # At the table's learning rate (2**-7) Keras's default ε (1e-7) barely
        # moves a param in 50 steps: Adadelta's first steps are ~sqrt(ε) long.
        keras={"plain": dict(eps=1e-2), "rho": dict(rho=0.8, eps=0.5)},
        torch=_on(dict(lr=1.0), {
            "plain": {}, "rho": dict(rho=0.95, eps=1e-5), "weight_decay": dict(weight_decay=0.1),
            "maximize": dict(maximize=True, weight_decay=0.1)}),
        torch_group=dict(lr=0.5, rho=0.8, weight_decay=0.02),
        interchange="rho",
        lists=(ListRow("adadelta-keras-clip", "adadelta", KERAS,
                       dict(lr=1.0, rho=0.95, eps=1e-7, clip_value=0.5)),
               ListRow("adadelta-torch-l2", "adadelta", TORCH,
                       dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.01))),
        calls={KERAS: dict(step=1, lr=1.0, rho=0.95, eps=1e-7),
               TORCH: dict(step=2, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.01)},
        errors=(
            ErrorInput("rho-above-one", dict(rho=1.1), ValueError, "rho",
                       r"must be in \[0.0, 1.0\]", torch=r"Invalid rho value: 1.1"),  # optim_db
            ErrorInput("rho-negative", dict(rho=-0.1), ValueError, "rho", r"must be in",
                       torch=r"Invalid rho value: -0.1"),
            ErrorInput("eps-negative", dict(eps=-1e-6), ValueError, "eps",
                       r"must be in \[0.0, inf\]", torch=r"Invalid epsilon value: -1e-06"),
        ),
    ),
    OptimizerInfo(         # torch only: Keras has no RAdam
        RADAM,
        functional={TORCH: _on(_T_ADAM, {
            "plain": {}, "betas": dict(beta1=0.8, beta2=0.9),   # rectified from step 5
            "weight-decay": dict(weight_decay=0.1),
            "decoupled-weight-decay": dict(weight_decay=0.1, decoupled_weight_decay=True),
            "weight-decay-maximize": dict(weight_decay=0.1, maximize=True)})},
        keras=None,
        torch={**_TORCH_BETAS, "weight_decay": dict(lr=0.01, weight_decay=0.1),
               "decoupled_weight_decay": dict(lr=0.01, weight_decay=0.1,
                                              decoupled_weight_decay=True),
               "maximize": dict(lr=0.01, weight_decay=0.1, maximize=True)},
        torch_group=dict(lr=0.003, beta1=0.5, beta2=0.9, weight_decay=0.02),
        interchange="betas_eps",
        lists=(ListRow("radam-torch-l2", "radam", TORCH,
                       dict(**_ADAM_LIST, eps=1e-8, weight_decay=0.01)),),
        calls={TORCH: dict(step=7, **_ADAM_LIST, eps=1e-8, weight_decay=0.01)},
        errors=(
            _eps_positive(0.0), _eps_positive(-1e-8),
            ErrorInput("beta1-one", dict(beta1=1.0, beta2=0.0), ValueError, "beta1",
                       r"must be in \[0.0, 1.0\)",
                       torch=r"Invalid beta parameter at index 0: 1.0"),   # torch's optim_db
            _beta(1, -0.5),
            ErrorInput("keras-convention", dict(convention=KERAS), ValueError, "radam",
                       r"is torch's optimizer", conventions=(TORCH,)),
        ),
    ),
    OptimizerInfo(         # torch only: Keras has no Rprop
        RPROP,
        functional={TORCH: _on(dict(lr=0.01, etaminus=0.5, etaplus=1.2, step_size_min=1e-6,
                                    step_size_max=50.0), {
            "plain": {}, "etas": dict(etaminus=0.3, etaplus=1.5),
            "step-sizes": dict(step_size_min=1e-3, step_size_max=0.05),
            "maximize": dict(maximize=True)})},
        keras=None,
        torch=_on(dict(lr=0.01), {
            "plain": {}, "etas": dict(etaminus=0.3, etaplus=1.5),
            "step_sizes": dict(step_size_min=1e-4, step_size_max=0.02),
            "maximize": dict(maximize=True)}),
        torch_group=dict(lr=0.002, etaminus=0.4, etaplus=1.1),
        interchange="etas",
        lists=(ListRow("rprop-torch-maximize", "rprop", TORCH,
                       dict(lr=0.01, etaminus=0.5, etaplus=1.2, step_size_min=1e-6,
                            step_size_max=50.0, maximize=True), init=0.01),),
        calls={TORCH: dict(step=2, lr=0.01, etaminus=0.5, etaplus=1.2, step_size_min=1e-6,
                           step_size_max=50.0)},
        errors=(
            ErrorInput("etas-swapped", dict(etaminus=1.0, etaplus=0.5), ValueError,
                       "etaminus", r"must be in \(0.0, 1.0\)",
                       torch=r"Invalid eta values: 1.0, 0.5"),             # torch's optim_db
            ErrorInput("etaplus-below-one", dict(etaplus=0.9), ValueError, "etaplus",
                       r"must be in \(1.0, inf\]", torch=r"Invalid eta values: 0.5, 0.9"),
            ErrorInput("step-size-max-nan", dict(step_size_max=float("nan")), ValueError,
                       "step_size_max", r"must be finite",
                       torch=r"Invalid step_sizes\[1\] value: nan", torch_optim="accepts"),
            ErrorInput("keras-convention", dict(convention=KERAS), ValueError, "rprop",
                       r"is torch's optimizer", conventions=(TORCH,)),
        ),
    ),
)

BY_NAME = {info.name: info for info in DB}
TORCH_DB = tuple(info for info in DB if info.spec.torch is not None)
KERAS_DB = tuple(info for info in DB if info.spec.keras is not None)
SPECS = {spec.name: spec for spec in fastopt.specs.SPECS}


# --- names in each front end's words ---------------------------------------
def front_kwargs(front, options):
    """`options` (fastopt names) under `front`'s argument names: Keras's
    ``learning_rate``, torch's ``betas`` pair (a missing half takes the
    front's default). Names the front does not rename pass through."""
    out = dict(options)
    defaults = None
    for param in front.parameters():
        name = front.canonical(param.name)
        if isinstance(name, tuple):
            if any(n in out for n in name):
                defaults = defaults or front.defaults()
                out[param.name] = tuple(out.pop(n, defaults[n]) for n in name)
        elif name in out and name != param.name:
            out[param.name] = out.pop(name)
    return out


def keras_kwargs(spec, options):
    """`options` as the Keras class takes them (its base options included)."""
    out = front_kwargs(spec.keras, options)
    if "clip_value" in out:
        out[KERAS_BASE["clip_value"]] = out.pop("clip_value")
    return out


def front_names(front):
    """fastopt name -> `front`'s argument name, for each of its arguments."""
    out = {}
    for param in front.parameters():
        name = front.canonical(param.name)
        for part in name if isinstance(name, tuple) else (name,):
            out[part] = param.name
    return out


def functional_names(spec):
    """The arguments `fastopt.functional.<spec.name>` takes besides arrays
    (its host scalars, `fastopt.spec.Scalar`, included)."""
    return ({h.name for h, _ in spec.arguments} | {s.name for s in spec.host}
            | {"step", "convention"})


def keras_names(spec):
    """fastopt name -> the Keras-style class's argument name ({} where Keras
    has no such optimizer)."""
    if spec.keras is None:
        return {}
    return {**KERAS_BASE, **front_names(spec.keras)}


def state_args(spec, hyper, convention):
    """(positional, keyword): the state arguments a functional call with
    `hyper` uses, split as the signature takes them (`Slot.arg`)."""
    values = [hyper.get(h.name, default) for h, default in spec.arguments]
    h = spec.settings(spec.name, values + [convention])[2]
    used = [s for s in spec.slots if s.used(h)]
    return (tuple(s.name for s in used if s.arg != "keyword"),
            tuple(s.name for s in used if s.arg == "keyword"))
