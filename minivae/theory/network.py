r"""Identity 18: the VAE network's own ELBO is exact, and below log p(x).

This is the one module of :mod:`minivae.theory` that imports the network code
(:mod:`minivae.vae`), because the network code is what it checks. The rule that the
theory imports only the core's numerics, distributions and checks exists so that the
ground truth shares no code with what it checks; that still holds: the exact model
(:mod:`minivae.theory.exact`) does not import the network, and the comparison below goes
through different code on each side (see :func:`network_elbo_is_exact`).

Why sigma points make the network's Monte Carlo ELBO exact
-----------------------------------------------------------

For a linear VAE (``hidden=()``) with a Gaussian likelihood whose variance does not
depend on z, :math:`\log p(x|z)` is a quadratic function of z. The expectation of a
quadratic under :math:`q = N(\mu, \mathrm{diag}\,\sigma^2)` depends only on the first two
moments of :math:`\epsilon`, which the 2Z points :math:`\epsilon = \pm\sqrt{Z}\,e_j` (equal
weights) match exactly: mean 0, and :math:`\frac1{2Z}\sum_j 2Z\,e_je_j^\top = I`. So the
network's own loss with that eps (K = 2Z) *is* the ELBO, with no Monte Carlo error.
"""

from __future__ import annotations

import numpy as np

from ..vae import KL_MODES, VAE
from .exact import LinearGaussian
from .identities import IdentityResult, Problem, _scale, identity

#: the likelihoods whose log p(x|z) is quadratic in z for a linear decoder
QUADRATIC_LIKELIHOODS = ("gaussian-fixed", "gaussian-shared", "gaussian-isotropic")


def sigma_points(Z: int, batch: int) -> np.ndarray:
    r"""The 2Z noise vectors :math:`\pm\sqrt{Z}\,e_j` for every datapoint: shape (2Z, B, Z)."""
    eps = np.zeros((2 * Z, batch, Z))
    for j in range(Z):
        eps[j, :, j] = np.sqrt(Z)
        eps[Z + j, :, j] = -np.sqrt(Z)
    return eps


def linear_vae(model: LinearGaussian, likelihood: str, rng: np.random.Generator):
    r"""A linear VAE whose decoder is ``model``'s :math:`p(x|z)` and whose affine encoder is
    a random perturbation of the exact posterior's (the way a trained encoder is near it,
    never at it); returns ``(vae, exact)``, ``exact`` the linear-Gaussian model the VAE's
    decoder defines (the problem's noise variances, their mean for the isotropic and fixed
    likelihoods), with its noise given as a full matrix so that its densities go through
    the Cholesky code (:func:`~minivae.distributions.mvn_log_prob`), not the network's."""
    D, Z = model.D, model.Z
    noise_var = model.noise_var if likelihood == "gaussian-shared" else \
        np.full(D, model.noise_var.mean())
    vae = VAE(D, Z, hidden=(), likelihood=likelihood, seed=int(rng.integers(2**31)),
              fixed_log_var=float(np.log(noise_var[0])))
    p = vae.params
    p["decoder.0.W"][...] = model.A.T
    p["decoder.0.b"][...] = model.b
    if "decoder.log_var" in p:
        p["decoder.log_var"][...] = np.log(noise_var[: p["decoder.log_var"].size])
    exact = LinearGaussian(model.A, model.b, np.diag(noise_var))
    # the posterior mean is m = W_post (x - b), W_post = S A^T Sigma^-1; the encoder computes
    # mu = x @ W[:, :Z] + c[:Z] and log_var = x @ W[:, Z:] + c[Z:]
    W_post = exact.posterior_cov @ model.A.T / noise_var
    W = np.hstack([W_post.T, np.zeros((D, Z))]) + 0.3 * rng.standard_normal((D, 2 * Z)) / np.sqrt(D)
    c = np.concatenate([-model.b @ W_post.T, np.log(np.diag(exact.posterior_cov))])
    p["encoder.0.W"][...] = W
    p["encoder.0.b"][...] = c + 0.3 * rng.standard_normal(2 * Z)
    return vae, exact


