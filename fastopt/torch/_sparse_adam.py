"""fastopt.torch.SparseAdam: torch.optim.SparseAdam on the rows kernel.

Same constructor, checks and messages, state (``step`` a Python int, as
torch keeps it; ``exp_avg``, ``exp_avg_sq`` like the param) and update as
torch's. A step coalesces each sparse gradient (torch's own ``coalesce``:
duplicate indices summed, as torch does before its non-linear update) and
runs one kernel call per param over the touched rows only
(`fastopt._sparse.update_rows`, the Adam rule's element step at each touched
element), so a step costs what the gradient's rows cost, not the table's.

float16 and bfloat16 params on the CPU: the state in the param's dtype, as
torch keeps it, float32 math and one rounding per stored value (the host
rows kernel's 16-bit storage, `kernels.storage`). torch's SparseAdam rounds
every intermediate op to 16 bits instead, so the two drift apart (up to
20-30 16-bit ulps after 50 steps, docs/mixed-precision.md). The GPU rows
kernel takes float32 and float64 only.
"""
import math

import torch

from .. import _sparse
from ._base import check, flag


_HALF = (torch.float16, torch.bfloat16)
_DTYPES = (torch.float32, torch.float64, *_HALF)


class SparseAdam(torch.optim.Optimizer):
    """Drop-in `torch.optim.SparseAdam`: same arguments, defaults, update and
    state (``step``, ``exp_avg``, ``exp_avg_sq``); only the rows a sparse
    gradient touches are read and written.

    Arguments after params: ``lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    maximize=False``.

    Example::

        >>> emb = torch.nn.Embedding(100_000, 64, sparse=True)
        >>> opt = fastopt.torch.SparseAdam(emb.parameters(), lr=1e-3)
        >>> loss_fn(emb(ids)).backward()
        >>> opt.step()
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "maximize": maximize}
        _hyper(defaults)
        super().__init__(params, defaults)
        sparse, complex_ = [], []
        for index, group in enumerate(self.param_groups):
            for d_index, p in enumerate(group["params"]):
                if p.is_sparse:
                    sparse.append([index, d_index])
                if p.is_complex():
                    complex_.append([index, d_index])
        if sparse:
            raise ValueError(f"Sparse params at indices {sparse}: SparseAdam requires "
                             "dense parameter tensors")
        if complex_:
            raise ValueError(f"Complex params at indices {complex_}: SparseAdam does not "
                             "support complex parameters")

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every param that has a (sparse) gradient; returns
        `closure()`'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for group in self.param_groups:     # every check before any write
            lr, beta1, beta2, eps, maximize = _hyper(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("SparseAdam does not support dense gradients, "
                                       "please consider Adam instead")
                if p.dtype not in _DTYPES or (p.dtype in _HALF and p.device.type != "cpu"):
                    raise TypeError(f"fastopt.torch.SparseAdam updates float32 and float64 "
                                    f"params, and float16 and bfloat16 params on the CPU; "
                                    f"got {p.dtype} on {p.device}")
                work.append((p, lr, beta1, beta2, eps, maximize, group["lr"]))
        for p, lr, beta1, beta2, eps, maximize, given_lr in work:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            grad = p.grad.coalesce()
            values = grad._values()
            if values.numel() == 0:
                continue    # torch skips an empty gradient (its step still counts)
            rows, _ = _sparse._linear_rows("SparseAdam", grad._indices(), tuple(p.shape))
            step = int(state["step"])
            scalars = _sparse.sparse_adam_scalars(lr, beta1, beta2, eps, step)
            if isinstance(given_lr, torch.Tensor):
                # torch's step size is then a tensor of lr's dtype, rounded as such
                size = given_lr.squeeze() * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
                scalars = (float(size), *scalars[1:])
            _sparse.update_rows(
                "fastopt.torch.SparseAdam", _sparse.ADAM_ROWS, p, rows.contiguous(),
                values.contiguous(), (state["exp_avg"], state["exp_avg_sq"]),
                _sparse.pre_of(maximize), scalars)
        return loss


def _hyper(group):
    """torch's checks of a group, in its order and words."""
    lr = group["lr"]
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    lr = check(lr, "learning rate", low=0.0, low_open=True)
    eps = check(group["eps"], "epsilon value", low=0.0, low_open=True)
    betas = group["betas"]
    beta1 = check(betas[0], "beta parameter at index 0", 0.0, 1.0, high_open=True)
    beta2 = check(betas[1], "beta parameter at index 1", 0.0, 1.0, high_open=True)
    return lr, beta1, beta2, eps, flag(group.get("maximize", False), "maximize")
