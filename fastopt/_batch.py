"""All-or-nothing steps: a front end's several calls checked first, run after.

A front end's step can be several kernel calls (torch's param groups and
step-count buckets, Keras's per-variable ``clipnorm`` groups). Each call
checks all of its own arrays before writing any; inside `all_or_nothing`,
a call also waits to run until every call of the block has been checked
and planned, so a step refused by its last call has written nothing. Runs
then happen in the order the calls were made, on the calling thread.

Outside a block every call runs at once: `run` is the pipeline's last step.
"""
import contextlib
import threading


class _Pending(threading.local):
    queue = None     # the runs of the open block, in call order; None: no block


pending = _Pending()


def run(action):
    """Run `action()` now, or at the end of this thread's open block."""
    queue = pending.queue
    if queue is None:
        action()
    else:
        queue.append(action)


@contextlib.contextmanager
def all_or_nothing():
    """Within the block, fastopt's calls check and plan but do not run; on
    leaving it without an exception the runs happen, in order. An exception
    raised inside leaves nothing written. A block inside a block is part of
    the outer one.

    Example::

        >>> with all_or_nothing():
        ...     fastopt.functional.sgd(p1, g1, step=1, lr=0.1)
        ...     fastopt.functional.sgd(p2, g2, step=1, lr=0.1)   # raises: p1 untouched
    """
    if pending.queue is not None:
        yield
        return
    queue = pending.queue = []
    try:
        yield
    finally:
        pending.queue = None
    for action in queue:
        action()
