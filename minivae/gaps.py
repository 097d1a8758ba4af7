r"""Where the gap between the ELBO and log p(x) goes: inference gaps and ELBO surgery.

Every ELBO is :math:`\log p(x) - \mathrm{KL}(q\,\|\,p(z|x))`. On a real model nobody can
compute that KL, but two ways of splitting it are measurable.

**Inference gaps** (Cremer, Li & Duvenaud 2018). With :math:`q^*_x` the best member of q's
family (a diagonal Gaussian) for the one datapoint x, found by optimizing its
:math:`(\mu, \log\sigma^2)` directly (:func:`optimize_q`),

.. math::

    \underbrace{\log p(x) - \mathcal L[q]}_{\text{inference gap}}
    = \underbrace{\log p(x) - \mathcal L[q^*]}_{\text{approximation gap}}
    + \underbrace{\mathcal L[q^*] - \mathcal L[q]}_{\text{amortization gap}},

the first the price of the diagonal-Gaussian family, the second the price of one encoder
for all x (:func:`inference_gaps`). Both are :math:`\ge 0` (up to noise): q* is at least as
good as the encoder's q, from which its optimization starts.

**ELBO surgery** (Hoffman & Johnson 2016). Over the N training points, with
:math:`q(z) = \frac1N\sum_n q(z|x_n)` the aggregate posterior and n uniform,

.. math::

    \frac1N\sum_n \mathrm{KL}(q(z|x_n)\,\|\,p(z))
    = \underbrace{I(n; z)}_{\le\,\log N} + \mathrm{KL}(q(z)\,\|\,p(z)),\qquad
    I(n; z) = \frac1N\sum_n E_{q(z|x_n)}\big[\log q(z|x_n) - \log q(z)\big]

(:func:`elbo_surgery`): the part of the KL term that is information the code carries about
which datapoint it came from, and the part that is a mismatch between the codes'
distribution and the prior.

Noise and standard errors. Everything is a Monte Carlo estimate with an explicit
``numpy.random.Generator``; every per-datapoint estimate comes with its Monte Carlo
standard error (:class:`PerPoint`), and every average with two standard errors: the Monte
Carlo one, for these datapoints (how much the number would move with other random
draws), and the one over datapoints, :math:`\mathrm{sd}/\sqrt n` (how much it would move
with other datapoints; it contains the Monte Carlo noise too). Statistics are accumulated
in float64 whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .checks import generator, positive_int, real_number
from .distributions import kl_diag_standard_normal, standard_normal_log_prob
from .numerics import LOG_2PI, logsumexp
from .objectives import importance_sampled_log_marginal
from .vae import VAE

#: elements of the largest array a chunk of work may allocate (2**22 float64 = 32 MiB)
_CHUNK_BUDGET = 2**22


# ----------------------------------------------------------------------------------------
# Per-datapoint estimates and their averages
# ----------------------------------------------------------------------------------------


@dataclass
class PerPoint:
    """One Monte Carlo estimate per datapoint (nats), with its Monte Carlo standard error."""

    values: np.ndarray
    stderr: np.ndarray

    @property
    def mean(self) -> float:
        """The average over the datapoints."""
        return float(np.mean(self.values))

    @property
    def mc_stderr(self) -> float:
        r"""Monte Carlo standard error of :attr:`mean` for these datapoints,
        :math:`\sqrt{\sum_b \mathrm{stderr}_b^2}/n` (independent draws per datapoint)."""
        return float(np.sqrt(np.sum(self.stderr**2)) / self.values.size)

    @property
    def data_stderr(self) -> float:
        """Standard error of :attr:`mean` over datapoints, sd(values) / sqrt(n) (nan for n = 1):
        the uncertainty of the mean as an estimate for the data distribution."""
        n = self.values.size
        return float(np.std(self.values, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")

    def summary(self) -> dict:
        """mean, data_stderr and mc_stderr as plain floats (for JSON)."""
        return {"mean": self.mean, "data_stderr": self.data_stderr,
                "mc_stderr": self.mc_stderr}

    @staticmethod
    def concatenate(parts: list[PerPoint]) -> PerPoint:
        return PerPoint(np.concatenate([p.values for p in parts]),
                        np.concatenate([p.stderr for p in parts]))


class _Moments:
    """Per-datapoint running mean and sum of squared deviations over chunks of samples.

    Chunks (c, B) are merged with Chan et al.'s pairwise update, so nothing cancels
    catastrophically however large the mean is relative to the spread.
    """

    def __init__(self, batch: int):
        self.n, self.mean, self.m2 = 0, np.zeros(batch), np.zeros(batch)

    def update(self, a: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.float64)
        c = a.shape[0]
        mean_c = a.mean(axis=0)
        m2_c = np.sum((a - mean_c) ** 2, axis=0)
        n = self.n + c
        delta = mean_c - self.mean
        self.mean = self.mean + delta * (c / n)
        self.m2 = self.m2 + m2_c + delta**2 * (self.n * c / n)
        self.n = n

    def stderr(self) -> np.ndarray:
        """Standard error of each mean, sd / sqrt(n) (sd with the n - 1 denominator)."""
        if self.n < 2:
            return np.full_like(self.mean, np.nan)
        return np.sqrt(self.m2 / (self.n - 1) / self.n)


def _chunk(model: VAE, batch: int, k: int) -> int:
    """Samples per chunk so that the widest decoder array stays within the budget."""
    widest = max(model.likelihood.out_dim(model.input_dim), *model.decoder_hidden,
                 model.latent_dim)
    return max(1, min(k, _CHUNK_BUDGET // (batch * widest)))


def _neg_elbo_at(model: VAE, x, mu, log_var, eps) -> np.ndarray:
    r"""Per-datapoint negative ELBO of the given q at the samples ``eps`` (closed-form KL):
    :math:`-\frac1K\sum_k\log p(x_b|z_{kb}) + \mathrm{KL}(q_b\,\|\,p(z))`, shape (B,)."""
    fwd = model.forward(x, eps, encoded=(mu, log_var, None), backward=False)
    return -np.mean(fwd.log_lik, axis=0) + kl_diag_standard_normal(mu, log_var)


def elbo_per_point(model: VAE, x: np.ndarray, qs, k: int, rng: np.random.Generator):
    r"""ELBOs of one or more diagonal Gaussians per datapoint, at common samples.

    .. math::  \hat{\mathcal L}_b[q] = \frac1k\sum_{i=1}^k\log p(x_b|z_{ib})
               - \mathrm{KL}(q_b\,\|\,N(0, I)),\qquad
               z_{ib} = \mu_b + \sigma_b\odot\epsilon_{ib},

    the KL in closed form (it has no Monte Carlo noise), the expectation by k samples.
    ``qs`` is a list of ``(mu, log_var)`` pairs, each (B, Z); all of them use the *same*
    :math:`\epsilon_{ib}` (common random numbers), so that their differences are far less
    noisy than each ELBO. Returns ``(estimates, differences)``: a :class:`PerPoint` per q,
    and a :class:`PerPoint` of :math:`\hat{\mathcal L}[q_j] - \hat{\mathcal L}[q_0]` for each
    j >= 1, whose standard error comes from the per-sample differences.
    """
    x = model.check_x(x)
    k = positive_int(k, "k")
    B = x.shape[0]
    qs = [model.check_q(mu, log_var, B) for mu, log_var in qs]
    singles = [_Moments(B) for _ in qs]
    diffs = [_Moments(B) for _ in qs[1:]]
    c = _chunk(model, B, k)
    for start in range(0, k, c):
        eps = model.sample_eps(rng, B, min(c, k - start))
        log_liks = [model.forward(x, eps, encoded=(mu, lv, None), backward=False).log_lik
                    for mu, lv in qs]
        for acc, ll in zip(singles, log_liks, strict=True):
            acc.update(ll)
        for acc, ll in zip(diffs, log_liks[1:], strict=True):
            acc.update(ll.astype(np.float64) - log_liks[0])
    kls = [kl_diag_standard_normal(mu.astype(np.float64), lv.astype(np.float64))
           for mu, lv in qs]
    estimates = [PerPoint(acc.mean - kl, acc.stderr()) for acc, kl in zip(singles, kls,
                                                                          strict=True)]
    differences = [PerPoint(acc.mean - kl + kls[0], acc.stderr())
                   for acc, kl in zip(diffs, kls[1:], strict=True)]
    return estimates, differences


# ----------------------------------------------------------------------------------------
# q*: the best diagonal Gaussian for each datapoint
# ----------------------------------------------------------------------------------------


@dataclass
class LocalOptimum:
    """What :func:`optimize_q` found, per datapoint.

    ``mu``, ``log_var`` (B, Z): q* (the average of the last window's iterates);
    ``steps`` (B,): the Adam steps taken before the datapoint stopped; ``converged`` (B,):
    True where it stopped because its ELBO no longer improved (False: ``max_steps`` ran
    out); ``check_loss`` (B,): the negative ELBO of q* at the fixed check noise, and
    ``initial_check_loss`` that of the starting q (nats).
    """

    mu: np.ndarray
    log_var: np.ndarray
    steps: np.ndarray
    converged: np.ndarray
    check_loss: np.ndarray
    initial_check_loss: np.ndarray


class RowAdam:
    r"""Adam with one learning rate per row: row b of a (B, P) array is datapoint b's q.

    The update of :class:`minivae.optim.Adam` (``tests/test_gaps.py`` checks that with
    equal rates the two follow the same path), with :math:`\eta` a vector: each
    datapoint's rate can fall on its own plateau. Rows can be dropped (:meth:`keep`) when
    their datapoints stop; the step count t is shared, as every row started together.
    """

    def __init__(self, rows: int, cols: int, lr: float, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8):
        self.lr = np.full(rows, real_number(lr, "lr", above=0))
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m, self.v = np.zeros((rows, cols)), np.zeros((rows, cols))
        self.step_count = 0

    def step(self, theta: np.ndarray, grad: np.ndarray) -> None:
        """Update ``theta`` (B, P) in place from ``grad`` (B, P)."""
        self.step_count += 1
        t, b1, b2 = self.step_count, self.beta1, self.beta2
        self.m = b1 * self.m + (1 - b1) * grad
        self.v = b2 * self.v + (1 - b2) * grad * grad
        m_hat, v_hat = self.m / (1 - b1**t), self.v / (1 - b2**t)
        theta -= (self.lr[:, None] * m_hat / (np.sqrt(v_hat) + self.eps)).astype(theta.dtype)

    def keep(self, rows: np.ndarray) -> None:
        """Keep only these rows (an index or boolean mask) of the state."""
        self.lr, self.m, self.v = self.lr[rows], self.m[rows], self.v[rows]


@dataclass
class QOptimizer:
    r"""How :func:`optimize_q` optimizes each datapoint's :math:`(\mu, \log\sigma^2)`.

    Adam (:class:`RowAdam`) on the pathwise gradient of the negative ELBO (closed-form KL)
    with ``samples`` fresh draws of eps per datapoint per step, from the learning rate
    ``lr``. Every ``check_every`` steps each datapoint's q is taken as the average of the
    window's iterates (which cancels most of the jitter the noisy gradient leaves in each)
    and its negative ELBO is measured at one *fixed* set of ``check_samples`` draws (the
    same at every check, so that two checks differ by the change of q, not by fresh
    noise). A datapoint that has not improved on its best check by more than ``tol`` nats
    ``patience`` checks in a row has its learning rate multiplied by ``lr_decay``; once the
    rate is at ``lr_min``, such a datapoint stops. All stop after ``max_steps`` steps.
    """

    samples: int = 50
    lr: float = 1e-2
    lr_min: float = 1e-3
    lr_decay: float = 0.5
    check_every: int = 20
    check_samples: int = 200
    tol: float = 1e-3
    patience: int = 2
    max_steps: int = 4000

    def validate(self) -> QOptimizer:
        for name in ("samples", "check_every", "check_samples", "patience", "max_steps"):
            positive_int(getattr(self, name), name)
        real_number(self.lr, "lr", above=0)
        real_number(self.lr_min, "lr_min", above=0)
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min must be <= lr, got lr_min={self.lr_min} > lr={self.lr}")
        real_number(self.lr_decay, "lr_decay", above=0, below=1)
        real_number(self.tol, "tol", at_least=0)
        return self


def optimize_q(model: VAE, x: np.ndarray, rng: np.random.Generator, mu: np.ndarray | None = None,
               log_var: np.ndarray | None = None,
               settings: QOptimizer | None = None) -> LocalOptimum:
    r"""The best diagonal Gaussian :math:`q^*_b = \arg\max_{\mu,v}\mathcal L_b` for each row of x.

    Each datapoint has its own :math:`(\mu_b, v_b)`, started at ``mu``, ``log_var`` (by
    default the encoder's output), and the decoder is held fixed; all datapoints are
    optimized at once (one batch through the decoder), each on its own learning-rate
    schedule and stopping on its own (see :class:`QOptimizer`). The gradient is
    :meth:`VAE.loss_and_q_grad`, the one the encoder's backward pass receives; since
    datapoint b's ELBO depends only on row b, B times the gradient of the batch mean is
    each datapoint's own gradient.

    The result is a local optimum reached by a noisy optimizer, so its ELBO is a lower
    bound on the best one: the approximation gap measured with it is an upper bound, the
    amortization gap a lower bound (by the optimizer's remaining error, which
    ``tests/test_gaps.py`` measures on a model where q* is known exactly).
    """
    x = model.check_x(x)
    generator(rng)
    s = (settings or QOptimizer()).validate()
    B, Z = x.shape[0], model.latent_dim
    if mu is None or log_var is None:
        mu, log_var, _ = model.encode(x)
    model.check_q(mu, log_var, B)

    theta = np.concatenate([mu, log_var], axis=1)  # row b: (mu_b, log_var_b), model dtype
    q_star = theta.copy()  # each datapoint's latest window average
    eps_check = model.sample_eps(rng, B, s.check_samples)
    best_loss = _neg_elbo_at(model, x, mu, log_var, eps_check).astype(np.float64)
    initial, final_loss = best_loss.copy(), best_loss.copy()
    stalls = np.zeros(B, dtype=int)
    steps = np.zeros(B, dtype=int)
    converged = np.zeros(B, dtype=bool)
    active = np.arange(B)  # the datapoints still being optimized; theta holds their rows
    opt = RowAdam(B, 2 * Z, s.lr)
    step = 0
    while active.size and step < s.max_steps:
        xa = x[active]
        window = np.zeros(theta.shape)
        for _ in range(s.check_every):
            eps = model.sample_eps(rng, active.size, s.samples)
            _, d_mu, d_log_var = model.loss_and_q_grad(xa, theta[:, :Z], theta[:, Z:], eps)
            # each row: B times the batch mean's gradient = that datapoint's own gradient
            opt.step(theta, active.size * np.concatenate([d_mu, d_log_var], axis=1))
            window += theta
            step += 1
        steps[active] = step
        mean_theta = (window / s.check_every).astype(model.dtype)
        loss = _neg_elbo_at(model, xa, mean_theta[:, :Z], mean_theta[:, Z:],
                            eps_check[:, active])
        improved = best_loss[active] - loss > s.tol
        q_star[active] = mean_theta
        final_loss[active] = loss
        best_loss[active] = np.minimum(best_loss[active], loss)
        stalls[active] = np.where(improved, 0, stalls[active] + 1)
        plateau = stalls[active] >= s.patience
        done = plateau & (opt.lr <= s.lr_min)
        # a datapoint on a plateau above the floor goes on at a lower rate
        opt.lr = np.where(plateau, np.maximum(opt.lr * s.lr_decay, s.lr_min), opt.lr)
        stalls[active[plateau]] = 0
        if done.any():
            converged[active[done]] = True
            active, theta = active[~done], theta[~done]
            opt.keep(~done)
    return LocalOptimum(q_star[:, :Z].copy(), q_star[:, Z:].copy(), steps, converged, final_loss,
                        initial)


# ----------------------------------------------------------------------------------------
# The two gaps
# ----------------------------------------------------------------------------------------


@dataclass
class InferenceGaps:
    r"""Per-datapoint estimates (nats) from :func:`inference_gaps`.

    ``log_marginal``: :math:`\log p(x)` by importance sampling with ``k`` samples;
    ``elbo_q`` and ``elbo_q_star``: :math:`\mathcal L[q]` and :math:`\mathcal L[q^*]` with
    ``k_elbo`` common samples each (closed-form KL); ``approximation``:
    :math:`\log p(x) - \mathcal L[q^*]` (independent estimates, so its Monte Carlo variance
    is the sum of theirs); ``amortization``: :math:`\mathcal L[q^*] - \mathcal L[q]` (from
    the per-sample differences at common eps). ``steps`` and ``converged`` come from
    :func:`optimize_q`, as does ``q_star``, the ``(mu, log_var)`` of q*, each (n, Z).
    """

    log_marginal: PerPoint
    elbo_q: PerPoint
    elbo_q_star: PerPoint
    approximation: PerPoint
    amortization: PerPoint
    steps: np.ndarray
    converged: np.ndarray
    q_star: tuple[np.ndarray, np.ndarray]
    k: int
    k_elbo: int
    optimizer: QOptimizer = field(default_factory=QOptimizer)

    @property
    def inference(self) -> PerPoint:
        r""":math:`\log p(x) - \mathcal L[q]`, the sum of the two gaps."""
        return PerPoint(self.approximation.values + self.amortization.values,
                        np.sqrt(self.approximation.stderr**2 + self.amortization.stderr**2))

    @property
    def n(self) -> int:
        return self.log_marginal.values.size

    def summary(self) -> dict:
        """Means with their standard errors, and the settings, as plain numbers (for JSON)."""
        return {"n": self.n, "k": self.k, "k_elbo": self.k_elbo,
                "log_marginal": self.log_marginal.summary(), "elbo_q": self.elbo_q.summary(),
                "elbo_q_star": self.elbo_q_star.summary(),
                "approximation_gap": self.approximation.summary(),
                "amortization_gap": self.amortization.summary(),
                "inference_gap": self.inference.summary(),
                "steps_median": float(np.median(self.steps)),
                "steps_max": int(np.max(self.steps)),
                "converged": int(np.sum(self.converged)),
                "optimizer": dict(vars(self.optimizer))}

    def lines(self) -> list[str]:
        """The report, one line per number, each with both standard errors."""
        def row(name, p):
            return (f"  {name:<34} {p.mean:9.3f}  +- {p.data_stderr:.3f} over datapoints, "
                    f"+- {p.mc_stderr:.3f} Monte Carlo")
        o = self.optimizer
        return [
            f"inference gaps on {self.n} datapoints (nats per datapoint):",
            row(f"log p(x) (IS, k={self.k})", self.log_marginal),
            row(f"L[q*] (best Gaussian, k={self.k_elbo})", self.elbo_q_star),
            row(f"L[q] (encoder, k={self.k_elbo})", self.elbo_q),
            row("approximation gap log p(x) - L[q*]", self.approximation),
            row("amortization gap L[q*] - L[q]", self.amortization),
            row("inference gap log p(x) - L[q]", self.inference),
            f"  q*: Adam, {o.samples} samples/step, lr {o.lr:g} -> {o.lr_min:g}; steps median "
            f"{np.median(self.steps):.0f}, max {np.max(self.steps)}; stopped by the rule "
            f"(no gain > {o.tol:g} nats in {o.patience} checks) for "
            f"{int(np.sum(self.converged))}/{self.n}",
        ]


def inference_gaps(model: VAE, x: np.ndarray, rng: np.random.Generator, *, k: int = 5000,
                   k_elbo: int = 1000, batch_size: int = 100,
                   optimizer: QOptimizer | None = None,
                   progress: Callable[[int, int], None] | None = None) -> InferenceGaps:
    r"""The approximation and amortization gaps of ``model`` on the rows of ``x``.

    For each batch of ``batch_size`` datapoints (memory is one batch):

    1. :math:`\log p(x)` by importance sampling with q(z|x) as the proposal, ``k`` samples
       (:func:`~minivae.objectives.importance_sampled_log_marginal`);
    2. :math:`q^*` by :func:`optimize_q`, started at the encoder's q;
    3. :math:`\mathcal L[q]` and :math:`\mathcal L[q^*]` with ``k_elbo`` fresh common
       samples (:func:`elbo_per_point`): fresh, so that the noise the optimizer may have
       fitted does not flatter q*.

    ``progress(done, total)`` is called after each batch with the datapoints done.
    The three estimates use independent draws from ``rng``. The importance-sampled
    :math:`\log p(x)` is biased low by about stderr^2 / 2 per datapoint (Jensen), and
    :math:`\mathcal L[q^*]` low by the optimizer's remaining error (see :func:`optimize_q`):
    both make the approximation gap look larger, never smaller, than it is.
    """
    x = model.check_x(x)
    generator(rng)
    k, k_elbo = positive_int(k, "k"), positive_int(k_elbo, "k_elbo")
    batch_size = positive_int(batch_size, "batch_size")
    settings = (optimizer or QOptimizer()).validate()
    parts = {name: [] for name in ("log_px", "q", "q_star", "approx", "amort")}
    steps, converged, q_mu, q_log_var = [], [], [], []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        est = importance_sampled_log_marginal(model, xb, k=k, rng=rng)
        log_px = PerPoint(est.values, est.stderr)
        mu, log_var, _ = model.encode(xb)
        local = optimize_q(model, xb, rng, mu, log_var, settings)
        (elbo_q, elbo_star), (amort,) = elbo_per_point(
            model, xb, [(mu, log_var), (local.mu, local.log_var)], k_elbo, rng)
        approx = PerPoint(log_px.values - elbo_star.values,
                          np.sqrt(log_px.stderr**2 + elbo_star.stderr**2))
        for name, p in zip(parts, (log_px, elbo_q, elbo_star, approx, amort), strict=True):
            parts[name].append(p)
        steps.append(local.steps)
        converged.append(local.converged)
        q_mu.append(local.mu)
        q_log_var.append(local.log_var)
        if progress is not None:
            progress(start + len(xb), len(x))
    cat = {name: PerPoint.concatenate(p) for name, p in parts.items()}
    return InferenceGaps(cat["log_px"], cat["q"], cat["q_star"], cat["approx"], cat["amort"],
                         np.concatenate(steps), np.concatenate(converged),
                         (np.concatenate(q_mu), np.concatenate(q_log_var)), k, k_elbo, settings)


# ----------------------------------------------------------------------------------------
# ELBO surgery
# ----------------------------------------------------------------------------------------


def log_aggregate_posterior(z: np.ndarray, mu: np.ndarray, log_var: np.ndarray,
                            chunk: int | None = None) -> np.ndarray:
    r""":math:`\log q(z) = \log\frac1N\sum_{n=1}^N N(z; \mu_n, \mathrm{diag}\,e^{v_n})` for each
    row of z (M, Z), over all N components, in float64.

    Each component's log-density is
    :math:`-\tfrac12[Z\log 2\pi + \sum_j v_{nj} + \sum_j (z_j - \mu_{nj})^2 e^{-v_{nj}}]`,
    and the square expands into two matrix products,
    :math:`\sum_j z_j^2 P_{nj} - 2\sum_j z_j\mu_{nj}P_{nj} + \sum_j \mu_{nj}^2 P_{nj}` with
    :math:`P = e^{-v}`, so all M x N pairs cost two (M, Z) x (Z, N) products. The rows of z
    go in chunks of ``chunk`` (by default as many as fit 2**22 numbers per (chunk, N)
    array), and each chunk's log-sum-exp over N is exact: memory is one chunk whatever M.
    """
    z, mu, log_var = (np.asarray(a, dtype=np.float64) for a in (z, mu, log_var))
    N, Z = mu.shape
    if chunk is None:
        chunk = max(1, _CHUNK_BUDGET // N)
    prec = np.exp(-log_var)                                           # (N, Z)
    mp = mu * prec
    const = -0.5 * (Z * LOG_2PI + np.sum(log_var, axis=1) + np.sum(mu * mp, axis=1))  # (N,)
    out = np.empty(len(z))
    for s in range(0, len(z), chunk):
        zc = z[s:s + chunk]
        log_q = const - 0.5 * ((zc * zc) @ prec.T) + zc @ mp.T       # (chunk, N)
        out[s:s + chunk] = logsumexp(log_q, axis=1) - np.log(N)
    return out


@dataclass
class Surgery:
    r"""ELBO surgery over N training points (nats), from :func:`elbo_surgery`.

    ``average_kl``: :math:`\frac1N\sum_n\mathrm{KL}(q(z|x_n)\|p(z))`, exact (closed form
    per point), with ``average_kl_data_stderr``, sd/sqrt(N), its uncertainty as an
    estimate for the data distribution. ``mutual_information``: :math:`I(n; z)`, the
    Monte Carlo mean over ``samples`` draws (one z from each of ``samples`` distinct
    training points) of :math:`\log q(z|x_n) - \log q(z)`, each term exact in z;
    ``marginal_kl`` = ``average_kl`` - ``mutual_information``, so the two add up exactly,
    with the same Monte Carlo standard error (``stderr``: sd/sqrt(samples), which also
    contains the spread over training points, so it errs on the large side). The direct
    estimate of :math:`\mathrm{KL}(q(z)\|p(z))`, the mean of :math:`\log q(z) - \log p(z)`
    at the same z, is ``marginal_kl_direct`` (a check: it must agree within its own
    ``marginal_kl_direct_stderr``). ``max_term``: the largest
    :math:`\log q(z|x_n) - \log q(z)`, at most log N (since :math:`q(z) \ge q(z|x_n)/N`).
    """

    n_train: int
    samples: int
    average_kl: float
    average_kl_data_stderr: float
    mutual_information: float
    marginal_kl: float
    stderr: float
    marginal_kl_direct: float
    marginal_kl_direct_stderr: float
    max_term: float

    @property
    def log_n(self) -> float:
        return float(np.log(self.n_train))

    def summary(self) -> dict:
        return {**vars(self), "log_n": self.log_n}

    def lines(self) -> list[str]:
        return [
            f"ELBO surgery over the N = {self.n_train} training points (nats per datapoint):",
            f"  average KL(q(z|x) || p(z))  {self.average_kl:8.3f}  (exact; +- "
            f"{self.average_kl_data_stderr:.3f} over datapoints)",
            f"  = I(n; z)                   {self.mutual_information:8.3f}  +- {self.stderr:.3f} "
            f"Monte Carlo ({self.samples} z; log N = {self.log_n:.3f}, every term <= "
            f"log N: largest {self.max_term:.3f})",
            f"  + KL(q(z) || p(z))          {self.marginal_kl:8.3f}  +- {self.stderr:.3f} "
            f"(directly: {self.marginal_kl_direct:.3f} +- {self.marginal_kl_direct_stderr:.3f})",
        ]


def _mean_stderr(a: np.ndarray) -> tuple[float, float]:
    return float(np.mean(a)), (float(np.std(a, ddof=1) / np.sqrt(a.size)) if a.size > 1
                               else float("nan"))


def elbo_surgery(model: VAE, x_train: np.ndarray, rng: np.random.Generator, *,
                 samples: int | None = 10000, batch_size: int = 1000) -> Surgery:
    r"""Split the average KL term over the training points into :math:`I(n; z)` and
    :math:`\mathrm{KL}(q(z)\|p(z))` (Hoffman & Johnson 2016; see the module docstring).

    ``x_train`` is (N, D) of the model's dtype, or uint8 (binary data stored compactly),
    which is converted ``batch_size`` rows at a time. The encoder runs on all N rows
    (``batch_size`` at a time); q(z) is the
    average of all N of its Gaussians. ``samples`` distinct training points (all N if
    None or >= N) each get one draw :math:`z \sim q(z|x_n)` (stratified: every chosen
    point contributes equally), and :math:`\log q(z)` is computed exactly over all N
    components (:func:`log_aggregate_posterior`; cost ``samples`` x N x Z). Raises
    ArithmeticError if a term :math:`\log q(z|x_n) - \log q(z)` exceeds log N beyond
    roundoff (impossible for a correct q(z)).
    """
    if not (isinstance(x_train, np.ndarray) and x_train.dtype == np.uint8):
        x_train = model.check_x(x_train)
    generator(rng)
    batch_size = positive_int(batch_size, "batch_size")
    N, Z = x_train.shape[0], model.latent_dim
    M = N if samples is None else min(positive_int(samples, "samples"), N)
    mus, log_vars = [], []
    for s in range(0, N, batch_size):
        # binary data kept as uint8 are converted a batch at a time
        mu, log_var, _ = model.encode(model.check_x(
            x_train[s:s + batch_size].astype(model.dtype, copy=False)))
        mus.append(mu.astype(np.float64))
        log_vars.append(log_var.astype(np.float64))
    mu, log_var = np.concatenate(mus), np.concatenate(log_vars)
    kl = kl_diag_standard_normal(mu, log_var)
    average_kl, kl_stderr = _mean_stderr(kl)

    chosen = np.arange(N) if M == N else np.sort(rng.choice(N, size=M, replace=False))
    eps = rng.standard_normal((M, Z))
    z = mu[chosen] + np.exp(0.5 * log_var[chosen]) * eps
    log_q_own = -0.5 * np.sum(LOG_2PI + log_var[chosen] + eps * eps, axis=1)
    log_q_agg = log_aggregate_posterior(z, mu, log_var)
    info_terms = log_q_own - log_q_agg
    max_term = float(np.max(info_terms))
    # roundoff of the expanded square is about 1e-16 sum_j z_j^2 / sigma_nj^2: far below 1e-6
    if max_term > np.log(N) + 1e-6:
        raise ArithmeticError(f"log q(z|x_n) - log q(z) = {max_term} exceeds log N = "
                              f"{np.log(N)}: the aggregate density is wrong")
    info, info_stderr = _mean_stderr(info_terms)
    direct, direct_stderr = _mean_stderr(log_q_agg - standard_normal_log_prob(z))
    return Surgery(N, M, average_kl, kl_stderr, info, average_kl - info, info_stderr,
                   direct, direct_stderr, max_term)
