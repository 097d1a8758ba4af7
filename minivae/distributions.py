"""Log-densities, KL divergences and sampling, each with its gradients.

Conventions (the same everywhere in minivae):

* Gaussians are parameterized by a mean and a **log-variance** ``log_var``;
  the standard deviation is ``exp(0.5 * log_var)``, never ``exp(log_var)``.
* Log-densities are in nats and include the ``0.5 * log(2 pi)`` constant, so
  they can be compared with exact marginals and with :mod:`scipy.stats`.
* ``*_grad`` functions return the partial derivatives of the **elementwise**
  log-density (before any sum), so callers multiply by their own upstream
  gradient.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.linalg

from .numerics import LOG_2PI, sigmoid, softplus, softplus_row_sums, sum_last_axis

# --------------------------------------------------------------------------
# Diagonal Gaussian N(x; mean, diag(exp(log_var)))
# --------------------------------------------------------------------------


def gaussian_log_prob_elementwise(x, mean, log_var):
    r"""Elementwise :math:`\log N(x; m, e^{v}) = -\tfrac12(\log 2\pi + v + (x-m)^2 e^{-v})`."""
    diff = x - mean
    return -0.5 * (LOG_2PI + log_var + diff * diff * np.exp(-log_var))


def gaussian_log_prob(x, mean, log_var):
    """Diagonal-Gaussian log-density summed over the last axis (nats)."""
    return sum_last_axis(gaussian_log_prob_elementwise(x, mean, log_var))


def gaussian_log_prob_grad(x, mean, log_var):
    r"""Partial derivatives of the elementwise Gaussian log-density.

    .. math::  \partial/\partial m = (x-m)e^{-v},\qquad
               \partial/\partial v = -\tfrac12\,(1 - (x-m)^2 e^{-v}),\qquad
               \partial/\partial x = -(x-m)e^{-v}

    Returns ``(d_mean, d_log_var, d_x)``.
    """
    scaled = (x - mean) * np.exp(-log_var)
    d_mean = scaled
    d_log_var = -0.5 * (1.0 - scaled * (x - mean))
    return d_mean, d_log_var, -scaled


def standard_normal_log_prob(z):
    r"""Standard normal log-density :math:`-\tfrac12 \sum_j (z_j^2 + \log 2\pi)` (last axis)."""
    return -0.5 * (sum_last_axis(z * z) + z.shape[-1] * LOG_2PI)


def reparameterize(mu, log_var, eps):
    r"""Reparameterization :math:`z = \mu + \sigma \odot \epsilon` with :math:`\sigma = e^{v/2}`.

    ``mu`` and ``log_var`` have shape (B, Z), ``eps`` has shape (K, B, Z);
    returns ``(z, sigma)`` with z of shape (K, B, Z).
    """
    sigma = np.exp(0.5 * log_var)
    return mu + sigma * eps, sigma


def reparameterize_backward(dz, eps, sigma):
    r"""Gradients through :math:`z = \mu + \sigma\odot\epsilon` (eps held fixed).

    With :math:`\partial z/\partial\mu = 1` and
    :math:`\partial z/\partial v = \tfrac12\sigma\epsilon` (:math:`\sigma = e^{v/2}`),
    summed over the K samples that share one (mu, log_var):

    .. math::  \frac{\partial L}{\partial\mu} = \sum_k \frac{\partial L}{\partial z_k},\qquad
               \frac{\partial L}{\partial v} = \tfrac12\,\sigma\odot
               \sum_k \frac{\partial L}{\partial z_k}\odot\epsilon_k

    ``dz`` and ``eps`` have shape (K, B, Z), ``sigma`` (B, Z). Returns
    ``(d_mu, d_log_var)``, each (B, Z).
    """
    d_mu = np.sum(dz, axis=0)
    d_log_var = 0.5 * sigma * np.sum(dz * eps, axis=0)
    return d_mu, d_log_var


def reparameterized_log_q(log_var, eps):
    r""":math:`\log q(z|x)` at its own reparameterized sample :math:`z = \mu + \sigma\odot\epsilon`.

    Since :math:`(z - \mu)/\sigma = \epsilon` exactly,

    .. math::  \log q(z|x) = -\tfrac12\sum_j\big(\log 2\pi + v_j + \epsilon_j^2\big),

    which needs neither z nor mu. ``log_var`` (B, Z), ``eps`` (K, B, Z); returns (K, B).
    """
    return -0.5 * (log_var.shape[-1] * LOG_2PI + sum_last_axis(log_var) + sum_last_axis(eps * eps))


def reparameterized_log_q_backward(d_log_q, log_var):
    r"""Total derivative of :func:`reparameterized_log_q` with respect to (mu, log_var), eps fixed.

    The formula above does not contain mu, and contains :math:`v_j` only in the
    normalizer, so :math:`d\log q/d\mu = 0` and :math:`d\log q/dv_j = -\tfrac12`.
    Piece by piece, the same result: the path through z gives
    :math:`\partial\log q/\partial z = -\epsilon/\sigma`, which times
    :math:`\partial z/\partial\mu = 1` cancels the explicit (score) term
    :math:`+\epsilon/\sigma`; times :math:`\partial z/\partial v = \tfrac12\sigma\epsilon`
    it gives :math:`-\tfrac12\epsilon^2`, which cancels the :math:`\epsilon^2` part of the
    explicit term :math:`-\tfrac12 + \tfrac12\epsilon^2`, leaving :math:`-\tfrac12`.
    (Estimators such as "sticking the landing" drop the score part on purpose; their
    gradient is then no longer the derivative of this function.)

    ``d_log_q`` is :math:`\partial L/\partial\log q` of shape (K, B); returns
    :math:`\partial L/\partial v` of shape (B, Z) (the gradient for mu is zero).
    """
    return np.broadcast_to((-0.5 * np.sum(d_log_q, axis=0))[:, None], log_var.shape).astype(
        log_var.dtype, copy=True)


# --------------------------------------------------------------------------
# KL(N(mu, diag(exp(log_var))) || N(0, I)) in closed form
# --------------------------------------------------------------------------


#: Taylor coefficients of (e^v - 1 - v) / (v^2/2) = sum_j 2 v^j / (j+2)!, j = 0..11: for
#: |v| < 1/4 the first omitted term is below 1e-18 of the sum, so the series is exact in float64
_EXPM1_MINUS_X_SERIES = tuple(2.0 / math.factorial(j + 2) for j in range(12))


@functools.cache
def _series_terms(dtype) -> int:
    """How many of the series' terms a dtype needs for |v| < 1/4: the first one left out is
    below an eighth of its eps (float32: 6, float64: 12)."""
    eps = np.finfo(dtype).eps
    return next(n for n in range(1, len(_EXPM1_MINUS_X_SERIES) + 1)
                if n == len(_EXPM1_MINUS_X_SERIES) or 0.25**n * _EXPM1_MINUS_X_SERIES[n] < eps / 8)


def _expm1_minus_x(v):
    r""":math:`e^v - 1 - v \ge 0`, accurate to a few ulp relative for every v.

    For :math:`|v| \ge 1/4`, ``expm1(v) - v`` loses at most a few ulp (the difference is
    never below a ninth of its operands there). Closer to 0 the subtraction cancels: the
    result is about :math:`v^2/2` while the rounding error of ``expm1(v)`` is about
    eps :math:`|v|`, a relative error of 2 eps / :math:`|v|` (12% at v = 1e-6 in float32,
    100% below 1e-8, where the difference rounds to 0). There the Taylor
    series :math:`\tfrac{v^2}{2}\sum_j 2v^j/(j+2)!` is used instead, by Horner's rule, a
    positive sum that has nothing to cancel, on those entries only and with as many terms
    as the dtype needs (:func:`_series_terms`).
    """
    v = np.asarray(v)
    out = np.array(np.expm1(v))  # (an array even for one number)
    out -= v
    small = np.abs(v) < 0.25
    if small.any():
        s = v[small]
        coef = _EXPM1_MINUS_X_SERIES[:_series_terms(s.dtype)]
        series = np.full_like(s, coef[-1])
        for c in reversed(coef[:-1]):
            series *= s  # in place: a Python float keeps s's dtype
            series += c
        series *= 0.5 * s * s
        out[small] = series
    return out if out.ndim else out[()]


def kl_diag_standard_normal_per_dim(mu, log_var):
    r"""Per-dimension :math:`\tfrac12(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)`, shape of mu.

    Written :math:`\tfrac12\big(\mu_j^2 + (e^{v_j} - 1 - v_j)\big)` with
    :func:`_expm1_minus_x`, so that it stays accurate (and never negative) near q = p, where
    collapsed latent units sit: the direct formula gave -4.2e-8 in float32 at
    (mu, v) = (0, -3.24e-5), where the KL is +2.6e-10.
    """
    return 0.5 * (mu * mu + _expm1_minus_x(log_var))


def kl_diag_standard_normal(mu, log_var):
    """KL(q || N(0, I)) summed over the last (latent) axis, in nats."""
    return sum_last_axis(kl_diag_standard_normal_per_dim(mu, log_var))


def kl_diag_standard_normal_grad(mu, log_var):
    r"""Gradients of the per-dimension KL: :math:`\partial/\partial\mu = \mu`,
    :math:`\partial/\partial v = \tfrac12(e^{v} - 1)`. Returns ``(d_mu, d_log_var)``."""
    return mu, 0.5 * np.expm1(log_var)


# --------------------------------------------------------------------------
# Bernoulli on logits
# --------------------------------------------------------------------------


def bernoulli_log_prob_elementwise(x, logits):
    r"""Elementwise :math:`\log p(x|l)` for x in {0, 1}: :math:`\log\sigma(l)` where x = 1,
    :math:`\log\sigma(-l) = \log(1-\sigma(l))` where x = 0.

    The textbook form :math:`x l - \mathrm{softplus}(l)` is the same number, but where the
    observed x is nearly certain (x = 1 and l >> 0) it subtracts two nearly equal numbers:
    at l = 13.2 its relative error is 3e-10 in float64 (1e-2 in float32). Written as

    .. math::  \log p(x|l) = -\mathrm{softplus}(u),\qquad u = (1 - 2x)\,l

    (:math:`\log\sigma(l) = -\mathrm{softplus}(-l)`), it has nothing to cancel: the stable
    softplus is accurate to an ulp or two everywhere. No clipping, no epsilon in a log.
    """
    return -softplus(_flip(x) * logits)


def _flip(x):
    """1 - 2x: +1 where x = 0 and -1 where x = 1, in x's (float) dtype (one new array,
    where ``1 - 2 * x`` makes two)."""
    flip = np.multiply(x, -2.0)
    flip += 1.0
    return flip


#: Elements per block of the Bernoulli likelihood's elementwise work on a large decoder
#: output (see :func:`_blocks`): 2^16, 256 KiB in float32.
BLOCK_ELEMENTS = 2**16


def _blocks(x, logits):
    """For logits (..., B, D) against x (B, D): slices of whole (B, D) slabs of about
    :data:`BLOCK_ELEMENTS` elements, over the logits seen as (n, B, D); None for any other
    shapes (then the whole arrays are one block).

    Why: the likelihood makes about ten elementwise passes over the decoder's output. Over
    an array larger than the core's cache (an IWAE step's (50, 20, 784) float32 logits are
    3.1 MB, a chunk of importance samples 4 MB) each pass streams it from memory again,
    and two threads on two cores are not faster than one (measured: 2.11 and 1.96 ms):
    memory is the limit. Block by block, the passes after the first find their data in
    the cache. Measured (float32, caches cleared before each call): log p and its gradient
    on the (50, 20, 784) logits, 2.03 ms whole and 1.71 ms in blocks; log p alone on a
    (13, 100, 784) chunk of importance samples, 1.88 and 1.51 ms. A decoder output of one
    slab (K = 1) is one block: nothing changes there.
    """
    if not (isinstance(x, np.ndarray) and isinstance(logits, np.ndarray) and x.ndim == 2
            and logits.ndim >= 2 and logits.shape[-2:] == x.shape and x.size > 0):
        return None
    n = logits.size // x.size
    step = max(1, BLOCK_ELEMENTS // x.size)
    return [slice(k, k + step) for k in range(0, n, step)]


def bernoulli_log_prob(x, logits):
    r"""Bernoulli log-probability summed over the last axis (nats):
    :math:`-\sum_d \mathrm{softplus}((1-2x_d)\,l_d)`, a sum of terms of one sign (see
    :func:`bernoulli_log_prob_elementwise`), block by block (see :func:`_blocks`)."""
    return _bernoulli(x, logits, with_grad=False)[0]


def bernoulli_log_prob_grad(x, logits):
    r""":math:`\partial/\partial l\,\log p(x|l) = x - \sigma(l)` (the textbook formula)."""
    return x - sigmoid(logits)


def bernoulli_log_prob_with_grad(x, logits):
    r""":func:`bernoulli_log_prob`, and, elementwise, the gradient of the *negative*
    log-probability :math:`\partial(-\log p(x|l))/\partial l = \sigma(l) - x`, computed on
    the way for a training step's backward pass.

    With :math:`u = (1-2x)\,l` and :math:`e = e^u`, :math:`-\log p = \mathrm{softplus}(u)
    = \log(1 + e)`, and

    .. math::  \sigma(l) - x = (1 - 2x)\,\sigma(u) = (1 - 2x)\,\frac{e}{1 + e}

    (:math:`-\sigma(-l) = \sigma(l) - 1` where x = 1): two cheap passes over the
    :math:`e` the softplus already needed, instead of another exp, and accurate where the
    textbook :math:`\sigma(l) - x` cancels (x = 1, :math:`\sigma(l)` near 1). Where e
    overflows (u above 88.7 in float32), :math:`\sigma(u) = 1`. Block by block, like
    :func:`bernoulli_log_prob`.
    """
    return _bernoulli(x, logits, with_grad=True)


def _bernoulli(x, logits, with_grad: bool):
    """(log p(x|l) summed over the last axis, and sigma(l) - x if ``with_grad`` else None),
    block by block when the logits are larger than a block (:func:`_blocks`)."""
    flip = _flip(x)
    blocks = _blocks(x, logits)
    if blocks is None or len(blocks) == 1:  # one block: the whole arrays
        return _bernoulli_block(flip, logits, with_grad)
    l3 = logits.reshape(-1, *x.shape)
    dtype = np.result_type(logits, x, 0.0)
    log_p = np.empty(l3.shape[:2], dtype=dtype)
    grad = np.empty(l3.shape, dtype=dtype) if with_grad else None
    rows = min(blocks[0].stop, l3.shape[0])  # the largest block's slabs
    u, sp, e = np.empty((3, rows, *x.shape), dtype=dtype)  # buffers reused by every block
    for ks in blocks:
        n = len(l3[ks])
        log_p[ks] = _bernoulli_block(flip, l3[ks], with_grad, u[:n], sp[:n], e[:n],
                                     None if grad is None else grad[ks])[0]
    return log_p.reshape(logits.shape[:-1]), None if grad is None else grad.reshape(logits.shape)


def _bernoulli_block(flip, logits, with_grad: bool, u=None, sp=None, e=None, grad=None):
    """:func:`_bernoulli` on one block; ``u``, ``sp``, ``e``: buffers of its shape, and
    ``grad`` where its gradient goes (new arrays where None)."""
    u = np.multiply(flip, logits, out=u)
    if not with_grad:
        return -softplus_row_sums(u, sp), None
    sp = np.empty_like(u) if sp is None else sp
    e = np.empty_like(u) if e is None else e
    log_p = -softplus_row_sums(u, sp, e)
    # sigma(u) = e / (1 + e), times flip: sigma(l) - x
    np.add(e, 1, out=sp)  # (sp is summed: its buffer is free)
    with np.errstate(invalid="ignore"):  # inf / inf where e overflowed: fixed below
        grad = np.divide(e, sp, out=grad)
    if not np.max(grad) <= 1:  # NaN: inf / inf where e overflowed, or a NaN logit
        grad[np.isnan(grad) & ~np.isnan(u)] = 1  # (a NaN logit stays NaN)
    grad *= flip
    return log_p, grad


# --------------------------------------------------------------------------
# Full-covariance Gaussians
# --------------------------------------------------------------------------


def _cholesky(S, name: str):
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {S.shape}")
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"{name} must be symmetric positive definite") from exc


def mvn_log_prob(x, mean, cov):
    r""":math:`\log N(x; m, S) = -\tfrac12[D\log 2\pi + \log|S| + (x-m)^\top S^{-1}(x-m)]`.

    Cholesky-based: with :math:`S = LL^\top`, :math:`\log|S| = 2\sum\log L_{ii}`
    and the quadratic form is :math:`\|L^{-1}(x-m)\|^2`. ``x`` may be (D,) or (N, D).
    """
    L = _cholesky(cov, "cov")
    diff = np.atleast_2d(np.asarray(x) - mean)
    sol = scipy.linalg.solve_triangular(L, diff.T, lower=True)
    D = L.shape[0]
    out = -0.5 * (D * LOG_2PI + 2.0 * np.sum(np.log(np.diag(L))) + np.sum(sol * sol, axis=0))
    return out[0] if np.ndim(x) == 1 else out


def kl_mvn(m0, S0, m1, S1):
    r"""KL between full-covariance Gaussians, in nats.

    .. math::  \mathrm{KL}(N(m_0,S_0)\,\|\,N(m_1,S_1)) = \tfrac12\big[
               \mathrm{tr}(S_1^{-1}S_0) + (m_1-m_0)^\top S_1^{-1}(m_1-m_0) - D
               + \log|S_1| - \log|S_0|\big]
    """
    L0 = _cholesky(S0, "S0")
    L1 = _cholesky(S1, "S1")
    D = L0.shape[0]
    if L1.shape[0] != D or np.shape(m0) != (D,) or np.shape(m1) != (D,):
        raise ValueError(
            f"shapes disagree: m0 {np.shape(m0)}, S0 {np.shape(S0)}, m1 {np.shape(m1)}, "
            f"S1 {np.shape(S1)}"
        )
    # L1^-1 L0, so that tr(S1^-1 S0) = ||A||_F^2. (np.linalg.solve, not scipy's triangular
    # solve: OpenBLAS runs that one threaded even for a 2x2 right side, measured 3 ms
    # instead of 10 us on a busy machine; LU of a triangular matrix costs nothing more.)
    A = np.linalg.solve(L1, L0)
    d = scipy.linalg.solve_triangular(L1, np.asarray(m1) - m0, lower=True)
    logdet0 = 2.0 * np.sum(np.log(np.diag(L0)))
    logdet1 = 2.0 * np.sum(np.log(np.diag(L1)))
    return 0.5 * (np.sum(A * A) + d @ d - D + logdet1 - logdet0)
