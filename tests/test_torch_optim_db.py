"""torch's own optimizer table (``optim_db``, torch/testing/_internal/
common_optimizers.py) run against fastopt.torch.

Every entry whose class fastopt.torch has is taken, found by name: an
optimizer added to fastopt.torch later is picked up here with no edit. Each
contributes, on the CPU:

* its option sets (``optim_inputs_func``): fastopt.torch and torch.optim's
  single-tensor form take the same steps on the same params and gradients,
  in float64, float32 and (where the entry supports complex) complex64;
  params and every state tensor agree to 1e-12 (float64) / 1e-5 (32-bit);
* its error inputs (``optim_error_inputs_func``): fastopt.torch raises, or
  warns, what torch's own test expects of torch.optim: the same type, and a
  message matching torch's regex.

What fastopt.torch does not offer is never skipped silently: an option set
using a feature in `UNSUPPORTED` is skipped with that reason, and an error
input fastopt accepts on purpose is in `ACCEPTED`, where it must still be
accepted (a strict xfail). An entry that only takes sparse gradients
(SparseAdam) gets its gradients as sparse COO tensors over a random subset
of rows; the dense optimizers' sparse metadata is not run: they refuse
sparse gradients (test_torch_optimizers).

torch's test utilities import ``expecttest``, which the ``test`` extra installs.
"""
import inspect
import re

import pytest
import torch

import fastopt.torch

common = pytest.importorskip(
    "torch.testing._internal.common_optimizers", exc_type=ImportError,
    reason="torch's optim_db needs its test utilities' dependency expecttest "
           "(pip install -e '.[test]')")

DEVICE = "cpu"
STEPS = 20
SHAPES = [(5, 4), (7,), (1,)]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.complex64: 1e-5}

# Constructor options fastopt.torch refuses when true -> why (the README's
# deliberate differences). torch's option sets use them on CUDA devices.
UNSUPPORTED = {
    "capturable": "CUDA-graph capture of the step: torch's capturable option sets are "
                  "its CUDA ones (fastopt.torch's capturable rows: tests/test_capture.py)",
    "differentiable": "differentiating through the step: fastopt.torch refuses "
                      "differentiable=True",
}
# Entry traits this file cannot run -> why.
UNRUNNABLE = {
    "step_requires_closure": "its step needs a closure (not an elementwise update)",
}
OWN_PARAMS = "an option set with its own params: this file builds params itself"

# Error inputs fastopt.torch accepts on purpose (by the input's desc) -> why.
ACCEPTED = {
    "lr as Tensor doesn't work with foreach & not capturable":
        "fastopt.torch takes foreach for compatibility and runs its own kernel, "
        "which reads a tensor lr as a float",
    r"betas\[0\] as a Tensor is not supported for capturable=False and foreach=True":
        "fastopt.torch takes foreach for compatibility and reads tensor betas as floats",
    "betas must be either both floats or both Tensors":
        "fastopt.torch reads each beta as a float, a one-element tensor included",
}


def _entries():
    """optim_db's entries that fastopt.torch has a class for."""
    return [info for info in common.optim_db if info.name in fastopt.torch.__all__]


def _id(text):
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")


def _skip_reason(info, optim_input):
    for trait, why in UNRUNNABLE.items():
        if getattr(info, trait, False):
            return why
    for key, why in UNSUPPORTED.items():
        if optim_input.kwargs.get(key):
            return why
    if optim_input.params is not None:
        return OWN_PARAMS
    return None


# (entry, option set's desc, dtype) that differ from torch by design -> why.
DIFFERENT = {
    ("Muon", "Tensor lr", torch.float64):
        "torch.optim.Muon computes 1 - lr*wd and the adjusted lr in the tensor lr's "
        "dtype (float32); fastopt.torch reads lr as a float and computes them in "
        "float64 (params differ by ~3e-7)",
}


def _option_rows():
    for info in _entries():
        dtypes = [torch.float64, torch.float32]
        if info.supports_complex:
            dtypes.append(torch.complex64)
        for dtype in dtypes:
            for optim_input in info.optim_inputs_func(device=DEVICE, dtype=dtype):
                why = _skip_reason(info, optim_input)
                marks = () if why is None else pytest.mark.skip(reason=why)
                different = DIFFERENT.get((info.name, optim_input.desc, dtype))
                if different:
                    marks = pytest.mark.xfail(reason=different, strict=True)
                yield pytest.param(info, optim_input, dtype, marks=marks,
                                   id=f"{info.name}-{_id(optim_input.desc)}-{dtype}")


