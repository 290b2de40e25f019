"""The ``state["step"]`` counters of a bucket of params, read and advanced in
one compiled pass each.

torch keeps each param's step count as its own CPU scalar tensor. Reading N
of them (``torch.stack(...).tolist()``) and adding one to each
(``torch._foreach_add_``, on the CPU a loop of N single-tensor ops) cost
~2.4 µs per param (measured on 200 params: 105 + 374 µs a step), more than
the update of a small tensor. Here the counters' addresses are read in bulk
and one jitted loop reads, or advances, all of them. Counters that are not
all float32 (or all float64) scalars in host memory, as a checkpoint may
leave them, take torch's own ops instead.
"""
import operator

import numpy as np
import torch

from .._hostscalars import read_at
from ..kernels.cache import cached
from ..kernels.cpu import view

_LIKE = {torch.float32: np.float32(0), torch.float64: np.float64(0)}
_EXACT = 2.0 ** 53    # a float64 count above this has lost its units


@cached()
def _advance(addrs, like):
    for i in range(addrs.size):   # in order: a counter listed twice gains 2, as with torch
        value = view(addrs[i], 0, 1, like)
        value[0] += 1


class Counters:
    """The step counters of a list of params (their ``state["step"]`` tensors).

    Example::

        >>> counters = Counters([opt.state[p]["step"] for p in params])
        >>> counters.numbers()      # this update's 1-based step of each param
        [11, 11, 3]
        >>> counters.advance([0, 1])   # after params 0 and 1 were updated
    """

    def __init__(self, steps):
        self.steps = steps
        self.like = _host_scalars(steps)
        if self.like is not None:
            self.addrs = np.array(list(map(torch.Tensor.data_ptr, steps)), np.int64)

    def numbers(self):
        """Each counter + 1, as ints: the step the coming update is. A
        counter that is not a whole number >= 0 (a checkpoint's NaN, -1 or
        2.5) raises ValueError."""
        if self.like is not None:
            values = read_at(self.addrs, self.like)
        else:
            try:
                values = torch.stack(self.steps).double().cpu().numpy()
            except RuntimeError:   # counters on several devices
                values = np.array([s.item() for s in self.steps], np.float64)
        whole = (values >= 0.0) & (values < _EXACT) & (values == np.floor(values))
        if not whole.all():
            bad = values[np.flatnonzero(~whole)[0]]
            raise ValueError(f"state['step'] must be a whole number >= 0, got {bad}")
        return [int(v) + 1 for v in values.tolist()]

    def advance(self, members=None):
        """``step += 1`` for the counters at indices `members` (None: all),
        with their autograd versions bumped as torch's in-place add does."""
        steps = self.steps if members is None else [self.steps[k] for k in members]
        if self.like is not None:
            _advance(self.addrs if members is None else self.addrs[members], self.like)
            torch.autograd.graph.increment_version(steps)
            return
        try:
            torch._foreach_add_(steps, 1)
        except (AttributeError, RuntimeError):
            for s in steps:
                s += 1


def _host_scalars(steps):
    """The scalar type of `steps` if all are one-element dense host tensors
    of one float dtype (what fastopt and torch create); else None."""
    if not all([isinstance(s, torch.Tensor) for s in steps]):
        return None
    dtypes = set(map(_DTYPE, steps))
    if len(dtypes) != 1:
        return None
    like, n = _LIKE.get(dtypes.pop()), len(steps)
    if (like is None or not all(map(_IS_CPU, steps))
            or list(map(_LAYOUT, steps)).count(torch.strided) != n
            or list(map(torch.Tensor.numel, steps)).count(1) != n):
        return None
    return like


_DTYPE, _IS_CPU, _LAYOUT = map(operator.attrgetter, ("dtype", "is_cpu", "layout"))
