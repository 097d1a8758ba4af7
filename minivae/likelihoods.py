r"""Decoder likelihoods p(x|z): how the decoder's output becomes a log-density.

Each likelihood knows

* ``out_dim(D)``: how many numbers the decoder emits per datapoint;
* ``param_specs(D)``: extra parameters it owns outside the decoder MLP;
* ``log_lik(x, out, params)``: :math:`\log p(x|z)` summed over data dimensions, in
  nats, for decoder output ``out`` of shape (K, B, out_dim) and data ``x`` of
  shape (B, D); the result has shape (K, B);
* ``log_lik_grad(x, out, params, weight, grads)``: the backward of
  :math:`\sum_{kb} w_{kb}\log p(x_b|z_{kb})` for ``weight`` w of shape (K, B) (or one
  number, the same for every sample):
  returns its gradient with respect to ``out`` and *writes* (overwrites) the
  gradients of the likelihood's own parameters into ``grads`` (unless ``grads`` is
  None: then only the gradient with respect to ``out`` is computed);
* ``mean(out, params)``: the mean of p(x|z) (for pictures and samples);
* ``sample(out, params, rng)``: a draw from p(x|z).

A training step calls the pair ``log_lik_and_cache(x, out, params) -> (log_lik,
cache)`` and ``log_lik_grad_from_cache(x, out, params, weight, grads, cache)``,
which return the same numbers but let the gradient reuse what the forward computed
(the Bernoulli's forward computes its elementwise gradient on the way). By default the
cache is empty and the gradient is computed afresh.

Naming, the same in all of minivae: ``log_lik`` is :math:`\log p(x|z)` (the
likelihood of the decoder), ``log_marginal`` is :math:`\log p(x)`.
"""

from __future__ import annotations

import math

import numpy as np

from .checks import choice
from .distributions import (
    bernoulli_log_prob,
    bernoulli_log_prob_grad,
    bernoulli_log_prob_with_grad,
    gaussian_log_prob,
    gaussian_log_prob_grad,
)
from .numerics import sigmoid


def _column(weight):
    """The upstream gradient per sample, ``weight`` (a number, or an array of shape (K, B)),
    as a factor for arrays of shape (K, B, out_dim)."""
    return weight if np.ndim(weight) == 0 else weight[..., None]


class Likelihood:
    """What every likelihood provides (see the module docstring), with the defaults they share:
    one decoder output per data dimension, no extra parameters, the decoder output is the
    mean, and a forward/backward pair that shares nothing."""

    name = "likelihood"

    def out_dim(self, D: int) -> int:
        return D

    def param_specs(self, D: int):
        return []

    def init_params(self, params, D: int) -> None:
        pass

    def log_lik(self, x, out, params):
        """log p(x|z) in nats, summed over the last axis: shape out.shape[:-1]."""
        raise NotImplementedError

    def log_lik_grad(self, x, out, params, weight, grads):
        """dL/d out for L = sum_kb weight_kb log p(x_b|z_kb); writes own parameter gradients."""
        raise NotImplementedError

    def mean(self, out, params):
        return out

    def sample(self, out, params, rng):
        """A draw x ~ p(x|z) in the dtype of ``out``."""
        raise NotImplementedError

    def check_data(self, x) -> None:
        """Raise ValueError unless ``x`` holds values this likelihood is a density of.

        Here: finite numbers. :meth:`minivae.vae.VAE.check_x` calls it on every batch.
        """
        if not np.isfinite(x).all():
            raise ValueError("x contains NaN or inf")

    def log_lik_and_cache(self, x, out, params):
        """``(log_lik(x, out, params), cache)`` for :meth:`log_lik_grad_from_cache`."""
        return self.log_lik(x, out, params), None

    def log_lik_grad_from_cache(self, x, out, params, weight, grads, cache):
        """The same result as ``log_lik_grad(x, out, params, weight, grads)``."""
        return self.log_lik_grad(x, out, params, weight, grads)


