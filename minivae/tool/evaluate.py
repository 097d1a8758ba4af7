"""Using a trained run: load its model, evaluate it on a split, draw a grid of samples.

``evaluate`` reports, in nats per datapoint,

* the negative ELBO (z sampled from q(z|x), closed-form KL, beta = 1), with its
  reconstruction and KL parts and the standard error over datapoints;
* the importance-sampled estimate of log p(x) with k samples per datapoint
  (Burda et al. 2015; :func:`minivae.objectives.importance_sampled_log_marginal`),
  with two standard errors: the Monte Carlo one for these datapoints, and the one
  over datapoints (as an estimate of the population mean);
* for the linear-Gaussian dataset, the exact log p(x) beside them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..objectives import importance_sampled_log_marginal
from ..vae import VAE
from . import figures
from .checkpoint import Checkpoint, check_architecture, load_checkpoint
from .data import binarize
from .diagnostics import active_units, evaluate_elbo, latent_means
from .train import RunDir, TrainConfig, load_data


def load_run(path, which: str = "best") -> tuple[TrainConfig, VAE, Checkpoint]:
    """The configuration, model and checkpoint of a run directory (or of a ``.npz`` file).

    ``which`` is ``"best"`` (lowest validation loss) or ``"latest"``; ``best``
    falls back to ``latest`` when no epoch has finished yet.
    """
    path = Path(path)
    if path.suffix == ".npz":
        ckpt_path = path
    else:
        if which not in ("best", "latest"):
            raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
        run = RunDir(path)
        if not run.latest.exists():
            raise FileNotFoundError(f"no checkpoint in {run.checkpoints} (is {path} a run "
                                    f"directory written by 'minivae train'?)")
        ckpt_path = run.best if which == "best" and run.best.exists() else run.latest
    ckpt = load_checkpoint(ckpt_path)
    config = TrainConfig.from_dict(ckpt.meta["train_config"])
    model = VAE.from_config(ckpt.meta["model_config"])
    check_architecture(ckpt, model)
    model.set_flat(ckpt.params)
    return config, model, ckpt


@dataclass
class Evaluation:
    """Results of :func:`evaluate_run` (nats per datapoint)."""

    checkpoint: str
    epoch: int
    split: str
    n: int
    neg_elbo: float
    neg_elbo_stderr: float
    recon: float
    kl: float
    active_units: int
    k: int | None = None
    log_marginal: float | None = None
    log_marginal_mc_stderr: float | None = None
    log_marginal_data_stderr: float | None = None
    exact_log_marginal: float | None = None
    seconds: float = 0.0


def evaluate_run(path, *, which: str = "best", split: str = "test", k: int = 1000,
                 n: int | None = None, batch_size: int = 100, seed: int = 0,
                 data_dir=None, print_fn=print) -> Evaluation:
    """Evaluate a run's checkpoint on a split; ``k=0`` skips the IS log-likelihood."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    t0 = time.perf_counter()
    config, model, ckpt = load_run(path, which)
    if data_dir is not None:
        config.data_dir = str(data_dir)
    data = load_data(config)
    x = getattr(data, split)
    if split == "train" and data.dynamic:
        x = binarize(x, np.random.default_rng([config.data_seed, 8]))
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        x = x[:n]
    rng = np.random.default_rng(seed)
    print_fn(f"evaluating {ckpt.path} (epoch {ckpt.meta['epoch']}) on {len(x)} {split} "
             f"datapoints")
    elbo = evaluate_elbo(model, x, rng, batch_size=max(batch_size, 500))
    result = Evaluation(str(ckpt.path), ckpt.meta["epoch"], split, len(x), elbo.loss,
                        elbo.stderr, elbo.recon, elbo.kl,
                        active_units(latent_means(model, x)))
    print_fn(f"negative ELBO {elbo.loss:.3f} +- {elbo.stderr:.3f} nats per datapoint "
             f"(recon {elbo.recon:.3f} + KL {elbo.kl:.3f}; z sampled from q, 1 sample; "
             f"+- is the standard error over datapoints); active units "
             f"{result.active_units}/{model.latent_dim}")
    if k > 0:
        values, stderrs = _importance_sampled(model, x, k, rng, batch_size)
        result.k = k
        result.log_marginal = float(values.mean())
        result.log_marginal_mc_stderr = float(np.sqrt(np.sum(stderrs**2)) / len(values))
        result.log_marginal_data_stderr = (
            float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0)
        print_fn(f"log p(x) (importance sampling, k={k}) {result.log_marginal:.3f} nats "
                 f"per datapoint; Monte Carlo standard error "
                 f"{result.log_marginal_mc_stderr:.3f}, standard error over datapoints "
                 f"{result.log_marginal_data_stderr:.3f}")
    if data.dataset.exact_log_marginal is not None:
        result.exact_log_marginal = float(np.mean(data.dataset.exact_log_marginal(x)))
        print_fn(f"exact log p(x) {result.exact_log_marginal:.3f} nats per datapoint "
                 f"(the true model that generated the data)")
    result.seconds = time.perf_counter() - t0
    print_fn(f"({result.seconds:.1f} s)")
    if Path(path).suffix != ".npz":
        out = Path(path) / f"evaluation_{split}.json"
        out.write_text(json.dumps(asdict(result), indent=1) + "\n")
        print_fn(f"written: {out}")
    return result


def _importance_sampled(model: VAE, x: np.ndarray, k: int, rng, batch_size: int):
    """Per-datapoint IS estimates and their standard errors, batch by batch."""
    values, stderrs = [], []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].astype(model.dtype, copy=False)  # uint8 0/1 data, say
        est = importance_sampled_log_marginal(model, xb, k=k, rng=rng)
        values.append(est.values)
        stderrs.append(est.stderr)
    return np.concatenate(values).astype(np.float64), np.concatenate(stderrs).astype(np.float64)


def sample_run(path, out, *, which: str = "best", n: int = 64, seed: int = 0,
               binary: bool = False, print_fn=print) -> Path:
    """Write a PNG grid of ``n`` samples from the prior through a run's decoder.

    Shows the mean of p(x|z) (pixel probabilities for Bernoulli), or with
    ``binary=True`` one draw x ~ p(x|z).
    """
    config, model, ckpt = load_run(path, which)
    shape = {"digits": (8, 8), "synthetic": (8, 8), "mnist": (28, 28),
             "binarized-mnist": (28, 28)}.get(config.dataset)
    if shape is None or shape[0] * shape[1] != model.input_dim:
        raise ValueError(f"the {config.dataset} data are not images: no sample grid to draw")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    samples = model.sample(np.random.default_rng(seed), n, mean=not binary)
    written = figures.save_samples(out, samples, shape)
    print_fn(f"{n} samples from {ckpt.path} (epoch {ckpt.meta['epoch']}) written to {written}")
    return written
