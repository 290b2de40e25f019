"""Run a real torch.optim or Keras 3 optimizer over a fixed list of gradients.

Both helpers take NumPy arrays and return NumPy arrays of the same dtype:
``(final_param, {fastopt_state_name: final_state})``. The libraries are
imported on first use (Keras takes seconds to import).
"""
import numpy as np


def run(oracle, param, grads):
    """Trajectory of `oracle` (a `optimizer_table.Oracle`) from `param`."""
    runner = {"torch": torch_trajectory, "keras": keras_trajectory}[oracle.library]
    return runner(oracle.cls, oracle.kwargs, oracle.states, param, grads)


def torch_trajectory(cls, kwargs, states, param, grads):
    """torch.optim.`cls`(**kwargs) on one tensor, gradients set by hand.

    states: fastopt name -> key of ``optimizer.state[param]``.
    foreach=False selects torch's single-tensor reference implementation.
    """
    import torch

    p = torch.tensor(param)   # a copy, same dtype
    opt = getattr(torch.optim, cls)([p], foreach=False, **kwargs)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    found = opt.state[p]
    return p.numpy(), {name: found[key].numpy() for name, key in states.items()}


def keras_trajectory(cls, kwargs, states, param, grads):
    """keras.optimizers.`cls`(**kwargs) applied to one `keras.Variable`.

    states: fastopt name -> the Keras name of that slot (Adam's ``momentum``):
    Keras names each slot's variable ``<variable path>_<slot name>``.
    """
    import keras

    var = keras.Variable(param, dtype=param.dtype.name)
    opt = getattr(keras.optimizers, cls)(**kwargs)
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])

    def host(v):
        # The torch backend's tensor: np.array() of it (what
        # keras.ops.convert_to_numpy does) warns under NumPy 2.
        return v.value.detach().cpu().numpy().copy()

    by_name = {v.name: v for v in opt.variables}
    prefix = var.path.replace("/", "_")
    return host(var), {name: host(by_name[f"{prefix}_{slot}"])
                       for name, slot in states.items()}


# Error measure: max_i |a_i − b_i| / max(|b_i|, FLOOR·S), b the oracle, with S
# the array's scale: max_j |b_j|, and for the param also max_j |p0_j| (its
# initial value). Relative per element, except that elements much smaller than
# that scale (a param crossing zero, a momentum near zero) are measured against
# FLOOR·S: their absolute error comes from rounding quantities of size S along
# the trajectory, not of their own size. S includes p0 because with one
# element a param that ends near zero has no larger neighbour to set the scale.
FLOOR = 2.0**-4


def max_rel_error(actual, expected, scale=0.0):
    """The measure above (0 for empty arrays); `scale` adds to S."""
    if expected.size == 0:
        return 0.0
    mag = np.abs(expected)
    floor = max(FLOOR * max(float(mag.max()), scale), np.finfo(expected.dtype).tiny)
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    return float((diff / np.maximum(mag, floor)).max())

