"""Tensors read through torch's DLPack exchange API (`kernels.dlpack`,
`fastopt._dlpack`): the addresses and sizes torch reports, every tensor the
kernels cannot read refused at its own index with no Python error left
set, `clip_grad_norm_` the same with and without the API, and
fastopt.torch's bulk check through it answering as its Python reads do."""
import sys
import warnings

import numpy as np
import pytest
import torch

import fastopt
from fastopt import _clip, _dlpack
from fastopt.kernels.dlpack import read_dense

API = _dlpack.reader(torch.Tensor)
pytestmark = pytest.mark.skipif(API is None, reason="this torch has no DLPack exchange API")


def _read(tensors):
    return read_dense(np.fromiter(map(id, tensors), np.int64, len(tensors)), *API)


def test_addresses_and_sizes_are_torchs():
    x = torch.randn(4, 5)
    tensors = [x, x[1:], x[2], torch.zeros(0), torch.tensor(2.0), torch.zeros(1, 3)[:, :],
               torch.zeros(3, 1).expand(3, 1), torch.zeros(2, 1, 3).transpose(0, 1),
               torch.zeros(5, requires_grad=True)]
    first, _, addrs, sizes = _read(tensors)
    assert first == -1
    assert addrs.tolist() == [t.data_ptr() for t in tensors]
    assert sizes.tolist() == [t.numel() for t in tensors]
    first, _, addrs, _ = _read([torch.zeros(3, dtype=torch.float64)])
    assert first == -1 and _clip._dense_cpu_group(
        [torch.zeros(3, dtype=torch.float64)], torch).dtype == np.float64


def _refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # sparse CSR's and quantization's notices
        return {
            "transposed": torch.randn(3, 4).t(),
            "strided": torch.randn(8)[::2],
            "expanded": torch.zeros(3, 1).expand(3, 4),
            "float64 after float32": torch.zeros(3, dtype=torch.float64),
            "bfloat16": torch.zeros(3, dtype=torch.bfloat16),
            "complex": torch.zeros(3, dtype=torch.complex64),
            "integer": torch.zeros(3, dtype=torch.int32),
            "sparse": torch.randn(3, 3).to_sparse(),
            "sparse CSR": torch.randn(3, 3).to_sparse_csr(),
            "meta": torch.zeros(3, device="meta"),
            "quantized": torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.qint8),
        }


@pytest.mark.parametrize("name", list(_refused()))
def test_refused_at_its_index_with_no_error_left(name):
    bad = _refused()[name]
    tensors = [torch.randn(3), torch.randn(2, 2), bad, torch.randn(4)]
    first, _, addrs, sizes = _read(tensors)
    assert first == 2
    assert sys.exc_info() == (None, None, None)
    assert addrs[:2].tolist() == [t.data_ptr() for t in tensors[:2]]
    assert _clip._dense_cpu_group(tensors, torch) is None


def test_no_api_without_the_capsule():
    class Plain:
        pass
    assert _dlpack.reader(Plain) is None
    assert _dlpack.reader(np.ndarray) is None


def test_clip_the_same_without_the_api(monkeypatch):
    def params():
        g = torch.Generator().manual_seed(3)
        out = [torch.zeros(n, requires_grad=True) for n in (5, 0, 300, 1, 70)]
        for p in out:
            p.grad = torch.randn(p.shape, generator=g)
        return out

    fast, slow = params(), params()
    want = fastopt.clip_grad_norm_(fast, 0.5)
    monkeypatch.setitem(_dlpack._found, torch.Tensor, None)
    assert _clip._dense_cpu_group([p.grad for p in slow], torch) is None
    got = fastopt.clip_grad_norm_(slow, 0.5)
    assert torch.equal(got, want)
    for a, b in zip(fast, slow):
        assert torch.equal(a.grad, b.grad)


def _front_case(name):
    """Params, grads and states of one fastopt.torch.Adam group, after a first
    step (states made), altered as `name` says."""
    import fastopt.torch as ftorch

    gen = torch.Generator().manual_seed(5)
    dtype = {"bf16": torch.bfloat16, "bf16, float32 state": torch.bfloat16,
             "complex": torch.complex64, "float64": torch.float64}.get(name, torch.float32)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype))
              for s in [(3, 4), (5,), (1,), (0,), (2, 1, 3)]]
    if name == "plain tensors":
        params = [p.detach().requires_grad_() for p in params]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(dtype)
    opt = ftorch.Adam(params, lr=1e-3)
    if name == "bf16, float32 state":
        opt.state_dtype = torch.float32
    opt.step()
    if name == "mixed dtypes":
        p = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
        p.grad = torch.randn(4, dtype=torch.float64)
        opt.add_param_group({"params": [p]})
        opt.param_groups[0]["params"].append(opt.param_groups.pop()["params"][0])
        opt.step()
    state = opt.state[params[0]]
    if name == "state transposed":
        state["exp_avg"] = torch.zeros(4, 3).t()
    elif name == "state of another shape":
        state["exp_avg"] = torch.zeros(12)
    elif name == "state of another dtype":
        state["exp_avg_sq"] = torch.zeros(3, 4, dtype=torch.float64)
    elif name == "grad non-contiguous":
        params[0].grad = torch.randn(4, 3).t()
    elif name == "state missing":
        del state["exp_avg"]
    params = [p for p in opt.param_groups[0]["params"] if p.grad is not None]
    return opt, params, [p.grad for p in params], [opt.state.get(p) for p in params]


_FRONT = {"parameters": True, "plain tensors": True, "float64": True, "bf16": True,
          "bf16, float32 state": True, "complex": True, "mixed dtypes": True, "state transposed": False,
          "state of another shape": False, "state of another dtype": False,
          "grad non-contiguous": False, "state missing": False}


@pytest.mark.parametrize("name", list(_FRONT))
def test_front_end_reads_equal_python_reads(name, monkeypatch):
    """fastopt.torch's bulk check (`Optimizer._all_fine`) through DLPack
    answers as its reads from Python do, or leaves the answer to them."""
    from fastopt.torch import _base
    monkeypatch.setattr(_base, "_READ_FROM", 1)     # small groups read from Python
    opt, params, grads, states = _front_case(name)
    keys = ["exp_avg", "exp_avg_sq"]
    read = opt._read_kinds(params, grads, states, keys)
    monkeypatch.setattr(type(opt), "_read_kinds", lambda *args: None)
    python = opt._all_fine(params, grads, states, keys)
    if _FRONT[name]:
        assert read is not None and python is not None
        assert read == python
        assert [type(d) for d in read[1]] == [torch.device] * len(params)
    else:
        assert read is None
