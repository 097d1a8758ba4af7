"""The training loop, readable in one screen (see :func:`train`), and what it needs around it.

One step::

    xb = next minibatch (freshly binarized each epoch if dynamic)
    eps ~ N(0, I) of shape (K, B, Z)          <- one Generator drives everything
    loss, grads = objective(model, xb, eps)   <- negative ELBO (or IWAE bound), nats/datapoint
    stop at once if loss or grads are not finite
    optimizer.step(model.flat, grads.flat)

At the end of each epoch: the negative ELBO (beta = 1, sampled z) and its
reconstruction and KL parts on the validation set and on up to
``train_eval_size`` training points, the number of active units, pictures,
``metrics.jsonl``, and the ``latest`` (and, when validation improved, ``best``)
checkpoint. The run can stop at any step boundary (Ctrl-C) and resume from its
``latest`` checkpoint to exactly the parameters an uninterrupted run reaches.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import figures
from .checkpoint import (
    check_architecture,
    load_checkpoint,
    param_specs_json,
    rng_from_array,
    rng_to_array,
    save_checkpoint,
)
from .data import BINARIZE_MODES, DATASETS, binarize, load_dataset, prepare_data
from .diagnostics import active_units, evaluate_elbo, latent_means
from .optim import make_optimizer
from .vae import KL_MODES, VAE

OBJECTIVES = ("elbo", "iwae")
#: exit codes of ``minivae train``
EXIT_OK, EXIT_NONFINITE, EXIT_INTERRUPTED = 0, 3, 130


@dataclass
class TrainConfig:
    """Every choice a training run makes; saved as ``config.json`` in the run directory."""

    dataset: str = "digits"
    data_dir: str | None = None
    data_seed: int = 0
    binarize: str = "auto"
    hidden: list[int] = field(default_factory=lambda: [200])
    decoder_hidden: list[int] | None = None
    latent_dim: int = 8
    likelihood: str = "bernoulli"
    activation: str = "relu"
    objective: str = "elbo"
    k: int = 1
    kl: str = "analytic"
    beta: float = 1.0
    warmup_epochs: float = 0.0
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 100
    epochs: int = 50
    seed: int = 0
    dtype: str = "float32"
    patience: int | None = None
    pictures: bool = True
    train_eval_size: int = 10000

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the first bad option."""
        def positive(name, minimum=1):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")

        for name in ("latent_dim", "k", "batch_size", "train_eval_size"):
            positive(name)
        for name in ("epochs", "seed", "data_seed"):
            positive(name, 0)
        if self.patience is not None:
            positive("patience")
        choices = {"dataset": DATASETS, "binarize": BINARIZE_MODES, "objective": OBJECTIVES,
                   "kl": KL_MODES, "optimizer": ("adam", "sgd"), "dtype": ("float32", "float64")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a number >= 0, got {self.beta!r}")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if self.objective == "iwae" and (self.beta != 1.0 or self.warmup_epochs):
            raise ValueError("beta and KL warm-up apply to the ELBO objective only; the IWAE "
                             "bound has no separate KL term (use --objective elbo)")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}")
        return cls(**d)


@dataclass
class TrainResult:
    """How a run ended: ``status`` is completed, early-stopped, interrupted or non-finite."""

    status: str
    epoch: int
    step: int
    run_dir: Path
    history: list[dict]
    exit_code: int = EXIT_OK


class NonFiniteError(FloatingPointError):
    """The loss or the gradient became NaN or infinite."""


