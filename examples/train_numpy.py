"""Train a small two-layer network on NumPy arrays with fastopt's Keras-style
optimizers, in the familiar loop shape:

    grads = gradient(loss, params)          # here: written by hand
    optimizer.apply_gradients(zip(grads, params))

Each of SGD, Adagrad, RMSprop, Adam and AdamW trains the same model from the
same start; the loss goes down for each. Run: ``python examples/train_numpy.py``.
"""
import numpy as np

import fastopt

rng = np.random.default_rng(0)
N, D, H = 512, 8, 32
X = rng.standard_normal((N, D))
y = np.sin(X @ rng.standard_normal(D))[:, None]       # a smooth target


def init_params():
    r = np.random.default_rng(1)
    return [r.standard_normal((D, H)) / np.sqrt(D), np.zeros(H),
            r.standard_normal((H, 1)) / np.sqrt(H), np.zeros(1)]


def loss_and_grads(params):
    """Mean squared error of tanh(X·W1 + b1)·W2 + b2, and its gradients."""
    w1, b1, w2, b2 = params
    hidden = np.tanh(X @ w1 + b1)
    err = hidden @ w2 + b2 - y
    loss = float(np.mean(err ** 2))
    d_out = 2.0 * err / N
    d_hidden = (d_out @ w2.T) * (1.0 - hidden ** 2)
    grads = [X.T @ d_hidden, d_hidden.sum(0), hidden.T @ d_out, d_out.sum(0)]
    return loss, grads


OPTIMIZERS = [
    fastopt.SGD(learning_rate=0.1, momentum=0.9),
    fastopt.Adagrad(learning_rate=0.5),
    fastopt.RMSprop(learning_rate=0.003),
    fastopt.Adam(learning_rate=0.01),
    fastopt.AdamW(learning_rate=0.01, weight_decay=0.004, global_clipnorm=1.0),
]


def main(steps=200, report=50):
    for optimizer in OPTIMIZERS:
        params = init_params()
        losses = []
        for step in range(steps + 1):
            loss, grads = loss_and_grads(params)
            losses.append(loss)
            if step == steps:
                break
            optimizer.apply_gradients(zip(grads, params))   # in place
        shown = "  ".join(f"{losses[s]:.4f}" for s in range(0, steps + 1, report))
        print(f"{type(optimizer).__name__:8s} loss at steps 0..{steps} "
              f"every {report}: {shown}")
        assert losses[-1] < 0.5 * losses[0], "the loss should go down"


if __name__ == "__main__":
    main()
