"""Arrays fastopt must not write although their memory is reachable.

torch's in-place ops refuse a leaf that requires grad while grad mode is on,
and an inference tensor outside inference mode; the functional API follows
them, in the single and the list form, and writes nothing. Where torch would
update (under ``torch.no_grad()``, inside ``torch.inference_mode()``), the
result is torch.optim's. A GPU array whose ``__cuda_array_interface__``
carries a mask is refused like a NumPy masked array.
"""
import numpy as np
import pytest
import torch

import fastopt
import fastopt.functional as F


def _leaf(seed=0):
    torch.manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
    p.grad = torch.randn(6, dtype=torch.float64)
    return p


def _torch_sgd(p):
    """torch.optim.SGD's step on a copy of leaf `p`: the oracle."""
    q = torch.nn.Parameter(p.detach().clone())
    q.grad = p.grad.clone()
    torch.optim.SGD([q], lr=0.1, momentum=0.9).step()
    return q.detach()


@pytest.mark.parametrize("form", ["single", "list"])
def test_leaf_that_requires_grad_is_written_only_under_no_grad(form):
    p = _leaf()
    buf = torch.zeros_like(p)
    args = (p, p.grad, buf) if form == "single" else ([p], [p.grad], [buf])
    before = p.detach().clone()
    name = "param" if form == "single" else r"param\[0\]"
    with pytest.raises(ValueError, match=f"sgd\\(\\): {name} is a leaf tensor that "
                                         "requires grad"):
        F.sgd(*args, step=1, lr=0.1, momentum=0.9, convention="torch")
    assert torch.equal(p.detach(), before) and torch.equal(buf, torch.zeros_like(p))
    want = _torch_sgd(p)
    with torch.no_grad():
        F.sgd(*args, step=1, lr=0.1, momentum=0.9, convention="torch")
    assert torch.equal(p.detach(), want)


@pytest.mark.parametrize("form", ["single", "list"])
def test_inference_tensor_is_written_only_in_inference_mode(form):
    torch.manual_seed(1)
    with torch.inference_mode():
        p, g = torch.randn(6), torch.randn(6)
    args = (p, g) if form == "single" else ([p], [g])
    before = p.clone()
    with pytest.raises(ValueError, match="is an inference tensor"):
        F.sgd(*args, step=1, lr=0.1, convention="torch")
    assert torch.equal(p, before)
    want = before.numpy().copy()
    F.sgd(want, g.numpy(), step=1, lr=0.1, convention="torch")
    with torch.inference_mode():
        F.sgd(*args, step=1, lr=0.1, convention="torch")
    np.testing.assert_array_equal(p.numpy(), want)


def test_keras_style_updates_parameters_as_keras_does():
    """Keras's torch backend updates its variables under no_grad: the
    Keras-style optimizer takes nn.Parameters outside it, and matches the
    same step on plain tensors."""
    p = _leaf(2)
    plain = p.detach().clone()
    fastopt.SGD(learning_rate=0.1).apply_gradients([(p.grad, p)])
    fastopt.SGD(learning_rate=0.1).apply_gradients([(p.grad.clone(), plain)])
    assert torch.equal(p.detach(), plain)


class _MaskedDeviceArray:
    """A GPU array by the interface alone, with a mask (CuPy-like device)."""

    class device:
        id = 0

    def __init__(self, mask):
        self.__cuda_array_interface__ = {
            "shape": (4,), "typestr": "<f4", "data": (1 << 20, False), "version": 3,
            "strides": None, "mask": mask}


def test_cuda_array_interface_mask_is_refused():
    mask = _MaskedDeviceArray(None)     # any object there is a mask
    p, g = _MaskedDeviceArray(mask), _MaskedDeviceArray(None)
    p.__cuda_array_interface__["data"] = (1 << 21, False)
    with pytest.raises(TypeError, match=r"sgd\(\): param has a mask in its "
                                        r"__cuda_array_interface__"):
        F.sgd(p, g, step=1, lr=0.1)
