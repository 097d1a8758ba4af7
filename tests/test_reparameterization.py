"""The reparameterization z = mu + sigma * eps and log q at its own sample, with their backwards.

Each backward is checked against fourth-order central differences in float64 (relative
error <= 1e-6 after the gradient-scale floor of ``grad_error``), and the shortcut
formula for log q against the plain Gaussian log-density at z.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae.distributions import (
    gaussian_log_prob,
    reparameterize,
    reparameterize_backward,
    reparameterized_log_q,
    reparameterized_log_q_backward,
)
from minivae.gradcheck import grad_error, numerical_gradient

TOL = 1e-6
shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3))


@settings(max_examples=10)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_reparameterize_backward_matches_finite_differences(shape, seed):
    K, B, Z = shape
    rng = np.random.default_rng(seed)
    mu, log_var = rng.standard_normal((B, Z)), rng.uniform(-2, 1, (B, Z))
    eps, dz = rng.standard_normal((K, B, Z)), rng.standard_normal((K, B, Z))
    d_mu, d_log_var = reparameterize_backward(dz, eps, reparameterize(mu, log_var, eps)[1])

    def loss():  # L = sum(dz * z): its gradient wrt z is dz
        return float(np.sum(dz * reparameterize(mu, log_var, eps)[0]))

    assert grad_error(d_mu, numerical_gradient(loss, mu)) < TOL
    assert grad_error(d_log_var, numerical_gradient(loss, log_var)) < TOL


@settings(max_examples=10)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_log_q_at_its_own_sample_and_its_total_derivative(shape, seed):
    K, B, Z = shape
    rng = np.random.default_rng(seed)
    mu, log_var = rng.standard_normal((B, Z)), rng.uniform(-2, 1, (B, Z))
    eps, w = rng.standard_normal((K, B, Z)), rng.standard_normal((K, B))
    z, _ = reparameterize(mu, log_var, eps)
    np.testing.assert_allclose(reparameterized_log_q(log_var, eps),
                               gaussian_log_prob(z, mu, log_var), rtol=1e-12)

    def loss():  # sum_kb w_kb log q(z_kb | x_b), z_kb moving with (mu, log_var)
        z_, _ = reparameterize(mu, log_var, eps)
        return float(np.sum(w * gaussian_log_prob(z_, mu, log_var)))

    assert np.max(np.abs(numerical_gradient(loss, mu))) < 1e-9  # no dependence on mu at all
    d_log_var = reparameterized_log_q_backward(w, log_var)
    assert d_log_var.dtype == log_var.dtype and d_log_var.shape == (B, Z)
    assert grad_error(d_log_var, numerical_gradient(loss, log_var)) < TOL


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reparameterization_keeps_the_dtype(dtype):
    rng = np.random.default_rng(0)
    mu, log_var = (rng.standard_normal((2, 3)).astype(dtype) for _ in range(2))
    eps = rng.standard_normal((4, 2, 3)).astype(dtype)
    z, sigma = reparameterize(mu, log_var, eps)
    outs = (z, sigma, *reparameterize_backward(eps, eps, sigma),
            reparameterized_log_q(log_var, eps),
            reparameterized_log_q_backward(np.ones((4, 2), dtype), log_var))
    assert all(a.dtype == dtype for a in outs)
