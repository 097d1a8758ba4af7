r"""Identities 13-17: the questions people ask about the ELBO, answered with numbers.

13. *Which KL, KL(q||p) or KL(p||q)?* (:func:`kl_direction`)
14. *Does the ELBO pull q toward the prior or toward the posterior?* (:func:`prior_or_posterior`)
15. *ELBO surgery*: the average KL term is a mutual information plus a marginal KL
    (:func:`elbo_surgery`).
16. *Sticking the landing*: the path-derivative gradient, unbiased, zero variance at the
    posterior (:func:`sticking_the_landing`).
17. *IWAE's signal-to-noise, and DReG* (:func:`iwae_snr_and_dreg`).

They are registered in :data:`minivae.theory.identities.IDENTITIES` like identities 1-12,
and checked the same way: closed forms to 1e-9 relative, Monte Carlo within ``z_tol``
standard errors, noise from the explicit ``rng``. Each result's ``summary`` answers its
question in words with the numbers, and its ``details`` carry every number its picture
(:mod:`minivae.theory.plots`) is drawn from.

Notation as in :mod:`minivae.theory.exact`: the model is :math:`p(z) = N(0, I)`,
:math:`p(x|z) = N(Az + b, \Sigma)`, its posterior :math:`p(z|x) = N(m, S)` with precision
:math:`\Lambda = S^{-1} = I + A^\top\Sigma^{-1}A`; a diagonal q is
:math:`N(\mu, \mathrm{diag}(e^{v}))`, :math:`\sigma = e^{v/2}`.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from ..distributions import kl_mvn
from ..numerics import LOG_2PI, logsumexp
from .exact import LinearGaussian
from .identities import (
    REL_TOL,
    Z_TOL,
    IdentityResult,
    Problem,
    _max_z,
    _mean_and_stderr,
    _scale,
    identity,
    mean_field_ascent,
)

# --------------------------------------------------------------------------
# A minimizer accurate to the gradient's precision (scipy.optimize would cost
# every `python -m minivae` command about 0.3 s of import time)
# --------------------------------------------------------------------------


def minimize(fun, grad, x0, grad_tol: float = 1e-11, max_iter: int = 200):
    r"""Minimize a smooth function of a few variables from ``x0`` by damped Newton steps.

    Each step solves :math:`H\,s = -g` with H the central-difference Jacobian of the exact
    gradient g, shifted by a multiple of I where it is not positive definite (a plain
    Newton step there can point downhill and still be huge: the forward KL to a bimodal
    target, started at N(0, 1), was sent 18 units away and never came back), then halves
    s until f decreases (Armijo). Near the minimum f stops resolving the decrease (a change of
    :math:`|g|^2/H` drowns in the roundoff of f), so a step that leaves f unchanged to
    roundoff but shrinks :math:`|g|` is also accepted: the answer is then accurate to about
    ``grad_tol``/curvature, not :math:`\sqrt{\epsilon}` as with function values alone.
    Returns ``(x, max |grad(x)|)``.
    """
    x = np.array(x0, dtype=float)
    f, g = fun(x), grad(x)
    for _ in range(max_iter):
        if np.max(np.abs(g)) < grad_tol:
            break
        h = 1e-5 * np.maximum(1.0, np.abs(x))
        H = np.array([(grad(x + hi * e) - grad(x - hi * e)) / (2 * hi)
                      for hi, e in zip(h, np.eye(x.size), strict=True)])
        H = 0.5 * (H + H.T)
        lowest = np.linalg.eigvalsh(H)[0] if np.all(np.isfinite(H)) else -np.inf
        if not lowest > 0:  # shift until positive definite (or, failing that, go downhill)
            shift = -lowest + 1e-3 * max(1.0, float(np.max(np.abs(np.diag(H)))))
            H = H + shift * np.eye(x.size) if np.isfinite(shift) else np.eye(x.size)
        try:
            s = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            s = -g
        if g @ s >= 0:  # not a descent direction (roundoff in H)
            s = -g
        t = 1.0
        while t > 1e-12:
            x_new = x + t * s
            with np.errstate(over="ignore", invalid="ignore"):  # a long trial step may overflow
                f_new, g_new = fun(x_new), grad(x_new)
            roundoff = 64 * np.finfo(float).eps * max(1.0, abs(f))
            if np.isfinite(f_new) and (f_new <= f + 1e-4 * t * (g @ s) or (
                    f_new <= f + roundoff and np.max(np.abs(g_new)) < np.max(np.abs(g)))):
                break
            t *= 0.5
        x, f, g = x_new, f_new, g_new
    return x, float(np.max(np.abs(g)))


def _logdet(M: np.ndarray) -> float:
    return float(np.linalg.slogdet(M)[1])


# --------------------------------------------------------------------------
# 13: which KL direction?
# --------------------------------------------------------------------------


def reverse_kl_diag(mu, log_var, m, precision):
    r""":math:`\mathrm{KL}(N(\mu, \mathrm{diag}\,e^{v})\,\|\,N(m, \Lambda^{-1}))` and its
    gradient in :math:`(\mu, v)`.

    .. math::  \tfrac12\big[\textstyle\sum_j\Lambda_{jj}e^{v_j} + (\mu-m)^\top\Lambda(\mu-m)
               - Z - \sum_j v_j - \log|\Lambda|\big]

    Zero gradient at :math:`\mu = m`, :math:`e^{v_j} = 1/\Lambda_{jj}`.
    """
    d = mu - m
    lam = np.diag(precision)
    value = 0.5 * (lam @ np.exp(log_var) + d @ precision @ d - len(mu) - np.sum(log_var)
                   - _logdet(precision))
    return value, np.concatenate([precision @ d, 0.5 * (lam * np.exp(log_var) - 1.0)])


def forward_kl_diag(mu, log_var, m, cov):
    r""":math:`\mathrm{KL}(N(m, \Sigma)\,\|\,N(\mu, \mathrm{diag}\,e^{v}))` and its gradient.

    .. math::  \tfrac12\big[\textstyle\sum_j(\Sigma_{jj} + (m_j-\mu_j)^2)e^{-v_j}
               + \sum_j v_j - Z - \log|\Sigma|\big]

    Zero gradient at :math:`\mu = m`, :math:`e^{v_j} = \Sigma_{jj}` (moment matching).
    """
    d = m - mu
    second = np.diag(cov) + d * d
    inv = np.exp(-log_var)
    value = 0.5 * (second @ inv + np.sum(log_var) - len(mu) - _logdet(cov))
    return value, np.concatenate([-d * inv, 0.5 * (1.0 - second * inv)])


def bimodal_target(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random two-component 1-D Gaussian mixture with well separated modes: weights in
    [0.35, 0.65], standard deviations in [0.5, 1], means 7 to 9 of the larger sd apart (far
    enough that q on either mode has a lower KL(q||p) than the moment-matched q, whose
    mass in the gap costs more than the -log(weight) of missing a mode)."""
    w = rng.uniform(0.35, 0.65)
    sds = rng.uniform(0.5, 1.0, 2)
    gap = rng.uniform(7.0, 9.0) * sds.max()
    means = rng.normal() + gap * np.array([-0.5, 0.5])
    return {"weights": np.array([w, 1.0 - w]), "means": means, "sds": sds}


