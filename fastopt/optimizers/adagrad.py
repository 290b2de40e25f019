"""Keras's Adagrad."""
from .. import functional
from .base import Optimizer


class Adagrad(Optimizer):
    """Keras 3's ``Adagrad`` over NumPy and CUDA arrays, one fused kernel per param.

    ``a ← a + g²;  p ← p − lr·g / sqrt(a + ε)``, with the accumulator a starting
    at `initial_accumulator_value`. Base options: see `fastopt.optimizers.base`.

    Example::

        >>> w, g = np.ones(3), np.full(3, 0.5)
        >>> fastopt.Adagrad(learning_rate=0.1).apply_gradients(zip([g], [w]))
        1
    """

    def __init__(self, learning_rate=0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = self._check(
            "initial_accumulator_value", initial_accumulator_value, low=0.0)
        self.epsilon = self._check("epsilon", epsilon, low=0.0, low_open=True)

    def state_slots(self):
        return (("accumulator", self.initial_accumulator_value),)

    def update_step(self, grad, param, state, lr, options):
        functional.adagrad(param, grad, state["accumulator"],
                           step=self.iterations + 1, lr=lr, eps=self.epsilon,
                           convention="keras", **options)

    def get_config(self):
        return {**super().get_config(),
                "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}
