"""What only a real GPU can show (skipped without FASTOPT_REAL_GPU=1 and a GPU).

* 64-bit indexing: an array of more than 2**31 elements is updated everywhere,
  through the single-array and the list paths, and agrees with torch.optim.
* Stream order: a kernel launched while torch or CuPy work on a non-default
  stream runs after that stream's earlier work. Each test first shows that a
  launch on the wrong stream would read the gradient too early (a control),
  so the test can fail.
"""
import numpy as np
import pytest

from conftest import REAL_GPU

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not (REAL_GPU and torch.cuda.is_available()),
                                reason="needs FASTOPT_REAL_GPU=1 and a CUDA GPU")

import fastopt.functional as F  # noqa: E402

BIG = 2**31 + 4099       # past int32's range, with an odd tail
SLEEP_CYCLES = 400_000_000   # ~0.2 s of one SM spinning: the gradient comes late


def _torch_sgd(param, grad, lr):
    ref = param.clone()
    ref.grad = grad
    torch.optim.SGD([ref], lr=lr, foreach=False).step()
    return ref.detach()


@pytest.mark.parametrize("form", ["single", "list"])
def test_sgd_past_2_31_elements_matches_torch(form):
    gen = torch.Generator(device="cuda").manual_seed(0)
    param = torch.randn(BIG, device="cuda", generator=gen)
    grad = torch.randn(BIG, device="cuda", generator=gen)
    want = _torch_sgd(param, grad, lr=0.25)
    tail = slice(2**31 - 5, None)
    before = param[tail].clone()
    if form == "single":
        F.sgd(param, grad, step=1, lr=0.25, convention="torch")
    else:   # a small tensor first: the big one's chunks start past element 2**31
        small_p, small_g = torch.randn(3, device="cuda"), torch.randn(3, device="cuda")
        F.sgd([small_p, param], [small_g, grad], step=1, lr=0.25, convention="torch")
    torch.cuda.synchronize()
    assert not torch.equal(param[tail], before), "elements past 2**31 were not written"
    torch.testing.assert_close(param[tail], want[tail], rtol=2e-7, atol=2e-7)
    torch.testing.assert_close(param, want, rtol=2e-7, atol=2e-7)
    del param, grad, want
    torch.cuda.empty_cache()


def test_launch_orders_after_torch_current_stream():
    n = 1 << 20
    side = torch.cuda.Stream()          # torch's pool streams are non-blocking
    sleep = lambda: torch.cuda._sleep(SLEEP_CYCLES)  # noqa: E731

    def run(same_stream):
        param = torch.ones(n, device="cuda")
        grad = torch.zeros(n, device="cuda")
        torch.cuda.synchronize()
        with torch.cuda.stream(side):
            sleep()
            grad.fill_(1.0)
            if same_stream:
                F.sgd(param, grad, step=1, lr=0.5, convention="torch")
        if not same_stream:   # launched while torch's current stream is the default
            F.sgd(param, grad, step=1, lr=0.5, convention="torch")
        torch.cuda.synchronize()
        return param, _torch_sgd(torch.ones(n, device="cuda"),
                                 torch.ones(n, device="cuda"), lr=0.5)

    got, want = run(same_stream=False)
    assert not torch.equal(got, want), "control: the wrong stream should race"
    got, want = run(same_stream=True)
    assert torch.equal(got, want)


def test_launch_orders_after_cupy_current_stream():
    cupy = pytest.importorskip("cupy")
    n = 1 << 20
    spin = cupy.RawKernel(r"""
    extern "C" __global__ void spin(long long cycles) {
        long long t0 = clock64();
        while (clock64() - t0 < cycles) { }
    }""", "spin")
    side = cupy.cuda.Stream(non_blocking=True)

    def run(same_stream):
        param = cupy.ones(n, cupy.float32)
        grad = cupy.zeros(n, cupy.float32)
        cupy.cuda.Device().synchronize()
        with side:
            spin((1,), (1,), (np.int64(SLEEP_CYCLES),))
            grad.fill(1.0)
            if same_stream:
                F.sgd(param, grad, step=1, lr=0.5, convention="torch")
        if not same_stream:   # CuPy's current stream is the default one again
            F.sgd(param, grad, step=1, lr=0.5, convention="torch")
        cupy.cuda.Device().synchronize()
        want = _torch_sgd(torch.ones(n, device="cuda"), torch.ones(n, device="cuda"),
                          lr=0.5)
        return cupy.asnumpy(param), want.cpu().numpy()

    got, want = run(same_stream=False)
    assert not np.array_equal(got, want), "control: the wrong stream should race"
    got, want = run(same_stream=True)
    np.testing.assert_array_equal(got, want)


def test_list_form_orders_after_torch_current_stream():
    n = 1 << 18
    side = torch.cuda.Stream()
    params = [torch.ones(n, device="cuda") for _ in range(3)]
    grads = [torch.zeros(n, device="cuda") for _ in range(3)]
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(SLEEP_CYCLES)
        for g in grads:
            g.fill_(1.0)
        F.sgd(params, grads, step=1, lr=0.5, convention="torch")
    torch.cuda.synchronize()
    want = _torch_sgd(torch.ones(n, device="cuda"), torch.ones(n, device="cuda"), 0.5)
    for p in params:
        assert torch.equal(p, want)