def mixture_moments(weights, means, sds) -> tuple[float, float]:
    r"""Mean and variance of a 1-D Gaussian mixture: :math:`\bar a = \sum_c\pi_c a_c`,
    :math:`\sum_c\pi_c(s_c^2 + a_c^2) - \bar a^2` (within- plus between-component spread)."""
    mean = float(weights @ means)
    return mean, float(weights @ (sds**2 + means**2) - mean**2)


def mixture_log_density(z, weights, means, sds) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`\log p(z) = \mathrm{logsumexp}_c[\log\pi_c + \log N(z; a_c, s_c^2)]` and
    :math:`d\log p/dz = -\sum_c r_c(z)(z - a_c)/s_c^2` (r the responsibilities)."""
    u = (np.asarray(z)[..., None] - means) / sds
    comps = np.log(weights) - 0.5 * (LOG_2PI + 2 * np.log(sds) + u * u)
    log_p = logsumexp(comps, axis=-1)
    resp = np.exp(comps - log_p[..., None])
    return log_p, np.sum(resp * (-u / sds), axis=-1)


def _gaussian_1d_log_prob(z, mu, log_var):
    return -0.5 * (LOG_2PI + log_var + (z - mu) ** 2 * np.exp(-log_var))


class _BimodalKL:
    r"""Both KLs between a 1-D Gaussian q = N(mu, e^v) and a mixture p, by Gauss-Hermite
    quadrature (``n`` nodes): :math:`E_{N(a, s^2)}[f] \approx \sum_i\omega_i f(a + s t_i)`.

    * forward, :math:`\mathrm{KL}(p\|q) = \sum_c\pi_c E_{N(a_c, s_c^2)}[\log p - \log q]`:
      nodes on each component, exact for the quadratic :math:`\log q`;
    * reverse, :math:`\mathrm{KL}(q\|p) = E_q[\log q - \log p]`: nodes on q.
    """

    def __init__(self, target: dict[str, np.ndarray], n: int = 80):
        self.t = target
        nodes, w = hermegauss(n)
        self.nodes, self.w = nodes, w / np.sqrt(2 * np.pi)
        self.z_p = target["means"][:, None] + target["sds"][:, None] * nodes  # (2, n)
        self.w_p = target["weights"][:, None] * self.w
        self.log_p_at_p = mixture_log_density(self.z_p, **target)[0]

    def forward(self, params):
        mu, v = params
        d = self.z_p - mu
        value = np.sum(self.w_p * (self.log_p_at_p - _gaussian_1d_log_prob(self.z_p, mu, v)))
        grad = [-np.sum(self.w_p * d) * np.exp(-v),
                0.5 - 0.5 * np.sum(self.w_p * d * d) * np.exp(-v)]
        return float(value), np.array(grad)

    def reverse(self, params):
        mu, v = params
        sd = np.exp(0.5 * v)
        z = mu + sd * self.nodes
        log_p, dlog_p = mixture_log_density(z, **self.t)
        value = np.sum(self.w * (_gaussian_1d_log_prob(z, mu, v) - log_p))
        grad = [-np.sum(self.w * dlog_p), -0.5 - np.sum(self.w * dlog_p * 0.5 * sd * self.nodes)]
        return float(value), np.array(grad)


@identity(13)
def kl_direction(problem: Problem, rng: np.random.Generator, n_quad: int = 80) -> IdentityResult:
    r"""Which KL? The diagonal-Gaussian minimizers of KL(q||p) and KL(p||q), found numerically.

    *Gaussian target* :math:`p = N(m, S)`, the posterior of the problem's model (precision
    :math:`\Lambda`). Starting from q = N(0, I), :func:`minimize` finds

    * argmin KL(q||p) (the direction in the ELBO): :math:`\mu = m`,
      :math:`\sigma_j^2 = 1/\Lambda_{jj}`;
    * argmin KL(p||q): :math:`\mu = m`, :math:`\sigma_j^2 = S_{jj}` (moment matching);

    both to 1e-9 relative, and :math:`1/\Lambda_{jj}\le S_{jj}` (equal only when
    dimension j is uncorrelated with the others): KL(q||p) fits the conditional widths.

    *Bimodal target*: a 1-D two-component mixture (:func:`bimodal_target`), KLs by
    quadrature. argmin KL(p||q) is the mixture's mean and variance
    (:func:`mixture_moments`) to 1e-9; argmin KL(q||p), started outside each mode, lands on
    that mode (nearer to it than to the other), the two optima differ, and each has a
    lower KL(q||p) than the moment-matched q. lhs/rhs: the numerical and closed-form
    :math:`\sigma_1^2` of argmin KL(q||p); difference: the largest error of the four
    closed-form optima (means and log-variances, relative to ``max(1, |value|)``).
    """
    model, x = problem.model, problem.x
    Z = model.Z
    m, S = model.posterior(x)
    lam = model.posterior_precision
    zeros = np.zeros(2 * Z)

    def split(p):
        return p[:Z], p[Z:]

    rev, _ = minimize(lambda p: reverse_kl_diag(*split(p), m, lam)[0],
                      lambda p: reverse_kl_diag(*split(p), m, lam)[1], zeros)
    fwd, _ = minimize(lambda p: forward_kl_diag(*split(p), m, S)[0],
                      lambda p: forward_kl_diag(*split(p), m, S)[1], zeros)
    rev_closed = np.concatenate([m, -np.log(np.diag(lam))])
    fwd_closed = np.concatenate([m, np.log(np.diag(S))])

    def rel_err(found, closed):
        return float(np.max(np.abs(found - closed)) / _scale(*closed))

    kls = {name: {"reverse_kl": reverse_kl_diag(*split(p), m, lam)[0],
                  "forward_kl": forward_kl_diag(*split(p), m, S)[0]}
           for name, p in (("reverse_optimum", rev), ("forward_optimum", fwd))}
    corr = S / np.sqrt(np.outer(np.diag(S), np.diag(S)))
    max_corr = float(np.max(np.abs(corr - np.eye(Z)))) if Z > 1 else 0.0

    # the bimodal target
    target = bimodal_target(rng)
    kl = _BimodalKL(target, n_quad)
    mm_mean, mm_var = mixture_moments(**target)
    fwd_bi, fwd_bi_grad = minimize(lambda p: kl.forward(p)[0], lambda p: kl.forward(p)[1],
                                   [0.0, 0.0])
    fwd_bi_closed = np.array([mm_mean, np.log(mm_var)])
    kl_rev_mm = kl.reverse(fwd_bi_closed)[0]
    centre = mm_mean
    optima = []
    for a in target["means"]:
        start = np.array([a + 0.5 * (a - centre), 0.0])  # outside the mode, sd 1
        p, g = minimize(lambda p: kl.reverse(p)[0], lambda p: kl.reverse(p)[1], start)
        optima.append({"start_mean": float(start[0]), "mean": float(p[0]),
                       "var": float(np.exp(p[1])), "reverse_kl": kl.reverse(p)[0],
                       "forward_kl": kl.forward(p)[0], "max_grad": g,
                       "nearest_mode": float(target["means"][np.argmin(np.abs(
                           target["means"] - p[0]))])})
    modes_ok = all(o["nearest_mode"] == a for o, a in zip(optima, target["means"], strict=True))
    lower_ok = all(o["reverse_kl"] < kl_rev_mm for o in optima)
    stationary = all(o["max_grad"] < 1e-8 for o in optima) and fwd_bi_grad < 1e-8

    errors = {"reverse_gaussian": rel_err(rev, rev_closed),
              "forward_gaussian": rel_err(fwd, fwd_closed),
              "forward_bimodal": rel_err(fwd_bi, fwd_bi_closed)}
    worst = max(errors.values())
    narrower = bool(np.all(1.0 / np.diag(lam) <= np.diag(S) * (1 + 1e-12)))
    var_rev, var_fwd = np.exp(rev[Z:]), np.exp(fwd[Z:])
    o1, o2 = optima

    def vec(v):
        return "[" + ", ".join(f"{a:.4f}" for a in v) + "]"

    return IdentityResult(
        name="argmin KL(q||p): var 1/Lambda_jj; KL(p||q): Sigma_jj",
        source="stationary points of both KLs over diagonal q; mixtures by quadrature",
        lhs=float(var_rev[0]),
        rhs=float(1.0 / lam[0, 0]),
        difference=worst,
        tolerance=REL_TOL,
        criterion=f"optima = closed forms to {REL_TOL:.0e}; 1/Lambda_jj <= Sigma_jj; "
                  f"reverse KL picks a mode (sides: var_1)",
        passed=bool(worst <= REL_TOL and narrower and modes_ok and lower_ok and stationary),
        details={"target_mean": m, "target_cov": S, "target_precision": lam,
                 "max_abs_correlation": max_corr,
                 "reverse_q_mean": rev[:Z], "reverse_q_var": var_rev,
                 "forward_q_mean": fwd[:Z], "forward_q_var": var_fwd,
                 "closed_form_reverse_var": 1.0 / np.diag(lam),
                 "closed_form_forward_var": np.diag(S), "kls": kls, "errors": errors,
                 "reverse_narrower": narrower,
                 "bimodal": {**target, "quadrature_nodes": n_quad,
                             "forward_q_mean": float(fwd_bi[0]),
                             "forward_q_var": float(np.exp(fwd_bi[1])),
                             "mixture_mean": mm_mean, "mixture_var": mm_var,
                             "reverse_kl_at_forward_optimum": kl_rev_mm,
                             "forward_kl_at_forward_optimum": kl.forward(fwd_bi)[0],
                             "reverse_optima": optima, "each_on_its_mode": modes_ok,
                             "modes_beat_moment_matching": lower_ok}},
        summary=[
            "Which KL? The ELBO minimizes KL(q || p). On a Gaussian target (correlation "
            f"{max_corr:.2f}) the best diagonal q's are:",
            f"  argmin KL(q || p): variances {vec(var_rev)} = 1/Lambda_jj, narrower than the "
            f"target's {vec(np.diag(S))} (too sure where dimensions are correlated);",
            f"  argmin KL(p || q): variances {vec(var_fwd)} = Sigma_jj (moment matching). Each "
            f"wins its own direction: KL(q||p) {kls['reverse_optimum']['reverse_kl']:.4f} vs "
            f"{kls['forward_optimum']['reverse_kl']:.4f}, KL(p||q) "
            f"{kls['forward_optimum']['forward_kl']:.4f} vs "
            f"{kls['reverse_optimum']['forward_kl']:.4f} nats.",
            f"Bimodal target (modes at {target['means'][0]:+.2f} and {target['means'][1]:+.2f}):"
            f" argmin KL(p || q) = mean {fwd_bi[0]:+.4f}, variance {np.exp(fwd_bi[1]):.4f}, "
            f"the mixture's own, covering both modes and the gap (KL(q||p) there "
            f"{kl_rev_mm:.3f} nats);",
            f"  argmin KL(q || p) from two starts picks one mode: mean {o1['mean']:+.3f}, var "
            f"{o1['var']:.3f} ({o1['reverse_kl']:.3f} nats) or mean {o2['mean']:+.3f}, var "
            f"{o2['var']:.3f} ({o2['reverse_kl']:.3f} nats).",
            "So KL(q || p), the ELBO's direction, is mode-seeking and under-covers; "
            "KL(p || q) is mass-covering and over-covers.",
        ],
    )


# --------------------------------------------------------------------------
# 14: prior or posterior?
# --------------------------------------------------------------------------


def _record_steps(max_steps: int, n: int = 120) -> set[int]:
    """About n step numbers, evenly spread on a log scale from 0 to max_steps."""
    return {0, *np.unique(np.geomspace(1, max_steps, n).astype(int)).tolist()}


@identity(14)
def prior_or_posterior(problem: Problem, rng: np.random.Generator, max_steps: int = 100000,
                       grad_tol: float = 1e-12) -> IdentityResult:
    r"""Maximizing the ELBO over q (model fixed) takes q from the prior to the posterior.

    Gradient ascent on the closed-form ELBO from q = p(z) = N(0, I):

    * full-covariance q = N(mu, LL^T) (L lower triangular), with
      :math:`\partial/\partial L = 2\,(\partial\mathrm{ELBO}/\partial Q)\,L` from
      :meth:`LinearGaussian.elbo_grad`, step :math:`1/(2\lambda_{max}(\Lambda))`:
      KL(q || p(z|x)) falls to 0 and KL(q || p(z)) rises to KL(p(z|x) || p(z)), both to 1e-9
      relative;
    * diagonal q (:func:`~minivae.theory.identities.mean_field_ascent`): KL(q || p(z|x)) falls
      to the mean-field gap KL(q_mf || p(z|x)) of the closed-form optimum q_mf.

    Along both paths KL(q || p(z|x)) = log p(x) - ELBO never rises (beyond 1e-12
    relative). The KL to the prior at the optimum is not 0 (unless x says nothing about
    z): the ELBO's KL(q || p(z)) term is a cost the optimum pays, not where q goes.
    lhs/rhs: KL(q || p(z)) at the end of the full-covariance ascent, KL(p(z|x) || p(z)).
    """
    model, x = problem.model, problem.x
    Z = model.Z
    m, S = model.posterior(x)
    zeros, eye = np.zeros(Z), np.eye(Z)
    target = kl_mvn(m, S, zeros, eye)
    record = _record_steps(max_steps)

    def kls(mean, cov):
        return kl_mvn(mean, cov, m, S), kl_mvn(mean, cov, zeros, eye)

    full = []
    mu, L = zeros.copy(), eye.copy()
    step = 0.5 / float(np.linalg.eigvalsh(model.posterior_precision)[-1])
    n_full = 0
    for n_full in range(max_steps + 1):  # noqa: B007 - n_full is reported
        Q = L @ L.T
        d_mu, d_Q = model.elbo_grad(x, mu, Q)
        d_L = np.tril(2.0 * d_Q @ L)
        done = max(np.max(np.abs(d_mu)), np.max(np.abs(d_L))) < grad_tol
        if n_full in record or done:
            full.append((n_full, *kls(mu, Q)))
        if done:
            break
        mu, L = mu + step * d_mu, L + step * d_L

    diag = []

    def trace(n, mu_, log_var_):
        if n in record:
            diag.append((n, *kls(mu_, np.diag(np.exp(log_var_)))))

    mu_d, log_var_d, n_diag = mean_field_ascent(model, x, max_steps, grad_tol, trace)
    diag.append((n_diag, *kls(mu_d, np.diag(np.exp(log_var_d)))))
    mf_mu, mf_log_var = model.best_mean_field(x)
    mf_gap = kl_mvn(mf_mu, np.diag(np.exp(mf_log_var)), m, S)

    tol = REL_TOL * _scale(target, float(model.log_marginal(x)))
    end_full, end_diag = full[-1], diag[-1]
    monotone = all(np.all(np.diff([r[1] for r in path]) <= tol) for path in (full, diag))
    converged = n_full < max_steps and n_diag < max_steps
    ok = (end_full[1] <= tol and abs(end_full[2] - target) <= tol
          and abs(end_diag[1] - mf_gap) <= tol)
    return IdentityResult(
        name="argmax ELBO: KL(q||p(z)) = KL(p(z|x)||p(z)), not 0",
        source="ELBO = log p(x) - KL(q || p(z|x)): the optimum is the posterior",
        lhs=end_full[2],
        rhs=target,
        difference=end_full[2] - target,
        tolerance=tol,
        criterion=f"both limits to {tol:.1e}; mean-field gap to {tol:.1e}; "
                  f"KL to posterior never rises",
        passed=bool(ok and monotone and converged),
        details={"kl_posterior_to_prior": target, "mean_field_gap": mf_gap,
                 "full_steps": n_full, "diagonal_steps": n_diag, "monotone": monotone,
                 "full_path": {"step": [r[0] for r in full],
                               "kl_to_posterior": [r[1] for r in full],
                               "kl_to_prior": [r[2] for r in full]},
                 "diagonal_path": {"step": [r[0] for r in diag],
                                   "kl_to_posterior": [r[1] for r in diag],
                                   "kl_to_prior": [r[2] for r in diag]}},
        summary=[
            "Prior or posterior? Ascending the ELBO from q = p(z) takes q to the posterior: "
            f"KL(q || p(z|x)) falls from {full[0][1]:.4f}",
            f"  to {end_full[1]:.1e} nats (full-covariance q, {n_full} steps) or to the "
            f"mean-field gap {mf_gap:.4f} (diagonal q, {n_diag} steps),",
            f"  while KL(q || p(z)) rises from 0 to {end_full[2]:.4f} = KL(p(z|x) || p(z)) "
            f"(diagonal q: {end_diag[2]:.4f}), not to 0.",
            "So the ELBO's KL(q || p(z)) term does not send q to the prior: it is the price of "
            "the information q takes from x (amortization aside).",
        ],
    )


# --------------------------------------------------------------------------
# 15: ELBO surgery
# --------------------------------------------------------------------------


def aggregate_posterior(model: LinearGaussian, W, c, S_q) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`q(z) = E_{p(x)}[N(z; Wx + c, S_q)] = N(Wb + c,\ WCW^\top + S_q)`,
    :math:`C = AA^\top + \Sigma`, for x from the model's exact marginal N(b, C)."""
    return W @ model.b + c, W @ model.marginal_cov @ W.T + S_q


