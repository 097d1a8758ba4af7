#!/usr/bin/env python
"""Log-likelihood estimators against the exact answer, on a trained linear-Gaussian VAE.

    python scripts/loglik_exact.py [--epochs 40] [--seed 0] [--json PATH]

A linear VAE (``hidden=()``, likelihood ``gaussian-shared``) is trained with
:func:`minivae.tool.train.fit` on data from a random linear-Gaussian model
(:func:`minivae.tool.data.load_linear_gaussian`, D = 10, Z = 3). Its own generative model
is linear-Gaussian too, p(x) = N(b, W W^T + diag(exp(log_var))), so its log-likelihood is
known exactly; on 100 test points the script prints, in nats per datapoint:

* the exact log p(x) of the trained model, and its ELBO (closed-form KL, exact);
* E[L_K] for K = 1, 10, 100, 1000 (mean of 20 independent draws of the IWAE bound),
  with the standard error of that mean, which must climb from the ELBO to log p(x);
* importance sampling (q as proposal) and prior sampling with the same budget
  (5000 samples each), with their delta-method standard errors, and how honest those are: the
  mean and spread of (estimate - exact) / stderr over the points (about 0 and 1 when the
  standard errors are right).

Everything is seeded; a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from minivae import VAE
from minivae.objectives import (
    importance_sampled_log_marginal,
    iwae_loss,
    prior_sampling_log_marginal,
)
from minivae.theory.exact import LinearGaussian
from minivae.tool.data import load_linear_gaussian
from minivae.tool.train import fit


def exact_model(model: VAE) -> LinearGaussian:
    """The linear VAE's generative model as a LinearGaussian: x = A z + b + noise."""
    noise_var = np.exp(model.params["decoder.log_var"])
    return LinearGaussian(model.params["decoder.0.W"].T, model.params["decoder.0.b"], noise_var)


def standardized(est, exact: np.ndarray) -> tuple[float, float]:
    """Mean and sd of (estimate - exact) / stderr over datapoints."""
    t = (est.values - exact) / est.stderr
    return float(t.mean()), float(t.std(ddof=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=40, help="training epochs (default 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, model and noise")
    p.add_argument("--n", type=int, default=100, help="test points (default 100)")
    p.add_argument("--json", metavar="PATH", help="also write the numbers here")
    args = p.parse_args(argv)

    data = load_linear_gaussian(seed=args.seed, dim=10, latent_dim=3)
    model = VAE(10, 3, hidden=(), likelihood="gaussian-shared", seed=args.seed)
    fit(model, data.train, epochs=args.epochs, batch_size=100, lr=1e-2, seed=args.seed,
        print_fn=lambda _: None)
    x = data.test[:args.n]
    exact = exact_model(model)
    log_px = exact.log_marginal(x)
    mu, log_var, _ = model.encode(x)
    elbo = exact.elbo_diag(x, mu, log_var)

    rng = np.random.default_rng(args.seed)
    draws = {k: [-iwae_loss(model, x, model.sample_eps(rng, len(x), k)) for _ in range(20)]
             for k in (1, 10, 100, 1000)}
    bounds = {k: float(np.mean(v)) for k, v in draws.items()}
    bound_se = {k: float(np.std(v, ddof=1) / np.sqrt(len(v))) for k, v in draws.items()}
    is_est = importance_sampled_log_marginal(model, x, k=5000, rng=rng)
    prior_est = prior_sampling_log_marginal(model, x, m=5000, rng=rng)

    print(f"linear-Gaussian VAE (D=10, Z=3, gaussian-shared) trained {args.epochs} epochs on "
          f"{data.description}; {len(x)} test points, nats per datapoint")
    print(f"{'exact log p(x) of the trained model':42s} {log_px.mean():10.4f}")
    print(f"{'ELBO (closed-form KL, exact)':42s} {elbo.mean():10.4f}")
    for k in (1, 10, 100, 1000):
        label = f"E[L_K], K = {k} (mean of 20 draws)"
        print(f"{label:42s} {bounds[k]:10.4f} +- {bound_se[k]:.4f}")
    rows = {"importance sampling, k=5000": is_est, "prior sampling, m=5000": prior_est}
    out = {"exact_log_marginal": float(log_px.mean()), "elbo": float(elbo.mean()),
           "iwae_bounds": bounds, "iwae_bound_stderr": bound_se}
    for name, est in rows.items():
        m, s = standardized(est, log_px)
        print(f"{name:42s} {est.mean:10.4f} +- {est.mean_stderr:.4f}   error "
              f"{est.mean - log_px.mean():+.4f}; (estimate - exact)/stderr: mean {m:+.2f}, "
              f"sd {s:.2f}")
        out[name] = {"mean": est.mean, "stderr": est.mean_stderr, "z_mean": m, "z_sd": s}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
