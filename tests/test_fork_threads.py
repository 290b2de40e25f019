"""fastopt under fork, spawn and threads.

Results are compared with the same fastopt call made serially in this
process: the kernels are elementwise, so a step's result does not depend on
the thread count or on which process runs it. Where two threads step one
optimizer, the updates are SGD without momentum on integer-valued float64
data: every sum is exact, so any order of the same steps gives the same bits,
and a step that lost or mixed up its gradients shows.
"""
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastopt
from fastopt import _threads

ADAM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
POOL_TIMEOUT = 120   # s; a pool whose child was killed never returns, so bound it


def _adam_steps(seed, n, steps=3):
    """A few Adam steps on n float32 elements drawn from `seed`: the param."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n, dtype=np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t in range(1, steps + 1):
        g = rng.standard_normal(n, dtype=np.float32)
        fastopt.functional.adam(p, g, m, v, step=t, **ADAM)
    return p


def _keras_steps(seed, n):
    """Keras-style Adam over a list of tensors (the list form's parallel walk)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n // 16, dtype=np.float32) for _ in range(16)]
    opt = fastopt.Adam()
    for _ in range(3):
        opt.apply_gradients(zip([rng.standard_normal(p.shape, dtype=np.float32)
                                 for p in params], params))
    return np.concatenate(params)


def _in_child(job):
    fn, seed, n = job
    return fn(seed, n), os.getpid()


JOBS = [(_adam_steps, 1, 200_000), (_adam_steps, 2, 100_000), (_keras_steps, 3, 160_000)]


def _run_pool(method):
    with multiprocessing.get_context(method).Pool(2) as pool:
        return pool.map_async(_in_child, JOBS).get(timeout=POOL_TIMEOUT)


@pytest.mark.slow
def test_fork_pool_after_a_parallel_step():
    """The parent starts Numba's threads first; the fork children (serial
    where the layer is GNU OpenMP) compute what this process computes."""
    _adam_steps(0, 1_000_000)
    assert _threads.layer() is not None
    got = _run_pool("fork")
    assert all(pid != os.getpid() for _, pid in got)
    for (fn, seed, n), (result, _) in zip(JOBS, got):
        np.testing.assert_array_equal(result, fn(seed, n))


@pytest.mark.slow
def test_spawn_pool():
    _adam_steps(0, 1_000_000)
    got = _run_pool("spawn")
    for (fn, seed, n), (result, _) in zip(JOBS, got):
        np.testing.assert_array_equal(result, fn(seed, n))


_SERIAL_CHILD = """
    import multiprocessing, numpy as np
    import fastopt
    from fastopt import _accel, _threads
    from fastopt.kernels import cpu, variant

    def child():
        v = variant("sgd")
        return (_threads.serial_only(), _accel.get("cpu", v, True) is cpu.kernel(v, False),
                _accel.get("single", v, 1) is None)

    if __name__ == "__main__":
        fastopt.functional.sgd(np.ones(10**6), np.ones(10**6), step=1, lr=0.1)
        print(_threads.layer(), _threads.serial_only())
        with multiprocessing.get_context("fork").Pool(1) as pool:
            print(*pool.apply_async(child).get(timeout=60))
"""


@pytest.mark.slow
def test_forked_child_of_omp_runs_serial_kernels():
    """Where the default layer is GNU OpenMP, a forked child gets the serial
    twins of the kernels and no accelerator; the parent keeps its threads."""
    layer, parent_serial, *child = _run_fresh(_SERIAL_CHILD, {})
    assert parent_serial == "False"
    if _threads.fork_safe(layer):
        assert child == ["False", "False", "False"]
    else:
        assert child == ["True", "True", "True"]


def _run_fresh(code, extra_env):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env.update(extra_env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=POOL_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


# The child steps 1e5 elements (parallel) after its parent started Numba's threads.
_FORK_CHILD = """
    import multiprocessing, numba, numpy as np
    {setup}
    import fastopt

    def step(n):
        p, g = np.ones(n, np.float32), np.full(n, 0.5, np.float32)
        fastopt.functional.sgd(p, g, step=1, lr=0.1)
        return float(p[0])

    if __name__ == "__main__":
        step(1_000_000)
        print(numba.threading_layer())
        with multiprocessing.get_context("fork").Pool(1) as pool:
            try:
                print(pool.apply_async(step, (100_000,)).get(timeout=60))
            except Exception as e:
                print(type(e).__name__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["environment", "numba.config"])
def test_explicit_omp_is_kept_and_a_forked_child_computes(how):
    if not sys.platform.startswith("linux"):
        pytest.skip("only GNU OpenMP (Linux) is not fork-safe")
    if how == "environment":
        setup, env = "", {"NUMBA_THREADING_LAYER": "omp"}
    else:
        setup, env = "numba.config.THREADING_LAYER = 'omp'", {}
    layer, child = _run_fresh(_FORK_CHILD.format(setup=setup), env)
    assert (layer, child) == ("omp", _serial_result())


def _serial_result():
    """What the fork child's step gives, computed in a process of its own."""
    return _run_fresh("""
        import numpy as np, fastopt
        p, g = np.ones(100_000, np.float32), np.full(100_000, 0.5, np.float32)
        fastopt.functional.sgd(p, g, step=1, lr=0.1)
        print(float(p[0]))
    """, {})[0]


@pytest.mark.slow
def test_explicit_workqueue_is_kept_and_forks():
    layer, child = _run_fresh(_FORK_CHILD.format(setup=""),
                              {"NUMBA_THREADING_LAYER": "workqueue"})
    assert (layer, child) == ("workqueue", _serial_result())


# -- threads --------------------------------------------------------------------
def _integer_problem(seed, count=40, n=300):
    """Params and per-thread grads with integer values: SGD sums them exactly."""
    rng = np.random.default_rng(seed)
    params = [rng.integers(-1000, 1000, n).astype(np.float64) for _ in range(count)]
    grads = [[rng.integers(-8, 8, n).astype(np.float64) for _ in range(count)]
             for _ in range(2)]
    return params, grads


def _threads_run(*targets):
    """Start one thread per target together; re-raise the first failure."""
    errors, barrier = [], threading.Barrier(len(targets))

    def wrapped(target):
        try:
            barrier.wait()
            target()
        except BaseException as e:   # noqa: BLE001 - re-raised in the caller
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=POOL_TIMEOUT)
    if errors:
        raise errors[0]


@pytest.mark.slow
def test_two_threads_step_one_keras_optimizer():
    """Each thread applies its own gradients; whatever the interleaving, the
    result must be the serial run of all of them."""
    steps = 60
    for trial in range(8):
        params, grads = _integer_problem(trial)
        opt = fastopt.SGD(learning_rate=0.5)
        opt.build(params)

        def worker(own):
            for _ in range(steps):
                opt.apply_gradients(zip(own, params))

        serial_params = [p.copy() for p in params]
        serial = fastopt.SGD(learning_rate=0.5)
        for own in grads:
            for _ in range(steps):
                serial.apply_gradients(zip(own, serial_params))
        _threads_run(lambda: worker(grads[0]), lambda: worker(grads[1]))
        assert opt.iterations == serial.iterations == 2 * steps
        for got, want in zip(params, serial_params):
            np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_two_optimizers_in_two_threads():
    """Adam (order-dependent, so each optimizer in its own thread must match
    its own serial run), and no lock shared between optimizers: one steps to
    the end while the other's lock is held."""
    rng = np.random.default_rng(5)
    problems = [([rng.standard_normal(500, dtype=np.float32) for _ in range(30)],
                 [[rng.standard_normal(500, dtype=np.float32) for _ in range(30)]
                  for _ in range(20)]) for _ in range(2)]

    def run(params, grads, opt):
        for g in grads:
            opt.apply_gradients(zip(g, params))

    want = []
    for params, grads in problems:
        serial = [p.copy() for p in params]
        run(serial, grads, fastopt.Adam(learning_rate=1e-2))
        want.append(serial)
    opts = [fastopt.Adam(learning_rate=1e-2) for _ in problems]
    got = [[p.copy() for p in params] for params, _ in problems]
    _threads_run(*[lambda k=k: run(got[k], problems[k][1], opts[k]) for k in range(2)])
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)

    blocked = fastopt.Adam()
    with blocked._lock:
        other = threading.Thread(target=run, args=(got[1], problems[1][1], opts[1]))
        other.start()
        other.join(timeout=POOL_TIMEOUT)
        assert not other.is_alive() and opts[1].iterations == 40


