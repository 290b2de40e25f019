"""The pipeline's optional accelerators, and the hook that observes its kernels.

An accelerator does a call's describe-and-validate step faster than Python
for the common case, and runs the kernel in the same compiled call; for
anything it cannot vouch for it declines, having written nothing, and the
call takes the general path (`fastopt._checks`), which names the culprit.
There are two, both `fastopt._hostscan`'s jitted walks over NumPy's C
structs: ``"single"`` (one array per argument) and ``"many"`` (lists).
Their ABI assumption is checked once at first use (`_hostscan.enabled`);
``FASTOPT_ACCELERATORS=0`` in the environment turns them off, and then
only speed changes. What each saves on a realistic step is measured by
``python -m fastopt.bench`` (``accelerators`` in its JSON).

`observe` is the benchmark's hook into the pipeline: it sees, and may
replace, every accelerator and CPU kernel a call picks up.
"""
import contextlib
import os

from . import _hostscan, _threads
from .kernels import cpu, multi_cpu

# What `fastopt._dispatch` / `fastopt._multi` keep for their fast path (each
# builds its own entry on first use): variant -> the single plan; (variant,
# loops) -> the list runner; emptied by `observe`.
SINGLE, MANY = {}, {}
# (variant, id(param's dtype), id(grad's dtype)) -> the "single" accelerator
# of the 16-bit storage a checked call had, and that stored variant (`_dispatch`)
STORED = {}

# Looked up at each call, so that each stays the module's own function.
# `form`: which loop the accelerator runs (`_hostscan.runner`'s `which`,
# `list_runner`'s `loops`), or whether the kernel is the parallel one.
_BUILD = {"single": lambda v, form: _hostscan.runner(v, form),
          "many": lambda v, form: _hostscan.list_runner(v, form),
          "cpu": lambda v, form: cpu.kernel(v, form and not _threads.serial_only()),
          "multi_cpu": lambda v, form: multi_cpu.kernel(v, form and not _threads.serial_only())}
_observer = None


def enabled():
    """Whether the accelerators may run in this process (not in one that must
    not start a parallel region, `_threads.serial_only`: their walk has one)."""
    return (os.environ.get("FASTOPT_ACCELERATORS", "1") != "0" and _hostscan.enabled()
            and not _threads.serial_only())


def get(kind, variant, form):
    """The accelerator (``"single"``, ``"many"``; None when off) or the CPU
    kernel (``"cpu"``, ``"multi_cpu"``) of `variant`, as `observe`'s
    observer, if any, hands it out. form: the accelerator's loop (see
    `_BUILD`), or, for a kernel, whether its arrays are large enough for the
    parallel one (`kernels.cpu.parallel_for`, `kernels.multi_cpu.parallel_for`)."""
    if kind in ("single", "many") and not enabled():
        found = None
    else:
        found = _BUILD[kind](variant, form)
    return found if _observer is None else _observer(kind, variant, found)


def _forget():
    SINGLE.clear()
    MANY.clear()
    STORED.clear()


if hasattr(os, "register_at_fork"):   # a child may have to use serial kernels
    os.register_at_fork(after_in_child=_forget)


@contextlib.contextmanager
def observe(observer):
    """Within the block, every accelerator and CPU kernel the pipeline picks
    up is ``observer(kind, variant, fn)`` instead of `fn` (see `get`; an
    observer returning None for an accelerator turns it off; None observes
    nothing). Not for use while other threads call fastopt.

    Example (the accelerators off, and the CPU kernels' calls recorded)::

        >>> def record(kind, variant, fn):
        ...     if kind in ("single", "many"):
        ...         return None
        ...     return lambda *args: (calls.append(kind), fn(*args))[1]
        >>> with observe(record):
        ...     fastopt.functional.sgd(p, g, step=1, lr=0.1)
    """
    global _observer
    saved = _observer
    _observer = observer
    _forget()
    try:
        yield
    finally:
        _observer = saved
        _forget()
