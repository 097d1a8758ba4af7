r"""Models whose marginal likelihood and posterior are known exactly.

They are the ground truth against which every bound and estimator in minivae
is checked (see :mod:`minivae.theory.identities` and ``python -m minivae verify``).

Linear-Gaussian model (factor analysis / probabilistic PCA when Sigma is
diagonal / isotropic)
--------------------------------------------------------------------------

.. math::

    p(z) = N(0, I_Z),\qquad p(x|z) = N(Az + b, \Sigma)

    p(x) = N(b,\ C),\quad C = AA^\top + \Sigma

    p(z|x) = N(m, S),\quad S = (I + A^\top\Sigma^{-1}A)^{-1},\quad
    m = S A^\top \Sigma^{-1}(x - b)

For a Gaussian :math:`q(z) = N(\mu, Q)` everything in the ELBO has a closed form:

.. math::

    E_q[\log p(x|z)] = \log N(x; A\mu + b, \Sigma)
                       - \tfrac12\,\mathrm{tr}(\Sigma^{-1} A Q A^\top)

    \mathrm{ELBO}(q) = E_q[\log p(x|z)] - \mathrm{KL}(q\,\|\,N(0, I))

Mixture with a discrete latent
------------------------------

.. math::

    p(k) = \pi_k,\quad p(x|k) = N(\mu_k, \Sigma_k),\quad
    \log p(x) = \mathrm{logsumexp}_k[\log\pi_k + \log N(x; \mu_k, \Sigma_k)]

    p(k|x) = r_k = \exp(\log\pi_k + \log N(x;\mu_k,\Sigma_k) - \log p(x)),\qquad
    \mathrm{ELBO}(q) = \sum_k q_k[\log \pi_k + \log N(x;\mu_k,\Sigma_k) - \log q_k]

All log-densities are in nats and include the :math:`\tfrac12\log 2\pi`
constants. Models are float64 throughout: they are references, not fast paths.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ..distributions import (
    LOG_2PI,
    gaussian_log_prob,
    kl_diag_standard_normal,
    kl_mvn,
    mvn_log_prob,
)
from ..numerics import logsumexp

# --------------------------------------------------------------------------
# Input checking (specific exceptions, messages that name the argument)
# --------------------------------------------------------------------------


def _as_float_array(value, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    """``value`` as a finite float64 array with one of the allowed numbers of dimensions."""
    try:
        arr = np.array(value, dtype=np.float64)  # a copy: the cached quantities stay valid
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of real numbers, got {type(value).__name__}") \
            from exc
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, "
                         f"got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _cholesky_pd(S: np.ndarray, name: str) -> np.ndarray:
    """Lower Cholesky factor of a symmetric positive-definite matrix, or a clear ValueError."""
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {S.shape}")
    if not np.allclose(S, S.T, rtol=1e-10, atol=1e-12):
        raise ValueError(f"{name} must be symmetric")
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"{name} must be positive definite") from exc


def _check_last_dim(x: np.ndarray, size: int, name: str, what: str) -> None:
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have last dimension {what} = {size}, got shape {x.shape}")


def _spd_inverse(L: np.ndarray) -> np.ndarray:
    """(L L^T)^{-1} = L^-T L^-1 from the Cholesky factor L, symmetrized against roundoff.

    (np.linalg.solve rather than scipy's cho_solve, whose triangular solve with a matrix
    right side OpenBLAS runs threaded even for 2x2: milliseconds instead of microseconds.)
    """
    L_inv = np.linalg.solve(L, np.eye(L.shape[0]))
    inv = L_inv.T @ L_inv
    return 0.5 * (inv + inv.T)


# --------------------------------------------------------------------------
# Linear-Gaussian model
# --------------------------------------------------------------------------


class LinearGaussian:
    r"""The linear-Gaussian model :math:`p(z)=N(0,I)`, :math:`p(x|z)=N(Az+b,\Sigma)`.

    Parameters
    ----------
    A : array (D, Z)
        Loading matrix (the decoder's weights).
    b : array (D,)
        Offset (the decoder's bias): the mean of x.
    noise : array (D,) or (D, D)
        :math:`\Sigma`: a vector of per-dimension variances (diagonal
        :math:`\Sigma`, as in factor analysis and a VAE's Gaussian decoder) or
        a full symmetric positive-definite matrix.

    Attributes
    ----------
    D, Z : int
    diagonal_noise : bool
        True when ``noise`` was given as a vector of variances.
    noise_cov : array (D, D)
        :math:`\Sigma` as a matrix.
    marginal_cov : array (D, D)
        :math:`C = AA^\top + \Sigma`.
    posterior_precision : array (Z, Z)
        :math:`\Lambda = I + A^\top\Sigma^{-1}A` (independent of x).
    posterior_cov : array (Z, Z)
        :math:`S = \Lambda^{-1}`.
    """

    def __init__(self, A, b, noise):
        A = _as_float_array(A, "A", (2,))
        b = _as_float_array(b, "b", (1,))
        noise = _as_float_array(noise, "noise", (1, 2))
        D, Z = A.shape
        if D < 1 or Z < 1:
            raise ValueError(f"A must have shape (D, Z) with D, Z >= 1, got {A.shape}")
        if b.shape != (D,):
            raise ValueError(f"b must have shape ({D},) to match A {A.shape}, got {b.shape}")
        self.A, self.b, self.D, self.Z = A, b, D, Z
        self.diagonal_noise = noise.ndim == 1
        if self.diagonal_noise:
            if noise.shape != (D,) or np.any(noise <= 0):
                raise ValueError(f"noise as a vector must hold {D} positive variances, "
                                 f"got shape {noise.shape}, min {noise.min():.3g}")
            self.noise_var = noise
            self.noise_cov = np.diag(noise)
        else:
            if noise.shape != (D, D):
                raise ValueError(f"noise as a matrix must have shape ({D}, {D}), got {noise.shape}")
            self.noise_var = np.diag(noise).copy()
            self.noise_cov = noise
        self._noise_chol = _cholesky_pd(self.noise_cov, "noise")
        self.noise_precision = _spd_inverse(self._noise_chol)
        self.marginal_cov = A @ A.T + self.noise_cov
        self._marginal_chol = _cholesky_pd(0.5 * (self.marginal_cov + self.marginal_cov.T),
                                           "A A^T + noise")
        # Lambda = I + A^T Sigma^-1 A is all the posterior needs, for every x.
        self._AtPA = A.T @ self.noise_precision @ A
        self.posterior_precision = np.eye(Z) + self._AtPA
        self._post_chol = np.linalg.cholesky(self.posterior_precision)
        self.posterior_cov = _spd_inverse(self._post_chol)

    def __repr__(self) -> str:
        kind = "diagonal" if self.diagonal_noise else "full"
        return f"LinearGaussian(D={self.D}, Z={self.Z}, noise={kind})"

    # -- checking ----------------------------------------------------------

    def _check_x(self, x) -> np.ndarray:
        x = _as_float_array(x, "x", (1, 2))
        _check_last_dim(x, self.D, "x", "D")
        return x

    def _check_z(self, z) -> np.ndarray:
        z = _as_float_array(z, "z", (1, 2, 3))
        _check_last_dim(z, self.Z, "z", "Z")
        return z

    def _check_q_full(self, q_mean, q_cov) -> tuple[np.ndarray, np.ndarray]:
        q_mean = _as_float_array(q_mean, "q_mean", (1,))
        q_cov = _as_float_array(q_cov, "q_cov", (2,))
        if q_mean.shape != (self.Z,) or q_cov.shape != (self.Z, self.Z):
            raise ValueError(f"q_mean must have shape ({self.Z},) and q_cov ({self.Z}, {self.Z}), "
                             f"got {q_mean.shape} and {q_cov.shape}")
        _cholesky_pd(q_cov, "q_cov")
        return q_mean, q_cov

    def _check_q_diag(self, mu, log_var) -> tuple[np.ndarray, np.ndarray]:
        mu = _as_float_array(mu, "mu", (1, 2))
        log_var = _as_float_array(log_var, "log_var", (1, 2))
        _check_last_dim(mu, self.Z, "mu", "Z")
        if log_var.shape != mu.shape:
            raise ValueError(f"log_var must have the shape of mu {mu.shape}, got {log_var.shape}")
        return mu, log_var

    # -- sampling ------------------------------------------------------------

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` pairs: z ~ N(0, I) of shape (n, Z), then x ~ N(Az + b, Sigma), (n, D)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        z = rng.standard_normal((n, self.Z))
        noise = rng.standard_normal((n, self.D)) @ self._noise_chol.T
        return z, z @ self.A.T + self.b + noise

    # -- densities -----------------------------------------------------------

    def _noise_log_prob(self, x: np.ndarray, mean: np.ndarray) -> np.ndarray:
        r""":math:`\log N(x; \mathrm{mean}, \Sigma)` over the last axis, broadcasting."""
        x, mean = np.broadcast_arrays(x, mean)
        if self.diagonal_noise:
            return gaussian_log_prob(x, mean, np.log(self.noise_var))
        diff = (x - mean).reshape(-1, self.D)
        out = mvn_log_prob(diff, np.zeros(self.D), self.noise_cov)
        return np.reshape(out, x.shape[:-1])

    def log_lik(self, x, z) -> np.ndarray:
        r""":math:`\log p(x|z) = \log N(x; Az + b, \Sigma)`; z (..., Z) broadcasts with x."""
        x, z = self._check_x(x), self._check_z(z)
        return self._noise_log_prob(x, z @ self.A.T + self.b)

    def log_joint(self, x, z) -> np.ndarray:
        r""":math:`\log p(x, z) = \log N(x; Az+b, \Sigma) + \log N(z; 0, I)`."""
        z = self._check_z(z)
        return self.log_lik(x, z) - 0.5 * np.sum(z * z + LOG_2PI, axis=-1)

    def log_joint_grad_z(self, x, z) -> np.ndarray:
        r""":math:`\nabla_z \log p(x, z) = A^\top\Sigma^{-1}(x - Az - b) - z`, shape of z.

        The pathwise (reparameterized) gradient estimator pushes this through
        :math:`z = \mu + \sigma\odot\epsilon`.
        """
        x, z = self._check_x(x), self._check_z(z)
        return (x - z @ self.A.T - self.b) @ self.noise_precision @ self.A - z

    def log_marginal(self, x) -> np.ndarray | float:
        r"""Exact :math:`\log p(x) = \log N(x; b, AA^\top + \Sigma)` (Cholesky-based), nats.

        ``x`` of shape (D,) gives a float, (N, D) an array (N,).
        """
        x = self._check_x(x)
        return mvn_log_prob(x, self.b, self.marginal_cov)

    # -- posterior -----------------------------------------------------------

    def posterior(self, x) -> tuple[np.ndarray, np.ndarray]:
        r"""Exact posterior :math:`p(z|x) = N(m, S)`.

        .. math::  S = (I + A^\top\Sigma^{-1}A)^{-1},\qquad m = S A^\top\Sigma^{-1}(x - b)

        Returns ``(m, S)``: m of shape (Z,) or (N, Z) like x, S of shape (Z, Z)
        (the same for every x).
        """
        x = self._check_x(x)
        rhs = (x - self.b) @ self.noise_precision @ self.A  # rows: (A^T P (x - b))^T
        m = scipy.linalg.cho_solve((self._post_chol, True), rhs.T).T
        return m, self.posterior_cov.copy()

    def best_mean_field(self, x) -> tuple[np.ndarray, np.ndarray]:
        r"""The ELBO-optimal diagonal q: :math:`\mu = m`, :math:`\sigma_j^2 = 1/\Lambda_{jj}`.

        For a Gaussian target with precision :math:`\Lambda` the optimal
        fully factorized Gaussian has the exact mean and the inverse *diagonal
        precisions* as variances (Bishop 2006, sec. 10.1.2), which are smaller
        than the posterior's marginal variances :math:`S_{jj}`: mean-field
        under-estimates uncertainty. Returns ``(mu, log_var)``.
        """
        m, _ = self.posterior(x)
        log_var = np.broadcast_to(-np.log(np.diag(self.posterior_precision)), m.shape).copy()
        return m, log_var

    # -- closed-form ELBO pieces ---------------------------------------------

    def _expected_log_lik(self, x, mean, trace_term) -> np.ndarray:
        # E_q[log N(x; Az+b, Sigma)] = log N(x; A mu + b, Sigma) - 0.5 tr(Sigma^-1 A Q A^T)
        return self._noise_log_prob(x, mean @ self.A.T + self.b) - 0.5 * trace_term

    def expected_log_lik(self, x, q_mean, q_cov) -> float:
        r""":math:`E_{N(z;\mu,Q)}[\log p(x|z)] = \log N(x; A\mu+b, \Sigma)
        - \tfrac12\mathrm{tr}(\Sigma^{-1}AQA^\top)` for one x (D,) and a full-covariance q."""
        x = self._check_x(x)
        q_mean, q_cov = self._check_q_full(q_mean, q_cov)
        return float(self._expected_log_lik(x, q_mean, np.sum(self._AtPA * q_cov)))

    def expected_log_lik_diag(self, x, mu, log_var) -> np.ndarray:
        r"""As :meth:`expected_log_lik` for diagonal q: the trace is
        :math:`\sum_j e^{v_j}(A^\top\Sigma^{-1}A)_{jj}`. Rows of x, mu, log_var pair up."""
        x = self._check_x(x)
        mu, log_var = self._check_q_diag(mu, log_var)
        trace = np.exp(log_var) @ np.diag(self._AtPA)
        return self._expected_log_lik(x, mu, trace)

    def elbo(self, x, q_mean, q_cov) -> float:
        r""":math:`\mathrm{ELBO}(q) = E_q[\log p(x|z)] - \mathrm{KL}(N(\mu,Q)\|N(0,I))`, one x."""
        q_mean, q_cov = self._check_q_full(q_mean, q_cov)
        kl = kl_mvn(q_mean, q_cov, np.zeros(self.Z), np.eye(self.Z))
        return self.expected_log_lik(x, q_mean, q_cov) - kl

    def elbo_diag(self, x, mu, log_var) -> np.ndarray:
        r"""ELBO of the diagonal :math:`q = N(\mu, \mathrm{diag}(e^{v}))`, row by row:
        :math:`E_q[\log p(x|z)] - \tfrac12\sum_j(\mu_j^2 + e^{v_j} - 1 - v_j)`."""
        mu, log_var = self._check_q_diag(mu, log_var)
        return self.expected_log_lik_diag(x, mu, log_var) - kl_diag_standard_normal(mu, log_var)

    def kl_to_posterior(self, x, q_mean, q_cov) -> float:
        r""":math:`\mathrm{KL}(N(\mu, Q)\,\|\,p(z|x))` in closed form (one x)."""
        q_mean, q_cov = self._check_q_full(q_mean, q_cov)
        m, S = self.posterior(self._check_x(x))
        if m.ndim != 1:
            raise ValueError(f"x must be a single datapoint of shape ({self.D},), got {x.shape}")
        return kl_mvn(q_mean, q_cov, m, S)

    def elbo_diag_grad(self, x, mu, log_var) -> tuple[np.ndarray, np.ndarray]:
        r"""Exact gradient of :meth:`elbo_diag` with respect to q's parameters.

        .. math::

            \partial/\partial\mu = A^\top\Sigma^{-1}(x - A\mu - b) - \mu,\qquad
            \partial/\partial v_j = \tfrac12\,(1 - e^{v_j}\Lambda_{jj})

        with :math:`\Lambda = I + A^\top\Sigma^{-1}A`; the second vanishes at
        the mean-field variances :math:`1/\Lambda_{jj}`. Returns ``(d_mu, d_log_var)``.
        """
        x = self._check_x(x)
        mu, log_var = self._check_q_diag(mu, log_var)
        resid = x - (mu @ self.A.T + self.b)
        d_mu = resid @ self.noise_precision @ self.A - mu
        d_log_var = 0.5 * (1.0 - np.exp(log_var) * np.diag(self.posterior_precision))
        return d_mu, d_log_var

    def elbo_grad(self, x, q_mean, q_cov) -> tuple[np.ndarray, np.ndarray]:
        r"""Exact gradient of :meth:`elbo` with respect to a full-covariance q = N(mu, Q).

        .. math::

            \partial/\partial\mu = A^\top\Sigma^{-1}(x - A\mu - b) - \mu,\qquad
            \partial/\partial Q = \tfrac12\,(Q^{-1} - \Lambda)

        (the second is the symmetric matrix G with :math:`d\,\mathrm{ELBO} = \mathrm{tr}(G\,dQ)`;
        it vanishes at :math:`Q = \Lambda^{-1} = S`, the posterior covariance, and the first at
        :math:`\mu = m`). Returns ``(d_mean, d_cov)`` for one x.
        """
        x = self._check_x(x)
        q_mean, q_cov = self._check_q_full(q_mean, q_cov)
        d_mean = (x - self.A @ q_mean - self.b) @ self.noise_precision @ self.A - q_mean
        G = _spd_inverse(np.linalg.cholesky(q_cov)) - self.posterior_precision
        return d_mean, 0.25 * (G + G.T)  # Lambda is symmetric only up to roundoff

    # -- gradients with respect to the model's parameters ----------------------

    def log_marginal_grad(self, x) -> dict[str, np.ndarray]:
        r"""Exact gradient of :math:`\log p(x)` with respect to A, b and :math:`\Sigma`.

        With :math:`C = AA^\top+\Sigma`, :math:`\alpha = C^{-1}(x-b)` and
        :math:`G = \tfrac12(\alpha\alpha^\top - C^{-1})`:

        .. math::  \partial/\partial b = \alpha,\qquad \partial/\partial A = 2GA,
                   \qquad \partial/\partial\Sigma = G

        For a batch x of shape (N, D) the result is the gradient of the mean
        over rows (nats per datapoint). ``"noise"`` is the gradient with respect
        to the model's ``noise`` argument: diag(G), shape (D,), for diagonal
        noise; for a full :math:`\Sigma` it is the symmetric G, meaning
        :math:`d\log p = \mathrm{tr}(G\,d\Sigma)` for symmetric perturbations.
        Returns ``{"A": ..., "b": ..., "noise": ...}``.
        """
        x = np.atleast_2d(self._check_x(x))
        n = x.shape[0]
        alpha = scipy.linalg.cho_solve((self._marginal_chol, True), (x - self.b).T).T  # (N, D)
        C_inv = _spd_inverse(self._marginal_chol)
        G = 0.5 * (alpha.T @ alpha / n - C_inv)
        noise = np.diag(G).copy() if self.diagonal_noise else G
        return {"A": 2.0 * G @ self.A, "b": alpha.mean(axis=0), "noise": noise}

    def log_lik_grad(self, x, z) -> dict[str, np.ndarray]:
        r"""Gradient of :math:`\log p(x|z)` wrt A and b, one per row of z (shape (M, Z)).

        With the residual :math:`r = x - Az - b`:
        :math:`\partial/\partial b = \Sigma^{-1}r`,
        :math:`\partial/\partial A = \Sigma^{-1}r z^\top`.
        Returns ``{"A": (M, D, Z), "b": (M, D)}`` for a single x of shape (D,).
        """
        x = self._check_x(x)
        z = self._check_z(z)
        if x.ndim != 1 or z.ndim != 2:
            raise ValueError(f"x must have shape ({self.D},) and z (M, {self.Z}), "
                             f"got {x.shape} and {z.shape}")
        Pr = (x - z @ self.A.T - self.b) @ self.noise_precision  # (M, D), P symmetric
        return {"A": Pr[:, :, None] * z[:, None, :], "b": Pr}

    def elbo_grad_model(self, x, q_mean, q_cov) -> dict[str, np.ndarray]:
        r"""Exact gradient of the ELBO of a fixed q = N(mu, Q) wrt A and b (one x).

        .. math::  \partial/\partial b = \Sigma^{-1}r,\qquad
                   \partial/\partial A = \Sigma^{-1}r\mu^\top - \Sigma^{-1}AQ,\qquad
                   r = x - A\mu - b

        (the KL term does not depend on A or b).
        """
        x = self._check_x(x)
        q_mean, q_cov = self._check_q_full(q_mean, q_cov)
        Pr = self.noise_precision @ (x - self.A @ q_mean - self.b)
        return {"A": np.outer(Pr, q_mean) - self.noise_precision @ self.A @ q_cov, "b": Pr}


# --------------------------------------------------------------------------
# Mixture of Gaussians with a discrete latent
# --------------------------------------------------------------------------


def _check_probabilities(q: np.ndarray, name: str, K: int) -> np.ndarray:
    _check_last_dim(q, K, name, "K")
    if np.any(q < 0) or not np.allclose(q.sum(axis=-1), 1.0, rtol=0, atol=1e-10):
        raise ValueError(f"{name} must be non-negative and sum to 1 over its last axis")
    return q


def _xlogy_ratio(p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    r""":math:`p(\log p - \log q)` with the convention 0 log 0 = 0 (no epsilon inside a log)."""
    safe_p = np.where(p > 0, p, 1.0)
    return np.where(p > 0, p * (np.log(safe_p) - log_q), 0.0)


class GaussianMixture:
    r"""A mixture :math:`p(k) = \pi_k`, :math:`p(x|k) = N(\mu_k, \Sigma_k)`, k = 1..K.

    Parameters
    ----------
    weights : array (K,)
        Positive mixing proportions :math:`\pi`, summing to 1.
    means : array (K, D)
    covs : array (K, D) or (K, D, D)
        Per-component variances (diagonal :math:`\Sigma_k`) or full
        symmetric positive-definite covariances.
    """

    def __init__(self, weights, means, covs):
        weights = _as_float_array(weights, "weights", (1,))
        means = _as_float_array(means, "means", (2,))
        covs = _as_float_array(covs, "covs", (2, 3))
        K, D = means.shape
        if weights.shape != (K,) or np.any(weights <= 0) or abs(weights.sum() - 1.0) > 1e-10:
            raise ValueError(f"weights must be {K} positive numbers summing to 1, got {weights}")
        if covs.shape[:2] != (K, D) or (covs.ndim == 3 and covs.shape[2] != D):
            raise ValueError(f"covs must have shape ({K}, {D}) or ({K}, {D}, {D}), "
                             f"got {covs.shape}")
        if covs.ndim == 2:
            if np.any(covs <= 0):
                raise ValueError("covs given as variances must all be positive")
            covs = np.stack([np.diag(c) for c in covs])
        for k in range(K):
            _cholesky_pd(covs[k], f"covs[{k}]")
        self.weights, self.means, self.covs = weights, means, covs
        self.K, self.D = K, D

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.K}, D={self.D})"

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` pairs (k, x): component labels (n,) and data (n, D)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        k = rng.choice(self.K, size=n, p=self.weights)
        chols = np.linalg.cholesky(self.covs)
        x = self.means[k] + np.einsum("nij,nj->ni", chols[k], rng.standard_normal((n, self.D)))
        return k, x

    def _check_x(self, x) -> np.ndarray:
        x = _as_float_array(x, "x", (1, 2))
        _check_last_dim(x, self.D, "x", "D")
        return x

    def log_joint(self, x) -> np.ndarray:
        r""":math:`\log p(x, k) = \log\pi_k + \log N(x;\mu_k,\Sigma_k)`, shape (..., K)."""
        x = self._check_x(x)
        cols = [mvn_log_prob(x, self.means[k], self.covs[k]) for k in range(self.K)]
        return np.log(self.weights) + np.stack(cols, axis=-1)

    def log_marginal(self, x) -> np.ndarray | float:
        r"""Exact :math:`\log p(x) = \mathrm{logsumexp}_k \log p(x, k)` in nats."""
        return logsumexp(self.log_joint(x), axis=-1)

    def responsibilities(self, x) -> np.ndarray:
        r"""The exact posterior :math:`p(k|x) = \exp(\log p(x,k) - \log p(x))`, shape (..., K)."""
        lj = self.log_joint(x)
        return np.exp(lj - logsumexp(lj, axis=-1)[..., None])

    def elbo(self, x, q) -> np.ndarray | float:
        r""":math:`\mathrm{ELBO}(q) = \sum_k q_k[\log p(x,k) - \log q_k]` for a categorical q.

        ``q`` has shape (K,) or (N, K) like x's rows; terms with q_k = 0 contribute 0.
        """
        q = _check_probabilities(_as_float_array(q, "q", (1, 2)), "q", self.K)
        return -np.sum(_xlogy_ratio(q, self.log_joint(x)), axis=-1)

    def kl_to_posterior(self, x, q) -> np.ndarray | float:
        r""":math:`\mathrm{KL}(q\,\|\,p(k|x)) = \sum_k q_k(\log q_k - \log p(k|x))`."""
        q = _check_probabilities(_as_float_array(q, "q", (1, 2)), "q", self.K)
        lj = self.log_joint(x)
        return np.sum(_xlogy_ratio(q, lj - logsumexp(lj, axis=-1)[..., None]), axis=-1)
