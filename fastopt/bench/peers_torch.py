"""torch.optim peers: single-tensor (foreach=False), foreach and fused.

Each buffer set gets its own optimizer over zero-copy tensor views of the
set's params and grads (one of each, or a model's list). After one step
(which makes torch create its state) the state tensors are replaced by views
of the set's own state arrays, so torch updates the very memory fastopt does
and the benchmark holds one copy of it.
"""
import numpy as np
MODES = {"torch-single": {"foreach": False}, "torch-foreach": {"foreach": True},
         "torch-fused": {"fused": True}}


def available():
    return _torch() is not None


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def supports(case, mode, device="cpu"):
    """None if torch can run `case` in `mode` on `device`, else why not
    (its fused forms differ between CPU and CUDA)."""
    if case.torch_class is None:
        return f"torch.optim has no {case.fastopt}"
    torch = _torch()
    cls = getattr(torch.optim, case.torch_class)
    if device == "cuda" and not torch.cuda.is_available():
        return "this torch has no CUDA"
    p = torch.zeros(4, device=device)
    p.grad = torch.ones(4, device=device)
    try:
        cls([p], **case.torch_kwargs, **MODES[mode]).step()
    except (TypeError, RuntimeError, ValueError) as err:
        return f"torch.optim.{case.torch_class} has no {mode[6:]} form: {err}"
    return None


def tensor_view(array):
    """A zero-copy torch tensor of a NumPy or CUDA array (a tensor as is)."""
    torch = _torch()
    if isinstance(array, torch.Tensor):
        return array
    if hasattr(array, "__cuda_array_interface__"):
        return torch.as_tensor(array, device="cuda")
    if array.dtype.name == "bfloat16":   # NumPy has no bfloat16: ml_dtypes' bits
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def optimizer(case, params, grads, states, mode):
    """A torch.optim optimizer of `case` over zero-copy views of `params`
    (their grads `grads`), whose state is the arrays of `states` (slot ->
    one array per param), so torch updates the very memory fastopt does."""
    torch = _torch()
    cls = getattr(torch.optim, case.torch_class)
    views = [tensor_view(p) for p in params]
    for view, grad in zip(views, grads):
        view.grad = tensor_view(grad)
    opt = cls(views, **case.torch_kwargs, **MODES[mode])
    saved = [v.detach().clone() for v in views]
    opt.step()                          # creates the state
    for view, s in zip(views, saved):
        view.detach().copy_(s)          # undo it on the shared params
    for k, view in enumerate(views):
        state = opt.state[view]
        for slot in case.slots:
            key = case.torch_state.get(slot, slot)
            if key not in state:
                raise RuntimeError(f"torch.optim.{case.torch_class} made no "
                                   f"{key!r} state; the case table is wrong")
            state[key] = tensor_view(states[slot][k])
    return opt


def make(case, sets, mode):
    """``call(k)``: one torch.optim step of `case` on buffer set k. A set
    holds one array per name, or (many tensors) a list per name."""
    optimizers = []
    for arrays in sets:
        as_list = {name: a if isinstance(a, list) else [a] for name, a in arrays.items()}
        optimizers.append(optimizer(case, as_list["param"], as_list["grad"],
                                    as_list, mode))

    def call(k):
        optimizers[k].step()

    return call
