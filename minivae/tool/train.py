"""Training: the loop in one screen (:func:`train_step`, :func:`fit`), and a run around it.

The whole loop, as :func:`fit` writes it::

    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))                  # a new minibatch order
        for start in range(0, len(x_train), batch_size):
            xb = x_train[order[start:start + batch_size]]
            eps = model.sample_eps(rng, len(xb), k)             # eps ~ N(0, I), (K, B, Z)
            train_step(model, optimizer, loss_and_grad, xb, eps)

and one step (:func:`train_step`)::

    loss, grads = loss_and_grad(xb, eps, beta)  # -ELBO (or -IWAE bound), nats per datapoint
    stop at once if loss or grads are not finite
    optimizer.step(model.flat, grads.flat)      # one in-place update of the flat vector

:func:`train` runs the same steps as a *run*: a run directory, a dataset prepared
for the likelihood (binarized afresh each epoch if dynamic), one random Generator
for everything, a progress display, and at the end of each epoch: the negative ELBO
(beta = 1, sampled z) and its reconstruction and KL parts on the validation set and on up to
``train_eval_size`` training points, the number of active units, pictures,
``metrics.jsonl``, and the ``latest`` (and, when validation improved, ``best``)
checkpoint. The run can stop at any step boundary (Ctrl-C) and resume from its
``latest`` checkpoint to exactly the parameters an uninterrupted run reaches.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import DTYPES, choice, real_number
from ..layers import ACTIVATIONS
from ..likelihoods import LIKELIHOODS
from ..objectives import (
    OBJECTIVES,
    check_estimator,
    dreg_loss_and_grad,
    iwae_loss_and_grad,
    stl_loss_and_grad,
)
from ..optim import OPTIMIZERS, Adam, make_optimizer
from ..vae import KL_MODES, VAE
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    check_architecture,
    check_optimizer_state,
    check_run_meta,
    load_checkpoint,
    param_specs_json,
    rng_from_array,
    rng_to_array,
    save_checkpoint,
)
from .data import BINARIZE_MODES, DATASETS, FILE_DATASETS, binarize, load_dataset, prepare_data
from .diagnostics import active_units, evaluate_elbo, latent_means
from .epoch_pictures import EpochPictures
from .files import atomic_write, original_name
from .memory import check_model_fits, fmt_bytes, param_count, require, step_bytes
from .rundir import RunDir, RunDirError, existing_run, new_run

#: exit codes of ``minivae train``: done; a file could not be written or memory ran out
#: during the run (the last good checkpoint is kept); non-finite; interrupted by Ctrl-C
EXIT_OK, EXIT_FAILED, EXIT_NONFINITE, EXIT_INTERRUPTED = 0, 1, 3, 130


def option(name: str) -> str:
    """The command-line option of a :class:`TrainConfig` field: ``batch_size`` is
    ``--batch-size``, ``pictures`` is ``--no-pictures``."""
    return "--no-pictures" if name == "pictures" else "--" + name.replace("_", "-")


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
    estimator: str = "pathwise"
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
        """Raise ValueError naming the first bad option (as its ``--option``), by type and range.

        A configuration read back from a checkpoint goes through the same checks as one
        given on the command line.
        """
        def integer(name, minimum=1):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{option(name)} must be an integer >= {minimum}, got {v!r}")

        def number(name, **bounds):
            try:
                real_number(getattr(self, name), option(name), **bounds)
            except TypeError as exc:
                raise ValueError(str(exc)) from None

        for name in ("latent_dim", "k", "batch_size", "train_eval_size"):
            integer(name)
        for name in ("epochs", "seed", "data_seed"):
            integer(name, 0)
        if self.patience is not None:
            integer("patience")
        for name in ("hidden", "decoder_hidden"):
            widths = getattr(self, name)
            if widths is None and name == "decoder_hidden":
                continue
            if not isinstance(widths, (list, tuple)) or not all(
                    isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
                raise ValueError(f"{option(name)} must be a list of positive integers (layer "
                                 f"widths), got {widths!r}")
        choices = {"dataset": DATASETS, "binarize": BINARIZE_MODES, "objective": OBJECTIVES,
                   "kl": KL_MODES, "optimizer": OPTIMIZERS, "dtype": DTYPES,
                   "likelihood": tuple(LIKELIHOODS), "activation": tuple(ACTIVATIONS)}
        for name, allowed in choices.items():
            choice(getattr(self, name), allowed, option(name))
        number("lr", above=0)
        number("beta", at_least=0)
        number("warmup_epochs", at_least=0)
        if not isinstance(self.pictures, bool):
            raise ValueError(f"pictures must be True or False, got {self.pictures!r}")
        if self.data_dir is not None and (not isinstance(self.data_dir, str)
                                          or not self.data_dir):
            raise ValueError(f"--data-dir must name a directory, got {self.data_dir!r}")
        if self.data_dir is not None and self.dataset not in FILE_DATASETS:
            raise ValueError(f"--data-dir applies to the datasets read from files "
                             f"({', '.join(FILE_DATASETS)}); the {self.dataset} dataset reads "
                             f"none (drop --data-dir, or choose --dataset)")
        check_estimator(self.objective, self.estimator, self.kl)
        if self.objective == "iwae" and (self.beta != 1.0 or self.warmup_epochs):
            raise ValueError("beta and KL warm-up apply to the ELBO objective only; the IWAE "
                             "bound has no separate KL term (use --objective elbo)")
        if self.objective == "iwae" and self.kl != "analytic":
            raise ValueError("--kl applies to the ELBO objective only; the IWAE bound has no "
                             "separate KL term (use --objective elbo, or drop --kl)")
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
    """The loss or the gradient became NaN or infinite; names the gradient blocks that are."""

    def __init__(self, loss: float, grads):
        self.loss = loss
        self.bad_blocks = [name for name, g in grads.items() if not np.isfinite(g).all()]
        what = "loss" if not math.isfinite(loss) else "gradient"
        super().__init__(f"non-finite {what}: loss = {loss}"
                         + (f"; non-finite gradient in {', '.join(self.bad_blocks)}"
                            if self.bad_blocks else ""))


# ----------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------


def make_objective(model: VAE, objective: str = "elbo", *, kl: str = "analytic",
                   estimator: str = "pathwise"):
    """``loss_and_grad(x, eps, beta=1.0) -> (loss, grads)`` for the chosen objective.

    ``"elbo"`` is :meth:`VAE.loss_and_grad` (``kl`` closed form or Monte Carlo, KL
    weight ``beta``); ``"iwae"`` is :func:`minivae.objectives.iwae_loss_and_grad`
    (no separate KL term, so no beta). ``estimator`` ``"stl"`` (ELBO, ``kl="mc"``) and
    ``"dreg"`` (IWAE) swap in :func:`~minivae.objectives.stl_loss_and_grad` and
    :func:`~minivae.objectives.dreg_loss_and_grad`: the same loss, an encoder gradient
    without the zero-mean score term. Every call writes into one gradient buffer: a
    fresh parameter-sized array per step costs about as much, in page faults, as the
    whole 784-400-20 step.
    """
    choice(kl, KL_MODES, "kl")
    check_estimator(objective, estimator, kl)
    grads = model.new_grad()
    if estimator == "stl":
        return lambda x, eps, beta=1.0: stl_loss_and_grad(model, x, eps, beta=beta, out=grads)
    if estimator == "dreg":
        return lambda x, eps, beta=1.0: dreg_loss_and_grad(model, x, eps, out=grads)
    if objective == "iwae":
        return lambda x, eps, beta=1.0: iwae_loss_and_grad(model, x, eps, out=grads)
    return lambda x, eps, beta=1.0: model.loss_and_grad(x, eps, kl=kl, beta=beta, out=grads)


def train_step(model: VAE, optimizer, loss_and_grad, x: np.ndarray, eps: np.ndarray,
               beta: float = 1.0) -> float:
    """One training step: loss and gradient, a check that both are finite, one update.

    Returns the loss (nats per datapoint). Raises :class:`NonFiniteError` *before*
    the update if the loss or any gradient entry is NaN or infinite, so the
    parameters stay as they were.
    """
    loss, grads = loss_and_grad(x, eps, beta)
    if not math.isfinite(loss) or not np.isfinite(grads.flat).all():
        raise NonFiniteError(loss, grads)
    optimizer.step(model.flat, grads.flat)
    return loss


def fit(model: VAE, x_train: np.ndarray, *, epochs: int = 10, batch_size: int = 100,
        lr: float = 1e-3, k: int = 1, objective: str = "elbo", kl: str = "analytic",
        seed: int = 0, print_fn=print) -> list[float]:
    """Train ``model`` on ``x_train`` (N, D) with Adam: the whole loop, nothing around it.

    Returns the mean training loss of each epoch (nats per datapoint). For a run
    with a directory, checkpoints, evaluation and pictures, see :func:`train`.
    """
    optimizer = Adam(lr=lr)
    loss_and_grad = make_objective(model, objective, kl=kl)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        total = 0.0
        for start in range(0, len(x_train), batch_size):
            xb = x_train[order[start:start + batch_size]]
            eps = model.sample_eps(rng, len(xb), k)
            total += train_step(model, optimizer, loss_and_grad, xb, eps) * len(xb)
        history.append(total / len(x_train))
        print_fn(f"epoch {epoch}: training loss {history[-1]:.3f} nats per datapoint")
    return history


# ----------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode())


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Progress through batches (rate, ETA) on stderr, for ``train`` and ``evaluate``.

    On a terminal: one line redrawn every 0.25 s. Otherwise (a log file): a
    line every 30 s, so long epochs still show signs of life.
    """

    def __init__(self, stream, n_batches: int, interval: float | None = None):
        self.stream, self.n = stream, n_batches
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.interval = (0.25 if self.tty else 30.0) if interval is None else interval
        self.next_t = time.perf_counter() + self.interval

    def update(self, epoch: int | str, i: int, done_here: int, t0: float, seen: int,
               loss: float | None) -> None:
        """After batch ``i`` of the epoch; ``done_here`` batches and ``seen`` datapoints
        were processed in this session since ``t0``. ``epoch`` may be a label instead;
        ``loss`` None shows none."""
        now = time.perf_counter()
        if now < self.next_t:
            return
        self.next_t = now + self.interval
        rate = seen / max(now - t0, 1e-9)
        eta = (now - t0) / max(done_here, 1) * (self.n - i)
        width = 24
        bar = "#" * int(width * i / self.n)
        label = f"epoch {epoch}" if isinstance(epoch, int) else epoch
        text = (f"{label} [{bar:.<{width}}] {i}/{self.n}  {rate:,.0f} datapoints/s  "
                f"{'epoch ' if isinstance(epoch, int) else ''}ETA {_fmt_time(eta)}"
                + (f"  loss {loss:.2f} nats" if loss is not None else ""))
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


