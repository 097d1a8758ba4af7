r"""The numbered identities of the VAE derivation, each checked with numbers.

Each identity is a function with a descriptive name, registered under its number in
:data:`IDENTITIES` (``python -m minivae verify --only N``). Called as
``check(problem, rng)`` it returns an :class:`IdentityResult`: a left side, a right
side, their difference, whether the identity held, the supporting numbers
(``details``) and the lines worth printing under the table (``summary``).
``python -m minivae verify`` prints them as a table and the tests run them over
random models. Identities 1-12 are here; 13-17 (the questions people ask about the ELBO)
are in :mod:`minivae.theory.questions` and 18 (the network's own ELBO) in
:mod:`minivae.theory.network`, registered in the same :data:`IDENTITIES`.

The models are exact (:mod:`minivae.theory.exact`): a linear-Gaussian model, whose
marginal and posterior are Gaussian, and a Gaussian mixture, whose latent is
discrete. So the "truth" each identity is compared with is known in closed form.

Tolerances
----------
* Closed-form identities: ``|lhs - rhs| <= 1e-9 * max(1, |log p(x)|)``
  (the scale of the numbers that were subtracted).
* Monte Carlo identities compare a sample mean with the exact value using its
  standard error: ``|mean - exact| < z_tol * stderr`` with ``z_tol = 4`` by
  default (a chance failure has probability about 6e-5 per compared number).
  The noise comes from the explicit ``rng``: a fixed seed gives fixed numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..distributions import kl_mvn, mvn_log_prob
from ..numerics import LOG_2PI, logmeanexp
from .exact import GaussianMixture, LinearGaussian

REL_TOL = 1e-9
Z_TOL = 4.0


@dataclass(kw_only=True)
class IdentityResult:
    """The outcome of checking one identity.

    ``lhs`` and ``rhs`` are the two sides (nats unless ``details`` says
    otherwise), ``difference = lhs - rhs`` as reported, ``tolerance`` and
    ``criterion`` say what "passed" means, ``details`` holds the supporting numbers
    and ``summary`` the lines ``verify`` prints under its table. ``number`` is set by
    the registry (:func:`identity`).
    """

    name: str
    source: str
    lhs: float
    rhs: float
    difference: float
    tolerance: float
    criterion: str
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    number: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (NumPy scalars and arrays become Python numbers and lists)."""
        return _jsonable(asdict(self))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    return obj


#: number -> identity check; filled by :func:`identity`
IDENTITIES: dict[int, Callable[..., IdentityResult]] = {}


def identity(number: int):
    """Register an identity check under ``number``; its results carry that number."""
    def register(check: Callable[..., IdentityResult]) -> Callable[..., IdentityResult]:
        if number in IDENTITIES:
            raise ValueError(f"identity number {number} is taken by "
                             f"{IDENTITIES[number].__name__}")

        @functools.wraps(check)
        def run(problem: Problem, rng: np.random.Generator, **options) -> IdentityResult:
            result = check(problem, rng, **options)
            result.number = number
            return result

        run.number = number
        IDENTITIES[number] = run
        return run
    return register


# --------------------------------------------------------------------------
# Problems: a model and a datapoint where every identity is evaluated
# --------------------------------------------------------------------------


@dataclass
class Problem:
    """A linear-Gaussian model with a datapoint x, and a mixture with a datapoint x_mix."""

    model: LinearGaussian
    x: np.ndarray
    mixture: GaussianMixture
    x_mix: np.ndarray


def random_linear_gaussian(rng: np.random.Generator, D: int, Z: int,
                           full_noise: bool = False) -> LinearGaussian:
    r"""A random model: :math:`A_{ij}, b_i \sim N(0, 1)`; noise variances in [0.3, 1.5]
    (diagonal) or :math:`\Sigma = LL^\top/D + 0.3 I` with :math:`L_{ij}\sim N(0,1)` (full)."""
    A = rng.standard_normal((D, Z))
    b = rng.standard_normal(D)
    if full_noise:
        L = rng.standard_normal((D, D))
        noise = L @ L.T / D + 0.3 * np.eye(D)
    else:
        noise = rng.uniform(0.3, 1.5, D)
    return LinearGaussian(A, b, noise)


def random_mixture(rng: np.random.Generator, K: int, D: int) -> GaussianMixture:
    """A random mixture: Dirichlet(2) weights, N(0, 4) means, full covariances LL^T/D + 0.3 I."""
    weights = rng.dirichlet(np.full(K, 2.0))
    means = 2.0 * rng.standard_normal((K, D))
    L = rng.standard_normal((K, D, D))
    covs = L @ np.swapaxes(L, 1, 2) / D + 0.3 * np.eye(D)
    return GaussianMixture(weights, means, covs)


