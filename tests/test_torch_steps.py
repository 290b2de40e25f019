"""fastopt.torch's step counters: read and advanced through their addresses
when they are host scalars, by torch's ops otherwise; the same numbers either way."""
import pytest

torch = pytest.importorskip("torch")

from fastopt.torch._steps import Counters  # noqa: E402


def _counters(values, dtypes):
    return [torch.tensor(float(v), dtype=d) for v, d in zip(values, dtypes)]


@pytest.mark.parametrize("dtypes, compiled", [
    ([torch.float32] * 3, True),
    ([torch.float64] * 3, True),
    ([torch.float32, torch.float64, torch.float32], False),   # mixed: torch's ops
    ([torch.int64] * 3, False),                               # set by hand: torch's ops
])
def test_numbers_then_advance(dtypes, compiled):
    steps = _counters([0, 4, 9], dtypes)
    versions = [s._version for s in steps]
    counters = Counters(steps)
    assert (counters.like is not None) == compiled
    assert counters.numbers() == [1, 5, 10]
    counters.advance([0, 2])
    assert [s.item() for s in steps] == [1, 4, 10]
    assert [s.dtype for s in steps] == dtypes
    assert all(s._version > v for s, v in zip(steps[::2], versions[::2]))
    assert steps[1]._version == versions[1]
    assert Counters(steps).numbers() == [2, 5, 11]


def test_a_counter_listed_twice_gains_two_as_with_torch():
    shared = torch.tensor(3.0)
    counters = Counters([shared, shared])
    assert counters.numbers() == [4, 4]
    counters.advance([0, 1])
    assert shared.item() == 5.0


@pytest.mark.parametrize("make, value", [
    (lambda: torch.tensor([2.0]), 2.0),              # one element, one dimension
    (lambda: torch.tensor([2.0, 7.0])[1:], 7.0),     # a one-element view at an offset
])
def test_one_element_views_are_read_where_they_are(make, value):
    step = make()
    counters = Counters([step])
    assert counters.like is not None
    assert counters.numbers() == [int(value) + 1]
    counters.advance([0])
    assert step.item() == value + 1


@pytest.mark.parametrize("make", [
    lambda: torch.zeros(2),                      # not a scalar
    lambda: torch.zeros(1, device="meta"),       # no host memory
    lambda: torch.zeros(1).to_sparse(),          # no dense buffer
])
def test_anything_else_is_left_to_torch(make):
    assert Counters([torch.tensor(1.0), make()]).like is None