def _error_rows():
    for info in _entries():
        for error in info.optim_error_inputs_func(device=DEVICE, dtype=torch.float32):
            desc = error.optimizer_error_input.desc
            why = ACCEPTED.get(desc)
            marks = () if why is None else pytest.mark.xfail(reason=why, strict=True)
            yield pytest.param(info, error, marks=marks, id=f"{info.name}-{_id(desc)}")


MATRICES = [(5, 4), (3, 7), (1, 1)]


def _shapes(cls):
    """`SHAPES`, or matrices for an optimizer that takes nothing else
    (torch's Muon refuses a 1-D param at construction)."""
    try:
        cls([torch.zeros(3, requires_grad=True)])
    except ValueError:
        return MATRICES
    return SHAPES


def _problem(dtype, seed=0, shapes=SHAPES, sparse=False):
    """Initial params and STEPS lists of gradients, one per param (sparse:
    COO over the first dim, a random half of its rows)."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    grads = [[torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
             for _ in range(STEPS)]
    if sparse:
        grads = [[_sparse_rows(g, gen) for g in step] for step in grads]
    return params, grads


def _sparse_rows(g, gen):
    keep = torch.rand(g.shape[0], generator=gen) < 0.5
    rows = torch.nonzero(keep).flatten()
    return torch.sparse_coo_tensor(rows[None], g[rows], g.shape)


def _takes_foreach(cls):
    return "foreach" in inspect.signature(cls.__init__).parameters


def _run(cls, kwargs, params, grads):
    params = [p.clone() for p in params]
    opt = cls(params, **kwargs)
    for step in grads:
        for p, g in zip(params, step):
            p.grad = g.clone()
        opt.step()
    return params, opt


def _rel_err(a, b):
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    a, b = a.double(), b.double()
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


@pytest.mark.parametrize("info, optim_input, dtype", list(_option_rows()))
def test_option_set_matches_torch(info, optim_input, dtype):
    params, grads = _problem(dtype, shapes=_shapes(info.optim_cls),
                             sparse=info.only_supports_sparse_grads)
    kwargs = dict(optim_input.kwargs)
    # torch's single-tensor form, where the class has another (Muon has one form)
    single = {"foreach": False} if _takes_foreach(info.optim_cls) else {}
    want, ref = _run(info.optim_cls, {**single, **kwargs}, params, grads)
    got, opt = _run(getattr(fastopt.torch, info.name), kwargs, params, grads)
    tol = TOL[dtype]
    for p, q in zip(got, want):
        assert p.dtype == q.dtype == dtype
        assert _rel_err(p, q) <= tol
    # The run moved the params: the check has teeth.
    assert max(_rel_err(p0, q) for p0, q in zip(params, want)) > 10 * tol
    ours, theirs = opt.state_dict(), ref.state_dict()
    assert ours["state"].keys() == theirs["state"].keys()
    assert [sorted(g) for g in ours["param_groups"]] == [sorted(g) for g in theirs["param_groups"]]
    for index, state in theirs["state"].items():
        assert ours["state"][index].keys() == state.keys(), index
        for key, value in state.items():
            have = ours["state"][index][key]
            assert type(have) is type(value), key
            if torch.is_tensor(value):
                assert have.dtype == value.dtype and have.shape == value.shape, key
            if key == "step":   # a tensor, or an int (SparseAdam's)
                assert type(have) is type(value) and float(have) == float(value)
            else:
                assert _rel_err(have, value) <= tol, key


def _attempt(cls, error):
    optim_input = error.optimizer_error_input
    opt = cls(optim_input.params, **optim_input.kwargs)
    if error.error_on == common.OptimizerErrorEnum.STEP_ERROR:
        opt.step()


@pytest.mark.parametrize("info, error", list(_error_rows()))
def test_error_input_like_torch(info, error):
    """torch.optim does what the entry says (the row is meaningful), then
    fastopt.torch does the same."""
    for cls in (info.optim_cls, getattr(fastopt.torch, info.name)):
        if issubclass(error.error_type, Warning):
            with pytest.warns(error.error_type, match=error.error_regex):
                _attempt(cls, error)
        else:
            with pytest.raises(error.error_type, match=error.error_regex):
                _attempt(cls, error)


def test_every_fastopt_torch_optimizer_with_an_entry_is_taken():
    """The selection is by name, and finds the optimizers fastopt.torch has
    that torch's table lists (all but those torch's table lacks)."""
    names = {info.name for info in _entries()}
    assert names <= set(fastopt.torch.__all__)
    assert {"Adadelta", "RAdam", "Rprop", "Adam", "SGD"} <= names
