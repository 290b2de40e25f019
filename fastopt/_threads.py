"""Numba's threading layer: one that survives fork, chosen before any parallel call.

Numba picks its layer once, at the first parallel call, by
``numba.config.THREADING_LAYER`` ("default": tbb, then omp, then workqueue).
On Linux the omp layer is GNU OpenMP, which a forked child cannot use: Numba
kills the child (SIGTERM) at its first parallel region, and a
``multiprocessing`` pool with the fork start method waits for it forever.
The tbb layer is fork-safe and safe for concurrent calls from several
threads, but the ``tbb`` wheel puts ``libtbb`` in ``<prefix>/lib``, where
Numba's loader does not look, so "default" silently falls back to omp.

`choose` (run when fastopt is imported) loads the wheel's library, so that
"default" finds tbb, and leaves the choice itself to Numba: a layer the user
named (``NUMBA_THREADING_LAYER``, or ``numba.config.THREADING_LAYER`` set
before the first parallel call) is kept. Measured against omp in the same run:
``benchmarks/threading_layers.py``, ``benchmarks/README.md``.

Where the layer in use cannot run in a forked child (omp on Linux, chosen by
the user or left by a missing tbb), the child is marked at fork and
`check_fork` makes fastopt's entry points raise `ForkUnsafeError` there,
before Numba would kill the process.
"""
import ctypes
import functools
import os
import sys
from importlib import metadata

import numba
from numba.np.ufunc import parallel

# The file Numba's tbb layer loads by name, per platform (numba.np.ufunc.parallel).
_LIBTBB = {"win32": "tbb12.dll", "darwin": "libtbb.12.dylib"}.get(sys.platform, "libtbb.so.12")
# Layers Numba may resolve to tbb: only for these is loading libtbb of use.
_MAY_PICK_TBB = frozenset(["default", "tbb", "safe", "threadsafe", "forksafe"])

_forked_unsafe = False   # set in a forked child whose parent had started GNU OpenMP


class ForkUnsafeError(RuntimeError):
    """fastopt was called in a forked child whose threading layer cannot run there."""


def _load_tbb():
    """Load the ``tbb`` package's library, if it is installed; whether it was."""
    try:
        files = metadata.files("tbb") or []
    except metadata.PackageNotFoundError:
        return False
    for f in files:
        if f.name == _LIBTBB:
            try:
                # RTLD_GLOBAL: Numba's later dlopen by name then finds this copy.
                ctypes.CDLL(str(f.locate()), mode=ctypes.RTLD_GLOBAL)
                return True
            except OSError:
                return False
    return False


def choose():
    """Make tbb available to Numba's choice of layer (see the module docstring).

    Does nothing once Numba has started a layer, or when the user named one
    that is not tbb.
    """
    if parallel._is_initialized:
        return
    if str(numba.config.THREADING_LAYER).lower() in _MAY_PICK_TBB:
        _load_tbb()


def layer():
    """The layer Numba started, or None before the first parallel call."""
    return numba.threading_layer() if parallel._is_initialized else None


def fork_safe(name):
    """Whether Numba's layer `name` can run parallel code in a forked child."""
    return name != "omp" or not sys.platform.startswith("linux")


def _after_fork_in_child():
    global _forked_unsafe
    started = layer()
    _forked_unsafe = started is not None and not fork_safe(started)


def check_fork():
    """Raise `ForkUnsafeError` in a forked child that cannot run fastopt's
    parallel kernels; a no-op everywhere else."""
    if _forked_unsafe:
        raise ForkUnsafeError(
            "fastopt: this process was forked from one that had started Numba's "
            "'omp' threading layer (GNU OpenMP), which cannot run parallel code "
            "in a forked child (Numba would kill the process). Use the 'tbb' "
            "layer (pip install tbb; leave NUMBA_THREADING_LAYER unset or set it "
            "to 'tbb'), or the 'spawn' or 'forkserver' start method of "
            "multiprocessing.")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def serialised(method):
    """`method` run under its instance's ``_lock`` (a ``threading.RLock``): one
    call at a time per optimizer, so that two threads stepping the same
    optimizer never mix one step's gradients or state with the other's.
    Reentrant, so that a learning-rate schedule or hook called inside a step
    may read the optimizer. Different optimizers share no lock.
    """
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked
