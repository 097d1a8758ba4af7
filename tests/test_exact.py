"""Exact models against independent references.

* Every log-density and KL is cross-checked with :mod:`scipy.stats` (and, for
  expectations and KLs, with numerical integration by :func:`scipy.integrate.quad`
  in one dimension).
* Every gradient is checked in float64 by fourth-order central differences along
  random directions (:func:`minivae.gradcheck.directional_derivative`),
  relative error <= 1e-6.
* Models are random (hypothesis draws the seed and the sizes), small (D <= 5, Z <= 3).
"""

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from minivae.gradcheck import directional_derivative, rel_error
from minivae.theory.exact import GaussianMixture, LinearGaussian
from minivae.theory.identities import random_linear_gaussian, random_mixture

GRAD_TOL = 1e-6

seeds = st.integers(0, 2**32 - 1)
dims = st.integers(1, 5)
latents = st.integers(1, 3)


def _model(seed, D, Z, full):
    rng = np.random.default_rng(seed)
    model = random_linear_gaussian(rng, D, Z, full)
    return model, rng, model.sample(rng, 3)[1]


def _check_directional(f, x0, grad, rng, n_dir=3, h=1e-4):
    """Worst relative error of grad . u against a 4th-order central difference of f along u."""
    worst = 0.0
    for _ in range(n_dir):
        u = rng.standard_normal(x0.shape)
        u /= np.linalg.norm(u)
        worst = max(worst, rel_error(np.sum(grad * u), directional_derivative(f, x0, u, h)))
    return worst


def _random_spd(rng, n):
    L = rng.standard_normal((n, n))
    return L @ L.T / n + 0.2 * np.eye(n)


# --------------------------------------------------------------------------
# Linear-Gaussian: densities against scipy
# --------------------------------------------------------------------------


@given(seeds, dims, latents, st.booleans())
def test_log_marginal_matches_scipy(seed, D, Z, full):
    model, _, x = _model(seed, D, Z, full)
    C = model.A @ model.A.T + model.noise_cov
    ref = scipy.stats.multivariate_normal(model.b, C).logpdf(x)
    np.testing.assert_allclose(model.log_marginal(x), ref, rtol=1e-10)
    np.testing.assert_allclose(model.log_marginal(x[0]), ref[0], rtol=1e-10)


@given(seeds, dims, latents, st.booleans())
def test_log_lik_and_log_joint_match_scipy(seed, D, Z, full):
    model, rng, x = _model(seed, D, Z, full)
    z = rng.standard_normal((4, Z))
    ref = [scipy.stats.multivariate_normal(model.A @ zi + model.b, model.noise_cov).logpdf(x[0])
           for zi in z]
    np.testing.assert_allclose(model.log_lik(x[0], z), ref, rtol=1e-10)
    prior = scipy.stats.multivariate_normal(np.zeros(Z), np.eye(Z)).logpdf(z)
    np.testing.assert_allclose(model.log_joint(x[0], z), np.add(ref, prior), rtol=1e-10)


