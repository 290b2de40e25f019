"""The torch front end's table, and the runs that compare it with torch.optim.

Every row is one optimizer configuration in torch's own argument names; the
same kwargs build ``fastopt.torch.<Name>`` and ``torch.optim.<Name>``, two
copies of one small MLP train on the same data with real backprop, and the
params and optimizer state must agree. torch.optim is the oracle.

Adding an optimizer = its entry in `optimizer_db` (`VARIANTS` and
`GROUP_OVERRIDES` are read from there); adding a param-group layout = a line
in `LAYOUTS`; every test iterates `CASES`.
"""
import copy
from dataclasses import dataclass

import torch

import fastopt.torch
from conftest import slow_unless
from optimizer_db import TORCH_DB, front_kwargs

STEPS = 50
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}

# optimizer -> its option sets, in torch's names (from `optimizer_db`); lr
# chosen so 50 steps move the params.
VARIANTS = {info.spec.torch.cls: {option: front_kwargs(info.spec.torch, values)
                                  for option, values in info.torch.items()}
            for info in TORCH_DB}

# Per-group hyperparameters of the first group in the "two_groups" layout.
GROUP_OVERRIDES = {info.spec.torch.cls: front_kwargs(info.spec.torch, info.torch_group)
                   for info in TORCH_DB}

# The option set that resumes through a checkpoint.
INTERCHANGE = {info.spec.torch.cls: info.interchange for info in TORCH_DB}

# How the params are handed to the optimizer:
# one_group:  model.parameters();
# two_groups: first layer with GROUP_OVERRIDES, second with the row's kwargs;
# partial:    one group, the first bias frozen (requires_grad False, never a
#             gradient) and the last bias without a gradient for the first
#             5 steps (its step count lags: a second bucket).
LAYOUTS = ("one_group", "two_groups", "partial")
LATE_STEPS = 5


@dataclass(frozen=True)
class Case:
    name: str
    option: str
    kwargs: dict
    layout: str

    @property
    def id(self):
        return f"{self.name}-{self.option}-{self.layout}"


CASES = [Case(name, option, kwargs, layout)
         for name, options in VARIANTS.items()
         for option, kwargs in options.items()
         for layout in LAYOUTS]


def inner_loop_rows(dtypes, every_option=True):
    """(case, dtype) params: each option set on one group and each layout
    with the plain option set, in every dtype. Layouts are the front end's
    business and option sets the kernel's, the same code for any pairing:
    their cross product ran the same code again (minutes of CI). Marked slow
    but for each layout with the plain option set and, with `every_option`,
    each option set on one group in float64."""
    def keep(case, dtype):
        if case.option == "plain":
            return every_option or dtype == torch.float64
        return every_option and dtype == torch.float64
    return [slow_unless(keep(case, dtype), case, dtype, id=f"{case.id}-{dtype}")
            for case in CASES if case.option == "plain" or case.layout == "one_group"
            for dtype in dtypes]


def make_model(dtype=torch.float64, device="cpu", seed=0):
    """A small MLP: Linear(5, 16) → tanh → Linear(16, 3)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3))
    return model.to(dtype=dtype, device=device)


BATCHES = 4   # mini-batches: the gradient varies between steps, as in training


def make_data(dtype=torch.float64, device="cpu", n=64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


def loss_of(model, x, y, k=None):
    """Mean squared error on all the data, or on mini-batch `k` (cycling)."""
    if k is not None:
        rows = slice((k % BATCHES) * len(x) // BATCHES, (k % BATCHES + 1) * len(x) // BATCHES)
        x, y = x[rows], y[rows]
    return ((model(x) - y) ** 2).mean()


def param_groups(model, name, kwargs, layout):
    if layout == "two_groups":
        return [{"params": model[0].parameters(), **GROUP_OVERRIDES[name]},
                {"params": model[2].parameters()}]
    if layout == "partial":
        model[0].bias.requires_grad_(False)
    return model.parameters()


def build(lib, name, model, kwargs, layout):
    """`lib` ("torch" or "fastopt") optimizer `name` over `model` as `layout` says."""
    cls = getattr(torch.optim if lib == "torch" else fastopt.torch, name)
    return cls(param_groups(model, name, kwargs, layout), **kwargs)


def train(model, opt, x, y, steps, layout="one_group", first=0):
    """`steps` steps of real backprop on mini-batches; returns the losses.

    With ``maximize`` the objective is the negated loss: ascending it trains
    the model as descending the loss would, instead of diverging.
    """
    sign = -1.0 if opt.param_groups[0]["maximize"] else 1.0
    losses = []
    for k in range(first, first + steps):
        opt.zero_grad()
        loss = loss_of(model, x, y, k)
        (sign * loss).backward()
        if layout == "partial" and k < LATE_STEPS:
            model[2].bias.grad = None
        opt.step()
        losses.append(loss.item())
    return losses


def twins(name, kwargs, layout, dtype=torch.float64, device="cpu"):
    """The same model twice, with a torch.optim and a fastopt.torch optimizer."""
    ref, got = make_model(dtype, device), make_model(dtype, device)
    return (ref, build("torch", name, ref, kwargs, layout),
            got, build("fastopt", name, got, kwargs, layout))


def rel_err(a, b):
    """max |a − b| / max |b|, over one pair of tensors."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.is_complex() or b.is_complex():
        a, b = torch.view_as_real(a.cdouble()), torch.view_as_real(b.cdouble())
    a, b = a.double(), b.double()
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def max_param_err(model_a, model_b):
    return max(rel_err(p, q) for p, q in zip(model_a.parameters(), model_b.parameters()))


def state_err(opt_got, opt_ref):
    """Largest rel_err over every state tensor; asserts the layouts agree.

    Both optimizers' ``state_dict()``: same param indices, same keys, same
    dtypes and shapes, equal step counts.
    """
    got, ref = opt_got.state_dict(), opt_ref.state_dict()
    assert got["state"].keys() == ref["state"].keys()
    assert [sorted(g) for g in got["param_groups"]] == [sorted(g) for g in ref["param_groups"]]
    err = 0.0
    for index, ref_state in ref["state"].items():
        got_state = got["state"][index]
        assert got_state.keys() == ref_state.keys(), index
        for key, want in ref_state.items():
            have = got_state[key]
            assert isinstance(have, torch.Tensor) and have.dtype == want.dtype, key
            assert have.shape == want.shape and have.device == want.device, key
            if key == "step":
                assert have.item() == want.item()
            else:
                err = max(err, rel_err(have, want))
    return err


def copy_model(model):
    return copy.deepcopy(model)