@pytest.mark.slow
def test_functional_list_form_in_two_threads():
    """Separate arrays per thread: the list form's layout caches are shared
    by all callers, and must serve each thread its own layout."""
    rng = np.random.default_rng(6)
    problems = [([rng.standard_normal(rng.integers(100, 4000), dtype=np.float32)
                  for _ in range(25 + 10 * k)], k) for k in range(2)]

    def run(params, seed):
        grads = [np.full_like(p, 0.25 * (seed + 1)) for p in params]
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        for t in range(1, 80):
            fastopt.functional.adam(params, grads, m, v, step=t, **ADAM)

    want = []
    for params, seed in problems:
        serial = [p.copy() for p in params]
        run(serial, seed)
        want.append(serial)
    got = [[p.copy() for p in params] for params, _ in problems]
    _threads_run(*[lambda k=k: run(got[k], problems[k][1]) for k in range(2)])
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_torch_optimizers_in_two_threads():
    """Two fastopt.torch optimizers in two threads match torch.optim's serial
    runs; one optimizer stepped by two threads applies every step once."""
    torch = pytest.importorskip("torch")
    import fastopt.torch as ft

    def model(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                   torch.nn.Linear(64, 8))

    def train(net, opt, seed):
        data = torch.Generator().manual_seed(seed)
        for _ in range(15):
            x = torch.randn(16, 64, generator=data)
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()

    want = []
    for seed in range(2):
        net = model(seed)
        train(net, torch.optim.Adam(net.parameters(), lr=1e-2), seed)
        want.append(net)
    nets = [model(seed) for seed in range(2)]
    opts = [ft.Adam(net.parameters(), lr=1e-2) for net in nets]
    _threads_run(*[lambda k=k: train(nets[k], opts[k], k) for k in range(2)])
    for got, ref in zip(nets, want):
        for a, b in zip(got.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b)

    # Shared grads are set once; SGD on integer values commutes exactly.
    w = torch.nn.Parameter(torch.arange(4096, dtype=torch.float64))
    w.grad = torch.ones(4096, dtype=torch.float64)
    sgd = ft.SGD([w], lr=0.5)
    _threads_run(*[lambda: [sgd.step() for _ in range(50)]] * 2)
    ref = torch.nn.Parameter(torch.arange(4096, dtype=torch.float64))
    ref.grad = torch.ones(4096, dtype=torch.float64)
    ref_opt = torch.optim.SGD([ref], lr=0.5)
    for _ in range(100):
        ref_opt.step()
    torch.testing.assert_close(w.detach(), ref.detach(), rtol=0, atol=0)


def test_optimizers_pickle_with_a_fresh_lock():
    import pickle

    opt = fastopt.SGD(learning_rate=0.5, momentum=0.5)
    p = np.arange(6.0)
    opt.apply_gradients(zip([np.ones(6)], [p]))
    again = pickle.loads(pickle.dumps(opt))
    assert again._lock is not opt._lock
    assert again.iterations == 1
    np.testing.assert_array_equal(again.state_dict()["momentum/0"],
                                  opt.state_dict()["momentum/0"])
