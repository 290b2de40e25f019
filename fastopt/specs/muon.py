"""Muon: momentum orthogonalized by Newton-Schulz iterations (torch.optim.Muon).

A program (`fastopt.spec.Program`): one elementwise pass over the list
(the momentum buffer's lerp and the Nesterov blend, written to a scratch
array), the Newton-Schulz iterations per matrix through the arrays' own
library's matmul (torch's for torch tensors, in bfloat16 as torch.optim.Muon
runs them; NumPy's BLAS for NumPy arrays, in their dtype), then one
elementwise pass for the decay and the scaled apply.
"""
import math

from ..spec import Elementwise, Front, Hyper, MatrixFunction, PerTensor, Program, Slot, Spec, only

DEFAULT_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def _scalars(h, convention, step):
    w = 1.0 - h.momentum
    return (w, w - 1.0, h.momentum, h.momentum - 1.0, float(h.nesterov), 0.5)


def _dtype_scalars(hyper, dtype):
    """torch's lerp takes weight − 1 in the tensor's dtype (float32 for float32)."""
    w, _, mu, _, nesterov, half = hyper
    one = dtype.type(1)
    return (w, float(dtype.type(w) - one), mu, float(dtype.type(mu) - one), nesterov, half)


def newton_schulz(xp, x, a, b, c, steps, eps):
    """torch.optim.Muon's ``_zeropower_via_newtonschulz`` written for any
    array library `xp` (torch: in bfloat16, as torch; NumPy: in x's dtype)."""
    torch_like = xp.__name__ == "torch"
    y = x.bfloat16() if torch_like else x.copy()
    tall = x.shape[0] > x.shape[1]
    if tall:
        y = y.T
    if torch_like:
        y.div_(y.norm().clamp(min=eps))
        for _ in range(steps):
            gram = y @ y.T
            update = xp.addmm(gram, gram, gram, beta=b, alpha=c)
            y = xp.addmm(y, update, y, beta=a)
    else:
        y = y / max(float(xp.linalg.norm(y)), eps)
        for _ in range(steps):
            gram = y @ y.T
            update = b * gram + c * (gram @ gram)
            y = a * y + update @ y
    return y.T if tall else y


def _orthogonalize(xp, arrays, info):
    h = info.h
    out = newton_schulz(xp, arrays["scratch"], h.ns_a, h.ns_b, h.ns_c, h.ns_steps, h.eps)
    arrays["scratch"][...] = out     # back in the param's dtype (exact for bfloat16)


def _adjusted_lr(env, info):
    h = info.h
    k = []
    for shape in info.shapes:
        rows, cols = shape[:2]
        if h.adjust_lr == 1:      # "match_rms_adamw"
            ratio = 0.2 * math.sqrt(max(rows, cols))
        else:                     # None, "original"
            ratio = math.sqrt(max(1, rows / cols))
        k.append(-(h.lr * ratio))
    env["k"] = k


MUON = Spec(
    name="muon",
    doc="""One in-place Muon step on 2-D params: updates `param` and
    `momentum_buffer`.

    ``B ← lerp(B, g, 1 − μ);  U = lerp(g, B, μ)`` (Nesterov) or ``U = B``;
    ``O = NS(U)`` (`ns_steps` quintic Newton-Schulz iterations with
    coefficients (ns_a, ns_b, ns_c) of U / max(‖U‖, eps), on the transpose
    of a tall matrix); ``p ← p·(1 − lr·wd) − lr'·O`` with
    ``lr' = lr·sqrt(max(1, rows/cols))`` (adjust_lr 0: torch's "original")
    or ``lr·0.2·sqrt(max(rows, cols))`` (adjust_lr 1: "match_rms_adamw")
    (torch.optim.Muon; ``convention="torch"`` only). torch tensors are
    orthogonalized in bfloat16 by torch, as torch.optim.Muon does; NumPy
    arrays in their own dtype.

    momentum_buffer: B, zeros at first.""",
    hypers=(Hyper("lr"), Hyper("momentum", 0.95), Hyper("nesterov", True, kind="flag"),
            Hyper("ns_a", DEFAULT_COEFFICIENTS[0], low=None),
            Hyper("ns_b", DEFAULT_COEFFICIENTS[1], low=None),
            Hyper("ns_c", DEFAULT_COEFFICIENTS[2], low=None),
            Hyper("eps", 1e-7), Hyper("ns_steps", 5, kind="int", high=99),
            Hyper("adjust_lr", 0, kind="int", high=1)),
    slots=(Slot("momentum_buffer", torch="momentum_buffer"),),
    plan=only("torch", "muon"),
    scalars=_scalars,
    fixed={"decoupled_weight_decay": True},
    program=Program(
        passes=(Elementwise("muon_momentum", ("param", "grad", "momentum_buffer", "scratch")),
                MatrixFunction(_orthogonalize),
                PerTensor(_adjusted_lr),
                Elementwise("scaled_add", ("param", "scratch"), reads=("k",))),
        env=("k",), scratch=("scratch",), dtype_scalars=_dtype_scalars,
        select=lambda shape, h, convention: len(shape) == 2,
        refuse="Muon only supports 2D parameters whereas we found a parameter with size: "
               "{shape}"),
    torch=Front("Muon", "lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True, "
                "ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, "
                "adjust_lr_fn=None",
                names={"ns_coefficients": ("ns_a", "ns_b", "ns_c"),
                       "adjust_lr_fn": "adjust_lr"},
                options={"counts_steps": False,    # torch's Muon keeps no step
                         "choices": {"adjust_lr_fn": ({None: 0, "original": 0,
                                                        "match_rms_adamw": 1},
                                                       "Adjust learning rate function {} "
                                                       "is not supported")},
                         "messages": {
                             "lr": "Learning rate should be >= 0 but is: {}",
                             "momentum": "momentum should be >= 0 but is: {}",
                             "weight_decay": "weight decay should be >= 0 but is: {}",
                             "ns_steps": "Number of steps must be less than 100 for "
                                         "computational efficiency"}}),
)
