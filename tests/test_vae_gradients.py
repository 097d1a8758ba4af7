"""The whole negative ELBO against finite differences, for every model configuration.

For each likelihood x activation x K in {1, 3} x KL mode x depth in {1, 2},
hypothesis draws the widths, the batch, the seeds and the data. With eps held
fixed the loss is a deterministic function of the flat parameter vector; its
gradient is compared with a fourth-order central difference along random
directions, once over all parameters and once inside each named block
(``minivae.gradcheck.model_gradcheck``). Relative error must be <= 1e-6.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae import VAE
from minivae.gradcheck import model_gradcheck
from minivae.layers import ACTIVATIONS
from minivae.likelihoods import LIKELIHOODS

TOL = 1e-6

CONFIGS = list(
    itertools.product(sorted(LIKELIHOODS), sorted(ACTIVATIONS), (1, 3), ("analytic", "mc"), (1, 2))
)


def make_data(likelihood: str, rng: np.random.Generator, batch: int, dim: int) -> np.ndarray:
    if likelihood == "bernoulli":
        return (rng.random((batch, dim)) < 0.5).astype(np.float64)
    return rng.standard_normal((batch, dim))


@pytest.mark.parametrize("likelihood, activation, k, kl, depth", CONFIGS)
@settings(max_examples=3)
@given(
    data=st.data(),
    input_dim=st.integers(1, 6),
    latent_dim=st.integers(1, 3),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    beta=st.sampled_from([1.0, 0.3]),
)
def test_negative_elbo_gradient(likelihood, activation, k, kl, depth, data, input_dim,
                                latent_dim, batch, seed, beta):
    hidden = tuple(data.draw(st.lists(st.integers(1, 6), min_size=depth, max_size=depth)))
    model = VAE(input_dim, latent_dim, hidden=hidden, likelihood=likelihood,
                activation=activation, seed=seed)
    rng = np.random.default_rng(seed)
    if "decoder.log_var" in model.params:
        # move the learned log-variance away from its initial 0 so its gradient is generic
        log_var = model.params["decoder.log_var"]
        log_var[...] = rng.uniform(-1, 1, log_var.shape)
    x = make_data(likelihood, rng, batch, input_dim)
    eps = rng.standard_normal((k, batch, latent_dim))
    errors = model_gradcheck(model, x, eps, rng=rng, n_directions=2, kl=kl, beta=beta)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f"{worst}: relative error {errors[worst]:.3g}"


def test_gradcheck_catches_a_factor_of_two():
    """The check is sharp: halving one block of an otherwise exact gradient fails it."""
    rng = np.random.default_rng(0)
    model = VAE(5, 2, hidden=(4,), seed=3)
    x = (rng.random((3, 5)) < 0.5).astype(np.float64)
    eps = rng.standard_normal((2, 3, 2))

    def wrong(m, x_, eps_):
        loss, grads = m.loss_and_grad(x_, eps_)
        grads["decoder.0.b"][...] *= 0.5
        return loss, grads

    errors = model_gradcheck(model, x, eps, rng=rng, objective=wrong)
    assert errors["decoder.0.b"] > 1e-2
    assert errors["encoder.0.W"] <= TOL


def test_gradcheck_restores_parameters():
    model = VAE(4, 2, hidden=(3,), seed=0)
    before = model.get_flat()
    rng = np.random.default_rng(0)
    x = (rng.random((2, 4)) < 0.5).astype(np.float64)
    model_gradcheck(model, x, rng.standard_normal((1, 2, 2)), rng=rng)
    np.testing.assert_array_equal(model.flat, before)
