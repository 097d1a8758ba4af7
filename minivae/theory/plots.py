"""Pictures of the identities (``python -m minivae verify --plots DIR``), one PNG each.

Each picture is drawn only from the numbers an identity returned (its ``details``, the
same numbers ``verify --json`` prints), so what is drawn is what was checked. Needs
matplotlib (``pip install 'minivae[plots]'``); :func:`write_plots` returns None without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .identities import IDENTITIES, IdentityResult

BLUE, ORANGE, GREEN, GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#555555"


def _ellipse(mean, cov, radius, n=200):
    """Points of the ellipse {z : (z - mean)^T cov^-1 (z - mean) = radius^2}, shape (n, 2)."""
    t = np.linspace(0, 2 * np.pi, n)
    return mean + radius * np.stack([np.cos(t), np.sin(t)], 1) @ np.linalg.cholesky(cov).T


def _normal_pdf(z, mean, var):
    return np.exp(-0.5 * (z - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)


def plot_kl_direction(plt, d):
    """13: the Gaussian target's contours with both diagonal optima; the bimodal target."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 6))
    m, S = np.asarray(d["target_mean"]), np.asarray(d["target_cov"])
    qr_m, qr_v = np.asarray(d["reverse_q_mean"]), np.asarray(d["reverse_q_var"])
    qf_m, qf_v = np.asarray(d["forward_q_mean"]), np.asarray(d["forward_q_var"])
    kls = d["kls"]
    rev_label = (f"argmin KL(q||p): var 1/Λjj  (KL(q||p) = "
                 f"{kls['reverse_optimum']['reverse_kl']:.3f})")
    fwd_label = (f"argmin KL(p||q): var Σjj  (KL(q||p) = "
                 f"{kls['forward_optimum']['reverse_kl']:.3f})")
    if len(m) >= 2:
        S2 = S[:2, :2]
        for r, style in ((1, "-"), (2, ":")):
            ax.plot(*_ellipse(m[:2], S2, r).T, color="black", ls=style, lw=1.5,
                    label="target p(z|x)" if r == 1 else None)
            ax.plot(*_ellipse(qr_m[:2], np.diag(qr_v[:2]), r).T, color=BLUE, ls=style,
                    lw=2, label=rev_label if r == 1 else None)
            ax.plot(*_ellipse(qf_m[:2], np.diag(qf_v[:2]), r).T, color=ORANGE, ls=style,
                    lw=2, label=fwd_label if r == 1 else None)
        ax.plot(*m[:2], "k+", ms=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("z1 (latent units)")
        ax.set_ylabel("z2 (latent units)")
        which = "" if len(m) == 2 else f" (first 2 of {len(m)} dims)"
        ax.set_title(f"Gaussian target, correlation {d['max_abs_correlation']:.2f}{which}; "
                     "contours at 1 and 2 sd:\nKL(q||p) is too narrow, KL(p||q) matches the "
                     "marginals")
    else:
        z = m[0] + np.linspace(-4, 4, 400) * np.sqrt(S[0, 0])
        ax.plot(z, _normal_pdf(z, m[0], S[0, 0]), color="black", lw=3, label="target p(z|x)")
        ax.plot(z, _normal_pdf(z, qr_m[0], qr_v[0]), color=BLUE, ls="--", label=rev_label)
        ax.plot(z, _normal_pdf(z, qf_m[0], qf_v[0]), color=ORANGE, ls=":", label=fwd_label)
        ax.set_xlabel("z (latent units)")
        ax.set_ylabel("density (per latent unit)")
        ax.set_title("1-D Gaussian target: both KLs agree (no correlation to miss)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    ax.grid(alpha=0.3)

    b = d["bimodal"]
    w, mu, sd = (np.asarray(b[k]) for k in ("weights", "means", "sds"))
    lo, hi = mu.min() - 4 * sd.max(), mu.max() + 4 * sd.max()
    z = np.linspace(lo, hi, 800)
    p = sum(wi * _normal_pdf(z, mi, si**2) for wi, mi, si in zip(w, mu, sd, strict=True))
    bx.fill_between(z, p, color="0.85", label="target p(z): two-component mixture")
    bx.plot(z, p, color="black", lw=1)
    bx.plot(z, _normal_pdf(z, b["forward_q_mean"], b["forward_q_var"]), color=ORANGE, lw=2,
            label=f"argmin KL(p||q): mixture's mean and variance "
                  f"(KL(q||p) = {b['reverse_kl_at_forward_optimum']:.2f})")
    for i, o in enumerate(b["reverse_optima"]):
        bx.plot(z, _normal_pdf(z, o["mean"], o["var"]), color=BLUE, lw=2,
                ls="--" if i else "-",
                label=f"argmin KL(q||p) from z = {o['start_mean']:+.1f}: "
                      f"KL(q||p) = {o['reverse_kl']:.2f}")
        bx.plot([o["start_mean"]], [0], marker="^", color=BLUE, ms=8, clip_on=False)
    bx.set_xlabel("z (latent units)")
    bx.set_ylabel("density (per latent unit)")
    bx.set_title("Bimodal target: KL(q||p) picks one mode (▲ = start),\n"
                 "KL(p||q) covers both and the gap between them")
    bx.set_ylim(0, 1.1 * max(p.max(), max(_normal_pdf(o["mean"], o["mean"], o["var"])
                                           for o in b["reverse_optima"])))
    bx.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    bx.grid(alpha=0.3)
    fig.suptitle("Identity 13 - which KL? The ELBO's KL(q || p) is mode-seeking and "
                 "under-covers; KL(p || q) is mass-covering", fontsize=12)
    return fig


def plot_prior_or_posterior(plt, d):
    """14: both KLs along the ascent of the ELBO from q = p(z)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    paths = (("full_path", "full-covariance q", BLUE), ("diagonal_path", "diagonal q", ORANGE))
    for key, label, color in paths:
        step = np.asarray(d[key]["step"]) + 1
        post = np.asarray(d[key]["kl_to_posterior"])
        keep = post > 0
        ax.loglog(step[keep], post[keep], color=color, lw=2, label=label)
        bx.semilogx(step, d[key]["kl_to_prior"], color=color, lw=2, label=label)
    ax.axhline(d["mean_field_gap"], color=ORANGE, ls=":",
               label=f"mean-field gap KL(q_mf || p(z|x)) = {d['mean_field_gap']:.3f}")
    ax.set_xlabel("gradient-ascent step + 1 (from q = p(z))")
    ax.set_ylabel("KL(q || p(z|x))  (nats) = log p(x) - ELBO")
    ax.set_title("distance to the POSTERIOR: falls to 0\n(or to the mean-field gap)")
    bx.axhline(d["kl_posterior_to_prior"], color="black", ls="--",
               label=f"KL(p(z|x) || p(z)) = {d['kl_posterior_to_prior']:.3f}")
    bx.set_xlabel("gradient-ascent step + 1 (from q = p(z))")
    bx.set_ylabel("KL(q || p(z))  (nats), the ELBO's KL term")
    bx.set_title("distance to the PRIOR: rises from 0 and stays\n"
                 "at KL(p(z|x) || p(z)), not 0")
    for a in (ax, bx):
        a.legend(fontsize=8)
        a.grid(alpha=0.3, which="both")
    fig.suptitle("Identity 14 - prior or posterior? Maximizing the ELBO over q (model fixed) "
                 "moves q from the prior to the posterior", fontsize=12)
    return fig


def plot_elbo_surgery(plt, d):
    """15: the average KL split into information and marginal KL; the finite-data bound."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    encs = (("random_encoder", "random linear\nencoder"),
            ("exact_encoder", "exact posterior\nencoder"))
    for i, (key, _) in enumerate(encs):
        r = d[key]
        ax.bar(i, r["mutual_information"], color=BLUE, width=0.5,
               label="I_q(x; z): information about x" if i == 0 else None)
        ax.bar(i, r["marginal_kl"], bottom=r["mutual_information"], color=ORANGE, width=0.5,
               label="KL(q(z) || p(z)): aggregate vs prior" if i == 0 else None)
        ax.text(i, r["average_kl"] * 1.02, f"E_x KL = {r['average_kl']:.3f}\n"
                f"= {r['mutual_information']:.3f} + {abs(r['marginal_kl']):.3f}",
                ha="center", va="bottom", fontsize=9)
    ax.set_xticks([0, 1], [label for _, label in encs])
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylim(0, 1.3 * max(d[k]["average_kl"] for k, _ in encs))
    ax.set_ylabel("nats")
    ax.set_title("E_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z))")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3, axis="y")

    rows = d["finite_data"]
    N = np.array([r["N"] for r in rows])
    bx.errorbar(N, [r["mutual_information"] for r in rows],
                yerr=[2 * r["mutual_information_stderr"] for r in rows], color=BLUE, marker="o",
                capsize=3, label="I_N: information with N data points (±2 se)")
    bx.errorbar(N, [r["marginal_kl"] for r in rows],
                yerr=[2 * r["marginal_kl_stderr"] for r in rows], color=ORANGE, marker="s",
                capsize=3, label="KL(q_N(z) || p(z)) (±2 se)")
    grid = np.geomspace(N.min(), N.max(), 100)
    bx.plot(grid, np.log(grid), color=GREY, ls=":", label="log N: the bound on I_N")
    bx.axhline(d["exact_encoder"]["mutual_information"], color=BLUE, ls="--",
               label=f"I_q(x; z) with all of p(x) = {d['exact_encoder']['mutual_information']:.3f}")
    bx.set_xscale("log")
    bx.set_ylim(0, 1.6 * max(d["exact_encoder"]["average_kl"], 1e-3))
    bx.set_xlabel("N, data points in the aggregate q_N(z) = mean of N encoder Gaussians")
    bx.set_ylabel("nats")
    bx.set_title("finite data, exact posterior encoder: I_N <= log N")
    bx.legend(fontsize=8)
    bx.grid(alpha=0.3, which="both")
    fig.suptitle("Identity 15 - ELBO surgery (Hoffman & Johnson 2016): the average KL term is "
                 "information plus a marginal KL", fontsize=12)
    return fig