def surgery_closed_form(model: LinearGaussian, W, c, S_q) -> dict[str, float]:
    r"""The three terms of ELBO surgery for the linear encoder q(z|x) = N(Wx + c, S_q).

    .. math::

        E_x\mathrm{KL}(q(z|x)\|p(z)) = \tfrac12\big[\mathrm{tr}\,S_q + \|Wb + c\|^2
          + \mathrm{tr}(WCW^\top) - Z - \log|S_q|\big]

        I_q(x; z) = H(q(z)) - E_x H(q(z|x)) = \tfrac12\big[\log|WCW^\top + S_q| - \log|S_q|\big]

    and :math:`\mathrm{KL}(q(z)\|p(z))` with q(z) from :func:`aggregate_posterior`.
    """
    Z = model.Z
    mean_z = W @ model.b + c
    average_kl = 0.5 * (np.trace(S_q) + mean_z @ mean_z + np.sum((W @ model.marginal_cov) * W)
                        - Z - _logdet(S_q))
    q_mean, q_cov = aggregate_posterior(model, W, c, S_q)
    return {"average_kl": float(average_kl),
            "mutual_information": 0.5 * (_logdet(q_cov) - _logdet(S_q)),
            "marginal_kl": float(kl_mvn(q_mean, q_cov, np.zeros(Z), np.eye(Z)))}


