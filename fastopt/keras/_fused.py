"""fastopt's fused update inside a Keras 3 optimizer (`fastopt.keras`).

Keras's `BaseOptimizer.apply` does everything around the update (empty
gradients, ``overwrite_with_gradient``, loss-scale undo, gradient
accumulation, clipping, EMA, the iteration count) and then calls two hooks
per step: ``_apply_weight_decay(variables)`` and
``_backend_update_step(grads, variables, learning_rate)``. `FusedOptimizer`
overrides both: the decay moves into the update, and the update is one call
of the spec's list-form functional function (``convention="keras"``), so a
step is one parallel region (CPU) or one launch per dtype (CUDA) over every
variable, weight decay included. Variables excluded from weight decay
(``exclude_from_weight_decay``) form a second call, checked with the first
before either writes.

The state is Keras's own: the spec's slots are the variables Keras's
``build`` creates, found by the names it gives them (the spec's
``Slot.keras``), so checkpoints, ``model.save`` and ``set_weights`` see the
variables Keras's class would have. ``use_ema``'s averages ride in the same
pass where the rule leaves a state slot free (`kernels.variants`), and a
spec's host scalars kept by Keras (Nadam's ``u_product``) are advanced by
the call.

16-bit variables (a model built under Keras's ``"bfloat16"`` or
``"float16"`` dtype policy) are updated with float32 math, their state in
their dtype as Keras keeps it, unless the optimizer is made with
``state_dtype="float32"`` (float32 state) or ``master_weights=True`` (or
either attribute set before the first step, as on the Keras-style classes):
a float32 master of each 16-bit variable, an optimizer variable beside its
slots (``{path}_master``, in ``optimizer.variables`` and so in
``save_own_variables`` / ``model.save``), float32 state, and the variable
written from its master, rounded to nearest, in the same pass. The
masters follow float32 training on the same (16-bit) gradients bit for
bit. Under the ``"mixed_bfloat16"`` / ``"mixed_float16"`` policies the
variables and their gradients are float32 already: no option is needed,
and neither option changes a float32 variable.
"""
import operator

import keras
import torch

from .. import _batch, _front, functional
from ..kernels import NUM_SLOTS

_HALF = (torch.float16, torch.bfloat16)


def supported_backend():
    """Raise ImportError unless Keras runs on torch (where a variable's
    value is a torch tensor fastopt can update in place)."""
    backend = keras.backend.backend()
    if backend != "torch":
        raise ImportError(
            f"fastopt.keras needs Keras's torch backend (KERAS_BACKEND=torch); this "
            f"process runs Keras on {backend!r}, whose variables fastopt cannot update "
            "in place. fastopt's framework-free Keras-style optimizers (fastopt.Adam, "
            "...) take NumPy and CUDA arrays, and Keras variables on the tensorflow "
            "backend (CPU).")


