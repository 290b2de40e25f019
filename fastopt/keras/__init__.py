"""Keras 3 optimizers whose update is fastopt's fused list call.

``fastopt.keras.Adam`` *is* a ``keras.optimizers.Adam`` (a subclass): Keras's
constructor, names, defaults, ``get_config``, schedules, callables, clipping,
``loss_scale_factor``, ``gradient_accumulation_steps``, ``use_ema``,
``exclude_from_weight_decay``, ``LossScaleOptimizer``, ``model.compile`` /
``model.fit`` and ``model.save`` / ``keras.saving.load_model`` all work as they
do for Keras's own class, because they are Keras's own code. What changes is
the update: where Keras's torch backend runs a chain of ``torch._foreach_*``
calls per step (Adam: nine passes over memory) and applies weight decay in
another pass, fastopt runs one fused kernel call per dtype over every
variable, weight decay included (`fastopt.keras._fused`).

Keras's torch backend only (``KERAS_BACKEND=torch``), CPU and CUDA tensors::

    import keras, fastopt.keras
    model.compile(optimizer=fastopt.keras.Adam(learning_rate=1e-3), loss="mse")
    model.fit(x, y, epochs=3)

Each class is made from its optimizer's spec (`fastopt.specs`) and the Keras
class of the same name.
"""
from ._fused import make, supported_backend
from ..specs import PROGRAMS, SPECS

supported_backend()   # a clear error on the jax / tensorflow / numpy backends

__all__ = []
for _spec in SPECS + PROGRAMS:
    if _spec.keras is not None:
        globals()[_spec.keras.cls] = make(_spec)
        __all__.append(_spec.keras.cls)
