"""Numba's threading layer under fork, and one step at a time per optimizer.

Numba picks its layer once, at the first parallel call, by
``numba.config.THREADING_LAYER``; by default that is GNU OpenMP on Linux
(tbb where Numba finds it). A forked child cannot use GNU OpenMP once its
parent has: Numba kills the child (SIGTERM) at its first parallel region,
and a ``multiprocessing`` pool with the fork start method then waits for it
forever. fastopt keeps OpenMP, the fastest layer for its loops (tbb's task
scheduling cost up to 1.9x at 1e5-1e6 elements, `benchmarks/README.md`),
and makes fork work instead: a child forked after its parent started
OpenMP is marked at fork (`serial_only`), and there every kernel runs its
loop on the calling thread (`fastopt._accel` hands out serial kernels), so
the child computes the same results, on one core.

A layer the user names is Numba's to honour (``NUMBA_THREADING_LAYER``, or
``numba.config.THREADING_LAYER`` set before the first parallel call). For a
user who names tbb, `choose` first loads the ``tbb`` wheel's library, which
the wheel puts where Numba's loader does not look.
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
# Layers the user may name that resolve to tbb.
_NAMES_TBB = frozenset(["tbb", "safe", "threadsafe", "forksafe"])

_serial_only = False   # set in a forked child whose parent had started GNU OpenMP


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
    """Where the user named a layer that is tbb, make the ``tbb`` wheel's
    library findable by Numba. Does nothing once Numba has started a layer."""
    if parallel._is_initialized:
        return
    if str(numba.config.THREADING_LAYER).lower() in _NAMES_TBB:
        _load_tbb()


def layer():
    """The layer Numba started, or None before the first parallel call."""
    return numba.threading_layer() if parallel._is_initialized else None


def fork_safe(name):
    """Whether Numba's layer `name` can run parallel code in a forked child."""
    return name != "omp" or not sys.platform.startswith("linux")


def serial_only():
    """Whether this process must not start a parallel region: a child forked
    after its parent started GNU OpenMP."""
    return _serial_only


def _after_fork_in_child():
    global _serial_only
    started = layer()
    _serial_only = _serial_only or (started is not None and not fork_safe(started))


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
