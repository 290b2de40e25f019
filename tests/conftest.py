"""Test set-up shared by every test module.

* Keras runs on its torch backend (no TensorFlow needed).
* CUDA kernels run under Numba's CUDA simulator unless FASTOPT_REAL_GPU=1,
  so the whole suite runs on a machine without a GPU. Both must be set before
  numba or keras is first imported, hence here.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")
os.environ.setdefault("NUMBA_CUDA_WARN_ON_IMPLICIT_COPY", "0")
REAL_GPU = os.environ.get("FASTOPT_REAL_GPU") == "1"
if not REAL_GPU:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402


class Target:
    """Moves test arrays to where a target runs, and back."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name

    def put(self, array):
        if self.name == "cpu":
            return np.array(array, copy=True)
        from numba import cuda
        return cuda.to_device(np.ascontiguousarray(array))

    def get(self, array):
        if self.name == "cpu":
            return np.array(array, copy=True)
        return array.copy_to_host()


CPU, CUDA = Target("cpu"), Target("cuda")


@pytest.fixture(params=[CPU, CUDA], ids=["cpu", "cuda"])
def target(request):
    return request.param
