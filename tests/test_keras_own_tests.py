"""Keras's own test files for its optimizers, run against fastopt's classes.

Each module below (``keras/src/optimizers/<name>_test.py``) is imported and
its test methods are run as Keras wrote them, with the Keras class the
module tests replaced by fastopt's: their golden values, their checks of bad
arguments (Keras's own messages) and their qualitative checks hold for
fastopt too. fastopt's class is wrapped only to take what Keras's
``apply_gradients`` takes (Keras variables, gradients of another dtype, cast
to the variable's as Keras's update does); the update runs in place on the
variable's own torch tensor.

A method that tests something fastopt does not have (Keras's serialisation,
its private ``_clip_gradients``, ``exclude_from_weight_decay``, ``model.fit``)
is listed in `NOT_CARRIED` with the reason; every other method runs, so a
new test in a Keras release is run here unless it is listed.
"""
import importlib
import unittest

import numpy as np
import pytest

import fastopt

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

# Keras test module -> the class name it tests.
MODULES = {"keras.src.optimizers.ftrl_test": "Ftrl",
           "keras.src.optimizers.schedule_free_adamw_test": "ScheduleFreeAdamW"}

_SERIALISATION = "Keras's serialisation of Keras objects"
_CLIP = "Keras's private _clip_gradients (fastopt fuses clipping into the update)"
NOT_CARRIED = {
    "Ftrl": {"test_config": _SERIALISATION, "test_clip_norm": _CLIP,
             "test_clip_value": _CLIP},
    "ScheduleFreeAdamW": {
        "test_config": _SERIALISATION, "test_clip_norm": _CLIP, "test_clip_value": _CLIP,
        "test_weight_decay": "exclude_from_weight_decay (fastopt decays every param)",
        "test_with_model": "model.compile takes Keras optimizers only"},
}


def _on_keras_variables(cls):
    """`cls` taking Keras's (gradient, keras.Variable) pairs."""
    def apply_gradients(self, grads_and_vars):
        pairs = []
        for grad, var in grads_and_vars:
            tensor = var.value          # the variable's own tensor, updated in place
            if grad is not None:
                grad = torch.as_tensor(keras.ops.convert_to_numpy(grad)).to(tensor.dtype)
            pairs.append((grad, tensor))
        return cls.apply_gradients(self, pairs)

    return type(cls.__name__, (cls,), {"apply_gradients": apply_gradients})


def _methods():
    for module_name, cls in MODULES.items():
        module = importlib.import_module(module_name)
        (test_case,) = [v for v in vars(module).values() if isinstance(v, type)
                        and issubclass(v, unittest.TestCase) and v.__module__ == module_name]
        for name in sorted(n for n in dir(test_case) if n.startswith("test")):
            if name not in NOT_CARRIED[cls]:
                yield pytest.param(module, test_case, cls, name, id=f"{cls}-{name}")


@pytest.mark.parametrize("module, test_case, cls, name", list(_methods()))
def test_keras_test_method_passes_with_fastopt(module, test_case, cls, name, monkeypatch):
    assert getattr(module, cls) is getattr(keras.optimizers, cls)   # what we replace
    monkeypatch.setattr(module, cls, _on_keras_variables(getattr(fastopt, cls)))
    result = unittest.TestResult()
    test_case(name).run(result)
    problems = result.failures + result.errors
    assert not problems, problems[0][1]
    assert result.testsRun == 1 and not result.skipped


@pytest.mark.parametrize("cls", list(NOT_CARRIED))
def test_methods_not_carried_over_exist(cls):
    """The list of skipped methods names methods Keras still has."""
    module = importlib.import_module(next(m for m, c in MODULES.items() if c == cls))
    names = {n for v in vars(module).values() if isinstance(v, type) for n in dir(v)}
    assert set(NOT_CARRIED[cls]) <= names


def test_the_wrapper_updates_the_keras_variable():
    var = keras.Variable(np.ones(3), dtype="float32")
    opt = _on_keras_variables(fastopt.Ftrl)(learning_rate=0.5)
    opt.apply_gradients(zip([np.full(3, 2.0)], [var]))       # float64 grads, cast
    assert opt.iterations == 1 and not np.allclose(var.numpy(), 1.0)
