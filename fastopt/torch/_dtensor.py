"""DTensor params: FSDP2's ``fully_shard`` params and ``distribute_tensor``'s.

A DTensor is a wrapper with no memory of its own (``data_ptr()`` is 0 for
every one, so that a step handed the wrappers read all of them as one
buffer); what a rank holds is its local tensor, a plain tensor (under FSDP2 a
view of the padded shard buffer that the next all-gather reads). Every update
of fastopt.torch is elementwise, so a rank updates its local shards of param,
grad and state in place, in the same fused list call as plain tensors, and
no communication is needed, exactly when the local tensors of a param, its
grad and its state hold the same elements: the same mesh and placements for
all three (state is created with ``zeros_like(param)``, as torch.optim does,
so it is a DTensor of the param's placements, and ``state_dict()`` and
``torch.distributed.checkpoint`` see torch.optim's layout). ``Shard`` (any
dim, uneven or empty on a rank) and ``Replicate`` qualify; a ``Partial``
param (its value is a sum over ranks) cannot be updated elementwise, and a
grad or state placed unlike its param would need a redistribution that
torch.optim does implicitly and fastopt does not: both are refused before
anything is written.

``torch.distributed.tensor`` is looked up in ``sys.modules`` only: a process
that never imported it holds no DTensor, and a step checks nothing more.
"""
import sys

__all__ = ["any_dtensor", "in_states", "local", "check"]


def _cls():
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None) if module is not None else None


def any_dtensor(tensors):
    """Whether any of `tensors` (None allowed) is a DTensor: one
    ``issubclass`` per distinct type."""
    cls = _cls()
    return cls is not None and any(issubclass(t, cls) for t in set(map(type, tensors)))


def in_states(states, keys):
    """Whether any state tensor under `keys` of `states` (dicts or None) is a
    DTensor (a checkpoint of a sharded model loaded for plain params)."""
    return _cls() is not None and any_dtensor(
        [s.get(key) for s in states if s is not None for key in keys])


def local(t):
    """A DTensor's local tensor (this rank's elements); anything else as it is."""
    cls = _cls()
    if cls is not None and isinstance(t, cls):
        return t._local_tensor
    return t


def _where(t):
    cls = _cls()
    if cls is not None and isinstance(t, cls):
        return f"a DTensor with placements {tuple(t.placements)} on {t.device_mesh}"
    return f"a {type(t).__name__}"


def check(name, where, p, grad, state, keys):
    """Raise, naming the placement, unless `p`, `grad` and `state[key]` (for
    `keys` that exist) can be updated through their local tensors: the same
    mesh and placements for all, none of them Partial (module docstring)."""
    cls = _cls()
    if not isinstance(p, cls):
        if isinstance(grad, cls):
            raise TypeError(f"fastopt.torch.{name}: the gradient of {where} is "
                            f"{_where(grad)}, the param a plain tensor")
        for key in keys:
            if isinstance(state.get(key), cls):
                raise TypeError(f"fastopt.torch.{name}: state[{key!r}] of {where} is "
                                f"{_where(state[key])}, the param a plain tensor")
        return
    mesh, placements = p.device_mesh, tuple(p.placements)
    for dim, placement in enumerate(placements):
        if placement.is_partial():
            raise ValueError(
                f"fastopt.torch.{name}: {where} is a DTensor with placement "
                f"{placement!r} on mesh dim {dim} (placements {placements}): a partial "
                "param's value is a sum over ranks, which no elementwise update of one "
                "rank's local tensor can step; redistribute it to Shard or Replicate")
    tensors = [("the gradient", grad)] + [(f"state[{key!r}]", state[key]) for key in keys
                                          if state.get(key) is not None]
    for what, t in tensors:
        if (not isinstance(t, cls) or tuple(t.placements) != placements
                or (t.device_mesh is not mesh and t.device_mesh != mesh)):
            raise ValueError(
                f"fastopt.torch.{name}: {what} of {where} is {_where(t)}, the param "
                f"{_where(p)}: fastopt updates the local tensors in place and needs "
                "them placed alike (redistribute it to the param's placements)")
