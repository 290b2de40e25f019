"""The optimizer step inside Keras 3's ``model.fit`` (torch backend, CPU).

Two copies of one model of 150 variables (37 blocks of ``Dense`` and
``LayerNormalization``, then a ``Dense``: 2.4 million weights), one compiled with ``keras.optimizers.X``, the other
with ``fastopt.keras.X``, timed round-robin in the same run:

* ``step``: ``optimizer.apply(grads, model.trainable_variables)``, the call
  ``model.fit``'s train step makes (Keras's ``apply``: its own bookkeeping,
  then the update), with fixed gradients;
* ``train_step``: ``model.train_on_batch(x, y)``, the whole step ``model.fit``
  runs per batch (forward, backward, the optimizer step).

Reported: medians, fastopt's speed-up on each, and the optimizer step's share
of the train step under each. The model's weights barely move (a small
learning rate, gradients of 1e-3), so every timed step does the same work.
"""
import os

import numpy as np

from .timing import HostClock, time_interleaved

BLOCKS = 37
WIDTH = 256
BATCH = 32
OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop")


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    if keras.backend.backend() != "torch":
        raise ValueError("the Keras benchmark runs on Keras's torch backend "
                         f"(KERAS_BACKEND=torch), not {keras.backend.backend()!r}")
    import fastopt.keras
    return keras, fastopt.keras


def _model(keras, optimizer, blocks, width):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((width,))]
    for _ in range(blocks):
        layers += [keras.layers.Dense(width, activation="relu"),
                   keras.layers.LayerNormalization()]
    model = keras.Sequential(layers + [keras.layers.Dense(width)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def run_keras_fit(optimizers=("Adam",), repeats=20, warmup=3, blocks=BLOCKS,
                  width=WIDTH):
    """Rows (one per optimizer, implementation and what is timed) and
    ratios; see the module docstring (`blocks`, `width`: the model's)."""
    import torch
    keras, fused = _keras()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, width), dtype=np.float32)
    y = rng.standard_normal((BATCH, width), dtype=np.float32)
    rows, ratios = [], []
    for name in optimizers:
        impls, models = {}, {}
        for label, module in (("keras", keras.optimizers), ("fastopt.keras", fused)):
            model = _model(keras, getattr(module, name)(learning_rate=1e-6), blocks,
                           width)
            variables = model.trainable_variables
            grads = [torch.full(tuple(v.shape), 1e-3) for v in variables]
            models[label] = model

            def step(k, opt=model.optimizer, grads=grads, variables=variables):
                opt.apply(grads, variables)

            def train_step(k, model=model):
                model.train_on_batch(x, y)

            impls[(label, "step")] = (step, HostClock())
            impls[(label, "train_step")] = (train_step, HostClock())
        for call, _ in impls.values():
            for _ in range(warmup):
                call(0)
        timings = time_interleaved(impls, 1, repeats)
        count = len(models["keras"].trainable_variables)
        elements = sum(int(np.prod(v.shape)) for v in models["keras"].trainable_variables)
        for (label, what), timing in timings.items():
            rows.append({"optimizer": name, "impl": label, "what": what,
                         "variables": count, "elements": elements,
                         "median_s": timing.median, "min_s": min(timing.times),
                         "max_s": max(timing.times), "repeats": len(timing.times)})
        med = {key: t.median for key, t in timings.items()}
        ratios.append({
            "optimizer": name, "variables": count, "elements": elements,
            "step_speedup": med["keras", "step"] / med["fastopt.keras", "step"],
            "train_step_speedup": (med["keras", "train_step"]
                                   / med["fastopt.keras", "train_step"]),
            "step_share_keras": med["keras", "step"] / med["keras", "train_step"],
            "step_share_fastopt": (med["fastopt.keras", "step"]
                                   / med["fastopt.keras", "train_step"])})
    return rows, ratios


def summary(rows, ratios):
    """The report as a text table."""
    by = {(r["optimizer"], r["impl"], r["what"]): r["median_s"] for r in rows}
    lines = [f"Keras 3 model.fit step (torch backend), {ratios[0]['variables']} variables, "
             f"{ratios[0]['elements']:,} elements, float32; medians",
             f"{'optimizer':<10}{'step keras':>12}{'fastopt':>10}{'speed-up':>10}"
             f"{'train step keras':>18}{'fastopt':>10}{'speed-up':>10}"
             f"{'step share keras':>18}{'fastopt':>9}"]
    for r in ratios:
        o = r["optimizer"]
        lines.append(
            f"{o:<10}{by[o, 'keras', 'step'] * 1e3:>10.2f}ms"
            f"{by[o, 'fastopt.keras', 'step'] * 1e3:>8.2f}ms{r['step_speedup']:>9.2f}x"
            f"{by[o, 'keras', 'train_step'] * 1e3:>16.2f}ms"
            f"{by[o, 'fastopt.keras', 'train_step'] * 1e3:>8.2f}ms"
            f"{r['train_step_speedup']:>9.2f}x"
            f"{r['step_share_keras']:>17.0%}{r['step_share_fastopt']:>9.0%}")
    return "\n".join(lines)
