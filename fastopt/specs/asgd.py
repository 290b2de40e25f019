"""ASGD: SGD with a decaying step and a running average of the params (torch)."""
import sys

import numpy as np

from ..spec import Front, Hyper, Scalar, Slot, Spec, only


def _rounded(value, dtype):
    """`value` as torch stores it: ``state.copy_(torch.as_tensor(value))``,
    rounded to torch's default dtype (float32 unless set to float64), then
    to the state's `dtype` (float64 after a checkpoint load cast it so)."""
    torch = sys.modules.get("torch")
    if torch is None or torch.get_default_dtype() != torch.float64:
        value = float(np.float32(value))
    return float(dtype.type(value))


def _eta(h, convention, step, value, dtype):
    """η after update `step`: lr / (1 + λ·lr·t)^α, as torch stores it."""
    return _rounded(h.lr / ((1.0 + h.lambd * h.lr * step) ** h.alpha), dtype)


def _mu(h, convention, step, value, dtype):
    """μ after update `step`: 1 / max(1, t − t0), as torch stores it."""
    return _rounded(1.0 / max(1.0, step - h.t0), dtype)


def _scalars(h, convention, step, before, after):
    eta = before["eta"]      # this update uses the values of the last one
    return 1.0 - h.lambd * eta, eta, before["mu"], 1.0


ASGD = Spec(
    name="asgd",
    doc="""One in-place ASGD step (``torch.optim.ASGD``): updates `param` and `ax`.

    ``p ← p·(1 − λ·η);  p ← p − η·g;  ax ← p`` while μ = 1, then
    ``ax ← ax + (p − ax)·μ``; after the step ``η ← lr / (1 + λ·lr·t)^α``,
    ``μ ← 1 / max(1, t − t0)`` (t = `step`; ``convention="torch"`` only).

    ax: the average, zeros at first. eta, mu: torch's ``state["eta"]`` and
    ``state["mu"]``, the values before this step: None derives them from
    `step` (and `lr`) as torch stores them (float32); a float is used as it
    is; a one-element array (or list of them, one value) is read and
    advanced in place, in its dtype, as torch does.""",
    hypers=(Hyper("lr"),
            Hyper("lambd", 1e-4, why="fastopt needs lambd >= 0"),
            Hyper("alpha", 0.75, low=None), Hyper("t0", 1e6, low=None)),
    slots=(Slot("ax", torch="ax"),),
    host=(Scalar("eta", torch="eta", init="lr", advance=_eta, memoryless=True,
                 bounds={"low": 0.0}),
          Scalar("mu", torch="mu", init=1.0, advance=_mu, memoryless=True,
                 bounds={"low": 0.0, "low_open": True, "high": 1.0})),
    plan=only("torch", "asgd"), scalars=_scalars,
    torch=Front("ASGD", "lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, "
                "foreach=None, maximize=False, differentiable=False, capturable=False"),
)
