"""Muon: momentum orthogonalized by Newton-Schulz iterations (torch.optim.Muon,
Keras's ``Muon``).

A program (`fastopt.spec.Program`): one elementwise pass over the list
(the momentum update and the Nesterov blend, written to a scratch array),
the Newton-Schulz iterations per matrix through the arrays' own library's
matmul (torch's for torch tensors, NumPy's BLAS for NumPy arrays), then one
elementwise pass for the decay and the scaled apply. torch runs its
iterations in bfloat16, Keras in the variable's dtype; each convention's
passes follow its library's operation order.

Keras's Muon steps some variables with AdamW instead (every one that is not
2-D, and those its ``exclude_layers`` / ``exclude_embeddings`` name): in the
functional form, a param that has a `velocity` array (required where not
2-D, optional for a matrix) takes the AdamW pass, with ``lr·adam_lr_ratio``
and ``adam_weight_decay``; the others the Muon passes. Both kinds in one
call, each pass over its kind in one parallel region.
"""
import math

import numpy as np

from ..spec import Elementwise, Front, Hyper, MatrixFunction, PerTensor, Program, Slot, Spec

DEFAULT_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def _scalars(h, convention, step):
    if convention == "keras":
        # (mu, mu − 1, nesterov, lr, rms_rate, AdamW: β₁, 1 − β₁, β₂, 1 − β₂,
        #  α = lr·ratio·sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ), ε, its decay 1 − lr·adam_wd)
        adam_lr = h.lr * h.adam_lr_ratio
        alpha = adam_lr * math.sqrt(1.0 - h.adam_beta2 ** step) / (1.0 - h.adam_beta1 ** step)
        adam_wd = h.adam_weight_decay or 0.0
        return (h.momentum, h.momentum - 1.0, float(h.nesterov), h.lr,
                1.0 if h.rms_rate is None else h.rms_rate,
                h.adam_beta1, 1.0 - h.adam_beta1, h.adam_beta2, 1.0 - h.adam_beta2,
                alpha, h.adam_eps, 1.0 - h.lr * adam_wd)
    w = 1.0 - h.momentum
    return (w, w - 1.0, h.momentum, h.momentum - 1.0, float(h.nesterov), 0.5)


def _dtype_scalars(hyper, dtype):
    """torch's lerp takes weight − 1 in the tensor's dtype (float32 for float32)."""
    if len(hyper) != 6:    # Keras's scalars
        return hyper
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


def newton_schulz_keras(xp, x, a, b, c, steps, eps):
    """Keras's ``zeropower_via_newtonschulz5`` for a matrix, in x's dtype
    through `xp` (torch or NumPy), Keras's operation order:
    ``x / (‖x‖ + eps)`` (the norm in float32, as Keras's), then ``A = x·xᵀ;  B = b·A + (c·A)·A;  x = a·x + B·x``
    (on the transpose of a tall matrix)."""
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    # Keras's ``ops.norm`` computes in ``result_type(x.dtype, float)``:
    # float32 for float32 and float64 x alike (then x / norm in x's dtype)
    if xp.__name__ == "torch":
        x = x / (xp.linalg.norm(x.float(), dim=(-2, -1), keepdim=True) + eps)
    else:
        x = x / (xp.linalg.norm(x.astype(xp.float32)) + xp.float32(eps))
    for _ in range(steps):
        gram = x @ x.T
        update = b * gram + c * gram @ gram
        x = a * x + update @ x
    return x.T if tall else x


def _orthogonalize(xp, arrays, info):
    h = info.h
    if info.convention == "keras":
        out = newton_schulz_keras(xp, arrays["scratch"], h.ns_a, h.ns_b, h.ns_c,
                                  h.ns_steps, h.eps)
    else:
        out = newton_schulz(xp, arrays["scratch"], h.ns_a, h.ns_b, h.ns_c, h.ns_steps, h.eps)
    arrays["scratch"][...] = out     # back in the param's dtype (exact for bfloat16)


def _keras_scale(env, info):
    """Keras's ``lr_adjust``: ``sqrt(max(rows, cols))``, which Keras computes
    in float32 (``ops.sqrt`` of an integer), times ``rms_rate`` in the apply
    pass; 1 without rms_rate."""
    if info.h.rms_rate is None:
        env["k"] = np.ones(len(info.shapes))
    else:
        env["k"] = [float(np.sqrt(np.float32(max(s[0], s[1])))) for s in info.shapes]


def _torch(shape, h, convention):
    return convention == "torch"


def _keras(shape, h, convention):
    return convention == "keras"


