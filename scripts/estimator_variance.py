#!/usr/bin/env python
r"""How noisy is each gradient estimator of the ELBO? A measurement, in nats^2.

For one fixed model (a small VAE trained briefly) and one fixed batch x of B datapoints,
the loss is the negative ELBO in nats per datapoint (mean over the batch). Each
estimator below turns K noise samples per datapoint into an unbiased estimate of the
gradient of that loss; the only randomness is the noise eps ~ N(0, I) of shape (K, B, Z).
Drawing R independent eps gives R gradient estimates g_1..g_R, and the table reports,
for each parameter group (encoder weight matrices, encoder biases),

    mean over the group's coordinates i of  Var_r[g_r,i]   (unbiased, ddof=1)

in nats^2 (per squared unit of the parameter): the loss is in nats, so a gradient
coordinate is in nats per unit parameter. The estimators:

* reparam, closed-form KL   VAE.loss_and_grad(kl="analytic"): pathwise gradient through
                            z = mu + sigma*eps; the KL's gradient is exact (no noise).
* reparam, MC KL            VAE.loss_and_grad(kl="mc"): pathwise, KL estimated at the samples.
* score fn, <baseline>      objectives.score_function_grad(kl="mc", baseline=...): REINFORCE,
                            grad = -E_q[(f - c) grad log q] + direct term, f = log p(x,z) - log q.
* score fn closed-form KL   the same with f = log p(x|z) and the exact KL gradient.

Decoder gradients are identical across estimators (all use the direct gradient at the
samples), so only the encoder, where the estimators differ, is reported.

Usage::

    python scripts/estimator_variance.py                       # synthetic bars, ~15 s
    python scripts/estimator_variance.py --data-dir /work/shared/data   # binarized MNIST, minutes
    python scripts/estimator_variance.py --json out.json --plot variance.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minivae import VAE  # noqa: E402
from minivae.objectives import score_function_grad  # noqa: E402
from minivae.optim import Adam  # noqa: E402
from minivae.tool.data import synthetic_bars  # noqa: E402

Estimator = Callable[[VAE, np.ndarray, np.ndarray], np.ndarray]


def _reparam(kl: str) -> Estimator:
    return lambda model, x, eps: model.loss_and_grad(x, eps, kl=kl)[1].flat


def _score(kl: str, baseline: str) -> Estimator:
    return lambda model, x, eps: score_function_grad(model, x, eps, kl=kl,
                                                     baseline=baseline)[1].flat


# name -> (estimator, smallest K it is defined for)
ESTIMATORS: dict[str, tuple[Estimator, int]] = {
    "reparam, closed-form KL": (_reparam("analytic"), 1),
    "reparam, MC KL": (_reparam("mc"), 1),
    "score fn (MC KL), no baseline": (_score("mc", "none"), 1),
    "score fn (MC KL), batch-mean baseline": (_score("mc", "batch-mean"), 1),
    "score fn (MC KL), leave-one-out baseline": (_score("mc", "leave-one-out"), 2),
    "score fn (closed-form KL), no baseline": (_score("analytic", "none"), 1),
    "score fn (closed-form KL), leave-one-out": (_score("analytic", "leave-one-out"), 2),
}
REFERENCE = "reparam, closed-form KL"


def train_briefly(model: VAE, x_train: np.ndarray, epochs: int, seed: int) -> None:
    """Adam (lr 1e-3, batches of 100) on the reparameterized negative ELBO, closed-form KL.

    A few lines on purpose, so that the measurement does not depend on the training
    module's options: all that matters here is a model that is not at its random init.
    """
    rng = np.random.default_rng([seed, 1])
    opt = Adam(lr=1e-3)
    for epoch in range(1, epochs + 1):
        order, total = rng.permutation(len(x_train)), 0.0
        for start in range(0, len(order), 100):
            xb = x_train[order[start : start + 100]]
            loss, grads = model.loss_and_grad(xb, model.sample_eps(rng, len(xb), 1))
            opt.step(model.flat, grads.flat)
            total += loss * len(xb)
        print(f"  epoch {epoch:3d}  train -ELBO {total / len(x_train):8.3f} nats per datapoint")


def load_data(data_dir: str | None, rng: np.random.Generator, n_train: int):
    """(x_train, x_batch_pool, description): binarized MNIST if data_dir is given, else bars."""
    if data_dir is None:
        x = synthetic_bars(n_train + 1000, rng)
        return x[:n_train], x[n_train:], "synthetic bars 8x8 (minivae.tool.data.synthetic_bars)"
    path = os.path.join(data_dir, "binarized_mnist.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--data-dir: expected {path} (binarized MNIST), not found")
    with np.load(path) as d:
        train = d["train"][:n_train].astype(np.float64)
        valid = d["valid"][:1000].astype(np.float64)
    return train, valid, f"binarized MNIST ({path}), first {n_train} training images"


def group_masks(model: VAE) -> dict[str, np.ndarray]:
    """Boolean masks over the flat vector: encoder weight matrices, encoder biases."""
    masks = {"encoder W": np.zeros(model.n_params, bool), "encoder b": np.zeros(model.n_params,
                                                                              bool)}
    for name, sl in model.params.slices().items():
        if name.startswith("encoder") and name.endswith(".W"):
            masks["encoder W"][sl] = True
        elif name.startswith("encoder") and name.endswith(".b"):
            masks["encoder b"][sl] = True
    return masks


def measure(model: VAE, x: np.ndarray, ks, replicates: int, seed: int) -> dict:
    """results[estimator][K][group] = mean over coordinates of the per-coordinate variance."""
    masks = group_masks(model)
    results: dict = {}
    for name, (estimator, k_min) in ESTIMATORS.items():
        results[name] = {}
        for K in ks:
            if K < k_min:
                results[name][K] = None
                continue
            rng = np.random.default_rng([seed, K])  # the same noise stream for every estimator
            grads = np.array([estimator(model, x, model.sample_eps(rng, len(x), K))
                              for _ in range(replicates)])
            var = grads.var(axis=0, ddof=1)
            results[name][K] = {g: float(var[m].mean()) for g, m in masks.items()}
    return results


def format_table(results: dict, ks, group: str) -> str:
    width = max(len(n) for n in results) + 2
    head = f"{'estimator':<{width}}" + "".join(f"{'K=' + str(k):>12}" for k in ks)
    head += "".join(f"{'ratio K=' + str(k):>13}" for k in ks)
    lines = [head, "-" * len(head)]
    for name, by_k in results.items():
        row = f"{name:<{width}}"
        for k in ks:
            row += f"{by_k[k][group]:>12.3e}" if by_k[k] else f"{'n/a':>12}"
        for k in ks:
            ref = results[REFERENCE][k][group]
            row += f"{by_k[k][group] / ref:>13.1f}" if by_k[k] else f"{'n/a':>13}"
        lines.append(row)
    return "\n".join(lines)


def plot(results: dict, ks, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipping the plot ({path})")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, by_k in results.items():
        pts = [(k, by_k[k]["encoder W"]) for k in ks if by_k[k]]
        ax.loglog(*zip(*pts, strict=True), marker="o", label=name)
    ax.set_xlabel("K (samples per datapoint)")
    ax.set_ylabel("mean per-coordinate variance, encoder W (nats$^2$)")
    ax.set_title("Gradient estimator variance")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None,
                   help="directory with binarized_mnist.npz (default: synthetic bars)")
    p.add_argument("--n-train", type=int, default=None,
                   help="training examples (default 3000 bars / 5000 MNIST)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs before measuring (default 30 bars / 2 MNIST)")
    p.add_argument("--latent", type=int, default=None, help="Z (default 8 bars / 20 MNIST)")
    p.add_argument("--hidden", type=int, default=None, help="hidden width (default 64 / 200)")
    p.add_argument("--batch", type=int, default=16, help="B, the fixed batch (default 16)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--replicates", type=int, default=None,
                   help="R independent gradient estimates per cell (default 100 bars / 50 MNIST)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results as JSON here ('-' = stdout)")
    p.add_argument("--plot", default=None, help="save a log-log plot here (needs matplotlib)")
    args = p.parse_args(argv)
    mnist = args.data_dir is not None
    if args.replicates is None:
        args.replicates = 50 if mnist else 100
    if args.replicates < 2 or args.batch < 1 or min(args.ks) < 1:
        p.error("--replicates must be >= 2, --batch >= 1 and every K >= 1")

    n_train = args.n_train or (5000 if mnist else 3000)
    epochs = args.epochs if args.epochs is not None else (2 if mnist else 30)
    latent = args.latent or (20 if mnist else 8)
    hidden = args.hidden or (200 if mnist else 64)

    rng = np.random.default_rng(args.seed)
    x_train, pool, description = load_data(args.data_dir, rng, n_train)
    x = pool[: args.batch]
    model = VAE(x.shape[1], latent, hidden=(hidden,), likelihood="bernoulli", seed=args.seed)
    t0 = time.perf_counter()
    print(f"data: {description}; model: {model}")
    train_briefly(model, x_train, epochs, args.seed)
    loss = model.loss(x, model.sample_eps(np.random.default_rng(1), len(x), 1000))
    print(f"trained {epochs} epochs in {time.perf_counter() - t0:.1f} s; fixed batch of "
          f"B={len(x)} held-out points, -ELBO = {loss:.2f} nats per datapoint (K=1000)")

    t0 = time.perf_counter()
    results = measure(model, x, args.ks, args.replicates, args.seed)
    print(f"measured in {time.perf_counter() - t0:.1f} s\n")
    print("Variance of each gradient estimator of the loss (negative ELBO, nats per datapoint,")
    print(f"mean over the batch) over R={args.replicates} independent draws of eps, for the "
          "fixed model and batch.")
    print("Each number: mean over the group's coordinates of the per-coordinate variance, in "
          "nats^2.")
    print(f"ratio = variance / variance of '{REFERENCE}' at the same K.\n")
    for group in ("encoder W", "encoder b"):
        print(f"[{group}]")
        print(format_table(results, args.ks, group))
        print()

    if args.json:
        payload = {
            "units": "nats^2 (variance of d loss / d parameter; loss in nats per datapoint)",
            "statistic": "mean over coordinates of the per-coordinate variance across "
                         "replicates (ddof=1)",
            "data": description, "model": model.config(), "batch": len(x),
            "replicates": args.replicates, "ks": args.ks, "neg_elbo": loss,
            "results": {n: {str(k): v for k, v in by_k.items()} for n, by_k in results.items()},
        }
        text = json.dumps(payload, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
            print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.ks, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
