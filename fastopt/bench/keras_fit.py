"""The optimizer step inside Keras 3's ``model.fit`` (torch backend, CPU).

Two copies of one model of 150 variables (37 blocks of ``Dense`` and
``LayerNormalization``, then a ``Dense``: 2.5 million weights), one compiled
with ``keras.optimizers.X``, the other with ``fastopt.keras.X``, each in a
process of its own, taking turns in the same run (`run_keras_fit`):

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
import statistics
import time

import numpy as np

BLOCKS = 37
WIDTH = 256
BATCH = 32
IMPLS = ("keras", "fastopt.keras")
WHAT = ("step", "train_step")
ROUNDS = 5


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
                  width=WIDTH, rounds=ROUNDS):
    """Rows (one per optimizer, implementation and what is timed) and
    ratios; see the module docstring (`blocks`, `width`: the model's).

    Each implementation runs in a process of its own (spawned), and the two
    take turns, round after round, `repeats` timed calls of each kind per
    round. In one process, Numba's OpenMP threads spin for a while after
    each fastopt call and slow the torch calls that follow (measured:
    keras.optimizers.Adam's step 130 ms interleaved with fastopt's, 20 ms
    alone), which would charge fastopt's threads to Keras.
    """
    import multiprocessing

    _keras()     # the backend check, before any process starts
    context = multiprocessing.get_context("spawn")
    rows, ratios = [], []
    for name in optimizers:
        workers = {}
        for label in IMPLS:
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, label, name, blocks,
                                                             width, warmup), daemon=True)
            process.start()
            workers[label] = (process, parent)
        try:
            for _, conn in workers.values():
                _reply(conn)                 # built and warmed up
            times = {(label, what): [] for label in IMPLS for what in WHAT}
            for _ in range(rounds):
                for label, (_, conn) in workers.items():
                    conn.send(max(1, repeats // rounds))
                    for what, values in _reply(conn).items():
                        times[label, what] += values
                    time.sleep(0.05)    # let its spinning threads go idle
            count, elements = _reply_size(workers)
        finally:
            for process, conn in workers.values():
                conn.send(None)
                process.join(timeout=30)
        med = {key: statistics.median(v) for key, v in times.items()}
        for (label, what), values in times.items():
            rows.append({"optimizer": name, "impl": label, "what": what,
                         "variables": count, "elements": elements,
                         "median_s": med[label, what], "min_s": min(values),
                         "max_s": max(values), "repeats": len(values)})
        ratios.append({
            "optimizer": name, "variables": count, "elements": elements,
            "step_speedup": med["keras", "step"] / med["fastopt.keras", "step"],
            "train_step_speedup": (med["keras", "train_step"]
                                   / med["fastopt.keras", "train_step"]),
            "step_share_keras": med["keras", "step"] / med["keras", "train_step"],
            "step_share_fastopt": (med["fastopt.keras", "step"]
                                   / med["fastopt.keras", "train_step"])})
    return rows, ratios


def _reply(conn):
    reply = conn.recv()
    if isinstance(reply, BaseException):
        raise reply
    return reply


def _reply_size(workers):
    _, conn = workers["keras"]
    conn.send("size")
    return _reply(conn)


def _worker(conn, label, name, blocks, width, warmup):
    """One implementation's process: build, warm up, then time `n` calls of
    each kind per request."""
    try:
        import torch
        keras, fused = _keras()
        module = keras.optimizers if label == "keras" else fused
        model = _model(keras, getattr(module, name)(learning_rate=1e-6), blocks, width)
        variables = model.trainable_variables
        grads = [torch.full(tuple(v.shape), 1e-3) for v in variables]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((BATCH, width), dtype=np.float32)
        y = rng.standard_normal((BATCH, width), dtype=np.float32)
        calls = {"step": lambda: model.optimizer.apply(grads, variables),
                 "train_step": lambda: model.train_on_batch(x, y)}
        for call in calls.values():
            for _ in range(warmup):
                call()
        conn.send("ready")
        while (n := conn.recv()) is not None:
            if n == "size":
                conn.send((len(variables), sum(int(np.prod(v.shape)) for v in variables)))
                continue
            out = {}
            for what, call in calls.items():
                out[what] = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    call()
                    out[what].append(time.perf_counter() - t0)
            conn.send(out)
    except BaseException as err:   # reported to the parent, which raises it
        conn.send(err)


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
