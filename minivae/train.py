"""The training loop: minibatches, the reparameterized gradient, an optimizer step."""

from __future__ import annotations

import numpy as np

from .optim import Adam
from .vae import VAE


def evaluate_loss(model: VAE, x: np.ndarray, rng: np.random.Generator, batch_size: int = 500,
                  k: int = 1) -> float:
    """Negative ELBO in nats per datapoint over ``x`` (sampled z, closed-form KL)."""
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        total += model.loss(xb, model.sample_eps(rng, len(xb), k)) * len(xb)
    return total / len(x)


def fit(model: VAE, x_train: np.ndarray, *, epochs: int = 10, batch_size: int = 100,
        lr: float = 1e-3, seed: int = 0, print_fn=print) -> list[float]:
    """Train with Adam on the negative ELBO; returns the mean training loss of each epoch."""
    rng = np.random.default_rng(seed)
    opt = Adam(lr=lr)
    history = []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        total = 0.0
        for start in range(0, len(order), batch_size):
            xb = x_train[order[start : start + batch_size]]
            loss, grads = model.loss_and_grad_sampled(xb, rng)
            if not np.isfinite(loss) or not np.isfinite(grads.flat).all():
                raise FloatingPointError(f"non-finite loss or gradient in epoch {epoch}")
            opt.step(model.flat, grads.flat)
            total += loss * len(xb)
        history.append(total / len(x_train))
        print_fn(f"epoch {epoch:3d}  train -ELBO {history[-1]:9.4f} nats per datapoint")
    return history
