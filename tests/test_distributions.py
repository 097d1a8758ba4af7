"""Log-densities and KL divergences against scipy.stats, quadrature and Monte Carlo.

Monte Carlo comparisons use fixed seeds and a tolerance of 5 standard errors of
the sample mean (a false alarm has probability < 1e-6 per comparison).
"""

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from minivae.distributions import (
    bernoulli_log_prob,
    bernoulli_log_prob_elementwise,
    bernoulli_log_prob_grad,
    gaussian_log_prob,
    gaussian_log_prob_elementwise,
    gaussian_log_prob_grad,
    kl_diag_standard_normal,
    kl_diag_standard_normal_grad,
    kl_diag_standard_normal_per_dim,
    kl_mvn,
    mvn_log_prob,
    reparameterize,
    standard_normal_log_prob,
)
from minivae.gradcheck import grad_error, numerical_gradient_array

TOL = 1e-6
seeds = st.integers(0, 2**32 - 1)
sizes = st.tuples(st.integers(1, 4), st.integers(1, 5))


@given(size=sizes, seed=seeds)
def test_gaussian_log_prob_matches_scipy(size, seed):
    rng = np.random.default_rng(seed)
    x, mean = rng.standard_normal(size), rng.standard_normal(size)
    log_var = rng.uniform(-4, 4, size)
    # sigma = exp(0.5 * log_var): the standard deviation, never exp(log_var)
    expected = scipy.stats.norm.logpdf(x, loc=mean, scale=np.exp(0.5 * log_var))
    np.testing.assert_allclose(gaussian_log_prob_elementwise(x, mean, log_var), expected,
                               rtol=1e-12)
    np.testing.assert_allclose(gaussian_log_prob(x, mean, log_var), expected.sum(-1), rtol=1e-12)


@given(size=sizes, seed=seeds)
def test_gaussian_log_prob_gradients(size, seed):
    rng = np.random.default_rng(seed)
    x, mean = rng.standard_normal(size), rng.standard_normal(size)
    log_var = rng.uniform(-3, 3, size)
    dout = rng.standard_normal(size)
    d_mean, d_log_var, d_x = gaussian_log_prob_grad(x, mean, log_var)

    def f():
        return gaussian_log_prob_elementwise(x, mean, log_var)

    assert grad_error(d_mean * dout, numerical_gradient_array(f, mean, dout)) < TOL
    assert grad_error(d_log_var * dout, numerical_gradient_array(f, log_var, dout)) < TOL
    assert grad_error(d_x * dout, numerical_gradient_array(f, x, dout)) < TOL


@given(size=sizes, seed=seeds)
def test_bernoulli_log_prob_matches_scipy_and_gradient(size, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random(size) < 0.5).astype(np.float64)
    logits = 4 * rng.standard_normal(size)
    expected = scipy.stats.bernoulli.logpmf(x, scipy.special.expit(logits))
    np.testing.assert_allclose(bernoulli_log_prob_elementwise(x, logits), expected, rtol=1e-10)
    np.testing.assert_allclose(bernoulli_log_prob(x, logits), expected.sum(-1), rtol=1e-10)
    dout = rng.standard_normal(size)
    num = numerical_gradient_array(lambda: bernoulli_log_prob_elementwise(x, logits), logits, dout)
    assert grad_error(bernoulli_log_prob_grad(x, logits) * dout, num) < TOL


def test_bernoulli_log_prob_at_extreme_logits_is_exact_and_finite():
    x = np.array([1.0, 0.0, 1.0, 0.0])
    logits = np.array([1000.0, 1000.0, -1000.0, -1000.0])
    lp = bernoulli_log_prob_elementwise(x, logits)
    np.testing.assert_array_equal(lp, [0.0, -1000.0, -1000.0, 0.0])
    np.testing.assert_array_equal(bernoulli_log_prob_grad(x, logits), [0.0, -1.0, 1.0, 0.0])


def test_standard_normal_log_prob_matches_scipy():
    z = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_allclose(standard_normal_log_prob(z),
                               scipy.stats.norm.logpdf(z).sum(-1), rtol=1e-13)


