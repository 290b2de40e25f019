"""The torch class of a spec whose step is a program (`fastopt.spec.Program`).

Made from the spec like `fastopt.torch._make`'s classes: the constructor is
the spec's torch `Front` signature, every argument lands in torch's
``defaults`` under torch's key and is checked at construction and at each
step (torch's message where the Front gives one, ``Front.options["messages"]``),
the state keeps torch's keys and shapes (a slot's `Slot.shape_for`: torch's
Adafactor keeps ``row_var``/``col_var`` for matrices and ``variance`` for
vectors), and a step is one call of the spec's functional function per
(param group, step count), ``convention="torch"``, over the group's list:
each pass of the program one parallel region over the whole list.

What the elementwise classes' base adds and this one does not (yet):
``flat=True``, CUDA tensors, the bulk pre-check of a step's tensors (the
functional call checks every array before writing any, per group).
"""
import threading
from types import SimpleNamespace

import torch

from .. import _batch, _front, functional
from ._base import _get_scalar_dtype


def _message(front, name, label, value):
    template = front.options.get("messages", {}).get(name)
    return template.format(value) if template else f"Invalid {label}: {value}"


class ProgramOptimizer(torch.optim.Optimizer):
    """A torch optimizer made from a program spec (`make`)."""

    spec = None

    def _init_from_spec(self, params, given):
        options = self.spec.torch.options
        for name, (value, message) in options.get("refuse", {}).items():
            if given[name] == value:     # an option the library refuses (Apex's amsgrad)
                raise RuntimeError(message)
        # options the library keeps on the optimizer, not in its param groups
        # (Apex's adam_w_mode, use_nvlamb): their state_dicts have the same keys
        for name in options.get("attributes", ()):
            setattr(self, name, given[name])
        self._check_group(given)
        super().__init__(params, {k: v for k, v in given.items()
                                  if k not in options.get("attributes", ())})
        self._lock = threading.RLock()
        program = self.spec.program
        if program.select is not None:   # the params the program takes (torch's Muon: 2-D)
            h = SimpleNamespace(**self._check_group(self.defaults))
            for group in self.param_groups:
                for p in group["params"]:
                    if not program.select(tuple(p.shape), h, "torch"):
                        raise ValueError(program.refuse.format(shape=p.size()))

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._lock = threading.RLock()

    def _check_group(self, group):
        """torch's checks of `group`'s hyperparameters; the functional's
        keyword arguments."""
        front, spec = self.spec.torch, self.spec
        out = {}
        for p in front.parameters():
            if p.name in ("foreach", "fused", "differentiable", "capturable"):
                continue
            attribute = p.name in front.options.get("attributes", ())
            name = front.canonical(p.name)
            value = getattr(self, p.name) if attribute else group[p.name]
            choices = front.options.get("choices", {}).get(p.name)
            if choices is not None:    # a named choice (torch's adjust_lr_fn)
                table, message = choices
                if value not in table:
                    raise ValueError(message.format(value))
                value = table[value]
            pairs = (zip(name, value) if isinstance(name, tuple) else [(name, value)])
            for part, v in pairs:
                h = spec.hyper(part)
                if isinstance(v, torch.Tensor):
                    if v.numel() != 1:
                        raise ValueError(f"Tensor {p.name} must be 1-element")
                    v = v.item()
                if h.kind == "flag":
                    if not isinstance(v, bool):
                        raise TypeError(f"{p.name} must be True or False, got {v!r}")
                elif not (h.optional and v is None):
                    try:
                        v = h.check("", v, "torch")
                    except ValueError:
                        raise ValueError(_message(front, part, p.name, v)) from None
                if h.functional:
                    out[part] = v
        return out

    def _state_for(self, p):
        state = self.state[p]
        if not state:
            options = self.spec.torch.options
            if options.get("counts_steps", True) and not options.get("group_step", False):
                state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
            for s in self.spec.slots:
                shape = s.shape_for(tuple(p.shape), "torch")
                if shape is not None:
                    state[s.torch] = p.new_zeros(shape)
        return state

    def zero_grad(self, set_to_none=True):
        attr = self.spec.torch.options.get("zero_grad_none")
        if attr is not None:    # the library's own switch (Apex's set_grad_none)
            set_to_none = getattr(self, attr)
        super().zero_grad(set_to_none=set_to_none)

    def _global_scale(self):
        """The gradient factor of a global norm clip the library makes at
        each step (Apex's ``max_grad_norm``: g / (‖g‖/max) where ‖g‖ > max,
        over every gradient of every group), or 1."""
        name = self.spec.torch.options.get("global_clip")
        bound = None if name is None else self.defaults[name]
        if bound is None:
            return 1.0
        from .. import get_total_norm
        grads = [p.grad for group in self.param_groups for p in group["params"]
                 if p.grad is not None]
        if not grads:
            return 1.0
        norm = float(get_total_norm(grads))
        return 1.0 / (norm / bound) if norm > bound else 1.0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        cls = type(self).__name__
        group_step = self.spec.torch.options.get("group_step", False)
        with self._lock:
            scale = self._global_scale()
            plans = []
            for group in self.param_groups:
                hyper = self._check_group(group)
                params = [p for p in group["params"] if p.grad is not None]
                for p in params:
                    if p.is_complex():
                        raise RuntimeError(f"{cls} does not support complex parameters")
                    if p.grad.is_sparse:
                        raise RuntimeError(f"{cls} does not support sparse gradients")
                if scale != 1.0:
                    hyper["grad_scale"] = scale
                plans.append((group, hyper, params))
            with _batch.all_or_nothing():
                for group, hyper, params in plans:
                    buckets = {}
                    for p in params:
                        state = self._state_for(p)
                        if group_step:
                            step = int(group.get("step", 0)) + 1
                        else:
                            step = int(state["step"].item()) + 1 if "step" in state else 1
                        buckets.setdefault(step, []).append(p)
                    if group_step:    # every group counts a step (Apex)
                        _batch.run(lambda g=group: g.__setitem__("step", g.get("step", 0) + 1))
                    for step, bucket in buckets.items():
                        states = {s.name: [self.state[p].get(s.torch) for p in bucket]
                                  for s in self.spec.slots}
                        with _front.call(f"fastopt.torch.{cls}"):
                            getattr(functional, self.spec.name)(
                                bucket, [p.grad for p in bucket], **states, step=step,
                                convention="torch", **hyper)
                        _batch.run(lambda b=bucket: [self.state[p]["step"].add_(1)
                                                     for p in b if "step" in self.state[p]])
        return loss


def make(spec):
    """The torch class of program spec `spec` (see the module docstring)."""
    front = spec.torch
    names = [p.name for p in front.parameters()]
    source = (f"def __init__(self, params, {front.signature}):\n"
              f"    self._init_from_spec(params, {{{', '.join(f'{n!r}: {n}' for n in names)}}})\n")
    scope = {}
    exec(source, scope)     # noqa: S102 - the source is built from the spec above
    init = scope["__init__"]
    init.__qualname__ = f"{front.cls}.__init__"
    doc = (f"Drop-in `torch.optim.{front.cls}` (CPU tensors): same arguments, defaults, "
           f"update and state.\n\n    Arguments after params: ``{front.signature}``. "
           f"The update (`fastopt.functional.{spec.name}`, convention \"torch\"):\n\n    "
           + spec.doc)
    return type(front.cls, (ProgramOptimizer,), {
        "__init__": init, "spec": spec, "__doc__": doc, "__module__": "fastopt.torch"})
