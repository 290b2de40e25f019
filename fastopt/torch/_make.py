"""The torch class of a `fastopt.spec.Spec`.

A drop-in for the torch.optim class of the same name: the constructor is the
spec's torch `Front` signature (torch's order, defaults and keyword-only
switches, written as a real ``def``), every argument lands in torch's
``defaults`` under torch's key, a param group's hyperparameters are checked
with torch's messages (``Invalid learning rate: -1.0``), the state keeps
torch's keys, and the update is one call of the spec's functional function
with ``convention="torch"``. The machinery every optimizer shares is
`fastopt.torch._base.Optimizer`.

Front options (`Front.options`): ``counts_steps`` (False: no
``state["step"]``, torch's SGD), ``eager_state`` (the state is built in the
constructor, from the constructor's values: torch's Adagrad),
``plan_error`` (torch's message for a combination the spec's plan refuses),
``pair_errors`` (torch's message for a pair argument with a half out of
range, by argument: Rprop's ``Invalid eta values: {0}, {1}``).
"""
from types import SimpleNamespace

import torch

from .. import functional
from ._base import _REJECTED, Optimizer, _get_scalar_dtype, check, flag

_LABELS = {"lr": "learning rate", "eps": "epsilon value"}   # torch's words


class SpecOptimizer(Optimizer):
    """A torch optimizer made from a spec (`make`)."""

    spec = None

    @property
    def _capturable(self):
        """capturable=True where the spec computes its scalars in the kernel
        (`fastopt.spec.StepScalars`): step and lr may live on the device."""
        spec = self.spec
        return spec.device is not None and spec.program is None and not spec.host

    def _init_from_spec(self, params, own, flat):
        front = self.spec.torch
        defaults = {key: tuple(value) if isinstance(front.canonical(key), tuple) else value
                    for key, value in own.items()}
        super().__init__(params, {**defaults, **self.spec.fixed}, flat)
        if front.options.get("eager_state"):
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state[p]
                    state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
                    for key, fill in self._slots(None, p).items():
                        state[key] = torch.full_like(p, fill,
                                                     memory_format=torch.preserve_format)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:   # as torch: AdamW is always decoupled
            group.update(self.spec.fixed)

    def _hyper(self, group):
        """torch's checks of `group`, in its signature's order; the
        functional's keyword arguments."""
        front, spec = self.spec.torch, self.spec
        checked = {}
        for param in front.parameters():
            name = front.canonical(param.name)
            if isinstance(name, tuple):   # torch's betas, etas, step_sizes
                checked.update(_check_pair(front, spec, param.name, name,
                                           group[param.name]))
            elif (name == "lr" and group.get("capturable")
                  and isinstance(group[param.name], torch.Tensor)):
                # read on the device at each step (`fastopt._capture`): a
                # value read here would be a synchronisation, and is baked in
                checked[name] = _tensor_lr(group[param.name])
            elif name not in _REJECTED and name != "foreach" and name != "fused":
                checked[name] = _check(spec.hyper(name), group[param.name],
                                       _LABELS.get(name, f"{param.name} value"))
        h = SimpleNamespace(**checked, **spec.fixed, clip_value=None)
        try:
            spec.plan(h, "torch")
        except ValueError as e:
            raise ValueError(front.options.get("plan_error", str(e))) from None
        return {name: value for name, value in checked.items()
                if spec.hyper(name).functional}

    def _slots(self, hyper, p):
        """{torch key: initial fill} of the state `p` needs under `hyper`
        (None: every slot the constructor's values use). An initial value
        named by a hyperparameter is the group's where the update takes that
        hyperparameter (Rprop's step size, from the group's lr), else the
        constructor's (Adagrad's initial_accumulator_value), as in torch."""
        own = self.defaults if hyper is None else hyper
        h = SimpleNamespace(**own)
        slots = {}
        for s in self.spec.slots:
            if hyper is None or s.used(h):
                fill = s.init
                if isinstance(fill, str):   # the group's value where it has one
                    fill = own[fill] if fill in own else self.defaults[fill]
                    if isinstance(fill, torch.Tensor):   # a capturable group's lr
                        fill = fill.item()
                slots[s.torch] = complex(fill, fill) if p.is_complex() else fill
        return slots

    def _state_keys(self):
        keys = {s.torch for s in self.spec.slots} | set(self._host)
        return keys | {"step"} if self._counts_steps else keys

    def _update(self, hyper, params, grads, state, step):
        functional.of(self.spec)(
            params, grads, **{s.name: state.get(s.torch) for s in self.spec.slots},
            **{s.name: state.get(s.torch) for s in self.spec.host},
            model=state.get("model"), step=step, convention="torch", **hyper)


def _tensor_lr(lr):
    """A capturable group's tensor lr, as torch checks it (one element)."""
    if lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    return lr


def _check_pair(front, spec, key, names, values):
    """A pair argument (``betas``), each half checked; a half out of range
    raises torch's message for the pair where it has one
    (``Front.options["pair_errors"]``), else its message for the half."""
    message = front.options.get("pair_errors", {}).get(key)
    checked = {}
    for i, (part, value) in enumerate(zip(names, values)):
        label = f"beta parameter at index {i}" if key == "betas" else f"{key}[{i}] value"
        try:
            checked[part] = _check(spec.hyper(part), value, label)
        except ValueError:
            if message is None:
                raise
            raise ValueError(message.format(*values)) from None
    return checked


def _check(h, value, label):
    if h.kind == "flag":
        return flag(value, label.removesuffix(" value"))
    if h.why:
        label = f"{label} ({h.why})"
    return check(value, label, **{k: v for k, v in h.range("torch").items()
                                  if not (k == "low" and v is None)})


def make(spec):
    """The torch class of `spec` (see the module docstring)."""
    front = spec.torch
    params = front.parameters()
    names = [p.name for p in params]
    keyword_only = any(p.kind is p.KEYWORD_ONLY for p in params)
    signature = front.signature + (", flat=False" if keyword_only else ", *, flat=False")
    source = (f"def __init__(self, params, {signature}):\n"
              f"    self._init_from_spec(params, {{{', '.join(f'{n!r}: {n}' for n in names)}}},"
              " flat)\n")
    scope = {}
    exec(source, scope)     # noqa: S102 - the source is built from the spec above
    init = scope["__init__"]
    init.__qualname__ = f"{front.cls}.__init__"
    slots = ", ".join(f"``{s.torch}``" for s in spec.slots)
    doc = (f"Drop-in `torch.optim.{front.cls}`: same arguments, defaults, update and "
           f"state ({slots}).\n\n    Arguments after params: ``{signature}``. "
           "``flat=True`` lays a group's tensors out in one buffer per\n    "
           "(device, dtype) (`fastopt.torch._flat`). The update, in fastopt's names "
           f"(`fastopt.functional.{spec.name}`, convention \"torch\"):\n\n    "
           + spec.doc + f"""

    Example::

        >>> opt = fastopt.torch.{front.cls}(model.parameters())
        >>> loss_fn(model(x), y).backward()
        >>> opt.step()
""")
    return type(front.cls, (SpecOptimizer,), {
        "__init__": init, "spec": spec, "__doc__": doc, "__module__": "fastopt.torch",
        "_counts_steps": front.options.get("counts_steps", True),
        "_host": {s.torch: s.init for s in spec.host if s.torch},
        "_hyper_names": front.caller_names(),
        "_fallbacks": {**{p.name: p.default for p in params}, **spec.fixed}})