def _velocity_shape(shape, convention):
    """Keras steps every param that is not 2-D with AdamW (a velocity of
    its shape); a matrix has one only where the caller gives it
    (`Slot.optional`: Keras's excluded layers); torch keeps none."""
    return shape if convention == "keras" and len(shape) != 2 else None


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
    doc="""One in-place Muon step: updates `param` and `momentum_buffer`
    (and, Keras's convention, `velocity`).

    ``B ← lerp(B, g, 1 − μ);  U = lerp(g, B, μ)`` (Nesterov) or ``U = B``;
    ``O = NS(U)`` (`ns_steps` quintic Newton-Schulz iterations with
    coefficients (ns_a, ns_b, ns_c) of U / max(‖U‖, eps), on the transpose
    of a tall matrix); ``p ← p·(1 − lr·wd) − lr'·O`` with
    ``lr' = lr·sqrt(max(1, rows/cols))`` (adjust_lr 0: torch's "original")
    or ``lr·0.2·sqrt(max(rows, cols))`` (adjust_lr 1: "match_rms_adamw")
    (torch.optim.Muon; ``convention="torch"`` only). torch tensors are
    orthogonalized in bfloat16 by torch, as torch.optim.Muon does; NumPy
    arrays in their own dtype. 2-D params only.

    ``"keras"`` (Keras's ``Muon``): ``B ← B + (g + B·(μ − 1));  U = g + μ·B``
    (Nesterov) or B; O = Keras's Newton-Schulz of U in the param's dtype
    (``U / (‖U‖ + eps)``, the norm in float32 as Keras's); ``p ← p·(1 − lr·wd)
    − ((lr·O)·sqrt(max(rows, cols)))·rms_rate`` (no scaling with rms_rate
    None). A param with a `velocity` array (required where it is not 2-D;
    Keras's excluded layers) takes Keras's AdamW step instead: decay by
    ``1 − lr·adam_weight_decay``, ``B ← B + (g − B)·(1 − β₁)``,
    ``v ← v + (g² − v)·(1 − β₂)``, ``p ← p − (B·α)/(sqrt(v) + ε)`` with
    ``α = lr·adam_lr_ratio·sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ)`` (adam_beta1, adam_beta2,
    adam_eps).

    momentum_buffer: B, zeros at first; velocity: zeros, or None.""",
    hypers=(Hyper("lr"), Hyper("momentum", 0.95), Hyper("nesterov", True, kind="flag"),
            Hyper("ns_a", DEFAULT_COEFFICIENTS[0], low=None),
            Hyper("ns_b", DEFAULT_COEFFICIENTS[1], low=None),
            Hyper("ns_c", DEFAULT_COEFFICIENTS[2], low=None),
            Hyper("eps", 1e-7), Hyper("ns_steps", 5, kind="int", high=99),
            Hyper("adjust_lr", 0, kind="int", high=1, only="torch"),
            # Keras's: its AdamW step, rms scaling, and which variables it excludes
            Hyper("adam_beta1", 0.9, high=1.0, high_open=True, only="keras"),
            Hyper("adam_beta2", 0.999, high=1.0, high_open=True, only="keras"),
            Hyper("adam_eps", 1e-7, low_open=True, only="keras", why="fastopt needs eps > 0"),
            Hyper("adam_weight_decay", 0.004, optional=True, only="keras"),
            Hyper("adam_lr_ratio", 1.0, only="keras"),
            Hyper("rms_rate", 0.2, optional=True, only="keras"),
            Hyper("exclude_layers", None, kind="any", functional=False, only="keras"),
            Hyper("exclude_embeddings", True, kind="flag", functional=False, only="keras")),
    slots=(Slot("momentum_buffer", keras="momentum", torch="momentum_buffer"),
           Slot("velocity", keras="velocity", arg="optional", shape=_velocity_shape,
                optional=("keras",))),
    plan=lambda h, convention: ("muon", ()),
    scalars=_scalars,
    fixed={"decoupled_weight_decay": True},
    program=Program(
        passes=(
            # torch
            Elementwise("muon_momentum", ("param", "grad", "momentum_buffer", "scratch"),
                        select=_torch),
            # Keras: the Muon step of the params without a velocity ...
            Elementwise("muon_momentum_keras",
                        ("param", "grad", "momentum_buffer", "scratch"),
                        select=_keras, having=("velocity", False)),
            # ... and the AdamW step of those with one
            Elementwise("muon_adamw_keras",
                        ("param", "grad", "momentum_buffer", "velocity"),
                        select=_keras, having=("velocity", True)),
            MatrixFunction(_orthogonalize, having=("velocity", False)),
            PerTensor(_adjusted_lr, select=_torch),
            PerTensor(_keras_scale, select=_keras, having=("velocity", False)),
            Elementwise("scaled_add", ("param", "scratch"), reads=("k",), select=_torch),
            Elementwise("muon_apply_keras", ("param", "scratch"), reads=("k",),
                        select=_keras, having=("velocity", False))),
        env=("k",), scratch=("scratch",), dtype_scalars=_dtype_scalars,
        select=lambda shape, h, convention: convention == "keras" or len(shape) == 2,
        refuse="Muon only supports 2D parameters whereas we found a parameter with size: "
               "{shape}"),
    keras=Front("Muon", "learning_rate=0.001, adam_beta_1=0.9, adam_beta_2=0.999, "
                "adam_weight_decay=0.004, epsilon=1e-7, weight_decay=0.004, "
                "exclude_layers=None, exclude_embeddings=True, muon_a=3.4445, "
                "muon_b=-4.7750, muon_c=2.0315, adam_lr_ratio=1, momentum=0.95, "
                "ns_steps=5, nesterov=True, rms_rate=0.2",
                names={"adam_beta_1": "adam_beta1", "adam_beta_2": "adam_beta2",
                       "epsilon": "adam_eps", "muon_a": "ns_a", "muon_b": "ns_b",
                       "muon_c": "ns_c"},
                options={"state_lists": {"momentum_buffer": "momentums",
                                         "velocity": "adam_velocities"},
                         # weight decays besides weight_decay (zeroed with it for the
                         # variables excluded from weight decay)
                         "decays": ("adam_weight_decay",),
                         # the framework-free class's arrays have no names
                         "names_only": ("exclude_layers",)}),
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
