"""Test set-up shared by every test module.

* Keras runs on its torch backend (no TensorFlow needed), on the CPU even
  where torch sees a GPU: it is an oracle fed NumPy arrays.
* CUDA kernels run under Numba's CUDA simulator unless FASTOPT_REAL_GPU=1,
  so the whole suite runs on a machine without a GPU. Both must be set before
  numba or keras is first imported, hence here.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_TORCH_DEVICE", "cpu")   # the oracle runs on the host
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")
os.environ.setdefault("NUMBA_CUDA_WARN_ON_IMPLICIT_COPY", "0")
REAL_GPU = os.environ.get("FASTOPT_REAL_GPU") == "1"
if not REAL_GPU:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402


class Target:
    """Moves test arrays to where a target runs, and back (always copies)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name

    def put(self, array):
        array = np.asarray(array, order="C")
        if self.name == "cpu":
            return array.copy()
        if self.name == "cuda":           # Numba device arrays (simulated or real)
            from numba import cuda
            return cuda.to_device(array)
        if self.name == "cupy":
            import cupy
            return cupy.array(array)
        import torch
        return torch.tensor(array, device="cuda")

    def get(self, array):
        return to_host(array)


def to_host(array):
    """A NumPy copy of any test array."""
    if isinstance(array, np.ndarray):
        return array.copy()
    if hasattr(array, "copy_to_host"):
        return array.copy_to_host()
    if hasattr(array, "get"):              # CuPy
        return array.get()
    return array.detach().cpu().numpy()    # torch


def _gpu_targets():
    """CuPy and torch CUDA targets, when a real GPU and the library are there."""
    found = []
    if not REAL_GPU:
        return found
    try:
        import cupy  # noqa: F401
        found.append(Target("cupy"))
    except ImportError:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            found.append(Target("torch-cuda"))
    except ImportError:
        pass
    return found


class _ReadOnlyCAI:
    """A GPU array exported read-only through __cuda_array_interface__."""

    def __init__(self, array):
        self.array = array
        cai = dict(array.__cuda_array_interface__)
        cai["data"] = (cai["data"][0], True)
        self.__cuda_array_interface__ = cai


def read_only(array):
    """A test array (as a target put it) that the dispatcher must see as read-only."""
    if isinstance(array, np.ndarray):
        array.flags.writeable = False
        return array
    if not REAL_GPU:
        array._ary.flags.writeable = False     # the simulator's memory is NumPy
        return array
    return _ReadOnlyCAI(array)


CPU, CUDA = Target("cpu"), Target("cuda")
TARGETS = [CPU, CUDA] + _gpu_targets()


@pytest.fixture(params=TARGETS, ids=repr)
def target(request):
    return request.param


@pytest.fixture(scope="session", autouse=True)
def _ptx_compiling_early(request, tmp_path_factory):
    """Under pytest-xdist, the selected PTX modules' compiling starts with
    the session, in the background (tests/ptx_probe.py, `start_early`)."""
    import ptx_probe
    stop = ptx_probe.start_early(ptx_probe.scripts_of(request.session.items),
                                 tmp_path_factory)
    yield
    stop()


# The inner loop (``-m "not slow"``) runs a subset of each large table: the
# rest of a table, and whole tests that start processes or compile every
# variant, carry this mark.
SLOW = pytest.mark.slow


def slow_unless(keep, *values, id=None):
    """``pytest.param(*values)``, marked slow unless `keep`."""
    return pytest.param(*values, id=id, marks=() if keep else SLOW)


def targets_slow_beyond(*fast):
    """`TARGETS` as params of the ``target`` fixture, slow but for `fast`."""
    return [slow_unless(t in fast, t, id=repr(t)) for t in TARGETS]