# ----------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Progress:
    """Progress within an epoch (rate, ETA) on stderr.

    On a terminal: one line redrawn every 0.25 s. Otherwise (a log file): a
    line every 30 s, so long epochs still show signs of life.
    """

    def __init__(self, stream, n_batches: int):
        self.stream, self.n = stream, n_batches
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.interval = 0.25 if self.tty else 30.0
        self.next_t = time.perf_counter() + self.interval

    def update(self, epoch: int, i: int, done_here: int, t0: float, seen: int,
               loss: float) -> None:
        """After batch ``i`` of the epoch; ``done_here`` batches and ``seen`` datapoints
        were processed in this session since ``t0``."""
        now = time.perf_counter()
        if now < self.next_t:
            return
        self.next_t = now + self.interval
        rate = seen / max(now - t0, 1e-9)
        eta = (now - t0) / max(done_here, 1) * (self.n - i)
        width = 24
        bar = "#" * int(width * i / self.n)
        text = (f"epoch {epoch} [{bar:.<{width}}] {i}/{self.n}  {rate:,.0f} datapoints/s  "
                f"epoch ETA {_fmt_time(eta)}  loss {loss:.2f} nats")
        self.stream.write(f"\r{text} " if self.tty else text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()


class _InterruptFlag:
    """First Ctrl-C sets a flag (checkpoint at the next step boundary); a second one aborts."""

    def __init__(self, err):
        self.set, self.err, self.previous = False, err, None

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        self.err.write("\ninterrupt: saving a checkpoint at the end of this step "
                       "(Ctrl-C again to abort without saving)\n")

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def next_run_dir(parent="runs", stem: str = "run") -> Path:
    """The first of ``parent/stem-1``, ``parent/stem-2``, ... that does not exist yet."""
    i = 1
    while (Path(parent) / f"{stem}-{i}").exists():
        i += 1
    return Path(parent) / f"{stem}-{i}"


def build_model(config: TrainConfig, input_dim: int) -> VAE:
    """The VAE a configuration describes."""
    return VAE(input_dim, config.latent_dim, hidden=tuple(config.hidden),
               decoder_hidden=None if config.decoder_hidden is None else
               tuple(config.decoder_hidden), likelihood=config.likelihood,
               activation=config.activation, dtype=np.dtype(config.dtype), seed=config.seed)


def load_data(config: TrainConfig, print_fn=None):
    """The dataset a configuration names, prepared for its likelihood and dtype."""
    dataset = load_dataset(config.dataset, config.data_dir, seed=config.data_seed,
                           print_fn=print_fn)
    return prepare_data(dataset, config.likelihood, config.binarize, np.dtype(config.dtype),
                        seed=config.data_seed)


def _objective(config: TrainConfig):
    """``f(model, x, eps, beta) -> (loss, grads)`` for the chosen objective."""
    if config.objective == "iwae":
        from .objectives import iwae_loss_and_grad  # written separately; imported when used

        return lambda model, x, eps, beta: iwae_loss_and_grad(model, x, eps)
    kl = config.kl
    return lambda model, x, eps, beta: model.loss_and_grad(x, eps, kl=kl, beta=beta)


# ----------------------------------------------------------------------
# the run directory
# ----------------------------------------------------------------------


class RunDir:
    """Paths inside a run directory."""

    def __init__(self, path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.latest = self.checkpoints / "latest.npz"
        self.best = self.checkpoints / "best.npz"
        self.pictures = self.path / "pictures"

    def write_metrics(self, history: list[dict]) -> None:
        _write_text(self.metrics, "".join(json.dumps(h) + "\n" for h in history))


# ----------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------


def train(config: TrainConfig | None = None, run_dir=None, *, resume: bool = False,
          overrides: dict | None = None, out=None, err=None, _step_hook=None) -> TrainResult:
    """Train (or, with ``resume=True``, continue) the run in ``run_dir``.

    A new run without ``run_dir`` goes to :func:`next_run_dir` (``runs/run-N``).

    ``overrides`` (resume only) may change ``epochs`` and ``patience``. Epoch
    lines go to ``out`` (stdout), the progress display and warnings to ``err``
    (stderr). ``_step_hook(step)``, for tests, is called after every step.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    def say(msg):
        print(msg, file=out, flush=True)

    if run_dir is None:
        if resume:
            raise ValueError("resume=True needs the run_dir of the run to continue")
        run_dir = next_run_dir()
    run = RunDir(run_dir)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run.latest)
        config = TrainConfig.from_dict(ckpt.meta["train_config"])
        for name, value in (overrides or {}).items():
            if name not in ("epochs", "patience"):
                raise ValueError(f"only epochs and patience can change when resuming, "
                                 f"not {name}")
            setattr(config, name, value)
    else:
        config = TrainConfig() if config is None else config
        if run.latest.exists():
            raise FileExistsError(f"{run.path} already holds a run; continue it with "
                                  f"--resume {run.path} or choose another --run-dir")
    config.validate()

    data = load_data(config, print_fn=say)
    image_shape = data.dataset.image_shape
    model = build_model(config, data.train.shape[1])
    optimizer = make_optimizer(config.optimizer, config.lr)
    objective = _objective(config)
    rng = np.random.default_rng([config.seed, 1])  # minibatches, binarization, eps
    n, bs = len(data.train), config.batch_size
    n_batches = -(-n // bs)
    warmup_steps = config.warmup_epochs * n_batches
    train_eval_x = data.train[:config.train_eval_size]
    if data.dynamic:  # evaluate the training subset at one fixed binarization
        train_eval_x = binarize(train_eval_x, np.random.default_rng([config.data_seed, 8]))
    sample_z = np.random.default_rng([config.seed, 2]).standard_normal(
        (64, config.latent_dim)).astype(model.dtype)
    exact_nll = None
    if data.dataset.exact_log_prob is not None:
        exact_nll = -float(np.mean(data.dataset.exact_log_prob(data.valid)))

    epoch, step, history, best, bad_epochs = 0, 0, [], math.inf, 0
    position = None  # where an interrupted epoch stopped
    if ckpt is not None:
        check_architecture(ckpt, model)
        model.set_flat(ckpt.params)
        optimizer.load_state_dict(ckpt.optimizer_state)
        rng = ckpt.rngs["train"]
        m = ckpt.meta
        epoch, step, history, best, bad_epochs = (m["epoch"], m["step"], m["history"],
                                                  m["best"], m["bad_epochs"])
        position = m.get("position")
        say(f"resuming {run.path} at epoch {epoch}" + (
            f", batch {position['batch']}/{n_batches}" if position else "") + f", step {step}")
    else:
        for d in (run.path, run.checkpoints):
            d.mkdir(parents=True, exist_ok=True)
        _write_text(run.config, json.dumps(asdict(config), indent=1) + "\n")

    def checkpoint(path, extra=None, rngs=None):
        meta = {"train_config": asdict(config), "model_config": model.config(),
                "param_specs": param_specs_json(model), "epoch": epoch, "step": step,
                "history": history, "best": best, "bad_epochs": bad_epochs,
                "dataset": data.dataset.description, "binarize": data.binarize}
        meta.update(extra or {})
        save_checkpoint(path, model.flat, optimizer.state_dict(), {"train": rng, **(rngs or {})},
                        meta)

    say(f"{model!r}\ndata: {data.dataset.description}; {n} train / {len(data.valid)} valid / "
        f"{len(data.test)} test; binarization: {data.binarize}\nrun directory: {run.path}")
    if ckpt is None:
        checkpoint(run.latest)  # epoch 0: a good checkpoint exists before the first step
    if epoch >= config.epochs:
        say(f"the run has already reached epoch {epoch}; pass --epochs N with N > {epoch} "
            f"to train further")
        return TrainResult("completed", epoch, step, run.path, history)

    progress = _Progress(err, n_batches)
    curves_skipped, next_curves_t = False, 0.0
    t_run = time.perf_counter()
    epochs_timed = 0
    status = "completed"
    with _InterruptFlag(err) as interrupt:
        while epoch < config.epochs:
            this_epoch = epoch + 1
            t0 = time.perf_counter()
            # -- the epoch's draws: order and (dynamic) binarization, replayable on resume
            if position is not None:
                rng_epoch_start = rng_from_array(np.array(position["epoch_rng"], np.uint64))
                rng_now = rng
                rng = rng_epoch_start
            epoch_rng_state = rng_to_array(rng).tolist()
            order = rng.permutation(n)
            x_epoch = binarize(data.train, rng) if data.dynamic else data.train
            first, loss_sum, seen, beta = 0, 0.0, 0, config.beta
            if position is not None:
                rng = rng_now
                first, loss_sum, seen = position["batch"], position["loss_sum"], position["seen"]
                position = None
            seen_before = seen  # datapoints of this epoch processed before a resume
            # -- the steps
            for i in range(first, n_batches):
                if interrupt.set:
                    progress.clear()
                    checkpoint(run.latest, {"position": {
                        "batch": i, "loss_sum": loss_sum, "seen": seen,
                        "epoch_rng": epoch_rng_state}})
                    say(f"interrupted at step {step} (epoch {this_epoch}, batch {i}/"
                        f"{n_batches}); checkpoint saved: {run.latest}\n"
                        f"continue with: python -m minivae train --resume {run.path}")
                    return TrainResult("interrupted", epoch, step, run.path, history,
                                       EXIT_INTERRUPTED)
                xb = x_epoch[order[i * bs:(i + 1) * bs]]
                beta = config.beta * min(1.0, step / warmup_steps) if warmup_steps \
                    else config.beta
                eps = rng.standard_normal((config.k, len(xb), config.latent_dim),
                                          dtype=model.dtype)
                loss, grads = objective(model, xb, eps, beta)
                if not math.isfinite(loss) or not np.isfinite(grads.flat).all():
                    progress.clear()
                    err.write(_nonfinite_message(loss, grads, step + 1, this_epoch, i + 1,
                                                 n_batches, config.lr, run.latest, epoch))
                    err.flush()
                    return TrainResult("non-finite", epoch, step, run.path, history,
                                       EXIT_NONFINITE)
                optimizer.step(model.flat, grads.flat)
                step += 1
                loss_sum += loss * len(xb)
                seen += len(xb)
                progress.update(this_epoch, i + 1, i + 1 - first, t0, seen - seen_before, loss)
                if _step_hook is not None:
                    _step_hook(step)
            progress.clear()
            epoch = this_epoch
            t_train = time.perf_counter() - t0

            # -- end of epoch: evaluation, metrics, pictures, checkpoints
            if not np.isfinite(model.flat).all():
                err.write(f"stopped: non-finite parameters after step {step} (epoch {epoch}); "
                          f"the last good checkpoint is kept: {run.latest}\n")
                return TrainResult("non-finite", epoch, step, run.path, history, EXIT_NONFINITE)
            eval_rng = np.random.default_rng([config.seed, 3, epoch])
            tr = evaluate_elbo(model, train_eval_x, eval_rng)
            va = evaluate_elbo(model, data.valid, eval_rng)
            au = active_units(latent_means(model, data.valid))
            if not (math.isfinite(tr.loss) and math.isfinite(va.loss)):
                err.write(f"stopped: non-finite evaluation after epoch {epoch} (step {step}); "
                          f"the last good checkpoint is kept: {run.latest}\n")
                return TrainResult("non-finite", epoch, step, run.path, history, EXIT_NONFINITE)
            improved = va.loss < best
            if improved:
                best, bad_epochs = va.loss, 0
            else:
                bad_epochs += 1
            elapsed = time.perf_counter() - t0
            epochs_timed += 1
            eta = (time.perf_counter() - t_run) / epochs_timed * (config.epochs - epoch)
            record = {"epoch": epoch, "step": step, "train_objective": loss_sum / max(seen, 1),
                      "beta": beta, "train_loss": tr.loss, "train_recon": tr.recon,
                      "train_kl": tr.kl, "valid_loss": va.loss, "valid_recon": va.recon,
                      "valid_kl": va.kl, "valid_stderr": va.stderr, "active_units": au,
                      "seconds": elapsed,
                      "datapoints_per_second": (seen - seen_before) / max(t_train, 1e-9)}
            if exact_nll is not None:
                record["valid_exact_nll"] = exact_nll
            history.append(record)
            say(_epoch_line(record, config, show_beta=bool(warmup_steps) or config.beta != 1,
                            eta=eta, improved=improved))

            stopping = config.patience is not None and bad_epochs >= config.patience
            if config.pictures:
                if image_shape is not None:
                    _pictures(run, model, data.valid[:32], sample_z, image_shape, epoch)
                elif epoch == 1:
                    err.write(f"image grids skipped: the {config.dataset} data are not images\n")
                # curves cost a fraction of a second: draw them every 30 s and at the end
                last = epoch == config.epochs or stopping or interrupt.set
                if (last or time.perf_counter() >= next_curves_t) and not curves_skipped:
                    next_curves_t = time.perf_counter() + 30.0
                    if not figures.save_learning_curves(run.pictures / "curves.png", history):
                        err.write("learning curves skipped: matplotlib is not installed (pip "
                                  "install 'minivae[plots]')"
                                  + ("; image grids are still written\n" if image_shape else
                                     "\n"))
                        curves_skipped = True
            checkpoint(run.latest)
            if improved:
                checkpoint(run.best)
            run.write_metrics(history)
            if stopping:
                say(f"early stopping: validation -ELBO has not improved for {bad_epochs} "
                    f"epochs (best {best:.3f} nats)")
                status = "early-stopped"
                break
            if interrupt.set:
                say(f"interrupted after epoch {epoch}; checkpoint saved: {run.latest}\n"
                    f"continue with: python -m minivae train --resume {run.path}")
                return TrainResult("interrupted", epoch, step, run.path, history,
                                   EXIT_INTERRUPTED)
    say(f"done: {epoch} epochs, {step} steps, {_fmt_time(time.perf_counter() - t_run)}; best "
        f"valid -ELBO {best:.3f} nats per datapoint; checkpoints in {run.checkpoints}")
    return TrainResult(status, epoch, step, run.path, history)


def _epoch_line(r: dict, config: TrainConfig, *, show_beta: bool, eta: float,
                improved: bool) -> str:
    """The line printed after each epoch (nats per datapoint); ``*`` marks a new best."""
    line = (f"epoch {r['epoch']:3d}/{config.epochs}  train -ELBO {r['train_loss']:8.3f} "
            f"(recon {r['train_recon']:8.3f} + KL {r['train_kl']:7.3f})  valid -ELBO "
            f"{r['valid_loss']:8.3f} (recon {r['valid_recon']:8.3f} + KL {r['valid_kl']:7.3f}) "
            f"nats")
    if "valid_exact_nll" in r:
        line += f"  [exact -log p(x) {r['valid_exact_nll']:.3f}]"
    line += f"  active units {r['active_units']}/{config.latent_dim}"
    if show_beta:
        line += f"  beta {r['beta']:.2f}"
    line += (f"  {r['seconds']:.1f}s {r['datapoints_per_second']:,.0f}/s  ETA {_fmt_time(eta)}"
             + ("  *" if improved else ""))
    return line


def _nonfinite_message(loss, grads, step, epoch, batch, n_batches, lr, latest, good_epoch):
    what = "loss" if not math.isfinite(loss) else "gradient"
    bad = [name for name, g in grads.items() if not np.isfinite(g).all()]
    return (f"stopped: non-finite {what} at step {step} (epoch {epoch}, batch {batch}/"
            f"{n_batches}): loss = {loss}"
            + (f"; non-finite gradient in {', '.join(bad)}" if bad else "")
            + f". Try a smaller --lr (now {lr:g}). The last good checkpoint is kept: {latest} "
            f"(epoch {good_epoch})\n")


def _pictures(run: RunDir, model: VAE, x: np.ndarray, z: np.ndarray, image_shape, epoch: int):
    """Reconstructions beside their inputs, samples from the prior, the 2-D manifold."""
    tag = f"epoch{epoch:03d}"
    figures.save_reconstructions(run.pictures / f"reconstructions_{tag}.png", x,
                                 model.reconstruct(x), image_shape)
    figures.save_samples(run.pictures / f"samples_{tag}.png", model.decode_mean(z), image_shape)
    if model.latent_dim == 2:
        figures.save_manifold(run.pictures / f"manifold_{tag}.png", model.decode_mean,
                              image_shape, model.dtype)