def plot_sticking_the_landing(plt, d):
    """16: the variance of the full and STL gradients as q approaches the posterior."""
    fig, ax = plt.subplots(figsize=(8, 5.2))
    c = d["curve"]
    ax.loglog(c["distance"], c["full_variance"], color=ORANGE, lw=2,
              label="full reparameterized gradient (closed form)")
    ax.loglog(c["distance"], c["stl_variance"], color=BLUE, lw=2,
              label="STL, path term only (closed form)")
    rows = [r for r in d["table"] if r["distance"] > 0]
    dist = [r["distance"] for r in rows]
    ax.loglog(dist, [r["full_variance"] for r in rows], "o", color=ORANGE,
              label=f"Monte Carlo, {d['n_mc']} draws")
    ax.loglog(dist, [r["stl_variance"] for r in rows], "o", color=BLUE)
    at_post = d["table"][-1]
    ax.axhline(at_post["full_variance_closed_form"], color=ORANGE, ls=":",
               label=f"full at q = p(z|x): sum_j (Λjj + 1/2) = "
                     f"{at_post['full_variance_closed_form']:.3f}")
    ax.text(0.02, 0.04, f"at q = p(z|x) exactly: STL variance {at_post['stl_variance']:.1e}, "
            f"largest |STL draw| {d['stl_max_abs_at_posterior']:.1e}",
            transform=ax.transAxes, fontsize=9)
    ax.set_xlabel("distance of q from p(z|x) (1 = generic q0, 0 = posterior; in mean and "
                  "log-variance)")
    ax.set_ylabel("variance of the gradient estimate,\nsummed over (mu, log_var) components")
    ax.set_title("Identity 16 - sticking the landing: both unbiased; STL's variance\n"
                 "goes to 0 at the posterior, the full gradient's does not")
    ax.legend(fontsize=8, loc="center left")
    ax.grid(alpha=0.3, which="both")
    return fig