def optimizer_options(config: TrainConfig) -> dict:
    """Options of the optimizer beyond its learning rate: for ``burda-adam``,
    ``grad_scale`` = the batch size. Their code takes the gradient of the minibatch *sum*,
    ours of the mean (nats per datapoint), and their Adam is not scale-free (v starts at
    ones, epsilon 1e-4 sits outside the bias correction): the batch size turns ours into
    theirs. (A last, partial batch is scaled the same; their code drops it.)"""
    return {"grad_scale": config.batch_size} if config.optimizer == "burda-adam" else {}


def build_model(config: TrainConfig, input_dim: int) -> VAE:
    """The VAE a configuration describes."""
    return VAE(input_dim, config.latent_dim, hidden=tuple(config.hidden),
               decoder_hidden=None if config.decoder_hidden is None else
               tuple(config.decoder_hidden), likelihood=config.likelihood,
               activation=config.activation, dtype=np.dtype(config.dtype), seed=config.seed)


def load_data(config: TrainConfig, print_fn=None):
    """The dataset a configuration names, prepared for its likelihood and dtype."""
    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {config.data_dir}: no such directory")
    dataset = load_dataset(config.dataset, config.data_dir, seed=config.data_seed,
                           print_fn=print_fn)
    return prepare_data(dataset, config.likelihood, config.binarize, np.dtype(config.dtype),
                        seed=config.data_seed)


