"""fastopt's PyTorch front end: torch.optim optimizers on fastopt's fused kernels.

Switch with one line::

    opt = fastopt.torch.Adam(model.parameters(), lr=1e-3)   # was torch.optim.Adam

Same arguments, defaults, param groups, ``state_dict`` layout and update rules
as torch.optim; works with torch's LR schedulers, ``torch.amp.GradScaler``,
``DistributedDataParallel``, ``ZeroRedundancyOptimizer(optimizer_class=...)``
and FSDP2's DTensor params (each rank steps its local shards; `_dtensor`).
Each class is made from its optimizer's spec (`fastopt.specs`).
"""
try:
    import torch  # noqa: F401
except ImportError as e:   # pragma: no cover - torch is optional for fastopt
    raise ImportError("fastopt.torch needs PyTorch: pip install 'fastopt[torch]'") from e

from ..specs import PROGRAMS, SPECS
from . import _program
from ._make import make

for _spec in SPECS:
    if _spec.torch is not None:
        globals()[_spec.torch.cls] = make(_spec)
for _spec in PROGRAMS:   # steps of several passes (`fastopt.spec.Program`)
    if _spec.torch is not None:
        globals()[_spec.torch.cls] = _program.make(_spec)

from ._sparse_adam import SparseAdam  # noqa: E402 - sparse gradients (`fastopt._sparse`)

__all__ = [spec.torch.cls for spec in SPECS + PROGRAMS if spec.torch is not None] + ["SparseAdam"]