def plot_iwae_snr(plt, d):
    """17: signal-to-noise against K on log-log axes."""
    fig, ax = plt.subplots(figsize=(8, 5.2))
    K = np.asarray(d["ks"], dtype=float)
    series = (("iwae_encoder", "IWAE encoder", BLUE), ("dreg_encoder", "DReG encoder", GREEN),
              ("decoder", "IWAE decoder", ORANGE))
    for key, label, color in series:
        per_comp = np.array([r[f"{key}_snr"] for r in d["table"]])  # (len(K), components)
        ax.loglog(K, per_comp, color=color, lw=0.7, alpha=0.35)
        med = [r[f"{key}_snr_median"] for r in d["table"]]
        ax.loglog(K, med, color=color, lw=2.5, marker="o",
                  label=f"{label}: slope {d['median_slopes'][key]:+.2f}")
    for slope, ref in ((-0.5, d["table"][0]["iwae_encoder_snr_median"]),
                       (0.5, d["table"][0]["decoder_snr_median"])):
        ax.loglog(K, ref * K**slope, color=GREY, ls=":", lw=1.5)
        ax.text(K[-1] * 1.15, ref * K[-1] ** slope, f"K^{slope:+.1f}", color=GREY,
                va="center", fontsize=9)
    ax.set_xlim(K[0] * 0.8, K[-1] * 2.5)
    ax.set_xlabel("K, importance samples per gradient")
    ax.set_ylabel("SNR = |E g| / sd(g)  (dimensionless)")
    ax.set_title(f"Identity 17 - IWAE's signal-to-noise ({d['reps']} draws per K; thin lines: "
                 "components,\nthick: median): the encoder's falls like K^-1/2, DReG's does not")
    ax.legend(fontsize=9, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    return fig


def plot_network_elbo(plt, d):
    """18: the network's Monte Carlo ELBO against K, and its exact sigma-point value."""
    c = d["monte_carlo_curve"]
    fig, ax = plt.subplots(figsize=(8, 5.2))
    K, mean, sd = np.asarray(c["K"]), np.asarray(c["mean"]), np.asarray(c["sd"])
    ax.fill_between(K, mean - 2 * sd, mean + 2 * sd, color=BLUE, alpha=0.2,
                    label=f"network, random eps: mean ± 2 sd over {c['reps']} repeats")
    ax.plot(K, mean, color=BLUE, marker="o", lw=1.5)
    ax.axhline(c["exact_elbo"], color="black", lw=1.5,
               label=f"exact ELBO of the same q = {c['exact_elbo']:.4f}")
    ax.axhline(c["log_px"], color=GREEN, ls="--", label=f"exact log p(x) = {c['log_px']:.4f}")
    ax.plot([c["sigma_point_K"]], [c["sigma_point_elbo"]], marker="*", ms=16, color=ORANGE,
            ls="none", label=f"network at the {c['sigma_point_K']} sigma points: "
                             f"{c['sigma_point_elbo']:.4f} (exact)")
    ax.set_xscale("log")
    lo = min(c["exact_elbo"], c["log_px"])
    hi = max(c["exact_elbo"], c["log_px"])
    span = max(hi - lo, 4 * sd[-1], 1e-3)
    ax.set_ylim(lo - 1.5 * span, hi + 1.5 * span)
    ax.set_xlabel("K, samples of eps per datapoint")
    ax.set_ylabel("ELBO estimate (nats)")
    ax.set_title(f"Identity 18 - the VAE network's own ELBO ({c['likelihood']}, linear):\n"
                 "exact at 2Z sigma points, below log p(x)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    return fig


#: identity number -> function(pyplot, details) -> figure
PLOTS = {13: plot_kl_direction, 14: plot_prior_or_posterior, 15: plot_elbo_surgery,
         16: plot_sticking_the_landing, 17: plot_iwae_snr, 18: plot_network_elbo}


def write_plots(results: list[IdentityResult], directory) -> list[Path] | None:
    """Write one PNG per result that has a picture into ``directory`` (created if needed).

    Returns the paths written, or None when matplotlib is not installed. Each file is
    written whole (a temporary name, then ``os.replace``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for r in results:
        if r.number not in PLOTS:
            continue
        fig = PLOTS[r.number](plt, r.details)
        fig.tight_layout()
        path = directory / f"identity{r.number:02d}_{IDENTITIES[r.number].__name__}.png"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, path)
        written.append(path)
    return written
