"""The benchmark's one table: each optimizer, its hyperparameters, its state.

A row says how to call fastopt (functional name, keyword arguments and
convention: torch's, or Keras's for an optimizer only Keras has), which state arrays the update reads and writes, and how the
peers spell the same update. Bytes moved per element come from `slots` only
(`bytes_per_element`), so every implementation of a row is credited with the
same traffic; tests check `slots` against the variant the dispatcher picks.
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    """One optimizer configuration, as every implementation runs it.

    fastopt:     name of the function in `fastopt.functional`.
    kwargs:      its hyperparameters (`convention` is added).
    slots:       the state arrays the update uses, in fastopt's names.
    torch_class: name in `torch.optim`; torch_kwargs are its arguments
                 (None: torch.optim has no such optimizer, and the torch
                 peers are reported unavailable).
    torch_state: torch's state key for each slot, where it differs.
    init:        how each slot starts: ``"moment"`` (random, small, any sign)
                 or ``"positive"`` (a running sum of squares).
    keras:       the Keras-style front end's spelling, ``(class name in
                 fastopt, its arguments)``: the same hyperparameters and
                 state arrays in Keras's convention (the list benchmark);
                 empty where Keras has no such optimizer.
    convention:  the functional call's (and the NumPy peer's) convention:
                 "torch" where torch.optim has the optimizer, else "keras".
    master:      fp32 master weights (``model=``): param and the slots
                 float32, the grad and the model copy in the run's 16-bit
                 dtype (a 16-bit run only).
    sr:          stochastic rounding of the bfloat16 stores
                 (``stochastic_rounding=True``; a bfloat16 run only).
    """

    fastopt: str
    kwargs: dict
    slots: tuple
    torch_class: str = None
    torch_kwargs: dict = field(default_factory=dict)
    torch_state: dict = field(default_factory=dict)
    init: dict = field(default_factory=dict)
    keras: tuple = ()
    convention: str = "torch"
    master: bool = False
    sr: bool = False

    def bytes_per_element(self, itemsize):
        """Each array read once (param, grad, slots), each written array
        written once (param, slots), `itemsize` bytes an element; with
        master weights the master and the slots are float32 (read and
        written), the grad read and the model copy written in `itemsize`.

        Adam (2 slots): float32 28, bfloat16/float16 14, float64 56;
        master weights, 16-bit grad and copy: 2 + 8 + 16 + 2 = 28."""
        if self.master:
            return 2 * itemsize + 8 * (1 + len(self.slots))
        return itemsize * (3 + 2 * len(self.slots))

    def runs_in(self, dtype_name):
        """None if the case runs on arrays of `dtype_name`, else why not."""
        if self.master and dtype_name not in ("bfloat16", "float16"):
            return "master weights keep a 16-bit model copy: a bfloat16 or float16 run"
        if self.sr and dtype_name != "bfloat16":
            return "stochastic rounding rounds bfloat16 stores: a bfloat16 run"
        return None


_ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
_ADAM_TORCH = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
_ADAM_KERAS = dict(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
_RMSPROP_KERAS = dict(learning_rate=1e-2, rho=0.99, epsilon=1e-8)
_POS = "positive"
_FTRL = dict(lr=0.05, l1=1e-3, l2=1e-3)   # lr_power -0.5: Keras's default
_FTRL_KERAS = dict(learning_rate=0.05, l1_regularization_strength=1e-3,
                   l2_regularization_strength=1e-3)

CASES = {
    "adam": Case("adam", _ADAM, ("exp_avg", "exp_avg_sq"), "Adam", _ADAM_TORCH,
                 init={"exp_avg_sq": _POS}, keras=("Adam", _ADAM_KERAS)),
    "adamw": Case("adamw", dict(_ADAM, weight_decay=1e-2),
                  ("exp_avg", "exp_avg_sq"), "AdamW",
                  dict(_ADAM_TORCH, weight_decay=1e-2), init={"exp_avg_sq": _POS},
                  keras=("AdamW", dict(_ADAM_KERAS, weight_decay=1e-2))),
    # Adam in Keras's form (the form `examples/custom_rules.py` re-declares).
    "adam_keras": Case("adam", _ADAM, ("exp_avg", "exp_avg_sq"), "Adam", _ADAM_TORCH,
                       init={"exp_avg_sq": _POS}, keras=("Adam", _ADAM_KERAS),
                       convention="keras"),
    "amsgrad": Case("adam", dict(_ADAM, amsgrad=True),
                    ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), "Adam",
                    dict(_ADAM_TORCH, amsgrad=True),
                    init={"exp_avg_sq": _POS, "max_exp_avg_sq": _POS},
                    keras=("Adam", dict(_ADAM_KERAS, amsgrad=True))),
    "rmsprop": Case("rmsprop", dict(lr=1e-2, alpha=0.99, eps=1e-8), ("square_avg",),
                    "RMSprop", dict(lr=1e-2, alpha=0.99, eps=1e-8),
                    init={"square_avg": _POS}, keras=("RMSprop", _RMSPROP_KERAS)),
    "rmsprop_centered_momentum": Case(
        "rmsprop", dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.9, centered=True),
        ("square_avg", "grad_avg", "momentum_buffer"), "RMSprop",
        dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.9, centered=True),
        init={"square_avg": _POS},
        keras=("RMSprop", dict(_RMSPROP_KERAS, momentum=0.9, centered=True))),
    "adagrad": Case("adagrad", dict(lr=1e-2, eps=1e-10), ("state_sum",), "Adagrad",
                    dict(lr=1e-2, eps=1e-10), torch_state={"state_sum": "sum"},
                    init={"state_sum": _POS},
                    keras=("Adagrad", dict(learning_rate=1e-2, epsilon=1e-10))),
    "sgd_momentum": Case("sgd", dict(lr=1e-2, momentum=0.9), ("momentum_buffer",),
                         "SGD", dict(lr=1e-2, momentum=0.9),
                         keras=("SGD", dict(learning_rate=1e-2, momentum=0.9))),
    "sgd": Case("sgd", dict(lr=1e-2), (), "SGD", dict(lr=1e-2),
                keras=("SGD", dict(learning_rate=1e-2))),
    "adamax": Case("adamax", dict(lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8),
                   ("exp_avg", "exp_inf"), "Adamax",
                   dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8), init={"exp_inf": _POS},
                   keras=("Adamax", dict(learning_rate=2e-3, epsilon=1e-8))),
    "lion": Case("lion", dict(lr=1e-4, beta1=0.9, beta2=0.99), ("momentum",),
                 keras=("Lion", dict(learning_rate=1e-4)), convention="keras"),
    "nadam": Case("nadam", _ADAM, ("exp_avg", "exp_avg_sq"), "NAdam", _ADAM_TORCH,
                  init={"exp_avg_sq": _POS}, keras=("Nadam", _ADAM_KERAS)),
    "asgd": Case("asgd", dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6), ("ax",), "ASGD",
                 dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6)),   # Keras has none
    # Keras's own (torch.optim has none): compared with the floor and NumPy.
    "ftrl": Case("ftrl", _FTRL, ("accumulator", "linear"), init={"accumulator": _POS},
                 keras=("Ftrl", _FTRL_KERAS), convention="keras"),
    "ftrl_power": Case("ftrl", dict(_FTRL, lr_power=-0.25), ("accumulator", "linear"),
                       init={"accumulator": _POS}, convention="keras",
                       keras=("Ftrl", dict(_FTRL_KERAS, learning_rate_power=-0.25))),
    "schedule_free_adamw": Case(
        "schedule_free_adamw", dict(_ADAM, lr=2.5e-3, warmup_steps=100),
        ("momentum", "velocity"), init={"velocity": _POS}, convention="keras",
        keras=("ScheduleFreeAdamW", dict(_ADAM_KERAS, learning_rate=2.5e-3,
                                         warmup_steps=100))),
    "adadelta": Case("adadelta", dict(lr=1.0, rho=0.9, eps=1e-6), ("square_avg", "acc_delta"),
                     "Adadelta", dict(lr=1.0, rho=0.9, eps=1e-6),
                     init={"square_avg": _POS, "acc_delta": _POS},
                     keras=("Adadelta", dict(learning_rate=1.0, rho=0.9, epsilon=1e-6))),
    # torch only (no Keras spelling): RAdam, Rprop.
    "radam": Case("radam", _ADAM, ("exp_avg", "exp_avg_sq"), "RAdam", _ADAM_TORCH,
                  init={"exp_avg_sq": _POS}),
    "rprop": Case("rprop", dict(lr=1e-2, etaminus=0.5, etaplus=1.2, step_size_min=1e-6,
                                step_size_max=50.0), ("prev", "step_size"), "Rprop",
                  dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0)),
                  init={"step_size": _POS}),
    # 16-bit runs only (--dtype bfloat16 / float16): fp32 master weights (a
    # 16-bit grad and model copy, float32 master and state, one pass) and
    # stochastic rounding of bfloat16 stores. Neither torch.optim nor the
    # NumPy peer has them: compared with their floors.
    "adam_master": Case("adam", _ADAM, ("exp_avg", "exp_avg_sq"), init={"exp_avg_sq": _POS},
                        master=True),
    "adam_sr": Case("adam", _ADAM, ("exp_avg", "exp_avg_sq"), init={"exp_avg_sq": _POS},
                    sr=True),
}

# Every optimizer, in its plainest form: the default selection.
DEFAULT_OPTIMIZERS = ("adam", "adamw", "rmsprop", "adagrad", "sgd_momentum", "adamax",
                      "lion", "nadam", "adadelta", "radam", "rprop", "asgd", "ftrl",
                      "schedule_free_adamw")
