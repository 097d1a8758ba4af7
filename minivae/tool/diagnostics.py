"""Numbers about a model on a dataset: the negative ELBO and its parts, active units,
and a finite-difference gradient check of a chosen configuration.

All losses are in nats per datapoint. The negative ELBO here is always the
true one (beta = 1, z *sampled* from q(z|x), closed-form KL), whatever beta the
training used: ``z = mu`` would not give an ELBO.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import choice
from ..gradcheck import model_gradcheck
from ..objectives import OBJECTIVES, iwae_loss_and_grad
from ..vae import VAE


@dataclass
class ELBOSummary:
    """Negative ELBO over a dataset, nats per datapoint, with its parts and standard error."""

    loss: float
    recon: float
    kl: float
    stderr: float
    n: int


def evaluate_elbo(model: VAE, x: np.ndarray, rng: np.random.Generator,
                  batch_size: int = 1000, k: int = 1) -> ELBOSummary:
    r"""Estimate of the negative ELBO on ``x`` with k samples of z per datapoint.

    ``stderr`` is the standard error of the mean over datapoints,
    :math:`\mathrm{sd}(\ell_b)/\sqrt{N}` of the per-datapoint estimates
    :math:`\ell_b = \mathrm{recon}_b + \mathrm{KL}_b`. ``x`` may be stored in another
    dtype than the model's (binary data as uint8): each batch is converted.
    """
    recon = np.empty(len(x))
    kl = np.empty(len(x))
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].astype(model.dtype, copy=False)
        terms = model.elbo_terms(xb, model.sample_eps(rng, len(xb), k))
        recon[start:start + len(xb)] = terms.recon
        kl[start:start + len(xb)] = terms.kl
    per = recon + kl
    stderr = float(per.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
    return ELBOSummary(float(per.mean()), float(recon.mean()), float(kl.mean()), stderr, len(x))


def latent_means(model: VAE, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """E_q[z|x] = mu(x) for every row of ``x``: shape (N, Z) (batches in the model's dtype)."""
    return np.concatenate([model.encode(x[s:s + batch_size].astype(model.dtype, copy=False))[0]
                           for s in range(0, len(x), batch_size)])


def active_units(mu: np.ndarray, threshold: float = 0.01) -> int:
    r"""Number of latent dimensions j with :math:`\mathrm{Cov}_x(E_q[z_j]) > 0.01`.

    Burda, Grosse & Salakhutdinov (2015), section 5.2: a unit is active when
    its posterior mean varies across datapoints.
    """
    if len(mu) < 2:
        return 0
    return int(np.sum(np.var(mu.astype(np.float64), axis=0, ddof=1) > threshold))


def gradcheck_configuration(*, input_dim: int = 6, latent_dim: int = 3, hidden=(5,),
                            decoder_hidden=None, likelihood: str = "bernoulli",
                            activation: str = "tanh", batch: int = 4, k: int = 2,
                            kl: str = "analytic", beta: float = 1.0, objective: str = "elbo",
                            n_directions: int = 3, seed: int = 0) -> dict[str, float]:
    """Finite-difference check of a float64 model built from these options.

    Draws x (0/1 for Bernoulli, standard normal otherwise) and eps from
    ``default_rng(seed)`` and returns :func:`minivae.gradcheck.model_gradcheck`'s
    ``{"all": err, param_name: err, ...}``: the worst relative error of the
    directional derivative, over all parameters and per parameter block.
    """
    choice(objective, OBJECTIVES, "objective")
    model = VAE(input_dim, latent_dim, hidden=tuple(hidden), decoder_hidden=decoder_hidden,
                likelihood=likelihood, activation=activation, dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed)
    if likelihood == "bernoulli":
        x = (rng.random((batch, input_dim)) < 0.5).astype(np.float64)
    else:
        x = rng.standard_normal((batch, input_dim))
    eps = rng.standard_normal((k, batch, latent_dim))
    if objective == "elbo":
        return model_gradcheck(model, x, eps, rng=rng, n_directions=n_directions, kl=kl,
                               beta=beta)
    return model_gradcheck(model, x, eps, rng=rng, n_directions=n_directions,
                           objective=iwae_loss_and_grad)