@given(seeds, dims, latents, st.booleans())
def test_posterior_matches_conditioning_the_joint_gaussian(seed, D, Z, full):
    # Independent route: (z, x) is jointly Gaussian with Cov(z, x) = A^T, Cov(x) = C, so
    # p(z|x) = N(A^T C^-1 (x - b), I - A^T C^-1 A).
    model, rng, x = _model(seed, D, Z, full)
    C = model.A @ model.A.T + model.noise_cov
    K = np.linalg.solve(C, model.A).T  # A^T C^-1
    m, S = model.posterior(x)
    np.testing.assert_allclose(m, (x - model.b) @ K.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(S, np.eye(Z) - K @ model.A, rtol=1e-8, atol=1e-10)
    # Bayes' rule pointwise: log p(x, z) - log p(z | x) = log p(x) for any z.
    z = rng.standard_normal((3, Z))
    log_post = scipy.stats.multivariate_normal(m[0], S).logpdf(z)
    np.testing.assert_allclose(model.log_joint(x[0], z) - log_post,
                               np.full(3, model.log_marginal(x[0])), rtol=1e-9)


@given(seeds, dims, st.booleans())
def test_expected_log_lik_and_kl_by_quadrature(seed, D, full):
    # Z = 1: E_q[log p(x|z)], KL(q || p(z)) and KL(q || p(z|x)) as 1-D integrals.
    model, rng, x = _model(seed, D, 1, full)
    x0 = x[0]
    q_mean, q_var = rng.standard_normal(), rng.uniform(0.1, 2.0)
    q = scipy.stats.norm(q_mean, np.sqrt(q_var))
    lo, hi = q_mean - 12 * np.sqrt(q_var), q_mean + 12 * np.sqrt(q_var)

    def integral(fn):
        return scipy.integrate.quad(lambda t: q.pdf(t) * fn(t), lo, hi, epsabs=1e-12,
                                    epsrel=1e-12, limit=200)[0]

    exp_ll = integral(lambda t: model.log_lik(x0, np.array([t])))
    got = model.expected_log_lik(x0, np.array([q_mean]), np.array([[q_var]]))
    np.testing.assert_allclose(got, exp_ll, rtol=1e-8)
    got_diag = model.expected_log_lik_diag(x0, np.array([q_mean]), np.log([q_var]))
    np.testing.assert_allclose(got_diag, exp_ll, rtol=1e-8)

    m, S = model.posterior(x0)
    post = scipy.stats.norm(m[0], np.sqrt(S[0, 0]))
    kl_post = integral(lambda t: q.logpdf(t) - post.logpdf(t))
    got_kl = model.kl_to_posterior(x0, np.array([q_mean]), np.array([[q_var]]))
    np.testing.assert_allclose(got_kl, kl_post, rtol=1e-7, atol=1e-10)
    kl_prior = integral(lambda t: q.logpdf(t) - scipy.stats.norm.logpdf(t))
    elbo = model.elbo(x0, np.array([q_mean]), np.array([[q_var]]))
    np.testing.assert_allclose(elbo, exp_ll - kl_prior, rtol=1e-8)


@given(seeds, dims, latents, st.booleans())
def test_elbo_diag_equals_elbo_with_diagonal_covariance(seed, D, Z, full):
    model, rng, x = _model(seed, D, Z, full)
    mu, log_var = rng.standard_normal((3, Z)), rng.uniform(-2, 1, (3, Z))
    rows = model.elbo_diag(x, mu, log_var)
    for i in range(3):
        np.testing.assert_allclose(rows[i], model.elbo(x[i], mu[i], np.diag(np.exp(log_var[i]))),
                                   rtol=1e-10)


def test_sample_has_the_marginal_moments():
    # 200k draws: the sample mean and covariance are within a few standard errors of
    # b and C; the tolerance 0.05 is > 5 standard errors of any entry here (entries of C
    # are O(1), their sample stderr is about sqrt(2/200000) * O(1) < 0.01).
    rng = np.random.default_rng(0)
    model = random_linear_gaussian(rng, 3, 2, full_noise=True)
    _, x = model.sample(rng, 200_000)
    np.testing.assert_allclose(x.mean(axis=0), model.b, atol=0.05)
    np.testing.assert_allclose(np.cov(x.T), model.marginal_cov, atol=0.05)


# --------------------------------------------------------------------------
# Linear-Gaussian: gradients by finite differences
# --------------------------------------------------------------------------


@given(seeds, dims, latents)
def test_log_marginal_grad_diagonal_noise(seed, D, Z):
    model, rng, x = _model(seed, D, Z, False)
    grad = model.log_marginal_grad(x)  # gradient of the mean over the 3 rows
    A, b, noise = model.A, model.b, model.noise_var
    flat = np.concatenate([A.ravel(), b, noise])
    g = np.concatenate([grad["A"].ravel(), grad["b"], grad["noise"]])

    def f(theta):
        A_ = theta[: A.size].reshape(A.shape)
        b_ = theta[A.size : A.size + D]
        return float(np.mean(LinearGaussian(A_, b_, theta[A.size + D :]).log_marginal(x)))

    assert _check_directional(f, flat, g, rng) <= GRAD_TOL


@given(seeds, dims, latents)
def test_log_marginal_grad_full_noise_along_symmetric_directions(seed, D, Z):
    model, rng, x = _model(seed, D, Z, True)
    G = model.log_marginal_grad(x[0])["noise"]
    np.testing.assert_allclose(G, G.T, rtol=0, atol=1e-14)
    for _ in range(3):
        E = rng.standard_normal((D, D))
        E = (E + E.T) / np.linalg.norm(E + E.T)

        def f(t, E=E):
            return float(LinearGaussian(model.A, model.b, model.noise_cov + t * E)
                         .log_marginal(x[0]))

        numeric = directional_derivative(lambda v: f(v[0]), np.zeros(1), np.ones(1), 1e-4)
        assert rel_error(np.sum(G * E), numeric) <= GRAD_TOL


@given(seeds, dims, latents, st.booleans())
def test_log_lik_grad_and_log_joint_grad_z(seed, D, Z, full):
    model, rng, x = _model(seed, D, Z, full)
    z = rng.standard_normal((1, Z))
    grad = model.log_lik_grad(x[0], z)
    flat = np.concatenate([model.A.ravel(), model.b])
    g = np.concatenate([grad["A"][0].ravel(), grad["b"][0]])

    def f(theta):
        m = LinearGaussian(theta[: model.A.size].reshape(model.A.shape),
                           theta[model.A.size :], model.noise_cov)
        return float(m.log_lik(x[0], z)[0])

    assert _check_directional(f, flat, g, rng) <= GRAD_TOL
    gz = model.log_joint_grad_z(x[0], z)[0]
    assert _check_directional(lambda v: float(model.log_joint(x[0], v)), z[0], gz, rng) \
        <= GRAD_TOL


@given(seeds, dims, latents, st.booleans())
def test_elbo_grad_model_fixed_q(seed, D, Z, full):
    model, rng, x = _model(seed, D, Z, full)
    q_mean, q_cov = rng.standard_normal(Z), _random_spd(rng, Z)
    grad = model.elbo_grad_model(x[0], q_mean, q_cov)
    flat = np.concatenate([model.A.ravel(), model.b])
    g = np.concatenate([grad["A"].ravel(), grad["b"]])

    def f(theta):
        m = LinearGaussian(theta[: model.A.size].reshape(model.A.shape),
                           theta[model.A.size :], model.noise_cov)
        return m.elbo(x[0], q_mean, q_cov)

    assert _check_directional(f, flat, g, rng) <= GRAD_TOL


@given(seeds, dims, latents, st.booleans())
def test_elbo_diag_grad_wrt_q(seed, D, Z, full):
    model, rng, x = _model(seed, D, Z, full)
    mu, log_var = rng.standard_normal(Z), rng.uniform(-2, 1, Z)
    d_mu, d_log_var = model.elbo_diag_grad(x[0], mu, log_var)

    def f(phi):
        return float(model.elbo_diag(x[0], phi[:Z], phi[Z:]))

    err = _check_directional(f, np.concatenate([mu, log_var]), np.concatenate([d_mu, d_log_var]),
                             rng)
    assert err <= GRAD_TOL


@given(seeds, dims, latents, st.booleans())
def test_elbo_grad_wrt_full_covariance_q(seed, D, Z, full):
    model, rng, x = _model(seed, D, Z, full)
    q_mean, q_cov = rng.standard_normal(Z), _random_spd(rng, Z)
    d_mean, d_cov = model.elbo_grad(x[0], q_mean, q_cov)
    np.testing.assert_array_equal(d_cov, d_cov.T)
    # along symmetric directions of Q: d ELBO = d_mean . du + tr(d_cov dQ)
    worst = 0.0
    for _ in range(3):
        u, U = rng.standard_normal(Z), rng.standard_normal((Z, Z))
        U = 0.5 * (U + U.T)

        def f(t, u=u, U=U):
            return model.elbo(x[0], q_mean + t * u, q_cov + t * U)

        numeric = directional_derivative(f, 0.0, 1.0, 1e-4)
        worst = max(worst, rel_error(d_mean @ u + np.sum(d_cov * U), numeric))
    assert worst <= GRAD_TOL
    m, S = model.posterior(x[0])  # and it vanishes at the posterior
    d_mean, d_cov = model.elbo_grad(x[0], m, S)
    assert np.max(np.abs(d_mean)) < 1e-10 and np.max(np.abs(d_cov)) < 1e-10


@given(seeds, dims, latents, st.booleans())
def test_best_mean_field_is_a_stationary_maximum(seed, D, Z, full):
    model, rng, x = _model(seed, D, Z, full)
    mu, log_var = model.best_mean_field(x[0])
    d_mu, d_log_var = model.elbo_diag_grad(x[0], mu, log_var)
    assert np.max(np.abs(d_mu)) < 1e-10 and np.max(np.abs(d_log_var)) < 1e-12
    best = model.elbo_diag(x[0], mu, log_var)
    for _ in range(5):
        other = model.elbo_diag(x[0], mu + 0.1 * rng.standard_normal(Z),
                                log_var + 0.1 * rng.standard_normal(Z))
        assert other < best
    # and mean-field never reaches log p(x) unless the posterior is already diagonal
    assert best <= model.log_marginal(x[0]) + 1e-12


# --------------------------------------------------------------------------
# Mixture
# --------------------------------------------------------------------------


@given(seeds, st.integers(1, 4), dims)
def test_mixture_log_marginal_and_responsibilities_match_scipy(seed, K, D):
    rng = np.random.default_rng(seed)
    mix = random_mixture(rng, K, D)
    _, x = mix.sample(rng, 4)
    comp = np.stack([scipy.stats.multivariate_normal(mix.means[k], mix.covs[k]).logpdf(x)
                     for k in range(K)], axis=-1).reshape(4, K)
    joint = np.log(mix.weights) + comp
    ref = scipy.special.logsumexp(joint, axis=-1)
    np.testing.assert_allclose(mix.log_marginal(x), ref, rtol=1e-10)
    np.testing.assert_allclose(mix.responsibilities(x), np.exp(joint - ref[:, None]),
                               rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(mix.elbo(x, mix.responsibilities(x)), ref, rtol=1e-10)


@given(seeds, st.integers(2, 4), dims)
def test_mixture_kl_matches_scipy_entropy_and_handles_zeros(seed, K, D):
    rng = np.random.default_rng(seed)
    mix = random_mixture(rng, K, D)
    _, x = mix.sample(rng, 1)
    q = rng.dirichlet(np.ones(K))
    r = mix.responsibilities(x[0])
    np.testing.assert_allclose(mix.kl_to_posterior(x[0], q), scipy.stats.entropy(q, r),
                               rtol=1e-9, atol=1e-12)
    one_hot = np.eye(K)[0]  # 0 log 0 = 0: the ELBO of a point mass is log p(x, k=0)
    np.testing.assert_allclose(mix.elbo(x[0], one_hot), mix.log_joint(x[0])[0], rtol=1e-12)
    assert np.isfinite(mix.kl_to_posterior(x[0], one_hot))


def test_mixture_diagonal_covs_equal_full_diagonal():
    rng = np.random.default_rng(1)
    var = rng.uniform(0.5, 2.0, (2, 3))
    means = rng.standard_normal((2, 3))
    x = rng.standard_normal((5, 3))
    a = GaussianMixture([0.4, 0.6], means, var)
    b = GaussianMixture([0.4, 0.6], means, np.stack([np.diag(v) for v in var]))
    np.testing.assert_allclose(a.log_marginal(x), b.log_marginal(x), rtol=1e-12)


# --------------------------------------------------------------------------
# Input checking: specific exceptions naming the argument
# --------------------------------------------------------------------------


def test_linear_gaussian_rejects_bad_input():
    A, b = np.ones((3, 2)), np.zeros(3)
    with pytest.raises(ValueError, match="b must have shape"):
        LinearGaussian(A, np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match="positive variances"):
        LinearGaussian(A, b, np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="positive definite"):
        LinearGaussian(A, b, -np.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        LinearGaussian(A, b, np.eye(3) + np.triu(np.ones((3, 3)), 1))
    with pytest.raises(ValueError, match="NaN"):
        LinearGaussian(A, b, np.array([1.0, np.nan, 1.0]))
    with pytest.raises(TypeError, match="A must be an array"):
        LinearGaussian("not an array", b, np.ones(3))
    model = LinearGaussian(A, b, np.ones(3))
    with pytest.raises(ValueError, match="x must have last dimension D = 3"):
        model.log_marginal(np.zeros(4))
    with pytest.raises(ValueError, match="q_cov must be positive definite"):
        model.elbo(np.zeros(3), np.zeros(2), -np.eye(2))
    with pytest.raises(ValueError, match="log_var must have the shape of mu"):
        model.elbo_diag(np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        model.sample(0, 3)


def test_model_copies_its_parameters():
    # The model caches C, its Cholesky factor and the posterior: mutating the caller's
    # arrays afterwards must not leave those caches describing a different model.
    A = np.ones((2, 1))
    model = LinearGaussian(A, np.zeros(2), np.ones(2))
    before = model.log_marginal(np.ones(2))
    A[...] = 5.0
    assert model.log_marginal(np.ones(2)) == before


def test_mixture_rejects_bad_input():
    means = np.zeros((2, 3))
    with pytest.raises(ValueError, match="weights must be 2 positive numbers summing to 1"):
        GaussianMixture([0.5, 0.6], means, np.ones((2, 3)))
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture([0.5, 0.5], means, np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"covs\[1\] must be positive definite"):
        GaussianMixture([0.5, 0.5], means, np.stack([np.eye(3), -np.eye(3)]))
    mix = GaussianMixture([0.5, 0.5], means, np.ones((2, 3)))
    with pytest.raises(ValueError, match="q must be non-negative and sum to 1"):
        mix.elbo(np.zeros(3), np.array([0.7, 0.7]))