def load_run_checkpoint(path) -> tuple[Checkpoint, TrainConfig, VAE]:
    """A training run's checkpoint with every field checked, its configuration and its model.

    Beyond :func:`~minivae.tool.checkpoint.load_checkpoint` and
    :func:`~minivae.tool.checkpoint.check_run_meta`: the saved options pass
    :meth:`TrainConfig.validate`, and the model configuration describes exactly the
    parameters stored (checked before the model is built, so a damaged configuration
    cannot ask for a huge allocation). Raises
    :class:`~minivae.tool.checkpoint.CheckpointError` naming the file and the field.
    """
    ckpt = load_checkpoint(path)
    meta = check_run_meta(ckpt)

    def bad(field_name, why):
        return CheckpointError(f"{ckpt.path}: metadata field {field_name!r}: {why}; the file "
                               f"was left untouched")

    missing = sorted({f.name for f in fields(TrainConfig)} - set(meta["train_config"]))
    if missing:
        raise bad("train_config", f"no option {', '.join(missing)}")
    try:
        config = TrainConfig.from_dict(meta["train_config"]).validate()
    except ValueError as exc:
        raise bad("train_config", str(exc)) from None
    mc = meta["model_config"]
    try:
        n = param_count(mc["input_dim"], mc["latent_dim"], mc["hidden"],
                        mc.get("decoder_hidden"), mc["likelihood"])
    except (KeyError, TypeError, ValueError) as exc:
        raise bad("model_config", f"not a model description ({type(exc).__name__}: {exc})") \
            from None
    if n != ckpt.params.size:
        raise bad("model_config", f"describes a model of {n} parameters, the file holds "
                  f"{ckpt.params.size}")
    try:
        model = VAE.from_config(mc)
    except (TypeError, ValueError) as exc:
        raise bad("model_config", str(exc)) from None
    check_architecture(ckpt, model)
    return ckpt, config, model


