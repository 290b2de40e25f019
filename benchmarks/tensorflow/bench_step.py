"""What stepping TensorFlow variables with fastopt costs, beside the update itself.

For a model of float32 tf.Variables, interleaved per round, medians:

* ``fastopt step``: ``fastopt.Adam.apply_gradients(zip(grads, vars))``, the
  whole call on the variables (views made, checked, updated);
* ``views only``: `fastopt._tensorflow.host_arrays` for the params (two reads
  per variable, the copy-on-read check) and the gradients, no update;
* ``update on NumPy``: the same optimizer on NumPy arrays of the same sizes
  (the fused update alone);
* ``copy in + out``: the route without views: ``var.numpy()`` for every
  variable, then ``var.assign(array)`` for every variable (what a
  copy-in/copy-out session would add to each step);
* ``tf.compat.v1 Adam``: TensorFlow's own fused Adam kernel (ResourceApplyAdam),
  eager, one op per variable; and with ``KERAS_BACKEND=tensorflow``,
  ``keras.optimizers.Adam`` on the same variables.

Usage: KERAS_BACKEND=tensorflow python benchmarks/tensorflow/bench_step.py [--rounds 15]
Thread counts: Numba's and TensorFlow's defaults (both all cores; TensorFlow's
reads as 0), or --threads N for both; stated in the output.
"""
import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numba  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fastopt  # noqa: E402
from fastopt import _tensorflow  # noqa: E402

MODELS = {
    # ~10M elements: ten 1000x1000 matrices and their biases.
    "10M in 20 variables": [(1000, 1000)] * 10 + [(1000,)] * 10,
    # Many small variables: the per-variable cost.
    "2.5M in 150 variables": [(128, 128)] * 75 + [(17_000,)] * 75,
}
ADAM = {"learning_rate": 1e-3}


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def model(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]


def cases(shapes):
    init, grads_np = model(shapes, 0), model(shapes, 1)
    grads_np = [g * 1e-2 for g in grads_np]
    grads = [tf.constant(g) for g in grads_np]
    out = {}

    tf_vars = [tf.Variable(a) for a in init]
    opt = fastopt.Adam(**ADAM)
    out["fastopt step"] = lambda: opt.apply_gradients(zip(grads, tf_vars))

    def views():
        with _tensorflow.host_arrays(tf_vars, "bench") as p, \
                _tensorflow.host_arrays(grads, "bench", "grads", writable=False) as g:
            assert len(p) == len(g)
    out["views only"] = views

    np_params = [a.copy() for a in init]
    np_opt = fastopt.Adam(**ADAM)
    out["update on NumPy"] = lambda: np_opt.apply_gradients(zip(grads_np, np_params))

    copy_vars = [tf.Variable(a) for a in init]

    def copy_in_out():
        copies = [v.numpy() for v in copy_vars]
        for v, c in zip(copy_vars, copies):
            v.assign(c)
    out["copy in + out"] = copy_in_out

    v1_vars = [tf.Variable(a) for a in init]
    v1 = tf.compat.v1.train.AdamOptimizer(ADAM["learning_rate"])
    out["tf.compat.v1 Adam"] = lambda: v1.apply_gradients(zip(grads, v1_vars))

    import keras
    if keras.backend.backend() == "tensorflow":
        k_vars = [keras.Variable(a) for a in init]
        k_opt = keras.optimizers.Adam(**ADAM)
        out["keras.optimizers.Adam (TF)"] = lambda: k_opt.apply_gradients(zip(grads, k_vars))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for Numba and for TensorFlow's ops (0: their defaults)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    if args.threads:
        numba.set_num_threads(args.threads)
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras
    meta = {"tensorflow": tf.__version__, "numpy": np.__version__, "numba": numba.__version__,
            "keras": f"{keras.__version__} ({keras.backend.backend()})",
            "numba threads": numba.get_num_threads(),
            "tf intra-op threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "cpu count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d"), "rounds": args.rounds}
    print(json.dumps(meta))
    results = {}
    for name, shapes in MODELS.items():
        fns = cases(shapes)
        for fn in fns.values():     # warm up: compilation, first touch
            fn(), fn()
        times = {k: [] for k in fns}
        for _ in range(args.rounds):
            for k, fn in fns.items():
                times[k].append(timed(fn))
        n = sum(int(np.prod(s)) for s in shapes)
        print(f"\n{name} ({n:,} float32 elements), ms: median [min, max]")
        results[name] = {}
        for k, ts in times.items():
            ms = [t * 1e3 for t in ts]
            results[name][k] = {"median_ms": statistics.median(ms), "min_ms": min(ms),
                                "max_ms": max(ms)}
            print(f"  {k:<28} {statistics.median(ms):9.2f}  [{min(ms):.2f}, {max(ms):.2f}]")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