def _gaussian_log_probs_shared_cov(z, means, chol):
    r""":math:`\log N(z_i; \mu_n, S)` for every pair (i, n): shape (len(z), len(means))."""
    u = np.linalg.solve(chol, z.T).T
    nu = np.linalg.solve(chol, means.T).T
    sq = np.sum(u * u, 1)[:, None] - 2 * u @ nu.T + np.sum(nu * nu, 1)[None, :]
    return -0.5 * (len(chol) * LOG_2PI + 2 * np.sum(np.log(np.diag(chol))) + sq)


@identity(15)
def elbo_surgery(problem: Problem, rng: np.random.Generator, n_data: int = 4000,
                 ns=(2, 10, 100, 1000), n_z: int = 2000, z_tol: float = Z_TOL) -> IdentityResult:
    r"""ELBO surgery (Hoffman & Johnson 2016): averaged over data, the ELBO's KL term is
    :math:`E_x\mathrm{KL}(q(z|x)\|p(z)) = I_q(x;z) + \mathrm{KL}(q(z)\|p(z))`,
    :math:`q(z) = E_x q(z|x)`.

    Closed forms (:func:`surgery_closed_form`, x ~ N(b, C) the model's marginal) to 1e-9
    relative, for a random linear encoder and for the exact posterior encoder
    :math:`W = SA^\top\Sigma^{-1}`, :math:`c = -Wb`, :math:`S_q = S`, where q(z) = p(z)
    (marginal KL 0) and :math:`I = \tfrac12\log|I + A^\top\Sigma^{-1}A|`.

    Monte Carlo over ``n_data`` draws of x: the means of
    :math:`\mathrm{KL}(q(z|x_n)\|p(z))` and :math:`\mathrm{KL}(q(z|x_n)\|q(z))` (closed form
    per x) are within ``z_tol`` standard errors of the average KL and of I (random encoder).

    Finite data (exact encoder): for N points the aggregate is
    :math:`q_N(z) = \frac1N\sum_n q(z|x_n)`;
    :math:`I_N = \frac1N\sum_n E_{q(z|x_n)}[\log q(z|x_n) - \log q_N(z)]` and
    :math:`\mathrm{KL}_N = \frac1N\sum_n E_{q(z|x_n)}[\log q_N(z) - \log p(z)]` from about
    ``n_z`` draws of z. Since :math:`q_N \ge q(\cdot|x_n)/N`, every term of :math:`I_N` is at
    most log N (checked exactly); :math:`I_N + \mathrm{KL}_N` is within ``z_tol`` standard
    errors of the average of the N closed-form KLs. lhs/rhs: the random encoder's average
    KL and :math:`I + \mathrm{KL}(q(z)\|p(z))`.
    """
    model = problem.model
    Z, D = model.Z, model.D
    random_enc = (0.5 * rng.standard_normal((Z, D)), 0.5 * rng.standard_normal(Z),
                  np.diag(rng.uniform(0.2, 1.0, Z)))
    W_post = model.posterior_cov @ model.A.T @ model.noise_precision
    exact_enc = (W_post, -W_post @ model.b, model.posterior_cov)
    rnd, ext = surgery_closed_form(model, *random_enc), surgery_closed_form(model, *exact_enc)
    info_exact = 0.5 * _logdet(model.posterior_precision)
    tol = REL_TOL * _scale(rnd["average_kl"], ext["average_kl"])
    closed_err = max(abs(r["average_kl"] - r["mutual_information"] - r["marginal_kl"])
                     for r in (rnd, ext))
    exact_err = max(abs(ext["marginal_kl"]), abs(ext["mutual_information"] - info_exact))

    # Monte Carlo over x ~ p(x), random encoder
    W, c, S_q = random_enc
    _, xs = model.sample(rng, n_data)
    mus = xs @ W.T + c
    logdet_S = _logdet(S_q)
    kl_prior = 0.5 * (np.trace(S_q) + np.sum(mus * mus, 1) - Z - logdet_S)
    q_mean, q_cov = aggregate_posterior(model, W, c, S_q)
    q_prec = np.linalg.inv(q_cov)
    d = mus - q_mean
    kl_agg = 0.5 * (np.sum(q_prec * S_q) + np.sum(d @ q_prec * d, 1) - Z + _logdet(q_cov)
                    - logdet_S)
    (m_kl, se_kl), (m_mi, se_mi) = _mean_and_stderr(kl_prior), _mean_and_stderr(kl_agg)
    mc_z = max(abs(m_kl - rnd["average_kl"]) / se_kl, abs(m_mi - rnd["mutual_information"]) / se_mi)

    # finite data, exact encoder: q_N(z) = average of N Gaussians N(mu_n, S)
    W, c, S_q = exact_enc
    chol = np.linalg.cholesky(S_q)
    _, xs = model.sample(rng, max(ns))
    mus_all = xs @ W.T + c
    rows, bound_ok, sum_z = [], True, 0.0
    for N in ns:
        mus = mus_all[:N]
        M = max(2, n_z // N)
        owner = np.repeat(np.arange(N), M)
        z = mus[owner] + rng.standard_normal((N * M, Z)) @ chol.T
        log_q_all = _gaussian_log_probs_shared_cov(z, mus, chol)  # (N*M, N)
        log_q_own = log_q_all[np.arange(N * M), owner]
        log_q_agg = logsumexp(log_q_all, axis=1) - np.log(N)
        log_prior = -0.5 * np.sum(z * z + LOG_2PI, 1)
        info, se_info = _mean_and_stderr(log_q_own - log_q_agg)
        kl_n, se_kl_n = _mean_and_stderr(log_q_agg - log_prior)
        total, se_total = _mean_and_stderr(log_q_own - log_prior)
        closed_total = float(np.mean(0.5 * (np.trace(S_q) + np.sum(mus * mus, 1) - Z
                                            - _logdet(S_q))))
        bound_ok &= bool(np.max(log_q_own - log_q_agg) <= np.log(N) + 1e-12)
        sum_z = max(sum_z, abs(total - closed_total) / se_total)
        rows.append({"N": int(N), "mutual_information": float(info),
                     "mutual_information_stderr": float(se_info), "log_N": float(np.log(N)),
                     "marginal_kl": float(kl_n), "marginal_kl_stderr": float(se_kl_n),
                     "average_kl": closed_total, "z_samples": int(N * M)})
    lhs = rnd["average_kl"]
    rhs = rnd["mutual_information"] + rnd["marginal_kl"]
    return IdentityResult(
        name="E_x KL(q(z|x)||p(z)) = I_q(x;z) + KL(q(z)||p(z))",
        source="Hoffman & Johnson 2016: add and subtract log q(z) inside the average KL",
        lhs=lhs,
        rhs=rhs,
        difference=lhs - rhs,
        tolerance=tol,
        criterion=f"closed forms to {tol:.1e}; MC over x within {z_tol:g} stderr; I_N <= log N",
        passed=bool(closed_err <= tol and exact_err <= tol and mc_z < z_tol and bound_ok
                    and sum_z < z_tol),
        details={"random_encoder": rnd, "exact_encoder": ext,
                 "exact_encoder_information_closed_form": info_exact,
                 "closed_form_error": closed_err, "exact_encoder_error": exact_err,
                 "mc_over_x": {"n_data": n_data, "average_kl": float(m_kl),
                               "average_kl_stderr": float(se_kl),
                               "mutual_information": float(m_mi),
                               "mutual_information_stderr": float(se_mi), "max_z": float(mc_z)},
                 "finite_data": rows, "finite_data_bound_holds": bound_ok,
                 "finite_data_max_z": float(sum_z)},
        summary=[
            "ELBO surgery: averaged over x ~ p(x), the ELBO's KL term E_x KL(q(z|x) || p(z)) = "
            "I_q(x; z) + KL(q(z) || p(z)):",
            f"  random linear encoder:  {rnd['average_kl']:.4f} = {rnd['mutual_information']:.4f}"
            f" + {rnd['marginal_kl']:.4f} nats (Monte Carlo over {n_data} x: "
            f"{m_kl:.4f} and I {m_mi:.4f})",
            f"  exact posterior encoder: {ext['average_kl']:.4f} = "
            f"{ext['mutual_information']:.4f} + {abs(ext['marginal_kl']):.1e}: q(z) = p(z), "
            "all of the KL term is information about x",
            "  finite data (q(z) = average of N encoder Gaussians): "
            + "; ".join(f"N={r['N']}: I {r['mutual_information']:.3f} <= log N "
                        f"{r['log_N']:.3f}, KL(q(z)||p(z)) {r['marginal_kl']:.3f}"
                        for r in rows),
        ],
    )


# --------------------------------------------------------------------------
# 16: sticking the landing
# --------------------------------------------------------------------------


def diagonal_posterior_model(problem: Problem, rng: np.random.Generator):
    r"""A model with the problem's noise and offset whose posterior is diagonal, and a
    datapoint drawn from it: :math:`A = L_\Sigma Q\,\mathrm{diag}(d)` with
    :math:`L_\Sigma L_\Sigma^\top = \Sigma` and orthonormal columns Q (zero columns beyond D),
    so :math:`A^\top\Sigma^{-1}A = \mathrm{diag}(d^2)` (restricted to the first min(D, Z))."""
    base = problem.model
    D, Z = base.D, base.Z
    r = min(D, Z)
    Q = np.hstack([np.linalg.qr(rng.standard_normal((D, r)))[0], np.zeros((D, Z - r))])
    A = np.linalg.cholesky(base.noise_cov) @ Q * rng.uniform(0.5, 2.0, Z)
    model = LinearGaussian(A, base.b, base.noise_var if base.diagonal_noise else base.noise_cov)
    return model, model.sample(rng, 1)[1][0]


def elbo_gradient_samples(model: LinearGaussian, x, mu, log_var, eps):
    r"""Per draw :math:`z = \mu + \sigma\epsilon`, two estimates of
    :math:`\nabla_{(\mu, v)}\mathrm{ELBO}`, each of shape (n, 2Z):

    * full (reparameterized :math:`\log p(x,z) - \log q_\phi(z)`, score term included):
      :math:`(g,\ g\odot\tfrac12\sigma\epsilon + \tfrac12)`, :math:`g = \nabla_z\log p(x,z)`;
    * STL, the path term only, :math:`h = g + \epsilon/\sigma = \nabla_z[\log p(x,z)
      - \log q_{\phi_0}(z)]`: :math:`(h,\ h\odot\tfrac12\sigma\epsilon)`.

    The dropped score term, :math:`-\nabla_\phi\log q_\phi(z)|_z = (-\epsilon/\sigma,\
    \tfrac12(1 - \epsilon^2))`, has mean zero.
    """
    sigma = np.exp(0.5 * log_var)
    g = model.log_joint_grad_z(x, mu + sigma * eps)
    h = g + eps / sigma
    full = np.concatenate([g, g * 0.5 * sigma * eps + 0.5], axis=1)
    stl = np.concatenate([h, h * 0.5 * sigma * eps], axis=1)
    return full, stl


def estimator_variances(lam, m, mu, log_var) -> tuple[np.ndarray, np.ndarray]:
    r"""Closed-form per-component variances of the full and STL estimates of
    :func:`elbo_gradient_samples` when the posterior is :math:`N(m, \mathrm{diag}(1/\lambda))`.

    With :math:`g = \lambda(\delta - \sigma\epsilon)`, :math:`\delta = m - \mu`, and
    :math:`\mathrm{Var}\,\epsilon = 1`, :math:`\mathrm{Var}\,\epsilon^2 = 2`,
    :math:`\mathrm{Cov}(\epsilon, \epsilon^2) = 0`:

    .. math::

        \text{full: }\ \lambda^2\sigma^2,\quad \tfrac14\lambda^2\delta^2\sigma^2
            + \tfrac12\lambda^2\sigma^4;\qquad
        \text{STL: }\ (\lambda\sigma - 1/\sigma)^2,\quad
            \tfrac14\lambda^2\delta^2\sigma^2 + \tfrac12(\lambda\sigma^2 - 1)^2

    (for mu and log_var). At the posterior (:math:`\delta = 0`, :math:`\lambda\sigma^2 = 1`)
    STL's are 0 and the full one's sum to :math:`\sum_j(\lambda_j + \tfrac12)`.
    """
    s2 = np.exp(log_var)
    s = np.sqrt(s2)
    d2 = (m - mu) ** 2
    full = np.concatenate([lam**2 * s2, 0.25 * lam**2 * d2 * s2 + 0.5 * lam**2 * s2**2])
    stl = np.concatenate([(lam * s - 1 / s) ** 2,
                          0.25 * lam**2 * d2 * s2 + 0.5 * (lam * s2 - 1) ** 2])
    return full, stl


def _variance_and_stderr(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample variance per column, and its standard error sd((y - ybar)^2) / sqrt(n)."""
    sq = (samples - samples.mean(axis=0)) ** 2
    n = len(samples)
    return sq.sum(axis=0) / (n - 1), sq.std(axis=0, ddof=1) / np.sqrt(n)


@identity(16)
def sticking_the_landing(problem: Problem, rng: np.random.Generator, n_mc: int = 20000,
                         ts=(0.0, 0.5, 0.9, 0.99), z_tol: float = Z_TOL) -> IdentityResult:
    r"""Sticking the landing (Roeder, Wu & Duvenaud 2017): the path-derivative gradient is
    unbiased, and exactly zero at q = p(z|x).

    On a model whose posterior :math:`N(m, \mathrm{diag}(1/\lambda))` is diagonal
    (:func:`diagonal_posterior_model`), q moves from a generic :math:`q_0` (mean
    :math:`m + \sqrt{S_{jj}}u`, :math:`u\sim N(0, I)`, log-variance off by up to 1) toward
    the posterior along :math:`q_t = (1-t)\,q_0 + t\,p(z|x)` in (mu, log_var):

    * at t = 0, both estimates (:func:`elbo_gradient_samples`) average to the exact
      gradient (:meth:`LinearGaussian.elbo_diag_grad`) within ``z_tol`` standard errors;
    * at every t in ``ts`` their per-component sample variances agree with
      :func:`estimator_variances` within ``z_tol`` standard errors;
    * at t = 1, every STL draw is 0 and every full draw equals the (negative) score
      :math:`(-\epsilon/\sigma, \tfrac12(1-\epsilon^2))`, to 1e-9 relative: since
      :math:`\log p(x,z) - \log q(z) = \log p(x)` for every z, nothing is left to estimate.

    lhs/rhs: the STL variance (summed over components) at the posterior, and 0.
    """
    model, x = diagonal_posterior_model(problem, rng)
    Z = model.Z
    m, S = model.posterior(x)
    lam = np.diag(model.posterior_precision)
    v_post = np.log(np.diag(S))
    mu0 = m + np.sqrt(np.diag(S)) * rng.standard_normal(Z)
    v0 = v_post + rng.uniform(-1.0, 1.0, Z)
    rows, worst_var_z, unbiased_z = [], 0.0, 0.0
    for t in ts:
        mu, v = m + (1 - t) * (mu0 - m), v_post + (1 - t) * (v0 - v_post)
        full, stl = elbo_gradient_samples(model, x, mu, v, rng.standard_normal((n_mc, Z)))
        (vf, sef), (vs, ses) = _variance_and_stderr(full), _variance_and_stderr(stl)
        cf, cs = estimator_variances(lam, m, mu, v)
        worst_var_z = max(worst_var_z, _max_z(vf, cf, sef), _max_z(vs, cs, ses))
        if t == 0.0:
            exact = np.concatenate(model.elbo_diag_grad(x, mu, v))
            unbiased_z = max(_max_z(*_swap(_mean_and_stderr(full), exact)),
                             _max_z(*_swap(_mean_and_stderr(stl), exact)))
        rows.append({"distance": 1 - t, "full_variance": float(vf.sum()),
                     "stl_variance": float(vs.sum()), "full_variance_closed_form": float(cf.sum()),
                     "stl_variance_closed_form": float(cs.sum())})
    # at the posterior
    eps = rng.standard_normal((n_mc, Z))
    sigma = np.sqrt(np.diag(S))
    full, stl = elbo_gradient_samples(model, x, m, v_post, eps)
    neg_score = np.concatenate([-eps / sigma, 0.5 * (1 - eps * eps)], axis=1)
    scale = _scale(np.max(np.abs(full)))
    stl_max = float(np.max(np.abs(stl)))
    full_err = float(np.max(np.abs(full - neg_score)))
    stl_var_post = float(np.sum(stl.var(axis=0, ddof=1)))
    full_var_post = float(np.sum(full.var(axis=0, ddof=1)))
    rows.append({"distance": 0.0, "full_variance": full_var_post, "stl_variance": stl_var_post,
                 "full_variance_closed_form": float(np.sum(lam + 0.5)),
                 "stl_variance_closed_form": 0.0})
    # closed-form curves for the picture
    dist = np.geomspace(1e-3, 1.0, 40)
    curve = [estimator_variances(lam, m, m + a * (mu0 - m), v_post + a * (v0 - v_post))
             for a in dist]
    passed = (unbiased_z < z_tol and worst_var_z < z_tol and stl_max <= REL_TOL * scale
              and full_err <= REL_TOL * scale)
    lower_or_higher = "lower" if rows[0]["stl_variance"] < rows[0]["full_variance"] else "higher"
    return IdentityResult(
        name="STL gradient: unbiased; 0 for every eps at q = p(z|x)",
        source="Roeder et al. 2017: log p(x,z) - log q(z|x) = log p(x) at the posterior",
        lhs=stl_var_post,
        rhs=0.0,
        difference=stl_var_post,
        tolerance=REL_TOL * scale,
        criterion=f"means and variances within {z_tol:g} stderr; at p(z|x) every STL draw "
                  f"|g| <= {REL_TOL * scale:.1e}",
        passed=bool(passed),
        details={"posterior_precision_diag": lam, "q0_mean": mu0, "q0_log_var": v0,
                 "posterior_mean": m, "posterior_log_var": v_post, "table": rows,
                 "unbiased_max_z": unbiased_z, "variance_max_z": worst_var_z,
                 "stl_max_abs_at_posterior": stl_max,
                 "full_minus_negative_score_at_posterior": full_err, "n_mc": n_mc,
                 "curve": {"distance": dist, "full_variance": [float(f.sum()) for f, _ in curve],
                           "stl_variance": [float(s.sum()) for _, s in curve]}},
        summary=[
            "Sticking the landing: dropping the score term of log q keeps the ELBO gradient "
            f"unbiased (generic q: both means within {unbiased_z:.1f} stderr of the exact "
            "gradient)",
            f"  and at q = p(z|x) makes it exactly 0. Total variance over mu, log_var ({n_mc} "
            "draws) as q moves from a generic q (distance 1) to p(z|x) (distance 0):",
        ] + [f"    distance {r['distance']:<5g} STL {r['stl_variance']:10.4g}  full "
             f"{r['full_variance']:8.4g}" for r in rows[:-1]]
          + [f"    at p(z|x)      STL {stl_var_post:10.1e}  full {full_var_post:8.4g} "
             f"(closed form sum_j (Lambda_jj + 1/2) = {np.sum(lam + 0.5):.4g}); largest |STL| "
             f"{stl_max:.1e}",
             f"  (at the generic q STL's variance is {lower_or_higher}: its advantage is "
             "near the posterior, where a trained encoder should be)"],
    )


def _swap(mean_se, exact):
    """(mean, stderr), exact -> (mean, exact, stderr), the argument order of _max_z."""
    return mean_se[0], exact, mean_se[1]


# --------------------------------------------------------------------------
# 17: IWAE's signal-to-noise ratio, and DReG
# --------------------------------------------------------------------------


def dreg_encoder_gradient(w_tilde, path, sigma, eps):
    r"""DReG's encoder estimate per repetition:
    :math:`\sum_k\tilde w_k^2\,(h_k,\ h_k\odot\tfrac12\sigma\epsilon_k)`,
    :math:`h_k = \partial\log w_k/\partial z_k` with q's parameters held (the path term).
    ``w_tilde`` (R, K), ``path`` and ``eps`` (R, K, Z); returns (R, 2Z)."""
    w2 = (w_tilde * w_tilde)[:, None, :]
    return np.concatenate([np.matmul(w2, path)[:, 0],
                           np.matmul(w2, path * 0.5 * sigma * eps)[:, 0]], axis=1)


def iwae_gradient_samples(model: LinearGaussian, x, mu, log_var, eps):
    r"""R independent draws of three gradient estimates of :math:`L_K`, K = eps.shape[1].

    With :math:`\log w_k = \log p(x, z_k) - \log q(z_k)`, :math:`\tilde w = \mathrm{softmax}_k
    \log w`, :math:`g_k = \nabla_z\log p(x, z_k)`, :math:`r_k = x - Az_k - b`:

    * IWAE encoder, :math:`\sum_k\tilde w_k\,d\log w_k/d(\mu, v) =
      \sum_k\tilde w_k(g_k,\ g_k\odot\tfrac12\sigma\epsilon_k + \tfrac12)`;
    * DReG encoder (:func:`dreg_encoder_gradient`), :math:`h_k = g_k + \epsilon_k/\sigma`;
    * decoder, :math:`\theta = (A, b)`: :math:`\sum_k\tilde w_k(\Sigma^{-1}r_k z_k^\top,\
      \Sigma^{-1}r_k)`.

    ``eps`` (R, K, Z); returns three arrays (R, 2Z), (R, 2Z), (R, DZ + D).
    """
    sigma = np.exp(0.5 * log_var)
    z = mu + sigma * eps
    log_q = -0.5 * np.sum(LOG_2PI + log_var + eps * eps, axis=-1)
    log_w = model.log_joint(x, z) - log_q
    w_tilde = np.exp(log_w - logsumexp(log_w, axis=1)[:, None])
    g = model.log_joint_grad_z(x, z)
    wt = w_tilde[:, None, :]  # (R, 1, K): weighted sums over k as matrix products
    iwae = np.concatenate([np.matmul(wt, g)[:, 0],
                           np.matmul(wt, g * 0.5 * sigma * eps)[:, 0] + 0.5], axis=1)
    dreg = dreg_encoder_gradient(w_tilde, g + eps / sigma, sigma, eps)
    weighted_pr = w_tilde[..., None] * ((x - z @ model.A.T - model.b) @ model.noise_precision)
    d_A = np.matmul(np.swapaxes(weighted_pr, 1, 2), z)  # (R, D, Z)
    decoder = np.concatenate([d_A.reshape(len(eps), -1), weighted_pr.sum(axis=1)], axis=1)
    return iwae, dreg, decoder


def _slope(ks, values) -> float:
    """Least-squares slope of log(values) against log(ks)."""
    return float(np.polyfit(np.log(ks), np.log(values), 1)[0])


@identity(17)
def iwae_snr_and_dreg(problem: Problem, rng: np.random.Generator, ks=(1, 10, 100, 1000),
                      reps: int = 400, z_tol: float = Z_TOL) -> IdentityResult:
    r"""Signal-to-noise of IWAE gradients (Rainforth et al. 2018) and of DReG (Tucker et al.
    2019): the encoder's SNR falls like :math:`K^{-1/2}`, the decoder's rises like
    :math:`K^{1/2}`, DReG's encoder SNR does not fall.

    q has the posterior's mean shifted by half a posterior standard deviation and variances
    :math:`(Z+1)S_{jj}` (:math:`\succeq S`, so the weights are bounded; unlike identity 11's
    :math:`Z S_{jj}`, never the exact variance, where the K = 1 gradient in log_var would be
    0 and its SNR unmeasurable). For each K, ``reps``
    independent draws of K samples give the estimates of :func:`iwae_gradient_samples`.
    Per component, :math:`\mathrm{SNR} = |E g|/\mathrm{sd}(g)`. The encoder's
    :math:`E g` is estimated by the DReG mean: both estimators are unbiased for the same
    gradient (checked: their paired differences average to 0 within ``z_tol`` standard
    errors, per component and K), and DReG's spread is so much smaller that it resolves
    :math:`E g` where the IWAE estimator's own mean would need about :math:`10^5` draws
    at K = 1000. The decoder's :math:`E g` is its own mean.

    Slopes of log SNR against log K (least squares over ``ks``), median over components:
    passes when the IWAE encoder's is below -1/4, the decoder's above +1/4 (half the
    predicted -1/2 and +1/2) and DReG's above -0.1 (not falling). lhs/rhs: the IWAE
    encoder's slope and its predicted value -1/2.
    """
    model, x = problem.model, problem.x
    Z = model.Z
    m, S = model.posterior(x)
    sd = np.sqrt(np.diag(S))
    mu, log_var = m + 0.5 * sd, np.log((Z + 1) * sd**2)
    snr = {"iwae_encoder": [], "dreg_encoder": [], "decoder": []}
    rows, paired_z = [], 0.0
    for K in ks:
        iwae, dreg, decoder = iwae_gradient_samples(model, x, mu, log_var,
                                                    rng.standard_normal((reps, K, Z)))
        mean_dreg = dreg.mean(axis=0)
        diff_mean, diff_se = _mean_and_stderr(iwae - dreg)
        paired_z = max(paired_z, _max_z(diff_mean, 0.0, diff_se))
        s = {"iwae_encoder": np.abs(mean_dreg) / iwae.std(axis=0, ddof=1),
             "dreg_encoder": np.abs(mean_dreg) / dreg.std(axis=0, ddof=1),
             "decoder": np.abs(decoder.mean(axis=0)) / decoder.std(axis=0, ddof=1)}
        for name, v in s.items():
            snr[name].append(v)
        rows.append({"K": int(K), **{f"{k}_snr": v for k, v in s.items()},
                     **{f"{k}_snr_median": float(np.median(v)) for k, v in s.items()}})
    slopes = {name: [_slope(ks, np.array(v)[:, j]) for j in range(np.shape(v)[1])]
              for name, v in snr.items()}
    median = {name: float(np.median(v)) for name, v in slopes.items()}
    passed = (paired_z < z_tol and median["iwae_encoder"] < -0.25
              and median["decoder"] > 0.25 and median["dreg_encoder"] > -0.1)
    return IdentityResult(
        name="SNR slope in K: IWAE enc -1/2, dec +1/2, DReG enc >= 0",
        source="Rainforth et al. 2018 (IWAE's SNR); Tucker et al. 2019 (DReG)",
        lhs=median["iwae_encoder"],
        rhs=-0.5,
        difference=median["iwae_encoder"] + 0.5,
        tolerance=z_tol,
        criterion=f"E[DReG] = E[IWAE] within {z_tol:g} stderr; slopes < -1/4, > +1/4, > -0.1 "
                  "(sides: IWAE encoder slope)",
        passed=bool(passed),
        details={"table": rows, "slopes": slopes, "median_slopes": median,
                 "paired_max_z": paired_z, "reps": reps, "ks": list(ks),
                 "q_mean": mu, "q_log_var": log_var},
        summary=[
            f"IWAE's signal-to-noise |E g| / sd(g), median over components, {reps} draws per K "
            "(encoder E g from DReG, unbiased for it):",
            f"  {'K':>6} {'IWAE encoder':>13} {'DReG encoder':>13} {'decoder':>9}",
        ] + [f"  {r['K']:>6} {r['iwae_encoder_snr_median']:>13.4f} "
             f"{r['dreg_encoder_snr_median']:>13.4f} {r['decoder_snr_median']:>9.3f}"
             for r in rows] + [
            f"  slopes of log SNR vs log K: IWAE encoder {median['iwae_encoder']:+.2f} "
            f"(theory -1/2), decoder {median['decoder']:+.2f} (+1/2), DReG encoder "
            f"{median['dreg_encoder']:+.2f} (does not fall)",
            "  so more samples sharpen the decoder's gradient and drown the plain IWAE "
            "encoder's in noise; DReG's does not drown",
        ],
    )