class _Plan:
    """What the fused step reads off the Keras optimizer, and its lists made
    once per list of variables; a plain object, so that Keras's attribute
    tracking leaves it alone."""

    def __init__(self, spec):
        self.call = functional.of(spec)
        front = spec.keras
        # Keras attribute -> fastopt name, for the spec's own hyperparameters
        # (learning rate and weight decay come from Keras's base class).
        self.hypers = {}
        for p in front.parameters():
            name = front.canonical(p.name)
            if name in ("lr", "weight_decay") or not spec.hyper(name).functional:
                continue
            self.hypers[p.name] = name
        self.caller_names = {**front.caller_names(), "weight_decay": "weight_decay",
                             "ema_momentum": "ema_momentum"}
        self.slot_names = {s.name: s.keras for s in spec.slots}
        # Slots Keras's build keeps in a list by variable index rather than
        # making from each variable (Adafactor's ``_r``, ``_c``).
        self.state_lists = front.options.get("state_lists", {})
        # Weight decays besides Keras's weight_decay (Keras's Muon's
        # adam_weight_decay): off, with it, for the excluded variables.
        self.decays = {attr: name for attr, name in self.hypers.items()
                       if name in front.options.get("decays", ())}
        self.in_step = False   # inside Keras's apply: the decay is fused
        # A program's passes keep no moving average (Keras's own EMA code runs).
        self.fuses_ema = spec.program is None
        self.slots = {}        # (slot's Keras name, id(model variable)) -> its variable
        self.masters = {}      # id(16-bit model variable) -> its float32 master
        self.key = None        # what `_groups` were made for
        self.tensors = self.dtypes = ()
        self._groups = ()
        self.ema_done = False  # this step's update also moved the averages

    def groups(self, optimizer, variables, decay):
        """The step's `_Group`s over `variables` (one, or two when some are
        excluded from weight decay), made once per list of variables.

        They hold the variables' tensors (``_value``: what ``.value`` returns
        outside Keras's stateless and autocast scopes, where no optimizer
        step runs; reading ``.value`` 600 times, as Adam on 150 variables
        would each step, took longer than the update), so each step checks
        that the variables still hold the same tensors.
        """
        key = (tuple(map(id, variables)), decay)
        if key == self.key and all(map(operator.is_, self.tensors,
                                       [v._value for v in variables])):
            return self._groups
        split = {}
        masters = self.masters
        for i, v in enumerate(variables):
            split.setdefault((decay and optimizer._use_weight_decay(v), id(v) in masters),
                             []).append(i)
        first = id(variables[0])
        # The slots in use are those Keras's build made (SGD without momentum
        # has none; RMSprop's average_gradient only when centered).
        slots = [(name, keras) for name, keras in self.slot_names.items()
                 if (keras, first) in self.slots and name not in self.state_lists]
        # The moving averages (``use_ema``) ride in the update's pass where the
        # rule leaves a state slot free and the step updates every variable.
        # (Not with master weights, whose 16-bit copy takes that slot: Keras's
        # own code averages the variables.)
        if (optimizer.use_ema and self.fuses_ema and len(slots) < NUM_SLOTS and not masters
                and [id(v) for v in variables] == list(
                    map(id, optimizer._trainable_variables))):
            slots.append(("ema", "average"))
        def state(index):
            out = {name: [self.slots[keras, id(variables[i])]._value for i in index]
                   for name, keras in slots}
            for name, attr in self.state_lists.items():
                kept = getattr(optimizer, attr)
                # None: a variable without this slot (Keras's Muon: a velocity
                # for the variables it steps with AdamW only)
                out[name] = [None if v is None else v._value for v in
                             [kept[optimizer._get_variable_index(variables[i])]
                              for i in index]]
            return out

        self._groups = [_Group(decayed, index, [variables[i] for i in index], state(index),
                               self.slot_names,
                               [masters[id(variables[i])] for i in index] if master else None)
                        for (decayed, master), index in split.items()]
        self.tensors = [v._value for v in variables]
        self.dtypes = [t.dtype for t in self.tensors]
        self.key = key
        return self._groups


class _Group:
    """One fused call's lists: the variables with weight decay on (or off)."""

    def __init__(self, decayed, index, variables, state, slot_names, masters=None):
        self.decayed, self.index, self.state = decayed, index, state
        self.params = [v._value for v in variables]
        # Master weights: the kernel updates the float32 masters (its param)
        # and writes the 16-bit variables (its model copy).
        self.model = None
        if masters is not None:
            self.params, self.model = [m._value for m in masters], self.params
        self.shapes = [t.shape for t in self.params]
        self.cpu = self.params[0].is_cpu
        self.device = self.params[0].get_device()
        self.checked = False    # its params and state passed the full checks once
        self.layout = _front.Layout()
        self._paths = [v.path for v in variables]
        self._slot_names = {**slot_names, "ema": "average"}

    def fits(self, grads):
        """Whether `grads` (tensors of the params' dtypes, `_as_dtypes`) are
        dense, contiguous, shaped as the params and where they are: with
        the params and state checked once and the same tensors since, that
        is all a step has to check (read in bulk: the list path's own checks
        of 450 tensors cost ~0.5 ms a step on 150 variables)."""
        if list(map(_SHAPE, grads)) != self.shapes or not all(map(_CONTIGUOUS, grads)):
            return False
        if list(map(_LAYOUT, grads)).count(torch.strided) != len(grads):
            return False
        if self.cpu:
            return all(map(_IS_CPU, grads))
        return all(map(_IS_CUDA, grads)) and {g.get_device() for g in grads} == {self.device}

    def name(self, argument, k):
        """The caller's name of the call's `argument` of its k-th variable."""
        path = self._paths[k]
        if argument == "model" or (argument == "param" and self.model is None):
            return path
        if argument == "param":
            return f"the float32 master of {path}"
        if argument == "grad":
            return f"the gradient of {path}"
        return f"the {self._slot_names.get(argument, argument)} of {path}"


