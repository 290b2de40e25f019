"""Keras's RMSprop: plain, with momentum, centered."""
from .. import functional
from .base import Optimizer


class RMSprop(Optimizer):
    """Keras 3's ``RMSprop`` over NumPy and CUDA arrays, one fused kernel per param.

    ``s ← ρ·s + (1−ρ)·g²``; ``inc = lr·g / sqrt(s + ε)``, or centered
    (``ḡ ← ρ·ḡ + (1−ρ)·g``) ``lr·g / sqrt(s − ḡ² + ε)``; with momentum
    ``buf ← momentum·buf + inc;  p ← p − buf``, else ``p ← p − inc``.
    Base options: see `fastopt.optimizers.base`.

    Example::

        >>> w, g = np.ones(3), np.full(3, 0.5)
        >>> fastopt.RMSprop(centered=True).apply_gradients(zip([g], [w]))
        1
    """

    def __init__(self, learning_rate=0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho = self._check("rho", rho, low=0.0, high=1.0)
        self.momentum = self._check("momentum", momentum, low=0.0)
        self.epsilon = self._check("epsilon", epsilon, low=0.0, low_open=True)
        self.centered = self._flag("centered", centered)

    def state_slots(self):
        slots = [("velocity", 0.0)]
        if self.momentum > 0.0:
            slots.append(("momentum", 0.0))
        if self.centered:
            slots.append(("average_gradient", 0.0))
        return tuple(slots)

    def update_step(self, grad, param, state, lr, options):
        functional.rmsprop(param, grad, state["velocity"],
                           momentum_buffer=state.get("momentum"),
                           grad_avg=state.get("average_gradient"),
                           step=self.iterations + 1, lr=lr, alpha=self.rho,
                           eps=self.epsilon, momentum=self.momentum,
                           centered=self.centered, convention="keras", **options)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}
