"""Signal-to-noise of IWAE gradients against K, longer than ``verify`` measures it (identity 17).

SNR = |E g| / sd(g) per gradient component, over independent draws of the K samples;
reported as the median over components, with the slope of log SNR against log K (least
squares). Two settings:

1. the exact linear-Gaussian model of ``verify`` (seed 0, and more seeds with --seeds),
   non-amortized q = (mu, log_var) as in identity 17, K up to 3000;
2. a small nonlinear VAE (Bernoulli likelihood, tanh MLPs), one datapoint, with the
   library's own estimators: :func:`minivae.objectives.iwae_loss_and_grad` (encoder and
   decoder) and :func:`minivae.objectives.dreg_loss_and_grad` (encoder), every network
   weight a component.

As in identity 17, the encoder's E g is estimated by the mean of the DReG estimate (both are
unbiased for it; DReG's spread is far smaller), the decoder's by its own mean. Rainforth et
al. (2018) predict slopes -1/2 (IWAE encoder) and +1/2 (decoder); Tucker et al. (2019)
that DReG's does not fall.

    python scripts/snr_slopes.py            # about a minute on one core
    python scripts/snr_slopes.py --json out.json --reps 1000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from minivae import VAE
from minivae.objectives import dreg_loss_and_grad, iwae_loss_and_grad
from minivae.theory.identities import default_problem
from minivae.theory.questions import iwae_gradient_samples


def slope(ks, values) -> float:
    return float(np.polyfit(np.log(ks), np.log(values), 1)[0])


def snr_table(ks, draw):
    """``draw(K) -> (iwae_encoder, dreg_encoder, decoder)``, each (reps, n_components)."""
    rows = []
    for K in ks:
        iwae, dreg, dec = draw(K)
        mean_enc = dreg.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = {"iwae_encoder": np.abs(mean_enc) / iwae.std(axis=0, ddof=1),
                   "dreg_encoder": np.abs(mean_enc) / dreg.std(axis=0, ddof=1),
                   "decoder": np.abs(dec.mean(axis=0)) / dec.std(axis=0, ddof=1)}
        rows.append({"K": K, **{k: v for k, v in snr.items()}})
    out = {"K": list(ks)}
    for name in ("iwae_encoder", "dreg_encoder", "decoder"):
        per = np.array([r[name] for r in rows])  # (len(ks), components)
        per = per[:, np.all(np.isfinite(per) & (per > 0), axis=0)]  # weights that move
        out[name] = {"median_snr": np.median(per, axis=1).tolist(),
                     "median_slope": float(np.median([slope(ks, per[:, j])
                                                      for j in range(per.shape[1])])),
                     "slope_of_median": slope(ks, np.median(per, axis=1)),
                     "components": int(per.shape[1])}
    return out


def exact_model(seed, ks, reps):
    p = default_problem(seed)
    model, x = p.model, p.x
    m, S = model.posterior(x)
    sd = np.sqrt(np.diag(S))
    mu, log_var = m + 0.5 * sd, np.log((model.Z + 1) * sd**2)  # identity 17's q
    rng = np.random.default_rng([seed, 170])

    def draw(K):
        chunk = max(1, 200000 // K)  # draws per call: about 200000 samples of z at a time
        parts = [iwae_gradient_samples(model, x, mu, log_var,
                                       rng.standard_normal((min(chunk, reps - s), K, model.Z)))
                 for s in range(0, reps, chunk)]
        return tuple(np.concatenate(a) for a in zip(*parts, strict=True))
    return snr_table(ks, draw)


def network(ks, reps, seed=0):
    rng = np.random.default_rng(seed)
    model = VAE(12, 2, hidden=(8,), likelihood="bernoulli", activation="tanh", seed=seed)
    x = (rng.random((1, 12)) < 0.5).astype(np.float64)
    enc = np.array([n.startswith("encoder") for n, sl in model.params.slices().items()
                    for _ in range(sl.stop - sl.start)])

    def draw(K):
        iwae, dreg, dec = [], [], []
        for _ in range(reps):
            eps = model.sample_eps(rng, 1, K)
            g = iwae_loss_and_grad(model, x, eps)[1].flat
            iwae.append(g[enc])
            dec.append(g[~enc])
            dreg.append(dreg_loss_and_grad(model, x, eps)[1].flat[enc])
        return np.array(iwae), np.array(dreg), np.array(dec)
    return snr_table(ks, draw)


def print_table(title, t):
    print(title)
    print(f"  {'K':>6} {'IWAE encoder':>13} {'DReG encoder':>13} {'decoder':>9}")
    for i, K in enumerate(t["K"]):
        print(f"  {K:>6} {t['iwae_encoder']['median_snr'][i]:>13.4f} "
              f"{t['dreg_encoder']['median_snr'][i]:>13.4f} {t['decoder']['median_snr'][i]:>9.3f}")
    print("  slope of log SNR vs log K (median over components; slope of the median): "
          + ", ".join(f"{name.replace('_', ' ')} {t[name]['median_slope']:+.2f} "
                      f"({t[name]['slope_of_median']:+.2f})"
                      for name in ("iwae_encoder", "dreg_encoder", "decoder")))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2000, help="draws per K (default: 2000)")
    ap.add_argument("--seeds", type=int, default=3, help="exact models (default: 3)")
    ap.add_argument("--network-reps", type=int, default=500,
                    help="draws per K for the network (default: 500)")
    ap.add_argument("--json", metavar="FILE", default=None, help="also write the numbers")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    doc = {"exact": {}, "network": None}
    ks_exact = [1, 3, 10, 30, 100, 300, 1000, 3000]
    for seed in range(args.seeds):
        t = exact_model(seed, ks_exact, args.reps)
        doc["exact"][seed] = t
        print_table(f"exact linear-Gaussian model, seed {seed} ({args.reps} draws per K)", t)
    t = network([1, 10, 100, 1000], args.network_reps)
    doc["network"] = t
    print_table(f"VAE 12-8-2 Bernoulli, tanh, one datapoint, library estimators "
                f"({args.network_reps} draws per K; {t['iwae_encoder']['components']} encoder "
                f"and {t['decoder']['components']} decoder weights)", t)
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
