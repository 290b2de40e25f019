"""``flat=True``: a param group's tensors as views of one buffer per (device, dtype).

The many-tensor design (a), where it needs no model change: fastopt.torch
re-points each param's ``.data`` and ``.grad``, and its state tensors, into
one contiguous buffer per (device, dtype) of a param group; the model keeps
its Parameter objects. A step is then one single-array kernel call per buffer,
whatever the number of params, instead of the table walk over every tensor.

What a step still checks per param, because a user can change it between
steps and the flat buffers would silently miss it: that each param's data is
still at its place in the buffer (``data_ptr``; a ``p.data = ...`` or
``model.to(...)`` moves it) and each ``.grad`` is still its view (identity;
``zero_grad(set_to_none=True)`` or DDP's bucket views replace it). Both in
one pass: ~0.15 µs per param warm, ~0.5 µs with cold caches (measured, 2-core
VM), against ~10 µs per param for the per-tensor path.

`FlatGroup.ready` says what a step may do:

* READY: one kernel call per buffer;
* GRADS: some ``.grad`` is not its view (or the step counts differ): this
  step runs the per-tensor path on the same tensors (they are ordinary
  tensors, only neighbours in memory) and the layout stays;
* STALE: the group, its params, their places or the state's keys changed:
  the per-tensor path runs, then the layout is rebuilt.
"""
import operator

import torch

from .. import _hostscalars

READY, GRADS, STALE = "ready", "grads", "stale"

_grad = operator.attrgetter("grad")
_data_ptr = operator.methodcaller("data_ptr")


def _pack(tensors, dtype, device):
    """One buffer holding `tensors` back to back, and a view of it shaped
    like each (their values copied in)."""
    sizes = [t.numel() for t in tensors]
    buffer = torch.empty(sum(sizes), dtype=dtype, device=device)
    views = [v.view(t.shape) for v, t in zip(buffer.split(sizes), tensors)]
    for view, t in zip(views, tensors):
        view.copy_(t)
    return buffer, views


def _span(params):
    """A 1-D tensor over the params' memory if they already lie back to
    back, in order, in one storage (a layout built before, by this or an
    earlier optimizer, or the user's own flat buffer): adopted as it is."""
    first = params[0]
    storage, offset = first.untyped_storage(), first.storage_offset()
    for p in params:
        if (p.untyped_storage().data_ptr() != storage.data_ptr()
                or p.storage_offset() != offset or not p.is_contiguous()):
            return None
        offset += p.numel()
    start = first.storage_offset()
    return first.new_empty(0).set_(storage, start, (offset - start,))


def _kernel_array(buffer):
    """What the kernel is handed for `buffer`: a zero-copy NumPy view on the
    CPU (the host fast path), the tensor itself on a GPU; complex as real."""
    real = torch.view_as_real(buffer) if buffer.is_complex() else buffer
    return real.numpy() if real.device.type == "cpu" else real


class Bucket:
    """The params of one (device, dtype) of a group, flattened.

    Step counts can differ between params (one that got its first gradient
    late keeps counting behind), and the kernel takes one step number per
    call: the params are laid out by step count, so that each count is one
    run of the buffers, one kernel call (``runs``; usually just one).
    """

    def __init__(self, params, state, keys, counts_steps, host=()):
        """params: in layout order (by step count, `_buckets`); host: the
        keys of per-param host scalars (`fastopt.spec.Scalar`), which stay
        each param's own 0-d tensors and go to each run's call as lists."""
        dtype, device = params[0].dtype, params[0].device
        self.params = params
        buffer = _span(params)
        if buffer is None:
            buffer, views = _pack([p.data for p in params], dtype, device)
            for p, view in zip(params, views):
                p.data = view
        arrays = {"param": _kernel_array(buffer)}
        self.grad_buffer, self.grads = _pack([p.grad for p in params], dtype, device)
        for p, view in zip(params, self.grads):
            p.grad = view
        arrays["grad"] = _kernel_array(self.grad_buffer)
        for key in keys:
            buffer, views = _pack([state[p][key] for p in params], dtype, device)
            for p, view in zip(params, views):
                state[p][key] = view
            arrays[key] = _kernel_array(buffer)
        self.steps, counts = None, [0] * len(params)
        if counts_steps:
            self.steps = torch.stack([state[p]["step"] for p in params])
            for p, view in zip(params, self.steps.unbind()):
                state[p]["step"] = view
            counts = self.steps.tolist()
        self.runs = []   # (first param, last param + 1, {argument: its slice})
        first = start = end = 0
        for k, p in enumerate(params):
            end += p.numel()
            if k + 1 == len(params) or counts[k + 1] != counts[first]:
                self.runs.append((first, k + 1, {name: a[start:end]
                                                 for name, a in arrays.items()}))
                first, start = k + 1, end
        self.uniform = True     # step counts constant within each run; None: unknown
        self.host = [{key: [state[p][key] for p in params[a:b]] for key in host}
                     for a, b, _ in self.runs]
        self.ptrs = list(map(_data_ptr, params))

    def check(self):
        """STALE if a param is no longer where the layout put it, GRADS if a
        ``.grad`` is no longer its view, else READY. One pass over the params
        (each one's objects are read once: cold, that is most of the cost)."""
        now = [(p.data_ptr(), p.grad) for p in self.params]
        if [ptr for ptr, _ in now] != self.ptrs:
            return STALE
        if not all(map(operator.is_, [g for _, g in now], self.grads)):
            return GRADS
        return READY

    def hosts_agree(self):
        """Whether each run's params hold equal host scalars (one value per
        kernel call; equal after equal steps, unless hyperparameters changed
        while some params had no gradient)."""
        for columns in self.host:
            for column in columns.values():
                values = _hostscalars.read(column)
                if values.count(values[0]) != len(values):
                    return False
        return True

    def grads_in_place(self):
        """Whether every ``.grad`` is still its view of the buffer."""
        return all(map(operator.is_, map(_grad, self.params), self.grads))

    def steps_agree(self):
        """Whether each run's step counts are still equal (after per-tensor
        steps that left some params out, they may not be)."""
        if self.steps is None:
            return True
        if self.uniform is None:
            self.uniform = all(bool((self.steps[a:b] == self.steps[a]).all())
                               for a, b, _ in self.runs)
        return self.uniform