class FusedOptimizer:
    """The part of a `fastopt.keras` class that is fastopt's (module docstring)."""

    spec = None
    state_dtype = None       # "float32": float32 state for 16-bit variables
    master_weights = False   # float32 masters of 16-bit variables (module docstring)

    def __init__(self, *args, master_weights=False, state_dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        if master_weights is not False:
            if not isinstance(master_weights, bool):
                raise TypeError(f"{self._fastopt_who()}: master_weights must be True or "
                                f"False, got {master_weights!r}")
            self.master_weights = master_weights
        if state_dtype is not None:
            self.state_dtype = state_dtype
            self._fastopt_float32_state()     # checked here, used at build
        plan = _Plan(self.spec)
        object.__setattr__(self, "_fastopt", plan)
        who = self._fastopt_who()
        for attr, name in plan.hypers.items():    # fastopt's bounds, at construction
            value, hyper = getattr(self, attr), self.spec.hyper(name)
            if not (hyper.optional and value is None):
                hyper.check(who, value, "keras", label=attr)

    def _fastopt_who(self):
        return f"fastopt.keras.{type(self).__name__}"

    def get_config(self):
        config = super().get_config()
        if self.master_weights:
            config["master_weights"] = True
        if self.state_dtype is not None:
            config["state_dtype"] = self.state_dtype
        return config

    def _fastopt_float32_state(self):
        """Whether the state of 16-bit variables is float32 (`state_dtype`,
        or `master_weights`)."""
        choice = self.state_dtype
        if choice is not None and choice not in ("float32", torch.float32):
            raise ValueError(f"{self._fastopt_who()}: state_dtype must be None (the "
                             f"variable's dtype) or 'float32', got {choice!r}")
        return bool(self.master_weights) or choice is not None

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if not self.master_weights:
            return
        # A float32 master of each 16-bit variable, made from its value.
        masters = self._fastopt.masters
        for v in variables:
            if v.dtype in ("float16", "bfloat16"):
                master = self.add_variable(
                    shape=v.shape, dtype="float32", name=f"{v.path.replace('/', '_')}_master",
                    layout=getattr(v, "_layout", None))
                with torch.no_grad():
                    master._value.copy_(v._value)
                masters[id(v)] = master

    def add_variable_from_reference(self, reference_variable, name=None,
                                    initializer="zeros"):
        if (reference_variable.dtype in ("float16", "bfloat16")
                and name in self._fastopt.slot_names.values()
                and self._fastopt_float32_state()):
            # a state slot: Keras's naming, float32 (state_dtype, master_weights);
            # Keras's other variables (gradient accumulators, EMA) keep theirs
            prefix = reference_variable.path.replace("/", "_")
            variable = self.add_variable(
                shape=reference_variable.shape, initializer=initializer, dtype="float32",
                name=f"{prefix}_{name or 'var'}",
                layout=getattr(reference_variable, "_layout", None))
        else:
            variable = super().add_variable_from_reference(reference_variable, name,
                                                           initializer)
        self._fastopt.slots[name, id(reference_variable)] = variable
        return variable

    def _backend_apply_gradients(self, grads, trainable_variables):
        self._fastopt.in_step = True
        try:
            super()._backend_apply_gradients(grads, trainable_variables)
        finally:
            self._fastopt.in_step = False

    def _apply_weight_decay(self, variables):
        """Nothing in a step: the decay is fused into `_backend_update_step`;
        Keras's own when called on its own."""
        if not self._fastopt.in_step:
            super()._apply_weight_decay(variables)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        plan = self._fastopt
        decay = self.weight_decay or 0.0
        hyper = {name: getattr(self, attr) for attr, name in plan.hypers.items()}
        others = {name: hyper[name] for name in plan.decays.values()}
        groups = plan.groups(self, trainable_variables,
                             bool(decay) or any(v for v in others.values()))
        step = int(self.iterations) + 1
        lr = float(learning_rate)
        grads = _as_dtypes(grads, plan.dtypes)
        fused_ema = "ema" in groups[0].state
        if fused_ema:    # Keras's momentum: 0 at its first step (the average is the param)
            hyper["ema_momentum"] = self.ema_momentum if int(self.iterations) else 0.0
        host = self._fastopt_host()
        with torch.no_grad(), _batch.all_or_nothing():
            for group in groups:
                group_grads = [grads[i] for i in group.index]
                with _front.call(self._fastopt_who(), group.name, layout=group.layout,
                                 hypers=plan.caller_names,
                                 checked=group.checked and group.fits(group_grads)):
                    own = hyper if group.decayed else {**hyper, **dict.fromkeys(others, 0.0)}
                    plan.call(group.params, group_grads, **group.state, model=group.model,
                              step=step, lr=lr,
                              weight_decay=decay if group.decayed else 0.0,
                              convention="keras", **own, **host)
                group.checked = True
                # Keras's variable advances once a step: the first call
                # advances it, the others take its value before the step.
                host = {name: float(value) for name, value in host.items()}
        plan.ema_done = fused_ema

    def _update_model_variables_moving_average(self, trainable_variables):
        """Keras's, unless this step's update moved the averages already (a
        step of gradient accumulation that only accumulates still moves them,
        as in Keras)."""
        if self._fastopt.ema_done:
            self._fastopt.ema_done = False
            return
        super()._update_model_variables_moving_average(trainable_variables)

    def _fastopt_host(self):
        """The spec's host scalars Keras keeps as optimizer variables (Nadam's
        ``u_product``, its ``_u_product``), as their 0-d torch tensors: the
        functional call reads each and advances it in place, in its dtype, as
        Keras's own update step does."""
        return {s.name: getattr(self, f"_{s.keras}")._value
                for s in self.spec.host if s.keras is not None}

    # Gradient accumulation in one foreach call each, as Keras's torch
    # backend does for its own optimizers (its base class loops per variable).
    def _backend_reset_gradient_accumulators(self):
        with torch.no_grad():
            torch._foreach_zero_([v.value for v in self._accumulated_gradients
                                  if v is not None])

    def _backend_increment_gradient_accumulators(self, grads, acc_grads):
        with torch.no_grad():
            torch._foreach_add_([v.value for v in acc_grads], grads)


_SHAPE, _CONTIGUOUS, _LAYOUT, _IS_CPU, _IS_CUDA = (
    operator.attrgetter("shape"), torch.Tensor.is_contiguous, operator.attrgetter("layout"),
    operator.attrgetter("is_cpu"), operator.attrgetter("is_cuda"))


def _as_dtypes(grads, dtypes):
    """The gradients as torch tensors of their variables' dtypes: Keras casts
    each gradient to its variable's dtype (``ops.cast``) before the update;
    so does this, for the ones that need it."""
    tensor = torch.Tensor
    if all([isinstance(g, tensor) for g in grads]) and [g.dtype for g in grads] == dtypes:
        return grads
    return [torch.as_tensor(g, dtype=d) for g, d in zip(grads, dtypes)]


def rule_base(spec):
    """A Keras optimizer class for a spec Keras has no class for (a user's
    rule, `fastopt.custom`): the spec's Keras constructor (its arguments kept
    as attributes and in ``get_config``), and a ``build`` that makes each state
    slot's variables under the slot's name, as Keras's own classes do."""
    front = spec.keras
    own = [p.name for p in front.parameters() if p.name != "learning_rate"]
    source = (f"def __init__(self, {front.signature}, name={spec.name!r}, **kwargs):\n"
              "    _Optimizer.__init__(self, learning_rate=learning_rate, name=name, **kwargs)\n"
              + "".join(f"    self.{n} = {n}\n" for n in own))
    scope = {"_Optimizer": keras.optimizers.Optimizer}
    exec(source, scope)     # noqa: S102 - the source is built from the spec above

    def build(self, variables):
        if self.built:
            return
        keras.optimizers.Optimizer.build(self, variables)
        for slot in spec.slots:
            for v in variables:
                self.add_variable_from_reference(v, slot.keras)

    def get_config(self):
        return {**keras.optimizers.Optimizer.get_config(self),
                **{n: getattr(self, n) for n in own}}

    def update_step(self, gradient, variable, learning_rate):
        raise NotImplementedError("the fused step updates every variable at once")

    return type(front.cls, (keras.optimizers.Optimizer,), {
        "__init__": scope["__init__"], "build": build, "get_config": get_config,
        "update_step": update_step, "__module__": "fastopt.keras"})


def make(spec, base=None):
    """`spec`'s fastopt.keras class: Keras's class of the same name (or
    `base`) with the fused update, registered for Keras serialisation as
    ``fastopt>Name``."""
    base = base or getattr(keras.optimizers, spec.keras.cls)
    cls = type(spec.keras.cls, (FusedOptimizer, base), {
        "spec": spec, "__module__": "fastopt.keras",
        "__doc__": (f"``keras.optimizers.{spec.keras.cls}`` with fastopt's fused update "
                    f"(`fastopt.functional.{spec.name}`, convention \"keras\"): the same "
                    "arguments, state and results, one kernel call per dtype per step.\n\n"
                    f"    The update, in fastopt's names:\n\n    {spec.doc}")})
    return keras.saving.register_keras_serializable(package="fastopt")(cls)
