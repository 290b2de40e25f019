"""What a front end tells the pipeline about the calls of its step.

The front ends (`fastopt.optimizers`, `fastopt.torch`) reach the kernels
through the public functional functions, whose signatures are the user's.
What only a front end knows travels beside the call, in a frame it opens
for the duration of its step (one per thread):

* who, name: how messages name the call and its arrays, in the front end's
  words (``fastopt.torch.Adam``, ``the gradient of param_groups[1]['params'][0]``);
* checked: the front end has checked, in bulk, every property of the lists
  it passes but their addresses (`fastopt._multi`'s torch path then reads
  only addresses and sizes);
* layout: a `Layout` the front end keeps across steps: its lists' last
  checked layout, so that the list path finds it without a lookup;
* hypers: fastopt's hyperparameter names -> the front end's (``lr`` ->
  ``learning_rate``, ``beta2`` -> ``betas[1]``), for messages.

A plain functional call sees the defaults (`NONE`): its own names, every
check, and no remembered layout.
"""
import contextlib
import threading


class Layout:
    """A front end's handle on the layout of the lists it passes each step:
    the key of their last checked layout (None before the first step). The
    list path compares the arrays with that layout before it uses it."""

    __slots__ = ("key",)

    def __init__(self):
        self.key = None


class _Frame(threading.local):
    who = None       # the call's name in messages; None: "<function>()"
    name = None      # name(argument, k) -> the caller's name of that array
    checked = False
    layout = None
    hypers = {}


frame = _Frame()


@contextlib.contextmanager
def call(who=None, name=None, checked=False, layout=None, hypers=None):
    """The frame of a front end's call(s) (see the module docstring).

    Example::

        >>> with call("fastopt.torch.Adam", lambda arg, k: f"{arg} of params[{k}]"):
        ...     fastopt.functional.adam(params, grads, ...)
    """
    saved = frame.who, frame.name, frame.checked, frame.layout, frame.hypers
    frame.who, frame.name, frame.checked, frame.layout = who, name, checked, layout
    frame.hypers = hypers or {}
    try:
        yield
    finally:
        frame.who, frame.name, frame.checked, frame.layout, frame.hypers = saved