class Bernoulli(Likelihood):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(l_d)), the decoder emitting logits l."""

    name = "bernoulli"

    def log_lik(self, x, out, params):
        return bernoulli_log_prob(x, out)

    def log_lik_grad(self, x, out, params, weight, grads):
        d_out = bernoulli_log_prob_grad(x, out)
        d_out *= _column(weight)
        return d_out

    def log_lik_and_cache(self, x, out, params):
        """log p(x|z) and, elementwise, d(-log p)/d logits = sigmoid(logits) - x: the forward
        computes what the gradient needs on the way (see bernoulli_log_prob_with_grad)."""
        return bernoulli_log_prob_with_grad(x, out)

    def log_lik_grad_from_cache(self, x, out, params, weight, grads, cache):
        return cache * -_column(weight)  # w (x - sigmoid(l)); the cache is sigmoid(l) - x

    def mean(self, out, params):
        return sigmoid(out)

    def check_data(self, x) -> None:
        """Only 0 and 1: x l - softplus(l) at a grey level (binary cross-entropy) is not the
        log-probability of anything, so a loss computed from it would be a false number.

        Done instead of the finiteness check (0/1 data are finite), so it adds one
        comparison pass: 20-40 us measured on a 128 x 784 float32 batch, 0.1-0.3% of a
        784-400-20 training step (too little for an interleaved timing to resolve).
        """
        if np.all((x == 0) | (x == 1)):
            return
        super().check_data(x)  # NaN or inf: say so
        other = x[(x != 0) & (x != 1)]
        raise ValueError(
            f"the Bernoulli likelihood needs x in {{0, 1}}, but x holds {other.size} other "
            f"values (e.g. {other.flat[0]:g}); binarize the data (x ~ Bernoulli(grey level)) "
            f"or use a Gaussian likelihood")

    def sample(self, out, params, rng):
        return (rng.random(out.shape) < sigmoid(out)).astype(out.dtype)


class GaussianHeteroscedastic(Likelihood):
    """p(x|z) = N(x; m(z), diag(exp(v(z)))), both m and v emitted by the decoder.

    The decoder output has 2D columns: the first D are the mean, the last D
    the log-variance.
    """

    name = "gaussian-hetero"

    def out_dim(self, D: int) -> int:
        return 2 * D

    @staticmethod
    def _split(out):
        D = out.shape[-1] // 2
        return out[..., :D], out[..., D:]

    def log_lik(self, x, out, params):
        mean, log_var = self._split(out)
        return gaussian_log_prob(x, mean, log_var)

    def log_lik_grad(self, x, out, params, weight, grads):
        mean, log_var = self._split(out)
        d_mean, d_log_var, _ = gaussian_log_prob_grad(x, mean, log_var)
        w = _column(weight)
        return np.concatenate([d_mean * w, d_log_var * w], axis=-1)

    def mean(self, out, params):
        return self._split(out)[0]

    def sample(self, out, params, rng):
        mean, log_var = self._split(out)
        noise = rng.standard_normal(mean.shape).astype(out.dtype, copy=False)
        return mean + np.exp(0.5 * log_var) * noise


class GaussianSharedVariance(Likelihood):
    """p(x|z) = N(x; m(z), diag(exp(v))) with one learned log-variance vector v.

    v is the parameter ``"decoder.log_var"`` of shape (D,), initialized to 0.
    """

    name = "gaussian-shared"

    def log_var_size(self, D: int) -> int:
        """How many learned log-variances: one per data dimension."""
        return D

    def param_specs(self, D: int):
        return [("decoder.log_var", (self.log_var_size(D),))]

    def init_params(self, params, D: int) -> None:
        params["decoder.log_var"][...] = 0.0

    def log_lik(self, x, out, params):
        return gaussian_log_prob(x, out, params["decoder.log_var"])

    def log_lik_grad(self, x, out, params, weight, grads):
        log_var = params["decoder.log_var"]
        d_mean, d_log_var, _ = gaussian_log_prob_grad(x, out, log_var)
        w = _column(weight)
        # v is shared by every sample and datapoint (and, when it has one entry, by every
        # dimension): its gradient sums over everything that shares it. (grads=None: only
        # dL/d out is wanted, see VAE.log_lik_backward.)
        if grads is not None:
            np.sum((d_log_var * w).reshape(-1, log_var.size), axis=0,
                   out=grads["decoder.log_var"])
        return d_mean * w

    def sample(self, out, params, rng):
        noise = rng.standard_normal(out.shape).astype(out.dtype, copy=False)
        return out + np.exp(0.5 * params["decoder.log_var"]) * noise


class GaussianIsotropic(GaussianSharedVariance):
    """p(x|z) = N(x; m(z), exp(v) I) with one learned scalar log-variance v.

    v is ``"decoder.log_var"`` of shape (1,), initialized to 0: the noise model of
    probabilistic PCA (Tipping & Bishop 1999), so a linear VAE with this likelihood
    is the model whose ELBO maximum Lucas et al. (2019) show to be the PPCA solution.
    """

    name = "gaussian-isotropic"

    def log_var_size(self, D: int) -> int:
        """One log-variance shared by all data dimensions."""
        return 1


class GaussianFixedVariance(Likelihood):
    """p(x|z) = N(x; m(z), exp(v0) I) with a fixed, user-chosen log-variance v0."""

    name = "gaussian-fixed"

    def __init__(self, log_var: float = 0.0):
        if not np.isfinite(log_var):
            raise ValueError(f"fixed_log_var must be finite, got {log_var!r}")
        self.log_var = float(log_var)

    def log_lik(self, x, out, params):
        return gaussian_log_prob(x, out, out.dtype.type(self.log_var))

    def log_lik_grad(self, x, out, params, weight, grads):
        d_mean, _, _ = gaussian_log_prob_grad(x, out, out.dtype.type(self.log_var))
        return d_mean * _column(weight)

    def sample(self, out, params, rng):
        noise = rng.standard_normal(out.shape).astype(out.dtype, copy=False)
        # math.exp: a Python float keeps out's dtype; a NumPy float64 scalar would turn a
        # float32 model's sample into float64
        return out + math.exp(0.5 * self.log_var) * noise


LIKELIHOODS = {
    "bernoulli": Bernoulli,
    "gaussian-hetero": GaussianHeteroscedastic,
    "gaussian-shared": GaussianSharedVariance,
    "gaussian-isotropic": GaussianIsotropic,
    "gaussian-fixed": GaussianFixedVariance,
}


def make_likelihood(name: str, fixed_log_var: float = 0.0) -> Likelihood:
    """Build a likelihood by name (one of :data:`LIKELIHOODS`)."""
    choice(name, LIKELIHOODS, "likelihood")
    if name == "gaussian-fixed":
        return GaussianFixedVariance(fixed_log_var)
    return LIKELIHOODS[name]()
