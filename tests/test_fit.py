"""The training loop a reader follows: ``train_step`` and ``fit``.

``fit`` must be exactly the loop its docstring shows: replaying it by hand (the same
order, noise and Adam updates) gives bit-identical parameters. ``train_step`` must
refuse a non-finite loss or gradient *before* touching the parameters.
"""

import numpy as np
import pytest

from minivae import VAE, Adam
from minivae.objectives import iwae_loss_and_grad
from minivae.tool.data import synthetic_bars
from minivae.tool.train import NonFiniteError, fit, make_objective, train_step


def bars(n=200, seed=0):
    return synthetic_bars(n, np.random.default_rng(seed))


@pytest.mark.parametrize("objective, k", [("elbo", 1), ("iwae", 3)])
def test_fit_is_the_loop_it_shows(objective, k):
    x = bars()
    model = VAE(64, 3, hidden=(16,), activation="tanh", seed=1)
    twin = VAE.from_config(model.config())
    history = fit(model, x, epochs=2, batch_size=50, lr=1e-2, k=k, objective=objective,
                  seed=5, print_fn=lambda _: None)
    opt, rng, losses = Adam(lr=1e-2), np.random.default_rng(5), []
    for _ in range(2):
        order, total = rng.permutation(len(x)), 0.0
        for start in range(0, len(x), 50):
            xb = x[order[start:start + 50]]
            eps = rng.standard_normal((k, len(xb), 3))
            loss, grads = (twin.loss_and_grad(xb, eps) if objective == "elbo"
                           else iwae_loss_and_grad(twin, xb, eps))
            opt.step(twin.flat, grads.flat)
            total += loss * len(xb)
        losses.append(total / len(x))
    np.testing.assert_array_equal(model.flat, twin.flat)
    assert history == pytest.approx(losses, rel=1e-13)


def test_fit_lowers_the_loss_on_bars():
    x = bars(500)
    model = VAE(64, 4, hidden=(32,), activation="tanh", seed=0)
    history = fit(model, x, epochs=8, batch_size=50, lr=1e-2, print_fn=lambda _: None)
    assert history[-1] < history[0] - 5.0  # nats per datapoint: far beyond step-to-step noise


def test_train_step_refuses_non_finite_before_updating():
    model = VAE(6, 2, hidden=(4,), seed=0)
    x = (np.random.default_rng(0).random((3, 6)) < 0.5).astype(np.float64)
    eps = np.zeros((1, 3, 2))
    model.params["decoder.1.b"][0] = np.nan
    before = model.get_flat()
    with pytest.raises(NonFiniteError, match="non-finite loss.*decoder.1.b"):
        train_step(model, Adam(), make_objective(model), x, eps)
    np.testing.assert_array_equal(model.flat, before)  # NaN stays where it was, nothing else moved


def test_make_objective_names_bad_choices():
    model = VAE(6, 2, hidden=(4,))
    with pytest.raises(ValueError, match="objective must be one of"):
        make_objective(model, "elbow")
    with pytest.raises(ValueError, match="kl must be one of"):
        make_objective(model, kl="closed")
