"""Keras's Adam (with AMSGrad) and AdamW."""
from .. import functional
from .base import Optimizer


class Adam(Optimizer):
    """Keras 3's ``Adam`` over NumPy and CUDA arrays, one fused kernel per param.

    ``m ← m + (g − m)(1−β₁);  v ← v + (g² − v)(1−β₂)`` (AMSGrad:
    ``v̂ ← max(v̂, v)`` used below);
    ``p ← p − lr·sqrt(1−β₂ᵗ)/(1−β₁ᵗ) · m / (sqrt(v) + ε)`` with
    ``t = iterations + 1``. Base options: see `fastopt.optimizers.base`.

    Example::

        >>> w, g = np.ones(3, np.float32), np.full(3, 0.5, np.float32)
        >>> opt = fastopt.Adam(learning_rate=1e-3)
        >>> for _ in range(3):
        ...     opt.apply_gradients(zip([g], [w]))
    """

    def __init__(self, learning_rate=0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7,
                 amsgrad: bool = False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = self._check("beta_1", beta_1, low=0.0, high=1.0, high_open=True)
        self.beta_2 = self._check("beta_2", beta_2, low=0.0, high=1.0, high_open=True)
        self.epsilon = self._check("epsilon", epsilon, low=0.0, low_open=True)
        self.amsgrad = self._flag("amsgrad", amsgrad)

    def state_slots(self):
        slots = (("momentum", 0.0), ("velocity", 0.0))
        return slots + ((("velocity_hat", 0.0),) if self.amsgrad else ())

    def update_step(self, grad, param, state, lr, options):
        # Decoupled weight decay (options["weight_decay"]) is Keras's base
        # optimizer's, applied by the same kernel before the Adam step.
        functional.adam(param, grad, state["momentum"], state["velocity"],
                        max_exp_avg_sq=state.get("velocity_hat"),
                        step=self.iterations + 1, lr=lr, beta1=self.beta_1,
                        beta2=self.beta_2, eps=self.epsilon, amsgrad=self.amsgrad,
                        convention="keras", **options)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Keras 3's ``AdamW``: `Adam` with ``weight_decay`` defaulting to 0.004.

    Keras's AdamW is its Adam with the base optimizer's decoupled decay,
    ``p ← p − p·wd·lr`` before each step; None is refused, as in Keras.

    Example::

        >>> w, g = np.ones(3), np.full(3, 0.5)
        >>> fastopt.AdamW(learning_rate=1e-3).apply_gradients(zip([g], [w]))
        1
    """

    def __init__(self, learning_rate=0.001, weight_decay: float = 0.004, **kwargs):
        if weight_decay is None:
            raise ValueError("AdamW(): weight_decay must be a float, got None")
        super().__init__(learning_rate, weight_decay=weight_decay, **kwargs)