# ----------------------------------------------------------------------
# a run
# ----------------------------------------------------------------------


def train(config: TrainConfig | None = None, run_dir=None, *, resume: bool = False,
          overrides: dict | None = None, out=None, err=None, _step_hook=None) -> TrainResult:
    """Train (or, with ``resume=True``, continue) the run in ``run_dir``.

    A new run without ``run_dir`` claims the next free ``runs/run-N``. The run
    directory belongs to this process while it trains (see :mod:`minivae.tool.rundir`):
    a second process is refused, and everything that can be checked before training
    (options, data, memory, disk space, the checkpoint to resume) is checked before the
    first step. A new run that fails before its first step leaves nothing behind.
    ``overrides`` (resume only) may change ``epochs`` and ``patience``. Epoch
    lines go to ``out`` (stdout), the progress display and warnings to ``err``
    (stderr). ``_step_hook(step)``, for tests, is called after every step.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if resume:
        if run_dir is None:
            raise ValueError("resume=True needs the run_dir of the run to continue")
        unknown = sorted(set(overrides or {}) - {"epochs", "patience"})
        if unknown:
            raise ValueError(f"only epochs and patience can change when resuming, not "
                             f"{', '.join(unknown)}")
    else:
        config = (TrainConfig() if config is None else config).validate()
    owner = existing_run(run_dir) if resume else new_run(run_dir)
    session = None
    try:
        if owner.removed_temporaries:
            print(f"removed {len(owner.removed_temporaries)} temporary file(s) left by a "
                  f"process that ended while writing: "
                  f"{', '.join(str(p) for p in owner.removed_temporaries)}", file=out)
        ckpt = None
        if resume:
            ckpt, config, _ = load_run_checkpoint(owner.run.latest)
            for name, value in (overrides or {}).items():
                setattr(config, name, value)
            config.validate()
        session = _Session(config, owner.run, ckpt, out, err)
        if session.epoch >= config.epochs:
            session.say(f"the run has already reached epoch {session.epoch}; pass --epochs N "
                        f"with N > {session.epoch} to train further")
            return session.result("completed")
        status = "completed"
        try:
            with _InterruptFlag(err) as interrupt:
                while session.epoch < config.epochs:
                    status = (session.train_epoch(interrupt, _step_hook)
                              or session.end_epoch(interrupt) or "completed")
                    if status != "completed":
                        break
        except BrokenPipeError:
            raise  # our output's reader went away: not a failure of the run's files
        except (OSError, MemoryError) as exc:
            if not resume and session.step == 0:
                raise  # nothing trained yet: the new run is removed below
            session.failed(exc)
            status = "failed"
        return session.finish(status)
    except BaseException:
        if not resume and (session is None or session.step == 0):
            owner.discard()
        raise
    finally:
        owner.release()


class _Session:
    """One sitting of a run: its data, model, optimizer and random stream, and where it is.

    :meth:`train_epoch` is the training loop proper; :meth:`end_epoch` measures,
    draws, and checkpoints. A run resumed from a checkpoint continues in a new
    session exactly where the old one stopped.
    """

    def __init__(self, config: TrainConfig, run: RunDir, ckpt, out, err):
        self.config, self.run, self.out, self.err = config, run, out, err
        self.data = load_data(config, print_fn=self.say)
        self._check_resources()
        self.model = build_model(config, self.data.train.shape[1])
        self.optimizer = make_optimizer(config.optimizer, config.lr,
                                        **optimizer_options(config))
        self.loss_and_grad = make_objective(self.model, config.objective, kl=config.kl,
                                            estimator=config.estimator)
        self.rng = np.random.default_rng([config.seed, 1])  # minibatches, binarization, eps
        self.n_batches = -(-len(self.data.train) // config.batch_size)
        self.warmup_steps = config.warmup_epochs * self.n_batches
        self.train_eval_x = self.data.train[:config.train_eval_size]
        if self.data.dynamic:  # evaluate the training subset at one fixed binarization
            self.train_eval_x = binarize(self.train_eval_x,
                                         np.random.default_rng([config.data_seed, 8]))
        self.pictures = (EpochPictures(run.pictures, self.data, config.latent_dim, config.seed,
                                       err) if config.pictures else None)
        self.exact_nll = None
        if self.data.dataset.exact_log_marginal is not None:
            self.exact_nll = -float(np.mean(self.data.dataset.exact_log_marginal(self.data.valid)))

        self.epoch, self.step, self.history, self.best, self.bad_epochs = 0, 0, [], math.inf, 0
        self.position = None  # where an interrupted epoch stopped
        if ckpt is not None:
            self._restore(ckpt)
        else:
            run.checkpoints.mkdir(exist_ok=True)
            _write_text(run.config, json.dumps(asdict(config), indent=1) + "\n")
        self.saved_epoch = self.epoch  # the epoch of the checkpoint latest.npz holds
        self.say(f"{self.model!r}\ndata: {self.data.dataset.description}; "
                 f"{len(self.data.train)} train / {len(self.data.valid)} valid / "
                 f"{len(self.data.test)} test; binarization: {self.data.binarize}\n"
                 f"run directory: {run.path}")
        if ckpt is None:
            self.checkpoint(run.latest)  # epoch 0: a good checkpoint exists before the first step
        self.progress = Progress(err, self.n_batches)
        self.t_start, self.epochs_timed = time.perf_counter(), 0

    def say(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    def _check_resources(self) -> None:
        """Refuse, before the first step, a run that cannot fit in memory or on the disk."""
        c, D, n_train = self.config, self.data.train.shape[1], len(self.data.train)
        n = check_model_fits(D, c.latent_dim, c.hidden, c.decoder_hidden, c.likelihood,
                             c.dtype)
        batch = min(c.batch_size, n_train)
        require(step_bytes(c.k, batch, D, c.latent_dim, c.hidden, c.decoder_hidden,
                           c.likelihood, c.dtype),
                f"one training step (--k {c.k} samples x --batch-size {batch} datapoints "
                f"through the decoder, {c.dtype})", "use a smaller --k or --batch-size")
        # latest and best, and one of them being rewritten: parameters and optimizer state
        checkpoint = n * np.dtype(c.dtype).itemsize * (2 if c.optimizer == "sgd" else 3)
        free = shutil.disk_usage(self.run.path).free
        if 3 * checkpoint > free:
            raise RunDirError(f"the disk holding {self.run.path} has {fmt_bytes(free)} free; "
                              f"the run's checkpoints need about {fmt_bytes(3 * checkpoint)}")

    def _restore(self, ckpt) -> None:
        check_architecture(ckpt, self.model)
        check_optimizer_state(ckpt, self.config.optimizer)
        position = ckpt.meta.get("position")
        if position is not None and not (position["batch"] < self.n_batches
                                         and position["seen"] <= len(self.data.train)):
            raise CheckpointError(f"{ckpt.path}: metadata field 'position' (batch "
                                  f"{position['batch']}, seen {position['seen']}) lies outside "
                                  f"an epoch of {self.n_batches} batches; the file was left "
                                  f"untouched")
        self.model.set_flat(ckpt.params)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.rng = ckpt.rngs["train"]
        m = ckpt.meta
        self.epoch, self.step, self.history = m["epoch"], m["step"], m["history"]
        self.best, self.bad_epochs, self.position = m["best"], m["bad_epochs"], m.get("position")
        self.say(f"resuming {self.run.path} at epoch {self.epoch}"
                 + (f", batch {self.position['batch']}/{self.n_batches}" if self.position
                    else "") + f", step {self.step}")

    def checkpoint(self, path, extra: dict | None = None) -> None:
        meta = {"train_config": asdict(self.config), "model_config": self.model.config(),
                "param_specs": param_specs_json(self.model), "epoch": self.epoch,
                "step": self.step, "history": self.history, "best": self.best,
                "bad_epochs": self.bad_epochs, "dataset": self.data.dataset.description,
                "binarize": self.data.binarize, **(extra or {})}
        save_checkpoint(path, self.model.flat, self.optimizer.state_dict(),
                        {"train": self.rng}, meta)
        if path == self.run.latest:
            self.saved_epoch = self.epoch

    def failed(self, exc: BaseException) -> None:
        """Say why the run stopped (a file could not be written, memory ran out) and how
        to continue it."""
        self.progress.clear()
        if isinstance(exc, MemoryError):
            why = f"out of memory ({exc or 'MemoryError'}); try a smaller --k or --batch-size"
        else:
            name = original_name(exc.filename) if exc.filename else None
            why = (f"could not write {name} ({exc.strerror})" if name and exc.strerror
                   else str(exc))
        self.err.write(f"stopped at step {self.step}: {why}. The last good checkpoint is kept: "
                       f"{self.run.latest} (epoch {self.saved_epoch}); continue with: "
                       f"python -m minivae train --resume {self.run.path}\n")
        self.err.flush()

    def _epoch_draws(self):
        """The epoch's minibatch order and (dynamic) binarization, and where to start.

        Both come from the run's one random stream at the start of the epoch. After
        a mid-epoch interrupt they are drawn again from the saved start-of-epoch
        state, and the stream then continues from where the steps had left it.
        """
        resumed = self.position
        rng_now = self.rng
        if resumed is not None:
            self.rng = rng_from_array(np.array(resumed["epoch_rng"], np.uint64))
        self.epoch_rng_state = rng_to_array(self.rng).tolist()
        order = self.rng.permutation(len(self.data.train))
        x_epoch = binarize(self.data.train, self.rng) if self.data.dynamic else self.data.train
        if resumed is None:
            return order, x_epoch, 0, 0.0, 0
        self.rng, self.position = rng_now, None
        return order, x_epoch, resumed["batch"], resumed["loss_sum"], resumed["seen"]

    def train_epoch(self, interrupt, step_hook=None) -> str | None:
        """The training loop: one pass over the minibatches. Returns a status if it stops."""
        config, model, bs = self.config, self.model, self.config.batch_size
        this_epoch, t0 = self.epoch + 1, time.perf_counter()
        order, x_epoch, first, loss_sum, seen = self._epoch_draws()
        seen_before = seen  # datapoints of this epoch processed before a resume
        beta = config.beta
        for i in range(first, self.n_batches):
            if interrupt.set:
                return self._interrupted_mid_epoch(i, loss_sum, seen, this_epoch)
            xb = x_epoch[order[i * bs:(i + 1) * bs]].astype(model.dtype, copy=False)
            if self.warmup_steps:
                beta = config.beta * min(1.0, self.step / self.warmup_steps)
            eps = model.sample_eps(self.rng, len(xb), config.k)
            try:
                loss = train_step(model, self.optimizer, self.loss_and_grad, xb, eps, beta)
            except NonFiniteError as exc:
                self.progress.clear()
                self.err.write(_nonfinite_message(exc, self.step + 1, this_epoch, i + 1,
                                                  self.n_batches, config.lr, self.run.latest,
                                                  self.epoch))
                self.err.flush()
                return "non-finite"
            self.step += 1
            loss_sum += loss * len(xb)
            seen += len(xb)
            self.progress.update(this_epoch, i + 1, i + 1 - first, t0, seen - seen_before, loss)
            if step_hook is not None:
                step_hook(self.step)
        self.progress.clear()
        self.epoch = this_epoch
        self.beta, self.train_objective = beta, loss_sum / max(seen, 1)
        self.t_epoch, self.rate = t0, (seen - seen_before) / max(time.perf_counter() - t0, 1e-9)
        return None

    def _interrupted_mid_epoch(self, batch, loss_sum, seen, this_epoch) -> str:
        self.progress.clear()
        self.checkpoint(self.run.latest, {"position": {
            "batch": batch, "loss_sum": loss_sum, "seen": seen,
            "epoch_rng": self.epoch_rng_state}})
        self.say(f"interrupted at step {self.step} (epoch {this_epoch}, batch {batch}/"
                 f"{self.n_batches}); checkpoint saved: {self.run.latest}\n"
                 f"continue with: python -m minivae train --resume {self.run.path}")
        return "interrupted"

    def end_epoch(self, interrupt) -> str | None:
        """Evaluate, report, draw and checkpoint after an epoch. Returns a status to stop."""
        config, model, run, epoch = self.config, self.model, self.run, self.epoch
        if not np.isfinite(model.flat).all():
            self.err.write(f"stopped: non-finite parameters after step {self.step} (epoch "
                           f"{epoch}); the last good checkpoint is kept: {run.latest}\n")
            return "non-finite"
        eval_rng = np.random.default_rng([config.seed, 3, epoch])
        tr = evaluate_elbo(model, self.train_eval_x, eval_rng)
        va = evaluate_elbo(model, self.data.valid, eval_rng)
        mu_valid = latent_means(model, self.data.valid)  # for active units and the pictures
        au = active_units(mu_valid)
        if not (math.isfinite(tr.loss) and math.isfinite(va.loss)):
            self.err.write(f"stopped: non-finite evaluation after epoch {epoch} (step "
                           f"{self.step}); the last good checkpoint is kept: {run.latest}\n")
            return "non-finite"
        improved = va.loss < self.best
        self.best, self.bad_epochs = (va.loss, 0) if improved else (self.best,
                                                                     self.bad_epochs + 1)
        self.epochs_timed += 1
        eta = (time.perf_counter() - self.t_start) / self.epochs_timed * (config.epochs - epoch)
        record = {"epoch": epoch, "step": self.step, "train_objective": self.train_objective,
                  "beta": self.beta, "train_loss": tr.loss, "train_recon": tr.recon,
                  "train_kl": tr.kl, "valid_loss": va.loss, "valid_recon": va.recon,
                  "valid_kl": va.kl, "valid_stderr": va.stderr, "active_units": au,
                  "seconds": time.perf_counter() - self.t_epoch,
                  "datapoints_per_second": self.rate}
        if self.exact_nll is not None:
            record["valid_exact_nll"] = self.exact_nll
        self.history.append(record)
        self.say(_epoch_line(record, config, eta=eta, improved=improved,
                             show_beta=bool(self.warmup_steps) or config.beta != 1))

        stopping = config.patience is not None and self.bad_epochs >= config.patience
        if self.pictures is not None:
            self.pictures.draw(model, epoch, config.epochs, epoch == config.epochs or stopping
                               or interrupt.set, self.history, mu_valid)
        # best before latest: if a write fails, latest stays at the previous epoch, and a
        # resume repeats this epoch and writes best again (the other order could leave a
        # best.npz older than the best epoch recorded in latest)
        if improved:
            self.checkpoint(run.best)
        self.checkpoint(run.latest)
        _write_text(run.metrics, "".join(json.dumps(h) + "\n" for h in self.history))
        if stopping:
            self.say(f"early stopping: validation -ELBO has not improved for "
                     f"{self.bad_epochs} epochs (best {self.best:.3f} nats)")
            return "early-stopped"
        if interrupt.set:
            self.say(f"interrupted after epoch {epoch}; checkpoint saved: {run.latest}\n"
                     f"continue with: python -m minivae train --resume {run.path}")
            return "interrupted"
        return None

    def result(self, status: str) -> TrainResult:
        code = {"non-finite": EXIT_NONFINITE, "interrupted": EXIT_INTERRUPTED,
                "failed": EXIT_FAILED}.get(status, EXIT_OK)
        return TrainResult(status, self.epoch, self.step, self.run.path, self.history, code)

    def finish(self, status: str) -> TrainResult:
        if status in ("completed", "early-stopped"):
            self.say(f"done: {self.epoch} epochs, {self.step} steps, "
                     f"{_fmt_time(time.perf_counter() - self.t_start)}; best valid -ELBO "
                     f"{self.best:.3f} nats per datapoint; checkpoints in "
                     f"{self.run.checkpoints}")
        return self.result(status)


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


def _nonfinite_message(exc: NonFiniteError, step, epoch, batch, n_batches, lr, latest,
                       good_epoch):
    return (f"stopped: {exc} at step {step} (epoch {epoch}, batch {batch}/{n_batches})"
            + f". Try a smaller --lr (now {lr:g}). The last good checkpoint is kept: {latest} "
            f"(epoch {good_epoch})\n")