def make_problem(rng: np.random.Generator, D: int = 4, Z: int = 2, K: int = 3,
                 full_noise: bool = False) -> Problem:
    """A random :class:`Problem` whose datapoints are drawn from the models themselves."""
    model = random_linear_gaussian(rng, D, Z, full_noise)
    mixture = random_mixture(rng, K, D)
    return Problem(model, model.sample(rng, 1)[1][0], mixture, mixture.sample(rng, 1)[1][0])


def default_problem(seed: int = 0) -> Problem:
    """The problem ``verify`` uses: D = 4, Z = 2, diagonal noise, a 3-component mixture."""
    return make_problem(np.random.default_rng(seed))


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _scale(*values: float) -> float:
    return max(1.0, *(abs(float(v)) for v in values))


def _random_full_q(rng: np.random.Generator, Z: int) -> tuple[np.ndarray, np.ndarray]:
    L = rng.standard_normal((Z, Z))
    return rng.standard_normal(Z), L @ L.T / Z + 0.05 * np.eye(Z)


def _random_diag_q(rng: np.random.Generator, Z: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal(Z), rng.uniform(-2.0, 1.0, Z)


def _mean_and_stderr(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean over axis 0 and its standard error std/sqrt(n)."""
    n = samples.shape[0]
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(n)


def _max_z(mean: np.ndarray, exact: np.ndarray, stderr: np.ndarray) -> float:
    """Largest |mean - exact| / stderr over components (inf if a stderr is 0 and they differ)."""
    diff = np.abs(np.asarray(mean) - exact)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(diff == 0, 0.0, diff / stderr)
    return float(np.max(z))


def _sample_full(rng: np.random.Generator, mean, cov, n: int) -> np.ndarray:
    return mean + rng.standard_normal((n, len(mean))) @ np.linalg.cholesky(cov).T


def _overdispersed_diag_q(model: LinearGaussian, x) -> tuple[np.ndarray, np.ndarray]:
    r"""A diagonal q near the posterior but not equal to it: mean shifted by half a posterior
    standard deviation, variances :math:`Z\cdot S_{jj}`. Since :math:`Z\,\mathrm{diag}(S)
    \succeq S`, the importance weights p(z|x)/q(z) stay bounded. Returns (mu, log_var)."""
    m, S = model.posterior(x)
    sd = np.sqrt(np.diag(S))
    return m + 0.5 * sd, np.log(model.Z * sd**2)


# --------------------------------------------------------------------------
# 1-4: the ELBO is a lower bound, and by exactly how much
# --------------------------------------------------------------------------


@identity(1)
def elbo_below_log_marginal(problem: Problem, rng: np.random.Generator,
                            n_q: int = 100) -> IdentityResult:
    r"""ELBO(q) <= log p(x) for every q.

    Checked for ``n_q`` random diagonal q, ``n_q`` random full-covariance q
    (linear-Gaussian model) and ``n_q`` random categorical q (mixture).
    lhs is the largest linear-Gaussian ELBO found, rhs is log p(x); passes
    when every ELBO is <= log p(x) (to 1e-9 relative roundoff).
    """
    model, x = problem.model, problem.x
    log_px = float(model.log_marginal(x))
    diag = [model.elbo_diag(x, *_random_diag_q(rng, model.Z)) for _ in range(n_q)]
    full = [model.elbo(x, *_random_full_q(rng, model.Z)) for _ in range(n_q)]
    mix, xm = problem.mixture, problem.x_mix
    log_px_mix = float(mix.log_marginal(xm))
    q_mix = rng.dirichlet(np.full(mix.K, 0.5), size=n_q)
    elbo_mix = mix.elbo(np.broadcast_to(xm, (n_q, mix.D)), q_mix)
    worst = max(max(diag) - log_px, max(full) - log_px)
    worst_mix = float(np.max(elbo_mix) - log_px_mix)
    tol = REL_TOL * _scale(log_px, log_px_mix)
    lhs = max(max(diag), max(full))
    return IdentityResult(
        name="ELBO(q) <= log p(x)",
        source="Jensen: log E_q[p(x,z)/q] >= E_q[log p(x,z)/q]",
        lhs=lhs,
        rhs=log_px,
        difference=lhs - log_px,
        tolerance=tol,
        criterion=f"every ELBO - log p(x) <= {tol:.1e} ({3 * n_q} q's)",
        passed=bool(worst <= tol and worst_mix <= tol),
        details={"max_elbo_minus_log_px_diag_q": max(diag) - log_px,
                 "max_elbo_minus_log_px_full_q": max(full) - log_px,
                 "max_elbo_minus_log_px_mixture_q": worst_mix, "n_q_per_family": n_q},
    )


@identity(2)
def gap_is_kl_to_posterior(problem: Problem, rng: np.random.Generator,
                           n_q: int = 20) -> IdentityResult:
    r""":math:`\log p(x) - \mathrm{ELBO}(q) = \mathrm{KL}(q\,\|\,p(z|x))` to 1e-9 relative.

    For random full-covariance q (linear-Gaussian) and random categorical q
    (mixture); lhs/rhs are shown for the first Gaussian q, the difference is
    the worst over all.
    """
    model, x = problem.model, problem.x
    log_px = float(model.log_marginal(x))
    m, S = model.posterior(x)
    gaps, kls = [], []
    for _ in range(n_q):
        q_mean, q_cov = _random_full_q(rng, model.Z)
        gaps.append(log_px - model.elbo(x, q_mean, q_cov))
        kls.append(kl_mvn(q_mean, q_cov, m, S))
    mix, xm = problem.mixture, problem.x_mix
    q_mix = rng.dirichlet(np.full(mix.K, 0.5), size=n_q)
    xs = np.broadcast_to(xm, (n_q, mix.D))
    gap_mix = mix.log_marginal(xs) - mix.elbo(xs, q_mix)
    kl_mix = mix.kl_to_posterior(xs, q_mix)
    err = max(np.max(np.abs(np.subtract(gaps, kls))), np.max(np.abs(gap_mix - kl_mix)))
    tol = REL_TOL * _scale(log_px, mix.log_marginal(xm))
    return IdentityResult(
        name="log p(x) - ELBO(q) = KL(q || p(z|x))",
        source="log p(x,z) = log p(x) + log p(z|x)",
        lhs=gaps[0],
        rhs=kls[0],
        difference=float(err),
        tolerance=tol,
        criterion=f"max |lhs - rhs| <= {tol:.1e} ({2 * n_q} q's)",
        passed=bool(err <= tol),
        details={"n_q_per_family": n_q, "mixture_first_gap": float(gap_mix[0]),
                 "mixture_first_kl": float(kl_mix[0])},
    )


@identity(3)
def elbo_tight_at_posterior(problem: Problem, rng: np.random.Generator) -> IdentityResult:
    """ELBO(q) = log p(x) when q is the exact posterior (both models)."""
    model, x = problem.model, problem.x
    log_px = float(model.log_marginal(x))
    elbo = model.elbo(x, *model.posterior(x))
    mix, xm = problem.mixture, problem.x_mix
    err_mix = float(mix.elbo(xm, mix.responsibilities(xm)) - mix.log_marginal(xm))
    tol = REL_TOL * _scale(log_px)
    diff = elbo - log_px
    return IdentityResult(
        name="ELBO(p(z|x)) = log p(x)",
        source="the gap KL(q || p(z|x)) vanishes at q = p(z|x)",
        lhs=elbo,
        rhs=log_px,
        difference=diff,
        tolerance=tol,
        criterion=f"|lhs - rhs| <= {tol:.1e} (and for the mixture)",
        passed=bool(abs(diff) <= tol and abs(err_mix) <= tol),
        details={"mixture_difference": err_mix},
    )


@identity(4)
def three_forms_of_elbo(problem: Problem, rng: np.random.Generator, n_mc: int = 20000,
               z_tol: float = Z_TOL) -> IdentityResult:
    r"""The three forms of the ELBO agree, for a random full-covariance q.

    (a) :math:`E_q[\log p(x,z)] + H(q)`, with
    :math:`E_q[\log N(z;0,I)] = -\tfrac12(Z\log 2\pi + \mathrm{tr}\,Q + \mu^\top\mu)` and
    :math:`H(q) = \tfrac12\log|2\pi e Q|`;
    (b) :math:`E_q[\log p(x|z)] - \mathrm{KL}(q\|p(z))`;
    (c) :math:`\log p(x) - \mathrm{KL}(q\|p(z|x))`. All three in closed form
    (agreeing to 1e-9 relative), plus a Monte Carlo estimate of (a) from
    ``n_mc`` draws z ~ q, within ``z_tol`` standard errors.
    """
    model, x = problem.model, problem.x
    Z = model.Z
    q_mean, q_cov = _random_full_q(rng, Z)
    e_log_prior = -0.5 * (Z * LOG_2PI + np.trace(q_cov) + q_mean @ q_mean)
    entropy = 0.5 * (Z * (LOG_2PI + 1.0) + np.linalg.slogdet(q_cov)[1])
    form_a = model.expected_log_lik(x, q_mean, q_cov) + e_log_prior + entropy
    form_b = model.expected_log_lik(x, q_mean, q_cov) - kl_mvn(q_mean, q_cov, np.zeros(Z),
                                                               np.eye(Z))
    form_c = float(model.log_marginal(x)) - model.kl_to_posterior(x, q_mean, q_cov)
    z = _sample_full(rng, q_mean, q_cov, n_mc)
    mc, se = _mean_and_stderr(model.log_joint(x, z) - mvn_log_prob(z, q_mean, q_cov))
    err = max(abs(form_a - form_b), abs(form_b - form_c), abs(form_a - form_c))
    tol = REL_TOL * _scale(form_a)
    mc_z = abs(mc - form_a) / se
    return IdentityResult(
        name="E[log p(x,z)]+H(q) = E[log p(x|z)]-KL = log p(x)-KL",
        source="log p(x,z) = log p(x|z)+log p(z) = log p(x)+log p(z|x); KL to p(z), p(z|x)",
        lhs=form_a,
        rhs=form_c,
        difference=form_a - form_c,
        tolerance=tol,
        criterion=f"closed forms agree to {tol:.1e}; MC of (a) within {z_tol:g} stderr",
        passed=bool(err <= tol and mc_z < z_tol),
        details={"form_a": form_a, "form_b": form_b, "form_c": form_c, "mc_form_a": float(mc),
                 "mc_stderr": float(se), "n_mc": n_mc},
    )


# --------------------------------------------------------------------------
# 5, 6: the marginal likelihood, and the ways of getting it wrong
# --------------------------------------------------------------------------


@identity(5)
def jensen_gap(problem: Problem, rng: np.random.Generator, n_mc: int = 20000,
               z_tol: float = Z_TOL) -> IdentityResult:
    r"""Jensen's gap: :math:`E_{p(z)}[\log p(x|z)] < \log p(x)`.

    "Moving the log inside the expectation" gives the ELBO of q = p(z), so
    the gap is exactly :math:`\mathrm{KL}(p(z)\,\|\,p(z|x))` (checked to 1e-9
    relative). lhs is the closed form (checked against ``n_mc`` prior draws).
    """
    model, x = problem.model, problem.x
    Z = model.Z
    log_px = float(model.log_marginal(x))
    inside = model.expected_log_lik(x, np.zeros(Z), np.eye(Z))
    kl = model.kl_to_posterior(x, np.zeros(Z), np.eye(Z))
    mc, se = _mean_and_stderr(model.log_lik(x, rng.standard_normal((n_mc, Z))))
    tol = REL_TOL * _scale(log_px)
    gap = log_px - inside
    return IdentityResult(
        name="E_p(z)[log p(x|z)] < log p(x)",
        source="Jensen: E[log Y] <= log E[Y] (log is concave)",
        lhs=inside,
        rhs=log_px,
        difference=inside - log_px,
        tolerance=tol,
        criterion=f"lhs < rhs; gap = KL(p(z)||p(z|x)) to {tol:.1e}; "
                  f"MC of lhs within {z_tol:g} stderr",
        passed=bool(gap > 0 and abs(gap - kl) <= tol and abs(mc - inside) < z_tol * se),
        details={"jensen_gap_nats": gap, "kl_prior_to_posterior": kl, "mc_lhs": float(mc),
                 "mc_stderr": float(se)},
        summary=[f"Jensen's gap log p(x) - E_p(z)[log p(x|z)] = {gap:.6f} nats "
                 f"= KL(p(z) || p(z|x)) = {kl:.6f}"],
    )


@identity(6)
def naive_estimator_biased_low(problem: Problem, rng: np.random.Generator, ms=(1, 10, 100, 1000),
               reps: int = 500, z_tol: float = Z_TOL) -> IdentityResult:
    r"""The naive estimator :math:`\log\frac1M\sum_m p(x|z_m)`, :math:`z_m\sim p(z)`.

    For each M in ``ms``, ``reps`` independent estimates give its bias
    (mean - log p(x)) and standard deviation; the same for importance sampling
    :math:`\log\frac1M\sum_m p(x,z_m)/q(z_m)` with q the exact posterior with
    covariance inflated by 1.5 (near the posterior, weights bounded).

    lhs is the mean naive estimate at the smallest M (details hold the
    table for every M). Passes when: the bias is never significantly positive (bias < z_tol *
    stderr: biased low, by Jensen), the bias and the spread at the largest M
    are smaller than at the smallest M (consistency), and importance sampling
    has a smaller spread than the naive estimator at every M. (That last
    comparison is only meaningful when the posterior is far from the prior,
    e.g. KL(p(z) || p(z|x)) > 1 nat; if the data barely inform z, sampling
    from the prior is already a good proposal.)
    """
    model, x = problem.model, problem.x
    Z = model.Z
    log_px = float(model.log_marginal(x))
    m, S = model.posterior(x)
    q_cov = 1.5 * S
    rows = []
    for M in ms:
        naive = logmeanexp(model.log_lik(x, rng.standard_normal((reps, M, Z))), axis=1)
        z = _sample_full(rng, m, q_cov, reps * M).reshape(reps, M, Z)
        log_w = model.log_joint(x, z) - mvn_log_prob(z.reshape(-1, Z), m, q_cov).reshape(reps, M)
        is_est = logmeanexp(log_w, axis=1)
        rows.append({"M": int(M), "naive_bias": float(naive.mean() - log_px),
                     "naive_std": float(naive.std(ddof=1)),
                     "naive_bias_stderr": float(naive.std(ddof=1) / np.sqrt(reps)),
                     "is_bias": float(is_est.mean() - log_px), "is_std": float(is_est.std(ddof=1))})
    first, last = rows[0], rows[-1]
    biased_low = all(r["naive_bias"] < z_tol * r["naive_bias_stderr"] for r in rows)
    shrinks = (abs(last["naive_bias"]) < abs(first["naive_bias"])
               and last["naive_std"] < first["naive_std"])
    is_better = all(r["is_std"] < r["naive_std"] for r in rows)
    lhs = log_px + first["naive_bias"]
    return IdentityResult(
        name="naive log mean_m p(x|z_m), z_m ~ p(z): biased low",
        source="Jensen for finite M; law of large numbers as M grows",
        lhs=lhs,
        rhs=log_px,
        difference=lhs - log_px,
        tolerance=z_tol,
        criterion="bias <= 0 (within stderr), |bias| and std shrink with M, IS std < naive std",
        passed=bool(biased_low and shrinks and is_better),
        details={"table": rows, "reps": reps, "importance_q": "N(m, 1.5 S), (m, S) = p(z|x)",
                 "biased_low": biased_low, "shrinks": shrinks, "is_lower_variance": is_better},
        summary=[f"log p(x) estimators, {reps} repeats each (bias = mean - log p(x), nats; "
                 f"IS proposal N(m, 1.5 S), (m, S) = p(z|x))",
                 f"{'M':>6} {'naive bias':>11} {'(stderr)':>9} {'naive std':>10} "
                 f"{'IS bias':>10} {'IS std':>9}"]
        + [f"{r['M']:>6} {r['naive_bias']:>+11.4f} "
           f"{'(' + format(r['naive_bias_stderr'], '.4f') + ')':>9} {r['naive_std']:>10.4f} "
           f"{r['is_bias']:>+10.4f} {r['is_std']:>9.4f}" for r in rows],
    )


# --------------------------------------------------------------------------
# 7, 8: gradients of log p(x) with respect to the model
# --------------------------------------------------------------------------


def _flat_ab(grad: dict[str, np.ndarray]) -> np.ndarray:
    """Concatenate the A and b gradients (leading axes kept) into one vector per sample."""
    lead = grad["b"].shape[:-1]
    return np.concatenate([grad["A"].reshape(*lead, -1), grad["b"]], axis=-1)


@identity(7)
def fisher_identity(problem: Problem, rng: np.random.Generator, n_mc: int = 20000,
               z_tol: float = Z_TOL) -> IdentityResult:
    r"""Fisher's identity :math:`\nabla_\theta\log p(x) = E_{p(z|x)}[\nabla_\theta\log p(x|z)]`,
    :math:`\theta = (A, b)`.

    The right side is averaged over ``n_mc`` exact posterior draws; every
    component must be within ``z_tol`` standard errors of the exact gradient.
    lhs/rhs are the Euclidean norms of the exact and Monte Carlo gradients.
    """
    model, x = problem.model, problem.x
    exact = _flat_ab(model.log_marginal_grad(x))
    m, S = model.posterior(x)
    per_sample = _flat_ab(model.log_lik_grad(x, _sample_full(rng, m, S, n_mc)))
    mean, se = _mean_and_stderr(per_sample)
    z = _max_z(mean, exact, se)
    return IdentityResult(
        name="grad log p(x) = E_p(z|x)[grad log p(x|z)]  (Fisher)",
        source="grad p(x) = integral of p(z) grad p(x|z); divide by p(x)",
        lhs=float(np.linalg.norm(exact)),
        rhs=float(np.linalg.norm(mean)),
        difference=float(np.max(np.abs(exact - mean))),
        tolerance=z_tol,
        criterion=f"every component within {z_tol:g} stderr (sides shown as norms ||.||)",
        passed=bool(z < z_tol),
        details={"max_z_score": z, "n_components": int(exact.size), "n_mc": n_mc},
    )


@identity(8)
def elbo_gradient_at_posterior(problem: Problem, rng: np.random.Generator) -> IdentityResult:
    r""":math:`\nabla_\theta\mathrm{ELBO}(q) = \nabla_\theta\log p(x)` at q = p(z|x) (q held fixed).

    Both sides in closed form, :math:`\theta=(A, b)`, to 1e-9 relative. For
    contrast, details give the gradient error at the mean-field q, where the
    two differ.
    """
    model, x = problem.model, problem.x
    exact = _flat_ab(model.log_marginal_grad(x))
    m, S = model.posterior(x)
    at_post = _flat_ab(model.elbo_grad_model(x, m, S))
    mu, log_var = model.best_mean_field(x)
    at_mf = _flat_ab(model.elbo_grad_model(x, mu, np.diag(np.exp(log_var))))
    err = float(np.max(np.abs(at_post - exact)))
    tol = REL_TOL * _scale(np.max(np.abs(exact)))
    return IdentityResult(
        name="grad_theta ELBO(p(z|x)) = grad_theta log p(x)",
        source="ELBO = log p(x) - KL, and KL has a zero gradient at its minimum",
        lhs=float(np.linalg.norm(at_post)),
        rhs=float(np.linalg.norm(exact)),
        difference=err,
        tolerance=tol,
        criterion=f"max |lhs_i - rhs_i| <= {tol:.1e} (sides shown as norms ||.||)",
        passed=bool(err <= tol),
        details={"max_error_at_mean_field_q": float(np.max(np.abs(at_mf - exact)))},
        summary=[f"for contrast, at the mean-field q the ELBO's gradient misses grad log p(x) "
                 f"by up to {float(np.max(np.abs(at_mf - exact))):.4f}"],
    )


# --------------------------------------------------------------------------
# 9: what mean-field q converges to
# --------------------------------------------------------------------------


def mean_field_ascent(model: LinearGaussian, x, max_steps: int = 200000,
                      grad_tol: float = 1e-12, trace: Callable | None = None):
    r"""Gradient ascent on the closed-form ELBO over a diagonal q, from q = p(z) = N(0, I).

    Steps of :math:`1/\lambda_{max}(\Lambda)` along :meth:`LinearGaussian.elbo_diag_grad`
    until every component of the gradient is below ``grad_tol``. ``trace(n, mu, log_var)``,
    if given, is called before step n (n = 0 is the start). Returns ``(mu, log_var, n)``,
    n the number of gradients evaluated.
    """
    Z = model.Z
    mu, log_var = np.zeros(Z), np.zeros(Z)
    # The Hessian in mu is -Lambda, so 1/lambda_max is a safe step (and safe for log_var,
    # whose curvature is 0.5 * exp(v) Lambda_jj <= lambda_max while exp(v) <= 1).
    step = 1.0 / max(1.0, float(np.linalg.eigvalsh(model.posterior_precision)[-1]))
    n = 0
    for n in range(1, max_steps + 1):  # noqa: B007 - n is returned
        if trace is not None:
            trace(n - 1, mu, log_var)
        d_mu, d_log_var = model.elbo_diag_grad(x, mu, log_var)
        if max(np.max(np.abs(d_mu)), np.max(np.abs(d_log_var))) < grad_tol:
            break
        mu = mu + step * d_mu
        log_var = log_var + step * d_log_var
    return mu, log_var, n


@identity(9)
def mean_field_optimum(problem: Problem, rng: np.random.Generator, max_steps: int = 200000,
               grad_tol: float = 1e-12) -> IdentityResult:
    r"""Gradient ascent on the closed-form ELBO over a diagonal q reaches the mean-field optimum.

    Starting from q = N(0, I), ascend with the exact gradient
    (:meth:`LinearGaussian.elbo_diag_grad`) at step :math:`1/\lambda_{max}(\Lambda)`
    until the gradient is below ``grad_tol``; compare with
    :math:`\mu = m`, :math:`\sigma_j^2 = 1/\Lambda_{jj}`. lhs/rhs are the
    converged and predicted :math:`\sigma_1^2`; the difference is the largest
    error over all means and log-variances.
    """
    model, x = problem.model, problem.x
    mu, log_var, n = mean_field_ascent(model, x, max_steps, grad_tol)
    mu_star, log_var_star = model.best_mean_field(x)
    err = float(max(np.max(np.abs(mu - mu_star)), np.max(np.abs(log_var - log_var_star))))
    tol = 1e-9
    _, S = model.posterior(x)
    return IdentityResult(
        name="argmax over diagonal q: mean = m, var_j = 1/Lambda_jj",
        source="stationary point of the closed-form ELBO (mean-field, Bishop 10.1.2)",
        lhs=float(np.exp(log_var[0])),
        rhs=float(np.exp(log_var_star[0])),
        difference=err,
        tolerance=tol,
        criterion=f"max error in mu, log_var <= {tol:.0e} (sides shown: var_1)",
        passed=bool(err <= tol),
        details={"steps": n, "mean_field_var": np.exp(log_var_star), "posterior_var": np.diag(S),
                 "elbo_at_mean_field": float(model.elbo_diag(x, mu, log_var)),
                 "log_px": float(model.log_marginal(x))},
        summary=[f"mean-field variances [{', '.join(f'{v:.4f}' for v in np.exp(log_var_star))}]"
                 f" < posterior marginal variances "
                 f"[{', '.join(f'{v:.4f}' for v in np.diag(S))}] ({n} ascent steps)"],
    )


# --------------------------------------------------------------------------
# 10: the marginal likelihood by sampling the prior
# --------------------------------------------------------------------------


@identity(10)
def prior_sampling_marginal(problem: Problem, rng: np.random.Generator, n_mc: int = 200000,
                z_tol: float = Z_TOL) -> IdentityResult:
    r"""Monte Carlo :math:`\hat p(x) = \frac1M\sum_m p(x|z_m)`, :math:`z_m\sim p(z)`, agrees with
    :math:`N(x; b, AA^\top+\Sigma)` within ``z_tol`` standard errors.

    Computed as :math:`\hat p(x)/p(x) = \text{mean}_m \exp(\log p(x|z_m) - \log p(x))`
    (no underflow); lhs is :math:`\log\hat p(x)`.
    """
    model, x = problem.model, problem.x
    log_px = float(model.log_marginal(x))
    ratio = np.exp(model.log_lik(x, rng.standard_normal((n_mc, model.Z))) - log_px)
    mean, se = _mean_and_stderr(ratio)
    lhs = log_px + float(np.log(mean))
    return IdentityResult(
        name="mean_m p(x|z_m), z_m ~ p(z)  ~=  N(x; b, AA^T + Sigma)",
        source="p(x) = E_p(z)[p(x|z)]; the marginal of a linear-Gaussian model",
        lhs=lhs,
        rhs=log_px,
        difference=lhs - log_px,
        tolerance=z_tol,
        criterion=f"|p_hat/p - 1| < {z_tol:g} stderr",
        passed=bool(abs(mean - 1.0) < z_tol * se),
        details={"p_hat_over_p": float(mean), "relative_stderr": float(se), "n_mc": n_mc,
                 "z_score": float(abs(mean - 1.0) / se)},
    )


# --------------------------------------------------------------------------
# 11, 12: the importance-weighted bound; two gradient estimators
# --------------------------------------------------------------------------


@identity(11)
def iwae_bounds(problem: Problem, rng: np.random.Generator, ks=(1, 10, 100, 1000),
                reps: int = 200, z_tol: float = Z_TOL) -> IdentityResult:
    r"""The importance-weighted bound :math:`L_K = E[\log\frac1K\sum_k p(x,z_k)/q(z_k)]`
    is non-decreasing in K and approaches log p(x) (Burda et al. 2015).

    q is a diagonal Gaussian near the posterior (:func:`_overdispersed_diag_q`).
    Each :math:`L_K` is the mean of ``reps * max(ks) // K`` independent estimates
    (the same number of samples of z for every K, so small K are measured
    precisely too). Passes
    when: :math:`\hat L_1` matches the closed-form ELBO, each
    :math:`\hat L_{K'} - \hat L_K > -z_{tol}\,\mathrm{se}`, every
    :math:`\hat L_K < \log p(x) + z_{tol}\,\mathrm{se}`, and the gap at the
    largest K is under a tenth of the gap at K = 1.
    """
    model, x = problem.model, problem.x
    Z = model.Z
    log_px = float(model.log_marginal(x))
    mu, log_var = _overdispersed_diag_q(model, x)
    sd = np.exp(0.5 * log_var)
    elbo = float(model.elbo_diag(x, mu, log_var))
    rows = []
    for K in ks:
        eps = rng.standard_normal((max(reps, reps * max(ks) // K), K, Z))
        z = mu + sd * eps
        # log q(z) at z = mu + sd*eps is -0.5 sum_j (log 2pi + log_var_j + eps_j^2)
        log_q = -0.5 * np.sum(LOG_2PI + log_var + eps * eps, axis=-1)
        est = logmeanexp(model.log_joint(x, z) - log_q, axis=1)
        mean, se = _mean_and_stderr(est)
        rows.append({"K": int(K), "L_K": float(mean), "stderr": float(se),
                     "gap_to_log_px": float(log_px - mean)})
    ok_l1 = abs(rows[0]["L_K"] - elbo) < z_tol * rows[0]["stderr"]
    ok_mono = all(b["L_K"] - a["L_K"] > -z_tol * np.hypot(a["stderr"], b["stderr"])
                  for a, b in zip(rows[:-1], rows[1:], strict=True))
    ok_bound = all(r["L_K"] < log_px + z_tol * r["stderr"] for r in rows)
    ok_limit = rows[-1]["gap_to_log_px"] < 0.1 * (log_px - elbo) + z_tol * rows[-1]["stderr"]
    return IdentityResult(
        name="ELBO = L_1 <= L_K <= L_K' <= log p(x), L_K -> log p(x)",
        source="Burda et al. 2015: Jensen on an average of K importance weights",
        lhs=rows[-1]["L_K"],
        rhs=log_px,
        difference=rows[-1]["L_K"] - log_px,
        tolerance=z_tol,
        criterion=f"L_1 = ELBO, non-decreasing, below log p(x) (all within {z_tol:g} stderr)",
        passed=bool(ok_l1 and ok_mono and ok_bound and ok_limit),
        details={"table": rows, "closed_form_elbo": elbo, "reps": reps, "L1_matches_elbo": ok_l1,
                 "non_decreasing": ok_mono, "below_log_px": ok_bound,
                 "approaches_log_px": ok_limit},
        summary=[f"importance-weighted bounds ({reps} repeats at the largest K, the same number "
                 f"of z samples at every K; closed-form ELBO {elbo:.4f}, log p(x) {log_px:.4f})",
                 f"{'K':>6} {'L_K':>10} {'stderr':>8} {'log p(x) - L_K':>15}"]
        + [f"{r['K']:>6} {r['L_K']:>10.4f} {r['stderr']:>8.4f} {r['gap_to_log_px']:>15.4f}"
           for r in rows],
    )


@identity(12)
def gradient_estimators_unbiased(problem: Problem, rng: np.random.Generator, n_mc: int = 20000,
                z_tol: float = Z_TOL) -> IdentityResult:
    r"""Reparameterized and score-function estimators of :math:`\nabla_\phi\mathrm{ELBO}`
    both average to the exact gradient of the closed-form ELBO.

    q = N(mu, diag(exp(log_var))), :math:`\phi = (\mu, v)`, ELBO =
    :math:`E_q[f(z)] + H(q)` with :math:`f(z) = \log p(x, z)` and
    :math:`\nabla_v H = \tfrac12`. Per sample, with :math:`z = \mu + \sigma\epsilon`:

    * pathwise: :math:`(\nabla_z f,\ \nabla_z f\odot\tfrac12\sigma\epsilon)`;
    * score function: :math:`f(z)\,(\epsilon/\sigma,\ \tfrac12(\epsilon^2 - 1))`
      (no baseline, to show its raw variance).

    Each estimator's mean over ``n_mc`` samples must be within ``z_tol``
    standard errors of :meth:`LinearGaussian.elbo_diag_grad` in every component.
    Details report the total per-sample variance of each and their ratio.
    """
    model, x = problem.model, problem.x
    mu, log_var = _overdispersed_diag_q(model, x)
    sigma = np.exp(0.5 * log_var)
    eps = rng.standard_normal((n_mc, model.Z))
    z = mu + sigma * eps
    g_z = model.log_joint_grad_z(x, z)
    f = model.log_joint(x, z)[:, None]
    reparam = np.concatenate([g_z, g_z * 0.5 * sigma * eps + 0.5], axis=1)
    score = np.concatenate([f * eps / sigma, f * 0.5 * (eps * eps - 1.0) + 0.5], axis=1)
    exact = np.concatenate(model.elbo_diag_grad(x, mu, log_var))
    mean_r, se_r = _mean_and_stderr(reparam)
    mean_s, se_s = _mean_and_stderr(score)
    z_r, z_s = _max_z(mean_r, exact, se_r), _max_z(mean_s, exact, se_s)
    var_r = float(np.sum(reparam.var(axis=0, ddof=1)))
    var_s = float(np.sum(score.var(axis=0, ddof=1)))
    return IdentityResult(
        name="E[reparam grad] = E[score-fn grad] = grad_phi ELBO",
        source="grad E_q[f] = E[grad_z f dz/dphi] = E_q[f grad log q]",
        lhs=float(np.linalg.norm(mean_r)),
        rhs=float(np.linalg.norm(exact)),
        difference=float(np.max(np.abs(mean_r - exact))),
        tolerance=z_tol,
        criterion=f"both within {z_tol:g} stderr per component "
                  f"(shown: ||reparam mean||, ||exact||)",
        passed=bool(max(z_r, z_s) < z_tol),
        details={"exact_grad": exact, "reparam_mean": mean_r, "score_mean": mean_s,
                 "reparam_max_z": z_r, "score_max_z": z_s, "reparam_variance": var_r,
                 "score_variance": var_s, "variance_ratio_score_over_reparam": var_s / var_r,
                 "n_mc": n_mc},
        summary=[f"per-sample variance of grad ELBO (summed over mu, log_var): reparameterized "
                 f"{var_r:.3f}, score function {var_s:.3f}, ratio {var_s / var_r:.1f} "
                 f"({n_mc} samples)"],
    )


def run_all(seed: int = 0, numbers=None) -> list[IdentityResult]:
    """Run the identities (all, or those in ``numbers``) on :func:`default_problem`.

    Each identity gets its own Generator seeded by (seed, number), so the
    result of one does not depend on which others ran.
    """
    numbers = sorted(IDENTITIES) if numbers is None else list(numbers)
    unknown = [n for n in numbers if n not in IDENTITIES]
    if unknown:
        raise ValueError(f"identity numbers must be in 1..{len(IDENTITIES)}, got {unknown}")
    problem = default_problem(seed)
    return [IDENTITIES[n](problem, np.random.default_rng([seed, n])) for n in numbers]