class FlatGroup:
    """One param group's layout: the params that had gradients when it was
    built (``members``, in buckets) and the others (``outsiders``: frozen
    params, which a READY step requires to still have no gradient)."""

    def __init__(self, group, members, by_place, state, keys, counts_steps, host=()):
        self.group, self.count, self.keys = group, len(group["params"]), keys
        inside = set(map(id, members))
        self.members = members
        self.outsiders = [p for p in group["params"] if id(p) not in inside]
        self.buckets = [Bucket(ps, state, keys, counts_steps, host)
                        for ps in by_place.values()]

    def ready(self, group, keys):
        """READY, GRADS or STALE (module docstring) for a step of `group`."""
        if (group is not self.group or len(group["params"]) != self.count
                or keys != self.keys):
            return STALE
        if any([p.grad is not None for p in self.outsiders]):
            return STALE
        verdicts = [b.check() for b in self.buckets]
        if STALE in verdicts:
            return STALE
        if GRADS in verdicts or not all([b.steps_agree() and b.hosts_agree()
                                         for b in self.buckets]):
            return GRADS
        return READY

    def stepped_apart(self):
        """After a per-tensor step: the step counts may now differ."""
        for b in self.buckets:
            b.uniform = None

    def zero_grad(self, set_to_none):
        """Zero the members' grads in place (they stay views of the buffer:
        torch's ``set_to_none=False``), the outsiders' as torch does."""
        for b in self.buckets:
            b.grad_buffer.zero_()
            if not b.grads_in_place():
                for p, view in zip(b.params, b.grads):
                    if p.grad is not view:
                        if (p.shape, p.dtype, p.device) == (view.shape, view.dtype,
                                                            view.device):
                            p.grad = view
                        else:   # moved since the layout was built: as torch
                            zero_like_torch(p, set_to_none)
        for p in self.outsiders:
            zero_like_torch(p, set_to_none)


def zero_like_torch(p, set_to_none):
    """torch.optim's ``zero_grad`` for one param."""
    if p.grad is None:
        return
    if set_to_none:
        p.grad = None
        return
    if p.grad.grad_fn is not None:
        p.grad.detach_()
    else:
        p.grad.requires_grad_(False)
    p.grad.zero_()


def _buckets(params, state, counts_steps):
    """`params` by (device, dtype), each in layout order: by step count
    when the optimizer counts steps (stable, so equal counts keep theirs)."""
    by_place = {}
    for p in params:
        by_place.setdefault((p.device, p.dtype), []).append(p)
    if counts_steps:
        for place, ps in by_place.items():
            by_place[place] = sorted(ps, key=lambda p: float(state[p]["step"]))
    return by_place


def build(group, members, state, keys, counts_steps, host=()):
    """A FlatGroup of `members` (every param of `group` that has a gradient,
    all with state), or None where flattening would change what the model
    sees: params sharing a storage other than back to back (flattening would
    untie them), or step counts that are not CPU scalars of one dtype."""
    if counts_steps:
        steps = [state[p].get("step") for p in members]
        if not all(isinstance(s, torch.Tensor) and s.device.type == "cpu"
                   and s.dim() == 0 and s.dtype == steps[0].dtype for s in steps):
            return None
    by_place = _buckets(members, state, counts_steps)
    for params in by_place.values():   # the order Bucket will lay them out in
        held = [p for p in params if p.numel()]
        if (len({p.untyped_storage().data_ptr() for p in held}) != len(held)
                and _span(params) is None):
            return None
    return FlatGroup(group, members, by_place, state, keys, counts_steps, host)