@identity(18)
def network_elbo_is_exact(problem: Problem, rng: np.random.Generator, batch: int = 5,
                          ks=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
                          reps: int = 100) -> IdentityResult:
    r"""The VAE's own loss at the 2Z sigma points equals the exact ELBO, and is below log p(x).

    For each likelihood in :data:`QUADRATIC_LIKELIHOODS`, a linear VAE with the problem's
    decoder and a random encoder (:func:`linear_vae`), on ``batch`` datapoints (the
    problem's x and draws from the model): ``VAE.elbo_terms`` at eps =
    :func:`sigma_points` (K = 2Z), with the closed-form and with the Monte Carlo KL, must
    equal :meth:`LinearGaussian.elbo` of the same q to 1e-10 relative, datapoint by
    datapoint. The two sides share no code: the network goes through its encoder,
    ``reparameterize``, decoder, the likelihood's ``gaussian_log_prob`` and the
    per-dimension KL; the exact side through ``mvn_log_prob`` (Cholesky), the trace
    formula and ``kl_mvn``. And every ELBO must lie below the exact log p(x).

    For the picture, details also hold the network's ordinary Monte Carlo ELBO (random eps,
    K samples, ``reps`` repeats) for the first datapoint, against K. lhs/rhs: the network's
    and the exact ELBO of the first datapoint (first likelihood).
    """
    model = problem.model
    Z = model.Z
    tol = 1e-10
    rows, first, worst_err, worst_excess, curve = [], None, 0.0, -np.inf, None
    for likelihood in QUADRATIC_LIKELIHOODS:
        vae, exact = linear_vae(model, likelihood, rng)
        x = np.vstack([problem.x] + ([exact.sample(rng, batch - 1)[1]] if batch > 1 else []))
        mu, log_var, _ = vae.encode(x)
        exact_elbo = np.array([exact.elbo(x[b], mu[b], np.diag(np.exp(log_var[b])))
                               for b in range(batch)])
        log_px = exact.log_marginal(x)
        scale = _scale(*log_px, *exact_elbo)
        eps = sigma_points(Z, batch)
        for kl in KL_MODES:
            terms = vae.elbo_terms(x, eps, kl=kl)
            net = -(terms.recon + terms.kl)
            err = float(np.max(np.abs(net - exact_elbo)) / scale)
            excess = float(np.max(net - log_px) / scale)
            worst_err, worst_excess = max(worst_err, err), max(worst_excess, excess)
            rows.append({"likelihood": likelihood, "kl": kl, "max_relative_error": err,
                         "network_elbo": net, "exact_elbo": exact_elbo, "log_px": log_px,
                         "gap_min": float(np.min(log_px - net)),
                         "gap_max": float(np.max(log_px - net))})
            if first is None:
                first = (float(net[0]), float(exact_elbo[0]))
        if curve is None:  # the ordinary Monte Carlo estimate, for the picture
            xs = np.repeat(x[:1], reps, axis=0)
            est = []
            for K in ks:
                terms = vae.elbo_terms(xs, rng.standard_normal((K, reps, Z)))
                est.append(-(terms.recon + terms.kl))
            curve = {"likelihood": likelihood, "K": list(ks), "reps": reps,
                     "mean": [float(e.mean()) for e in est],
                     "sd": [float(e.std(ddof=1)) for e in est],
                     "exact_elbo": float(exact_elbo[0]), "log_px": float(log_px[0]),
                     "sigma_point_elbo": rows[0]["network_elbo"][0], "sigma_point_K": 2 * Z}
    gaps = [g for r in rows for g in (r["gap_min"], r["gap_max"])]
    return IdentityResult(
        name="VAE's ELBO at 2Z sigma points = exact ELBO < log p(x)",
        source="log p(x|z) quadratic in z: sigma points +-sqrt(Z) e_j integrate it exactly",
        lhs=first[0],
        rhs=first[1],
        difference=first[0] - first[1],
        tolerance=tol,
        criterion=f"max |network - exact| <= {tol:.0e} relative ({len(QUADRATIC_LIKELIHOODS)} "
                  f"likelihoods x {batch} datapoints x {len(KL_MODES)} KL modes); "
                  "below log p(x)",
        passed=bool(worst_err <= tol and worst_excess <= tol),
        details={"table": rows, "max_relative_error": worst_err,
                 "max_relative_excess_over_log_px": worst_excess, "batch": batch,
                 "monte_carlo_curve": curve},
        summary=[
            f"The VAE network's own -loss at the {2 * Z} sigma points eps = +-sqrt({Z}) e_j "
            f"equals the exact ELBO of its q to {worst_err:.1e} relative",
            f"  (worst over {', '.join(QUADRATIC_LIKELIHOODS)}, {batch} datapoints, "
            f"closed-form and Monte Carlo KL), and lies below log p(x) by {min(gaps):.3f} to "
            f"{max(gaps):.3f} nats (= KL(q || p(z|x)));",
            f"  with random eps the same network needs K = {ks[-1]} samples for a spread of "
            f"{curve['sd'][-1]:.3f} nats around it (K = 1: {curve['sd'][0]:.3f})",
        ],
    )
