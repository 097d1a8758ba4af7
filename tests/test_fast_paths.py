"""The speed-motivated code paths give the same numbers as the plain ones.

Each fast path (issue 6) has a plain counterpart that the rest of the suite
checks by finite differences; these tests pin the two together.
"""

import numpy as np
import pytest

from minivae import VAE, Adam
from minivae.distributions import (
    bernoulli_log_prob,
    bernoulli_log_prob_and_softplus,
    bernoulli_log_prob_grad,
    bernoulli_log_prob_grad_from_softplus,
    sum_last_axis,
)
from minivae.likelihoods import LIKELIHOODS, make_likelihood
from minivae.numerics import sigmoid, softplus


def test_softplus_and_sigmoid_match_the_textbook_formulas():
    x = np.linspace(-30, 30, 601)
    np.testing.assert_allclose(softplus(x), np.log1p(np.exp(x)), rtol=1e-14, atol=0)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-14, atol=0)
    # scalars and integers keep working, float32 stays float32
    assert softplus(0.0) == pytest.approx(np.log(2.0), rel=1e-15)
    np.testing.assert_allclose(softplus(np.array([1, 2])), np.log1p(np.exp([1.0, 2.0])),
                               rtol=1e-15)
    assert softplus(np.ones(3, np.float32)).dtype == np.float32
    assert sigmoid(np.ones(3, np.float32)).dtype == np.float32
    assert sigmoid(np.float32(-200.0)) == 0.0


def test_sum_last_axis_is_np_sum():
    a = np.random.default_rng(0).standard_normal((3, 4, 7))
    np.testing.assert_allclose(sum_last_axis(a), a.sum(-1), rtol=1e-14)


def test_bernoulli_fused_forward_and_gradient_match_the_plain_ones():
    rng = np.random.default_rng(0)
    logits = 8 * rng.standard_normal((3, 5, 11))
    x = (rng.random((5, 11)) < 0.5).astype(np.float64)
    log_p, sp = bernoulli_log_prob_and_softplus(x, logits)
    np.testing.assert_allclose(log_p, bernoulli_log_prob(x, logits), rtol=1e-14)
    np.testing.assert_allclose(bernoulli_log_prob_grad_from_softplus(x, logits, sp),
                               bernoulli_log_prob_grad(x, logits), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_likelihood_cache_pair_matches_log_lik_and_log_lik_grad(name):
    rng = np.random.default_rng(1)
    lik = make_likelihood(name, fixed_log_var=-0.3)
    D = 6
    model = VAE(D, 2, hidden=(4,), likelihood=name, seed=0)
    out = rng.standard_normal((2, 3, lik.out_dim(D)))
    x = (rng.random((3, D)) < 0.5).astype(np.float64)
    weight = rng.standard_normal((2, 3))
    log_p, cache = lik.log_lik_and_cache(x, out, model.params)
    np.testing.assert_allclose(log_p, lik.log_lik(x, out, model.params), rtol=1e-14)
    g1, g2 = model.new_grad(), model.new_grad()
    d1 = lik.log_lik_grad(x, out, model.params, weight, g1)
    d2 = lik.log_lik_grad_from_cache(x, out, model.params, weight, g2, cache)
    np.testing.assert_allclose(d2, d1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g2.flat, g1.flat, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_and_grad_out_buffer_is_overwritten_not_accumulated(dtype, likelihood):
    """Every entry is written: the gradient of a fresh (np.empty) buffer is never garbage."""
    rng = np.random.default_rng(2)
    model = VAE(8, 3, hidden=(5,), dtype=dtype, seed=3, likelihood=likelihood)
    if likelihood == "bernoulli":
        x = (rng.random((4, 8)) < 0.5).astype(dtype)
    else:
        x = rng.standard_normal((4, 8)).astype(dtype)
    eps = model.sample_eps(rng, 4, 2)
    loss, fresh = model.loss_and_grad(x, eps)
    assert np.isfinite(fresh.flat).all()
    buf = model.new_grad()
    buf.flat[...] = np.nan  # garbage that must not survive
    for _ in range(2):  # twice: overwritten, never added to
        loss2, grads = model.loss_and_grad(x, eps, out=buf)
    assert grads is buf and loss2 == loss
    np.testing.assert_array_equal(buf.flat, fresh.flat)
    assert fresh.flat.dtype == dtype


def test_loss_and_grad_out_must_have_the_model_layout():
    model = VAE(8, 3, hidden=(5,), seed=0)
    other = VAE(8, 2, hidden=(5,), seed=0)
    x = np.zeros((2, 8))
    eps = np.zeros((1, 2, 3))
    with pytest.raises(TypeError, match="out"):
        model.loss_and_grad(x, eps, out=other.new_grad())
    with pytest.raises(TypeError, match="out"):
        model.loss_and_grad(x, eps, out=np.zeros(model.n_params))
    with pytest.raises(TypeError, match="dtype"):
        model.loss_and_grad(x, eps, out=VAE(8, 3, hidden=(5,), dtype=np.float32).new_grad())


def test_float32_adam_stays_float32_and_matches_float64_closely():
    rng = np.random.default_rng(4)
    p64 = rng.standard_normal(50)
    p32 = p64.astype(np.float32)
    o64, o32 = Adam(lr=1e-2), Adam(lr=1e-2)
    for _ in range(20):
        g = rng.standard_normal(50)
        o64.step(p64, g)
        o32.step(p32, g.astype(np.float32))
    assert p32.dtype == o32.m.dtype == o32.v.dtype == np.float32
    np.testing.assert_allclose(p32, p64, rtol=1e-5, atol=1e-5)
