"""Keras's SGD, with momentum and Nesterov."""
from .. import functional
from .base import Optimizer


class SGD(Optimizer):
    """Keras 3's ``SGD`` over NumPy and CUDA arrays, one fused kernel per param.

    ``m ← momentum·m − lr·g;  p ← p + m`` (Nesterov: ``p ← p + momentum·m − lr·g``);
    without momentum ``p ← p − lr·g`` and no state. Base options (weight_decay,
    clipnorm, clipvalue, global_clipnorm, loss_scale_factor, name): see
    `fastopt.optimizers.base`.

    Example::

        >>> w, g = np.ones(3), np.full(3, 0.5)
        >>> opt = fastopt.SGD(learning_rate=0.1, momentum=0.9)
        >>> opt.apply_gradients(zip([g], [w]))
        1
    """

    def __init__(self, learning_rate=0.01, momentum: float = 0.0,
                 nesterov: bool = False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = self._check("momentum", momentum, low=0.0, high=1.0)
        self.nesterov = self._flag("nesterov", nesterov)

    def state_slots(self):
        return (("momentum", 0.0),) if self.momentum != 0.0 else ()

    def update_step(self, grad, param, state, lr, options):
        functional.sgd(param, grad, state.get("momentum"), step=self.iterations + 1,
                       lr=lr, momentum=self.momentum, nesterov=self.nesterov,
                       convention="keras", **options)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum,
                "nesterov": self.nesterov}
