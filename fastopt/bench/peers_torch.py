"""torch.optim peers: single-tensor (foreach=False), foreach and fused.

Each buffer set gets its own optimizer over zero-copy tensor views of the
set's param and grad. After one step (which makes torch create its state) the
state tensors are replaced by views of the set's own state arrays, so torch
updates the very memory fastopt does and the benchmark holds one copy of it.
"""
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
    """A zero-copy torch tensor of a NumPy or CUDA array."""
    torch = _torch()
    if hasattr(array, "__cuda_array_interface__"):
        return torch.as_tensor(array, device="cuda")
    return torch.from_numpy(array)


def make(case, sets, mode):
    """``call(k)``: one torch.optim step of `case` on buffer set k."""
    torch = _torch()
    cls = getattr(torch.optim, case.torch_class)
    optimizers = []
    for arrays in sets:
        param = tensor_view(arrays["param"])
        param.grad = tensor_view(arrays["grad"])
        opt = cls([param], **case.torch_kwargs, **MODES[mode])
        saved = param.detach().clone()
        opt.step()                      # creates the state
        param.detach().copy_(saved)     # undo it on the shared param
        state = opt.state[param]
        for slot in case.slots:
            key = case.torch_state.get(slot, slot)
            if key not in state:
                raise RuntimeError(f"torch.optim.{case.torch_class} made no "
                                   f"{key!r} state; the case table is wrong")
            state[key] = tensor_view(arrays[slot])
        optimizers.append(opt)

    def call(k):
        optimizers[k].step()

    return call
