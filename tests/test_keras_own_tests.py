"""Keras's own optimizer tests, run against `fastopt.keras`.

The keras wheel ships them (``keras/src/optimizers/<name>_test.py`` and
``optimizer_test.py``). Each is loaded here as a private copy whose global
optimizer classes are fastopt.keras's (Keras's own modules are left alone),
and its test classes run as they are: golden trajectories, configs,
clipping, schedules, EMA, gradient accumulation, weight-decay exclusion,
loss scaling, naming, pickling. Where a case's meaning does not carry over,
`NOT_APPLICABLE` says why.
"""
import importlib.util
import os
import types

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("fastopt.keras runs on Keras's torch backend", allow_module_level=True)

import fastopt.keras  # noqa: E402
from fastopt.specs import PROGRAMS, SPECS  # noqa: E402

# test id -> why it does not apply to fastopt.keras.
NOT_APPLICABLE = {
    "test_get_method": "keras.optimizers.get('sgd') names Keras's own class; "
                       "fastopt's are passed as objects",
}


def _load(module, **replace):
    """A private copy of Keras's test module `module` with `replace` set in
    its globals."""
    spec = importlib.util.find_spec(module)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    for name, value in replace.items():
        setattr(copy, name, value)
    return copy


def _fused_optimizers_module():
    """`keras.optimizers` with fastopt.keras's classes in place of Keras's."""
    namespace = types.ModuleType("optimizers")
    namespace.__dict__.update(keras.src.optimizers.__dict__)
    for cls in fastopt.keras.__all__:
        setattr(namespace, cls, getattr(fastopt.keras, cls))
    return namespace


def _test_classes(module):
    import unittest
    return {name: value for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, unittest.TestCase)
            and value.__module__ == module.__name__}


for _spec in SPECS + PROGRAMS:
    if _spec.keras is None:
        continue
    _cls = getattr(keras.optimizers, _spec.keras.cls)
    _module = _load(f"{_cls.__module__}_test",
                    **{_spec.keras.cls: getattr(fastopt.keras, _spec.keras.cls)})
    for _name, _case in _test_classes(_module).items():
        globals()[f"TestKeras{_name}"] = type(f"TestKeras{_name}", (_case,), {})

_module = _load("keras.src.optimizers.optimizer_test",
                optimizers=_fused_optimizers_module())
for _name, _case in _test_classes(_module).items():
    globals()[f"TestKeras{_name}"] = type(f"TestKeras{_name}", (_case,), {})
del _name, _case, _module, _spec, _cls


@pytest.fixture(autouse=True)
def _not_applicable(request):
    why = NOT_APPLICABLE.get(request.node.name)
    if why:
        pytest.skip(why)
