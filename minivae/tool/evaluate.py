"""Using a trained run: load its model, evaluate it on a split, draw a grid of samples.

``evaluate`` reports, in nats per datapoint,

* the negative ELBO (z sampled from q(z|x), closed-form KL, beta = 1), with its
  reconstruction and KL parts and the standard error over datapoints;
* the importance-sampled estimate of log p(x) with k samples per datapoint
  (Burda et al. 2015; :func:`minivae.objectives.importance_sampled_log_marginal`),
  with two standard errors: the Monte Carlo one for these datapoints, and the one
  over datapoints (as an estimate of the population mean);
* for the linear-Gaussian dataset, the exact log p(x) beside them;
* with ``gaps=True`` (``--gaps``), on ``gaps_n`` datapoints drawn at random (fixed by
  ``seed``), the approximation
  and amortization gaps (Cremer et al. 2018; :func:`minivae.gaps.inference_gaps`);
* with ``surgery=True`` (``--surgery``), the average KL term over the *training* split
  split into I(n; z) and KL(q(z) || p(z)) (Hoffman & Johnson 2016;
  :func:`minivae.gaps.elbo_surgery`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..gaps import elbo_surgery, inference_gaps
from ..objectives import importance_sampled_log_marginal
from ..vae import VAE
from . import figures
from .checkpoint import Checkpoint, CheckpointError
from .data import FILE_DATASETS, binarize
from .diagnostics import active_units, evaluate_elbo, latent_means
from .files import NotWritableError, atomic_write, writable_directory
from .rundir import RunDir
from .train import Progress, TrainConfig, load_data, load_run_checkpoint

#: the image shape of each dataset that is made of images
IMAGE_SHAPES = {"digits": (8, 8), "synthetic": (8, 8), "mnist": (28, 28),
                "binarized-mnist": (28, 28)}


def _count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def load_run(path, which: str | None = "best") -> tuple[TrainConfig, VAE, Checkpoint]:
    """The configuration, model and checkpoint of a run directory (or of a ``.npz`` file).

    ``which`` is ``"best"`` (lowest validation loss) or ``"latest"``; ``best``
    falls back to ``latest`` when no epoch has finished yet. It must be None for a
    ``.npz`` file (the file is the checkpoint). Every field of the checkpoint is
    checked (:func:`~minivae.tool.train.load_run_checkpoint`); one whose parameters are
    not finite is refused.
    """
    path = Path(path)
    if path.suffix == ".npz":
        if which is not None:
            raise ValueError(f"--checkpoint chooses a checkpoint of a run directory; {path} is "
                             f"a checkpoint file itself (drop --checkpoint)")
        ckpt_path = path
    else:
        which = "best" if which is None else which
        if which not in ("best", "latest"):
            raise ValueError(f"--checkpoint must be 'best' or 'latest', got {which!r}")
        run = RunDir(path)
        if not run.latest.exists():
            raise FileNotFoundError(f"no checkpoint in {run.checkpoints} (is {path} a run "
                                    f"directory written by 'minivae train'?)")
        ckpt_path = run.best if which == "best" and run.best.exists() else run.latest
    try:
        ckpt, config, model = load_run_checkpoint(ckpt_path)
    except CheckpointError as exc:
        if path.suffix != ".npz" and ckpt_path == run.best:
            raise CheckpointError(f"{exc} (the run's other checkpoint: --checkpoint latest)") \
                from None
        raise
    model.set_flat(ckpt.params)
    return config, model, ckpt


@dataclass
class Evaluation:
    """Results of :func:`evaluate_run` (nats per datapoint); None where a number has no
    value (a standard error from one datapoint)."""

    checkpoint: str
    epoch: int
    split: str
    n: int
    neg_elbo: float
    neg_elbo_stderr: float | None
    recon: float
    kl: float
    active_units: int
    k: int | None = None
    log_marginal: float | None = None
    log_marginal_mc_stderr: float | None = None
    log_marginal_data_stderr: float | None = None
    exact_log_marginal: float | None = None
    gaps: dict | None = None
    surgery: dict | None = None
    seconds: float = 0.0


def _pm(stderr: float | None) -> str:
    return f"+- {stderr:.3f}" if stderr is not None else "(no standard error from 1 datapoint)"


def evaluate_run(path, *, which: str | None = None, split: str = "test", k: int = 1000,
                 n: int | None = None, batch_size: int = 100, seed: int = 0,
                 data_dir=None, print_fn=print, err=None,
                 progress_interval: float | None = None, gaps: bool = False,
                 gaps_n: int = 300, gaps_k: int = 5000, gaps_k_elbo: int = 1000,
                 surgery: bool = False, surgery_samples: int = 10000) -> Evaluation:
    """Evaluate a run's checkpoint on a split; ``k=0`` skips the IS log-likelihood.

    ``gaps`` adds the inference gaps on ``gaps_n`` datapoints of the split drawn at random
    (log p(x) with ``gaps_k`` importance samples, the ELBOs with ``gaps_k_elbo``);
    ``surgery`` adds ELBO surgery over the training split, with ``surgery_samples`` draws
    of z (see :mod:`minivae.gaps`).

    Everything that can be checked is checked before the work starts (options,
    checkpoint, data, that the result can be written); the importance-sampling part
    shows its progress (rate, ETA) on ``err`` (stderr) as ``train`` does: every 0.25 s on
    a terminal, every 30 s in a log file, or every ``progress_interval`` seconds.
    """
    err = sys.stderr if err is None else err
    if split not in ("train", "valid", "test"):
        raise ValueError(f"--split must be train, valid or test, got {split!r}")
    k = _count(k, "--k", 0)
    batch_size = _count(batch_size, "--batch-size")
    seed = _count(seed, "--seed", 0)
    if n is not None:
        n = _count(n, "--n")
    gaps_n, gaps_k = _count(gaps_n, "--gaps-n"), _count(gaps_k, "--gaps-k")
    gaps_k_elbo = _count(gaps_k_elbo, "--gaps-k-elbo")
    surgery_samples = _count(surgery_samples, "--surgery-samples")
    t0 = time.perf_counter()
    config, model, ckpt = load_run(path, which)
    out = None if Path(path).suffix == ".npz" else Path(path) / f"evaluation_{split}.json"
    if out is not None:
        try:
            writable_directory(out.parent, "the run directory")
        except NotWritableError as exc:
            raise NotWritableError(f"{exc} (to write nothing, evaluate the checkpoint file "
                                   f"itself: {ckpt.path})") from None
    if data_dir is not None:
        if config.dataset not in FILE_DATASETS:
            raise ValueError(f"--data-dir applies to runs on data read from files "
                             f"({', '.join(FILE_DATASETS)}); this run used {config.dataset}")
        config.data_dir = str(data_dir)
    data = load_data(config)
    x = getattr(data, split)
    if split == "train" and data.dynamic:
        x = binarize(x, np.random.default_rng([config.data_seed, 8]))
    if n is not None:
        x = x[:n]
    rng = np.random.default_rng(seed)
    print_fn(f"evaluating {ckpt.path} (epoch {ckpt.meta['epoch']}) on {len(x)} {split} "
             f"datapoints" + (f" (all of the split; --n asked for {n})"
                              if n is not None and n > len(x) else ""))
    elbo = evaluate_elbo(model, x, rng, batch_size=max(batch_size, 500))
    if not math.isfinite(elbo.loss):
        raise ValueError(f"{ckpt.path}: the model's negative ELBO on the {split} split is "
                         f"{elbo.loss} (not finite); it cannot be evaluated")
    result = Evaluation(str(ckpt.path), ckpt.meta["epoch"], split, len(x), elbo.loss,
                        elbo.stderr if math.isfinite(elbo.stderr) else None, elbo.recon,
                        elbo.kl, active_units(latent_means(model, x)))
    print_fn(f"negative ELBO {elbo.loss:.3f} {_pm(result.neg_elbo_stderr)} nats per datapoint "
             f"(recon {elbo.recon:.3f} + KL {elbo.kl:.3f}; z sampled from q, 1 sample; "
             f"+- is the standard error over datapoints); active units "
             f"{result.active_units}/{model.latent_dim}")
    if k > 0:
        values, stderrs = _importance_sampled(model, x, k, rng, batch_size, err, ckpt.path,
                                              progress_interval)
        result.k = k
        result.log_marginal = float(values.mean())
        result.log_marginal_mc_stderr = float(np.sqrt(np.sum(stderrs**2)) / len(values))
        result.log_marginal_data_stderr = (
            float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None)
        print_fn(f"log p(x) (importance sampling, k={k}) {result.log_marginal:.3f} nats "
                 f"per datapoint; Monte Carlo standard error "
                 f"{result.log_marginal_mc_stderr:.3f}, standard error over datapoints "
                 + (f"{result.log_marginal_data_stderr:.3f}"
                    if result.log_marginal_data_stderr is not None else "none (1 datapoint)"))
    if data.dataset.exact_log_marginal is not None:
        result.exact_log_marginal = float(np.mean(data.dataset.exact_log_marginal(x)))
        print_fn(f"exact log p(x) {result.exact_log_marginal:.3f} nats per datapoint "
                 f"(the true model that generated the data)")
    if gaps:
        # a random subset: the order of a split need not be random (the first 300 images
        # of binarized MNIST's test split have 16% more ink than the rest, and a -ELBO
        # 11 nats higher)
        subset = np.sort(np.random.default_rng([seed, 14]).choice(
            len(x), size=min(gaps_n, len(x)), replace=False))
        result.gaps = _gaps(model, x[subset], gaps_k, gaps_k_elbo, rng, batch_size, err,
                            progress_interval, print_fn)
    if surgery:
        x_train = data.train
        if data.dynamic:  # one fixed binarization, as for --split train
            x_train = binarize(x_train, np.random.default_rng([config.data_seed, 8]))
        split_kl = elbo_surgery(model, x_train, rng, samples=surgery_samples)
        result.surgery = split_kl.summary()
        for line in split_kl.lines():
            print_fn(line)
    result.seconds = time.perf_counter() - t0
    print_fn(f"({result.seconds:.1f} s)")
    if out is not None:
        record = {key: (None if isinstance(v, float) and not math.isfinite(v) else v)
                  for key, v in asdict(result).items()}
        atomic_write(out, (json.dumps(record, indent=1, allow_nan=False) + "\n").encode())
        print_fn(f"written: {out}")
    return result


def _gaps(model: VAE, x: np.ndarray, k: int, k_elbo: int, rng, batch_size: int, err,
          interval, print_fn) -> dict:
    """:func:`~minivae.gaps.inference_gaps` with progress on ``err``; prints the report."""
    x = x.astype(model.dtype, copy=False)
    progress = Progress(err, len(x), interval)
    t0 = time.perf_counter()
    result = inference_gaps(
        model, x, rng, k=k, k_elbo=k_elbo, batch_size=batch_size,
        progress=lambda done, total: progress.update("gaps", done, done, t0, done, None))
    progress.clear()
    for line in result.lines():
        print_fn(line)
    return result.summary()


def _importance_sampled(model: VAE, x: np.ndarray, k: int, rng, batch_size: int, err,
                        source, interval=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-datapoint IS estimates and their standard errors, batch by batch, with progress.

    Memory is one chunk of samples (see
    :func:`~minivae.objectives.importance_sampled_log_marginal`), whatever k.
    """
    n_batches = -(-len(x) // batch_size)
    values, stderrs = np.empty(len(x)), np.empty(len(x))
    progress = Progress(err, n_batches, interval)
    t0 = time.perf_counter()
    for i, s in enumerate(range(0, len(x), batch_size)):
        xb = x[s:s + batch_size].astype(model.dtype, copy=False)  # uint8 0/1 data, say
        try:
            est = importance_sampled_log_marginal(model, xb, k=k, rng=rng)
        except FloatingPointError as exc:
            progress.clear()
            raise ValueError(f"{source}: the model gives non-finite importance weights on "
                             f"datapoints {s}..{s + len(xb) - 1} ({exc}); log p(x) cannot be "
                             f"estimated") from None
        values[s:s + len(xb)], stderrs[s:s + len(xb)] = est.values, est.stderr
        progress.update(f"log p(x), k={k}", i + 1, i + 1, t0, s + len(xb), None)
    progress.clear()
    return values, stderrs


def sample_run(path, out, *, which: str | None = None, n: int = 64, seed: int = 0,
               binary: bool = False, print_fn=print) -> Path:
    """Write a PNG grid of ``n`` samples from the prior through a run's decoder.

    Shows the mean of p(x|z) (pixel probabilities for Bernoulli), or with
    ``binary=True`` one draw x ~ p(x|z), below a title saying so, with the checkpoint and
    its epoch. Samples are drawn and decoded one row of the grid at a time and streamed
    to the file (:func:`~minivae.tool.figures.save_sample_grid`), so memory does not grow
    with ``n``.
    """
    n = _count(n, "--n")
    seed = _count(seed, "--seed", 0)
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name ending in .png")
    config, model, ckpt = load_run(path, which)
    shape = IMAGE_SHAPES.get(config.dataset)
    if shape is None or shape[0] * shape[1] != model.input_dim:
        raise ValueError(f"the {config.dataset} data are not images: no sample grid to draw")
    parent = out.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"--out {out}: the directory {parent} does not exist")
    writable_directory(parent, "the directory of --out")
    rng = np.random.default_rng(seed)
    what = "one draw x ~ p(x|z) each" if binary else "mean of p(x|z)"
    title = (f"{config.dataset}, epoch {ckpt.meta['epoch']}: {n:,} samples from the prior "
             f"({what}, z ~ N(0, I), seed {seed}) of {ckpt.path}")
    written = figures.save_sample_grid(out, n, lambda c: model.sample(rng, c, mean=not binary),
                                       shape, title)
    print_fn(f"{n} samples from {ckpt.path} (epoch {ckpt.meta['epoch']}) written to {written}")
    return written