@pytest.mark.parametrize("mu, log_var", [(0.0, 0.0), (1.5, -2.0), (-0.7, 1.3), (3.0, 2.5)])
def test_kl_closed_form_matches_quadrature(mu, log_var):
    """KL(N(mu, sigma^2) || N(0, 1)) = int q log(q/p), integrated numerically with scipy."""
    q = scipy.stats.norm(mu, np.exp(0.5 * log_var))
    p = scipy.stats.norm(0, 1)
    lo, hi = q.ppf(1e-14), q.isf(1e-14)
    integral, _ = scipy.integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), lo, hi,
                                       epsabs=1e-13, epsrel=1e-12, limit=200)
    kl = kl_diag_standard_normal_per_dim(np.array(mu), np.array(log_var))
    assert abs(kl - integral) < 1e-9
    assert kl >= 0


def test_kl_closed_form_matches_monte_carlo():
    """Mean of log q(z) - log p(z) over 200k draws z ~ q, within 5 standard errors (seed 1)."""
    rng = np.random.default_rng(1)
    mu = np.array([0.3, -1.2, 2.0])
    log_var = np.array([-1.0, 0.5, 0.0])
    eps = rng.standard_normal((200_000, 3))
    z, _ = reparameterize(mu, log_var, eps)
    samples = gaussian_log_prob(z, mu, log_var) - standard_normal_log_prob(z)
    stderr = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(samples.mean() - kl_diag_standard_normal(mu, log_var)) < 5 * stderr


@given(size=sizes, seed=seeds)
def test_kl_gradients(size, seed):
    rng = np.random.default_rng(seed)
    mu, log_var = rng.standard_normal(size), rng.uniform(-3, 3, size)
    dout = rng.standard_normal(size)
    g_mu, g_lv = kl_diag_standard_normal_grad(mu, log_var)

    def f():
        return kl_diag_standard_normal_per_dim(mu, log_var)

    assert grad_error(g_mu * dout, numerical_gradient_array(f, mu, dout)) < TOL
    assert grad_error(g_lv * dout, numerical_gradient_array(f, log_var, dout)) < TOL


def _random_spd(rng, d):
    M = rng.standard_normal((d, d))
    return M @ M.T + d * np.eye(d) * 0.5


@given(d=st.integers(1, 4), seed=seeds)
def test_mvn_log_prob_matches_scipy(d, seed):
    rng = np.random.default_rng(seed)
    S, m = _random_spd(rng, d), rng.standard_normal(d)
    x = rng.standard_normal((5, d))
    expected = scipy.stats.multivariate_normal(m, S).logpdf(x)
    np.testing.assert_allclose(mvn_log_prob(x, m, S), np.atleast_1d(expected), rtol=1e-11)
    np.testing.assert_allclose(mvn_log_prob(x[0], m, S), np.atleast_1d(expected)[0], rtol=1e-11)


@given(d=st.integers(1, 4), seed=seeds)
def test_kl_mvn_reduces_to_diagonal_formula_and_is_zero_on_itself(d, seed):
    rng = np.random.default_rng(seed)
    mu, log_var = rng.standard_normal(d), rng.uniform(-2, 2, d)
    kl_full = kl_mvn(mu, np.diag(np.exp(log_var)), np.zeros(d), np.eye(d))
    assert abs(kl_full - kl_diag_standard_normal(mu, log_var)) < 1e-10 * (1 + kl_full)
    S, m = _random_spd(rng, d), rng.standard_normal(d)
    assert abs(kl_mvn(m, S, m, S)) < 1e-10


def test_kl_mvn_matches_monte_carlo():
    """Full-covariance KL vs mean log q - log p over 200k draws (5 standard errors, seed 2)."""
    rng = np.random.default_rng(2)
    d = 3
    S0, S1 = _random_spd(rng, d), _random_spd(rng, d)
    m0, m1 = rng.standard_normal(d), rng.standard_normal(d)
    q, p = scipy.stats.multivariate_normal(m0, S0), scipy.stats.multivariate_normal(m1, S1)
    z = q.rvs(200_000, random_state=rng)
    samples = q.logpdf(z) - p.logpdf(z)
    stderr = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(samples.mean() - kl_mvn(m0, S0, m1, S1)) < 5 * stderr


def test_full_covariance_input_errors():
    with pytest.raises(ValueError, match="positive definite"):
        kl_mvn(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="square"):
        mvn_log_prob(np.zeros(2), np.zeros(2), np.ones((2, 3)))
    with pytest.raises(ValueError, match="shapes disagree"):
        kl_mvn(np.zeros(3), np.eye(2), np.zeros(2), np.eye(2))
