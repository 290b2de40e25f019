"""NAdam (torch) and Nadam (Keras): Adam with Nesterov momentum, one rule."""
import numpy as np

from ..spec import Front, Hyper, Scalar, Slot, Spec

_F32 = np.dtype(np.float32)


def _mu(h, convention, t):
    """μₜ = β₁·(1 − ½·0.96^(t·ψ)), in float64 (Keras's ψ is 1)."""
    psi = h.momentum_decay if convention == "torch" else 1.0
    return h.beta1 * (1.0 - 0.5 * (0.96 ** (t * psi)))


def _advance(h, convention, step, value, dtype):
    """The running product after update `step`, as each library computes it
    in its dtype: torch ``mu_product *= mu`` (μ rounded to the tensor's
    dtype, then the product); Keras (its torch backend's Nadam)
    ``u_product · (β₁·(1 − 0.5·0.96^t))``, every operation in the variable's
    dtype (torch's float32 pow rounds the float64 result)."""
    if dtype != _F32:
        return value * _mu(h, convention, step)
    f = np.float32
    if convention == "torch":
        return float(f(value) * f(_mu(h, convention, step)))
    power = f(float(f(0.96)) ** step)
    return float(f(value) * (f(h.beta1) * (f(1.0) - f(0.5) * power)))


def _scalars(h, convention, step, before, after):
    product = after["mu_product"]        # Πₜ, kept as the library keeps it
    mu, mu_next = _mu(h, convention, step), _mu(h, convention, step + 1)
    # torch folds the learning rate into its two addcdiv values; Keras
    # multiplies the combined moment by it.
    lr, folded = (1.0, h.lr) if convention == "torch" else (h.lr, 1.0)
    a = folded * (1.0 - mu) / (1.0 - product)
    b = folded * mu_next / (1.0 - product * mu_next)
    return (lr, a, b, h.beta1, 1.0 - h.beta1, h.beta2, 1.0 - h.beta2,
            1.0 - h.beta2 ** step, h.eps)


NADAM = Spec(
    name="nadam",
    doc="""One in-place NAdam step: updates `param`, `exp_avg` and `exp_avg_sq`.

    ``v ← β₂·v + (1 − β₂)·g²;  d = sqrt(v / (1 − β₂ᵗ)) + ε``, with the
    momentum schedule ``μₜ = β₁·(1 − ½·0.96^(t·ψ))`` and its running product
    ``Πₜ = μ₁···μₜ``:

    * ``"torch"`` (``torch.optim.NAdam``, ψ = `momentum_decay`):
      ``m ← lerp(m, g, 1 − β₁);  p ← p − lr·(1 − μₜ)/(1 − Πₜ)·g/d
      − lr·μₜ₊₁/(1 − Πₜ·μₜ₊₁)·m/d``
    * ``"keras"`` (``keras.optimizers.Nadam``, ψ = 1):
      ``m ← β₁·m + (1 − β₁)·g;  p ← p − lr·(μₜ₊₁·m/(1 − Πₜ·μₜ₊₁)
      + (1 − μₜ)·g/(1 − Πₜ))/d``

    exp_avg, exp_avg_sq: the moments (Keras's ``momentum`` and ``velocity``),
    zeros at first. mu_product: Πₜ₋₁, the product before this step (torch's
    ``state["mu_product"]``, Keras's ``u_product``): None derives it from
    `step` in the library's dtype (torch's float32, Keras's params' dtype);
    a float is used as it is; a one-element array (or list of them, one value)
    is read and advanced in place, in its dtype, as the library does.""",
    hypers=(Hyper("lr"), Hyper("beta1", high=1.0, high_open=True),
            Hyper("beta2", high=1.0, high_open=True),
            Hyper("eps", low_open=True, why="fastopt needs eps > 0"),
            Hyper("momentum_decay", 4e-3, only="torch")),
    slots=(Slot("exp_avg", keras="momentum", torch="exp_avg"),
           Slot("exp_avg_sq", keras="velocity", torch="exp_avg_sq")),
    host=(Scalar("mu_product", keras="u_product", torch="mu_product", init=1.0,
                 advance=_advance, depends=("beta1", "momentum_decay"),
                 bounds={"low": 0.0, "high": 1.0}),),
    plan=lambda h, convention: ("nadam", (convention == "torch",)),
    scalars=_scalars,
    keras=Front("Nadam", "learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7"),
    torch=Front("NAdam", "lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, "
                "momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None, "
                "maximize=False, capturable=False, differentiable=False",
                names={"betas": ("beta1", "beta2")}),
)
