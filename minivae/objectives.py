r"""Objectives beyond the ELBO: IWAE, STL and DReG, the score-function gradient, log p(x) estimates.

Everything here is in nats per datapoint and builds on the stages of
:meth:`minivae.vae.VAE.forward` (encode, reparameterize, decode, log p(x|z)) and its
backward stages, so a reader can follow the same arrows as in the ELBO.

The central quantity is the log importance weight of sample k for datapoint b,

.. math::

    \log w_{kb} = \log p_\theta(x_b|z_{kb}) + \log p(z_{kb}) - \log q_\phi(z_{kb}|x_b),
    \qquad z_{kb} = \mu_b + \sigma_b\odot\epsilon_{kb},

and everything else is a way of averaging it:

* the ELBO (with a Monte Carlo KL) is :math:`\frac1K\sum_k \log w_{kb}`;
* the importance-weighted bound (Burda et al. 2015) is
  :math:`L_K = \log\frac1K\sum_k w_{kb}`, with :math:`L_1 = \mathrm{ELBO}\le L_K\le\log p(x)`;
* the importance-sampling estimate of :math:`\log p(x)` is the same expression
  with a large K, computed in chunks.

Contents
--------
:func:`log_importance_weights`, :func:`iwae_loss_and_grad`,
:func:`iwae_elbo_identity_gap`, :func:`stl_loss_and_grad`, :func:`dreg_loss_and_grad`,
:func:`check_estimator`, :func:`score_function_grad`,
:func:`importance_sampled_log_marginal`, :func:`prior_sampling_log_marginal`,
:class:`LogMarginalEstimate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import choice, generator, positive_int
from .distributions import (
    kl_diag_standard_normal,
    kl_diag_standard_normal_grad,
    reparameterize_backward,
    reparameterized_log_q,
    reparameterized_log_q_backward,
    standard_normal_log_prob,
)
from .numerics import logmeanexp
from .params import ParamDict
from .vae import KL_MODES, VAE, Forward

#: the training objectives: the ELBO (:meth:`VAE.loss_and_grad`) and the IWAE bound
OBJECTIVES = ("elbo", "iwae")
#: baselines of the score-function estimator (see :func:`_baseline`)
BASELINES = ("none", "batch-mean", "leave-one-out")

# Elements of the largest per-chunk array (decoder output, hidden activations) that the
# log-likelihood estimators allow themselves by default: 2**20 numbers (4 MiB in float32).
# Chosen by measurement, not memory: the elementwise passes over a chunk run faster when the
# chunk's few arrays fit in the cache together (48 MiB L3 here; at 2**22 float32 numbers each
# array is 16 MiB, and a chunk makes about five). 784-400-20, float32, 100 points, k = 1000,
# one thread: chunks of 1, 2, 5, 10, 20 and 53 samples (53 is what 2**22 gave) took 1.00,
# 0.78, 0.69, 0.65, 0.69 and 0.78 times as long as chunks of 1 (which pay per-call overhead).
_CHUNK_BUDGET = 2**20


# ----------------------------------------------------------------------------------------
# Log importance weights and the IWAE bound
# ----------------------------------------------------------------------------------------


def _check_model(model) -> VAE:
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a minivae.VAE, got {type(model).__name__}")
    return model


def _log_weights(fwd: Forward) -> np.ndarray:
    """log w = log p(x|z) + log p(z) - log q(z|x) at the samples of ``fwd``, shape (K, B).

    log p(z) and log q(z|x) are evaluated at the samples (no closed-form KL anywhere):
    that is what makes L_K a bound on log p(x) for every K.
    """
    return (fwd.log_lik + standard_normal_log_prob(fwd.z)
            - reparameterized_log_q(fwd.log_var, fwd.eps))


def log_importance_weights(model: VAE, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
    r"""Log importance weights, shape (K, B), in nats.

    .. math::  \log w_{kb} = \log p(x_b|z_{kb}) + \log p(z_{kb}) - \log q(z_{kb}|x_b),
               \quad z_{kb} = \mu(x_b) + \sigma(x_b)\odot\epsilon_{kb}
    """
    return _log_weights(_check_model(model).forward(x, eps, backward=False))


def _softmax_over_k(log_w: np.ndarray) -> np.ndarray:
    """Normalized importance weights w_kb / sum_k' w_k'b, computed stably from log w."""
    shifted = log_w - np.max(log_w, axis=0, keepdims=True)
    w = np.exp(shifted)
    return w / np.sum(w, axis=0, keepdims=True)


#: Normalized importance weights below this are rounded to 0 in the gradients of the
#: IWAE bound (see :func:`_gradient_weights`): 2^-64, about 5.4e-20.
WEIGHT_FLOOR = 2.0**-64


def _gradient_weights(log_w: np.ndarray) -> np.ndarray:
    r"""The normalized weights :math:`\tilde w_{kb}` that weigh each sample's gradient, with
    those below :data:`WEIGHT_FLOOR` set to exactly 0.

    Why: a sample whose weight is tiny (early in training most are: float32,
    784-200-200-50, K = 50, after 50 Adam steps 36% of the weights are below 2^-64) makes
    its rows of the decoder's backward pass tiny, and their products with the weights land
    in the subnormal range (0.17% of dL/dh there), on which the CPU, and so OpenBLAS, takes
    a slow microcode path: that one product took 2.1 ms instead of 0.95. A weight of exactly
    0 makes its rows exactly 0 instead, which cost nothing extra.

    Why it is harmless: the gradient is
    :math:`-\frac1B\sum_{kb}\tilde w_{kb}\nabla\log w_{kb}` with
    :math:`\sum_k\tilde w_{kb} = 1`, so at least one sample per datapoint has weight
    :math:`\ge 1/K`. Dropping the samples below :math:`2^{-64}` changes the gradient by at
    most :math:`K\,2^{-64}` times the largest :math:`\lVert\nabla\log w_{kb}\rVert / B`:
    with K = 50, 2.7e-18 of it, ten orders of magnitude below float32 roundoff (6e-8) and
    below float64's (1.1e-16). The loss is not changed at all.
    """
    w = _softmax_over_k(log_w)
    w[w < WEIGHT_FLOOR] = 0
    return w


def iwae_loss_and_grad(model: VAE, x: np.ndarray, eps: np.ndarray,
                       out: ParamDict | None = None) -> tuple[float, ParamDict]:
    r"""Negative importance-weighted bound and its exact gradient, in nats per datapoint.

    .. math::

        \mathrm{loss} = -\frac1B\sum_b L_{K,b},\qquad
        L_{K,b} = \log\frac1K\sum_{k=1}^K w_{kb},\qquad K = \texttt{eps.shape[0]},

    with :math:`\log w_{kb}` as in :func:`log_importance_weights` (Burda, Grosse and
    Salakhutdinov 2015). With eps fixed the loss is a deterministic function of the
    parameters and the gradient is exact:

    .. math::

        \nabla\mathrm{loss} = -\frac1B\sum_b\sum_k \tilde w_{kb}\,\nabla\log w_{kb},
        \qquad \tilde w_{kb} = \frac{w_{kb}}{\sum_{k'} w_{k'b}}
        = \mathrm{softmax}_k(\log w_{\cdot b}).

    For K = 1 the weights are all 1 and this is the ELBO with a Monte Carlo KL,
    ``model.loss_and_grad(x, eps, kl="mc")``. Samples whose weight is below
    :data:`WEIGHT_FLOOR` (2^-64) are left out of the gradient: see
    :func:`_gradient_weights` for why that is faster and what it changes (nothing
    float32 or float64 can show).

    Returns ``(loss, grads)``: ``grads`` is ``out`` if given (overwritten, as in a
    training loop that reuses ``model.new_grad()``), else a new
    :class:`~minivae.params.ParamDict`.
    """
    fwd = _check_model(model).forward(x, eps)
    log_w = _log_weights(fwd)
    loss = float(-np.mean(logmeanexp(log_w, axis=0)))

    # dloss/dlog w_kb = -wtilde_kb / B. Everything below multiplies this upstream
    # gradient into the three terms of log w. (Weights below 2^-64 are 0: see
    # _gradient_weights, which says why that is faster and changes nothing visible.)
    g = -_gradient_weights(log_w) / fwd.B  # (K, B), model dtype
    grads = model.grad_out(out)
    # (1) log p(x|z): through the likelihood and the decoder, giving dloss/dz
    dz = model.log_lik_backward(fwd, g, grads)
    # (2) log p(z) = -0.5 |z|^2 + const, so d log p(z)/dz = -z
    dz += g[..., None] * (-fwd.z)
    d_mu, d_log_var = reparameterize_backward(dz, fwd.eps, fwd.sigma)
    # (3) -log q(z|x) at its own sample: its total derivative is -1/2 per log_var
    #     (see reparameterized_log_q_backward), weighted by dloss/dlog q = -g
    d_log_var += reparameterized_log_q_backward(-g, fwd.log_var)
    model.encode_backward(d_mu, d_log_var, fwd.enc_cache, grads)
    return loss, grads


def iwae_loss(model: VAE, x: np.ndarray, eps: np.ndarray) -> float:
    """The negative bound of :func:`iwae_loss_and_grad`, without the gradient (nats/datapoint)."""
    return float(-np.mean(logmeanexp(log_importance_weights(model, x, eps), axis=0)))


def iwae_elbo_identity_gap(model: VAE, x: np.ndarray, eps: np.ndarray) -> float:
    r"""``|(-L_1) - model.loss(x, eps, kl="mc")|`` per sample, worst over the K samples.

    An identity check: each single sample k gives :math:`L_1 = \log w_{kb}`, which must
    equal the ELBO with a Monte Carlo KL evaluated by the VAE itself at the same noise
    ``eps[k:k+1]``. Returns the largest absolute difference in nats per datapoint
    (roundoff, about 1e-13 in float64, when both are right).
    """
    _check_model(model)
    worst = 0.0
    for k in range(eps.shape[0]):
        e = eps[k : k + 1]
        worst = max(worst, abs(iwae_loss(model, x, e) - model.loss(x, e, kl="mc")))
    return worst


# ----------------------------------------------------------------------------------------
# Path-derivative estimators: sticking the landing (ELBO) and DReG (IWAE)
# ----------------------------------------------------------------------------------------

#: gradient estimators: "pathwise" is the exact gradient of the objective at the drawn eps
#: (:meth:`VAE.loss_and_grad`, :func:`iwae_loss_and_grad`); "stl" and "dreg" drop a
#: zero-mean score term from the encoder's gradient (:func:`stl_loss_and_grad`,
#: :func:`dreg_loss_and_grad`)
ESTIMATORS = ("pathwise", "stl", "dreg")


def check_estimator(objective: str, estimator: str, kl: str = "mc") -> str:
    """``estimator`` if it fits ``objective`` and ``kl``, else a ValueError that says why.

    * ``"pathwise"`` fits every objective and KL mode;
    * ``"stl"`` is for the ELBO with the Monte Carlo KL: it drops the score term of
      log q(z|x) *at the samples*, which the closed-form KL does not have; on the IWAE
      bound it is biased (Tucker et al. 2019), which is what DReG fixes;
    * ``"dreg"`` is for the IWAE bound (at K = 1 it equals ``"stl"``).
    """
    choice(objective, OBJECTIVES, "objective")
    choice(estimator, ESTIMATORS, "estimator")
    if estimator == "stl" and objective != "elbo":
        raise ValueError("estimator 'stl' (sticking the landing) is for objective 'elbo'; on "
                         "the IWAE bound it is biased: use estimator 'dreg' with objective 'iwae'")
    if estimator == "stl" and kl != "mc":
        raise ValueError("estimator 'stl' drops the score term of log q(z|x) at the samples, so "
                         "it needs the Monte Carlo KL: use kl 'mc' (got kl 'analytic', the "
                         "closed form, which has no sampled log q)")
    if estimator == "dreg" and objective != "iwae":
        raise ValueError("estimator 'dreg' (doubly reparameterized) is the gradient of the IWAE "
                         "bound: use objective 'iwae' (for the ELBO use estimator 'stl', with kl "
                         "'mc'; DReG at K = 1 is STL)")
    return estimator


def _path_dz(fwd: Forward, g: np.ndarray, dz_lik: np.ndarray, beta: float = 1.0) -> np.ndarray:
    r""":math:`\partial L/\partial z` for :math:`L = \sum_{kb} g_{kb}\log w_{kb}` with the
    parameters inside :math:`\log q` held fixed (only the path through z is kept).

    .. math::  \frac{\partial\log w}{\partial z}
               = \frac{\partial\log p(x|z)}{\partial z} - z + \frac{z - \mu}{\sigma^2}
               = \frac{\partial\log p(x|z)}{\partial z} - z + \frac{\epsilon}{\sigma}

    ``dz_lik`` is ``g * d log p(x|z)/dz`` from :meth:`VAE.log_lik_backward`; ``beta``
    weighs the two KL parts (log p(z) and -log q).
    """
    return dz_lik + (beta * g)[..., None] * (fwd.eps / fwd.sigma - fwd.z)


def stl_loss_and_grad(model: VAE, x: np.ndarray, eps: np.ndarray, *, beta: float = 1.0,
                      out: ParamDict | None = None) -> tuple[float, ParamDict]:
    r"""Negative ELBO (Monte Carlo KL) and its "sticking the landing" gradient estimate.

    The loss is ``model.loss(x, eps, kl="mc", beta=beta)``:
    :math:`-\frac1{BK}\sum_{b,k}[\log p(x_b|z_{kb}) + \beta(\log p(z_{kb})
    - \log q_\phi(z_{kb}|x_b))]`. Its exact gradient with respect to the encoder
    :math:`\phi` has two parts: the path through :math:`z = \mu + \sigma\epsilon`, and
    the score term :math:`-\nabla_\phi\log q_\phi(z|x)` at fixed z, whose mean under q is
    zero. Roeder, Wu and Duvenaud (2017) drop the score term: the estimate stays unbiased
    and, when q equals the posterior, :math:`\log p(x,z) - \log q(z|x) = \log p(x)` for
    every z, so the remaining path term is exactly zero for every eps (zero variance).

    It is the gradient of the surrogate in which :math:`\phi` inside :math:`\log q` is held
    at its current value :math:`\phi_0`:

    .. math::  \nabla_\phi\Big[-\frac1{BK}\sum_{b,k}\big(\log p(x_b|z_{kb}(\phi))
               + \beta\log p(z_{kb}(\phi)) - \beta\log q_{\phi_0}(z_{kb}(\phi)|x_b)\big)
               \Big]_{\phi=\phi_0}

    The decoder's gradient is the ordinary (exact) one. ``beta`` weighs the KL parts as in
    :meth:`VAE.loss_and_grad`. Returns ``(loss, grads)``, ``grads`` being ``out`` if given
    (overwritten) or a new :class:`~minivae.params.ParamDict`.
    """
    fwd = _check_model(model).forward(x, eps)
    beta = VAE._check_kl("mc", beta)
    log_q = reparameterized_log_q(fwd.log_var, fwd.eps)
    kl_mc = log_q - standard_normal_log_prob(fwd.z)
    loss = float(-np.mean(fwd.log_lik - beta * kl_mc))
    K, B = fwd.K, fwd.B
    g = np.full((K, B), -1.0 / (K * B), dtype=model.dtype)  # dloss/dlog p(x|z)
    grads = model.grad_out(out)
    dz = _path_dz(fwd, g, model.log_lik_backward(fwd, g, grads), beta)
    d_mu, d_log_var = reparameterize_backward(dz, fwd.eps, fwd.sigma)
    model.encode_backward(d_mu, d_log_var, fwd.enc_cache, grads)
    return loss, grads


def dreg_loss_and_grad(model: VAE, x: np.ndarray, eps: np.ndarray,
                       out: ParamDict | None = None) -> tuple[float, ParamDict]:
    r"""Negative IWAE bound and its doubly reparameterized (DReG) gradient estimate.

    The loss is :func:`iwae_loss`'s, :math:`-\frac1B\sum_b\log\frac1K\sum_k w_{kb}`, and
    the decoder's gradient is :func:`iwae_loss_and_grad`'s. For the encoder, Tucker,
    Lawson, Gu and Maddison (2019) rewrite the score-function part of the IWAE gradient
    by reparameterizing it a second time; the result has no score term:

    .. math::  \hat g_\phi = -\frac1B\sum_b\sum_k \tilde w_{kb}^2\,
               \frac{\partial\log w_{kb}}{\partial z_{kb}}\frac{dz_{kb}}{d\phi},\qquad
               \tilde w_{kb} = \frac{w_{kb}}{\sum_{k'}w_{k'b}},

    where :math:`\partial\log w/\partial z` holds q's parameters fixed (see
    :func:`_path_dz`). It is unbiased for the same gradient as the plain IWAE estimator,
    and its signal-to-noise ratio does not fall as K grows (the plain one falls like
    :math:`K^{-1/2}`, Rainforth et al. 2018). At K = 1 it equals
    :func:`stl_loss_and_grad`.

    It is the gradient of the surrogate, with :math:`\tilde w` and :math:`\phi` inside
    :math:`\log q` held at their current values,
    :math:`-\frac1B\sum_{b,k}\tilde w_{kb}^2\log w_{kb}(z_{kb}(\phi))`.

    Since z_kb enters only its own term, :math:`\partial L/\partial z_{kb}` is linear in
    the weight of that term: the backward pass runs once, with the IWAE weights
    :math:`\tilde w` (what the decoder needs), and the encoder's dz is then multiplied by
    :math:`\tilde w` once more.
    """
    fwd = _check_model(model).forward(x, eps)
    log_w = _log_weights(fwd)
    loss = float(-np.mean(logmeanexp(log_w, axis=0)))
    w_tilde = _gradient_weights(log_w)
    g = -w_tilde / fwd.B  # dloss/dlog w for the decoder, as in iwae_loss_and_grad
    grads = model.grad_out(out)
    dz = _path_dz(fwd, g, model.log_lik_backward(fwd, g, grads))
    dz *= w_tilde[..., None]  # -(w_tilde^2 / B) dlog w/dz
    d_mu, d_log_var = reparameterize_backward(dz, fwd.eps, fwd.sigma)
    model.encode_backward(d_mu, d_log_var, fwd.enc_cache, grads)
    return loss, grads


# ----------------------------------------------------------------------------------------
# Score-function (REINFORCE) gradient of the negative ELBO
# ----------------------------------------------------------------------------------------


def _baseline(f: np.ndarray, kind: str) -> np.ndarray:
    r"""A baseline for each sample f_kb that does not depend on z_kb (hence no bias).

    * ``"none"``: 0.
    * ``"batch-mean"``: the mean of f over all *other* (k', b') pairs of the batch, one
      number per sample. Leaving the sample itself out keeps the estimator unbiased
      (the other samples are independent of z_kb); it needs K*B >= 2.
    * ``"leave-one-out"``: the mean of f over the other K-1 samples of the same
      datapoint, :math:`b_{kb} = \frac{1}{K-1}\sum_{k'\ne k} f_{k'b}`; needs K >= 2.
    """
    K, B = f.shape
    if kind == "none":
        return np.zeros_like(f)
    if kind == "batch-mean":
        if K * B < 2:
            raise ValueError("baseline='batch-mean' needs K*B >= 2 samples in the batch")
        return (np.sum(f) - f) / (K * B - 1)
    if K < 2:
        raise ValueError(f"baseline='leave-one-out' needs K >= 2 samples per datapoint, got K={K}")
    return (np.sum(f, axis=0, keepdims=True) - f) / (K - 1)


def score_function_grad(
    model: VAE,
    x: np.ndarray,
    eps: np.ndarray,
    *,
    kl: str = "analytic",
    baseline: str = "none",
) -> tuple[float, ParamDict]:
    r"""Score-function (REINFORCE) estimate of the gradient of the negative ELBO.

    Same model, batch and noise as ``model.loss_and_grad(x, eps, kl=kl)``; only the
    encoder's gradient is estimated differently. The samples are
    :math:`z_{kb} = \mu_b + \sigma_b\epsilon_{kb}`, used as draws from q and **not**
    differentiated through. With the score
    :math:`s_{kb} = \nabla_\phi\log q_\phi(z|x_b)|_{z=z_{kb}}`, whose components are

    .. math::  \partial\log q/\partial\mu_j = \epsilon_j/\sigma_j,\qquad
               \partial\log q/\partial\,\mathrm{log\_var}_j = \tfrac12(\epsilon_j^2 - 1),

    the encoder gradient of :math:`\mathrm{loss} = -\frac1B\sum_b\mathrm{ELBO}_b` is

    * ``kl="analytic"`` (:math:`\mathrm{ELBO} = E_q[\log p(x|z)] - \mathrm{KL}`, KL exact):

      .. math::  \hat g_\phi = \frac1B\sum_b\Big[-\frac1K\sum_k (f_{kb} - c_{kb})\,s_{kb}
                 + \nabla_\phi\mathrm{KL}(q(z|x_b)\,\|\,p(z))\Big],\quad f = \log p(x|z)

    * ``kl="mc"`` (:math:`\mathrm{ELBO} = E_q[f(z,\phi)]`,
      :math:`f = \log p(x,z) - \log q_\phi(z|x)`):

      .. math::  \hat g_\phi = -\frac1{B K}\sum_{b,k}\Big[(f_{kb} - c_{kb})\,s_{kb}
                 + \nabla_\phi f(z,\phi)|_{z=z_{kb}}\Big],\quad
                 \nabla_\phi f|_z = -s_{kb}

      (the direct term; its expectation is zero, but it belongs to the estimator).

    :math:`c_{kb}` is the baseline (see :func:`_baseline`: ``"none"``,
    ``"batch-mean"`` or ``"leave-one-out"``); every choice is independent of
    :math:`z_{kb}`, so :math:`E[c\,s] = c\,E[s] = 0` and the estimate stays unbiased.

    The decoder's entries of ``grads`` are the usual (exact given the samples)
    :math:`-\frac1{BK}\sum\nabla_\theta\log p_\theta(x_b|z_{kb})`, identical to
    ``model.loss_and_grad(x, eps, kl=kl)``: theta does not enter q, so there is
    nothing to estimate differently. Hence ``grads.flat`` is an unbiased estimate of
    the whole gradient, and its encoder entries are the score-function estimate.

    Returns ``(loss, grads)``: the negative ELBO at these samples (nats per
    datapoint, the same number ``model.loss(x, eps, kl=kl)`` gives) and the gradient.
    """
    choice(kl, KL_MODES, "kl")
    choice(baseline, BASELINES, "baseline")
    fwd = _check_model(model).forward(x, eps)
    log_w = _log_weights(fwd)
    mu, log_var, eps, sigma = fwd.mu, fwd.log_var, fwd.eps, fwd.sigma
    K, B = log_w.shape
    grads = model.new_grad()

    # Decoder: the direct gradient of -mean log p(x|z) at the samples (log_lik_backward
    # also returns dloss/dz, which a score-function estimator deliberately ignores).
    model.log_lik_backward(fwd, -1.0 / (K * B), grads)

    if kl == "analytic":
        f = fwd.log_lik
        loss = float(np.mean(-np.mean(f, axis=0) + kl_diag_standard_normal(mu, log_var)))
    else:
        f = log_w
        loss = float(-np.mean(log_w))

    # Score of q at the (fixed) samples, per (k, b, j).
    score_mu = eps / sigma
    score_log_var = 0.5 * (eps * eps - 1.0)
    coef = -(f - _baseline(f, baseline)) / (K * B)  # (K, B)
    if kl == "mc":
        # direct term -(1/(BK)) * (-s) = +s/(BK): add 1/(BK) to every coefficient
        coef = coef + 1.0 / (K * B)
    d_mu = np.sum(coef[..., None] * score_mu, axis=0)
    d_log_var = np.sum(coef[..., None] * score_log_var, axis=0)
    if kl == "analytic":
        g_mu, g_log_var = kl_diag_standard_normal_grad(mu, log_var)
        d_mu += g_mu / B
        d_log_var += g_log_var / B
    model.encode_backward(d_mu, d_log_var, fwd.enc_cache, grads)
    return loss, grads


# ----------------------------------------------------------------------------------------
# Estimates of log p(x)
# ----------------------------------------------------------------------------------------


@dataclass
class LogMarginalEstimate:
    r"""Per-datapoint Monte Carlo estimates of log p(x), in nats.

    Attributes
    ----------
    values : array (B,)
        :math:`\log\hat p(x_b) = \log\frac1k\sum_i w_{ib}`.
    stderr : array (B,)
        Delta-method standard error of each value:
        :math:`\mathrm{sd}(w_{\cdot b}) / (\sqrt{k}\,\overline{w}_{\cdot b})`, the
        standard error of the mean weight relative to the mean weight (sd with the
        k-1 denominator). It is itself an estimate and can be badly low when the
        weights are heavy-tailed (a proposal much narrower than the target).
    k : int
        Samples per datapoint.
    method : str
        ``"importance"`` (proposal q(z|x)) or ``"prior"`` (proposal p(z)).

    Both estimators are biased *low* in log space (Jensen: E[log p_hat] <= log p(x));
    the bias is about stderr**2 / 2, so it vanishes faster than the noise.
    """

    values: np.ndarray
    stderr: np.ndarray
    k: int
    method: str

    @property
    def mean(self) -> float:
        """Mean over the batch of the per-datapoint estimates (nats per datapoint)."""
        return float(np.mean(self.values))

    @property
    def mean_stderr(self) -> float:
        r"""Monte Carlo standard error of :attr:`mean` for this fixed batch:
        :math:`\sqrt{\sum_b \mathrm{stderr}_b^2}/B` (the estimates are independent
        across datapoints). It does not include the spread of the data themselves;
        for that see :attr:`data_stderr`."""
        return float(np.sqrt(np.sum(self.stderr**2)) / self.values.size)

    @property
    def data_stderr(self) -> float:
        """Standard error of :attr:`mean` as an estimate of the population mean:
        the sample standard deviation of ``values`` over sqrt(B) (0 for B = 1)."""
        B = self.values.size
        return float(np.std(self.values, ddof=1) / np.sqrt(B)) if B > 1 else 0.0

    def __str__(self) -> str:
        return (
            f"log p(x) ~ {self.mean:.4f} +- {self.mean_stderr:.4f} nats per datapoint "
            f"({self.method} sampling, k={self.k}, {self.values.size} datapoints)"
        )


class _StreamingLogMeanExp:
    r"""Online log-mean-exp over chunks, with the second moment for a standard error.

    Keeps, per datapoint, the running maximum m and the scaled sums
    :math:`s_1 = \sum_i e^{a_i - m}` and :math:`s_2 = \sum_i e^{2(a_i - m)}`. When a new
    chunk raises the maximum to m', the old sums are rescaled by :math:`e^{m-m'}` and
    :math:`e^{2(m-m')}`, so nothing overflows and memory is one chunk. Accumulates in
    float64 on purpose: these are reported statistics summed over thousands of
    weights, not part of the model's computation.
    """

    def __init__(self, batch: int):
        self.m = np.full(batch, -np.inf)
        self.s1 = np.zeros(batch)
        self.s2 = np.zeros(batch)
        self.n = 0

    def update(self, a: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.float64)  # (chunk, B)
        new_m = np.maximum(self.m, np.max(a, axis=0))
        if not np.all(np.isfinite(new_m)):
            raise FloatingPointError("a log weight is NaN or every log weight is -inf")
        scale = np.exp(self.m - new_m)  # exp(-inf) = 0 on the first chunk
        e = np.exp(a - new_m)
        self.s1 = self.s1 * scale + np.sum(e, axis=0)
        self.s2 = self.s2 * scale**2 + np.sum(e * e, axis=0)
        self.m = new_m
        self.n += a.shape[0]

    def result(self, method: str) -> LogMarginalEstimate:
        n = self.n
        mean_w = self.s1 / n  # in units of e^m
        values = self.m + np.log(mean_w)
        if n > 1:
            # unbiased variance of w (units e^{2m}); roundoff can make it slightly negative
            var_w = np.maximum(self.s2 / n - mean_w**2, 0.0) * n / (n - 1)
            stderr = np.sqrt(var_w / n) / mean_w
        else:
            stderr = np.full_like(values, np.nan)
        return LogMarginalEstimate(values, stderr, n, method)


def _resolve_rng(rng) -> np.random.Generator:
    # Randomness is explicit: None means a *fresh* generator with the fixed, documented
    # seed 0 (never NumPy's global state), so that an evaluation repeats exactly.
    return np.random.default_rng(0) if rng is None else generator(rng, allow_none=True)


def _default_chunk(model: VAE, batch: int, k: int) -> int:
    widest = max(model.likelihood.out_dim(model.input_dim), *model.decoder_hidden,
                 model.latent_dim)
    return max(1, min(k, _CHUNK_BUDGET // (batch * widest)))


def _chunks(k: int, chunk_size: int):
    for start in range(0, k, chunk_size):
        yield min(chunk_size, k - start)


def _setup(model, x, k, rng, chunk_size):
    x = _check_model(model).check_x(x)
    k = positive_int(k, "k")
    rng = _resolve_rng(rng)
    if chunk_size is None:
        chunk_size = _default_chunk(model, x.shape[0], k)
    chunk_size = positive_int(chunk_size, "chunk_size")
    return x, k, rng, chunk_size


def importance_sampled_log_marginal(
    model: VAE,
    x: np.ndarray,
    k: int = 5000,
    rng: np.random.Generator | None = None,
    chunk_size: int | None = None,
) -> LogMarginalEstimate:
    r"""Importance-sampling estimate of log p(x) with q(z|x) as the proposal.

    .. math::

        \log\hat p(x_b) = \log\frac1k\sum_{i=1}^k
            \frac{p(x_b|z_i)\,p(z_i)}{q(z_i|x_b)},\qquad z_i \sim q(z|x_b),

    i.e. the bound :math:`L_k` at one draw of k samples; it is :math:`\ge` the
    Monte Carlo ELBO at the same samples (mean of logs <= log of mean) and, on
    average, :math:`\le\log p(x)`. The samples are drawn chunk by chunk,
    ``eps = model.sample_eps(rng, B, c)``, so the stream of noise (and hence the
    result, up to roundoff) does not depend on ``chunk_size``; the log-sum-exp is
    accumulated online, so memory is one chunk whatever k.

    Parameters
    ----------
    model : VAE
    x : array (B, D) of the model's dtype
    k : int
        Samples per datapoint (default 5000).
    rng : numpy.random.Generator or None
        The noise source. ``None`` means ``numpy.random.default_rng(0)``, a fresh
        generator with a fixed seed, so repeated calls give the same number; pass
        your own generator for independent estimates.
    chunk_size : int or None
        Samples per chunk; ``None`` picks the largest chunk whose biggest array
        (decoder output or hidden layer) holds at most 2**20 numbers.

    Returns
    -------
    LogMarginalEstimate
        ``values`` and delta-method ``stderr`` per datapoint, ``mean``, ``mean_stderr``.
    """
    x, k, rng, chunk_size = _setup(model, x, k, rng, chunk_size)
    B = x.shape[0]
    encoded = model.encode(x)  # q(z|x) is the same for every chunk
    acc = _StreamingLogMeanExp(B)
    for c in _chunks(k, chunk_size):
        acc.update(_log_weights(model.forward(x, model.sample_eps(rng, B, c), encoded,
                                              backward=False)))
    return acc.result("importance")


def prior_sampling_log_marginal(
    model: VAE,
    x: np.ndarray,
    m: int,
    rng: np.random.Generator | None = None,
    chunk_size: int | None = None,
) -> LogMarginalEstimate:
    r"""The naive estimate of log p(x) by sampling the prior.

    .. math::  \log\hat p(x_b) = \log\frac1M\sum_{i=1}^M p(x_b|z_{ib}),\qquad z_{ib}\sim N(0, I),

    unbiased for p(x) but with a variance that explodes when the posterior is much
    narrower than the prior (almost no prior draw lands where p(x|z) is large), so
    for real models it badly underestimates log p(x) unless M is astronomically
    large. Each datapoint gets its own independent draws. ``rng=None`` means
    ``numpy.random.default_rng(0)``; chunking as in
    :func:`importance_sampled_log_marginal`.
    """
    x, m, rng, chunk_size = _setup(model, x, m, rng, chunk_size)
    B = x.shape[0]
    acc = _StreamingLogMeanExp(B)
    for c in _chunks(m, chunk_size):
        z = model.sample_eps(rng, B, c)  # standard normal, shape (c, B, Z): draws from p(z)
        out, _ = model.decode(z)
        acc.update(model.log_lik(x, out))
    return acc.result("prior")
