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
        self._check_group(given)
        super().__init__(params, dict(given))
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
            name, value = front.canonical(p.name), group[p.name]
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
            if self.spec.torch.options.get("counts_steps", True):
                state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
            for s in self.spec.slots:
                shape = s.shape_for(tuple(p.shape), "torch")
                if shape is not None:
                    state[s.torch] = p.new_zeros(shape)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        cls = type(self).__name__
        with self._lock:
            plans = []
            for group in self.param_groups:
                hyper = self._check_group(group)
                params = [p for p in group["params"] if p.grad is not None]
                for p in params:
                    if p.is_complex():
                        raise RuntimeError(f"{cls} does not support complex parameters")
                    if p.grad.is_sparse:
                        raise RuntimeError(f"{cls} does not support sparse gradients")
                plans.append((hyper, params))
            with _batch.all_or_nothing():
                for hyper, params in plans:
                    buckets = {}
                    for p in params:
                        state = self._state_for(p)
                        step = int(state["step"].item()) + 1 if "step" in state else 1
                        buckets.setdefault(step, []).append(p)
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
