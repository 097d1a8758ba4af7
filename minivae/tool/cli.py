"""Command line: ``python -m minivae COMMAND ...`` (also the ``minivae`` console script).

Commands: ``train``, ``evaluate``, ``sample``, ``gradcheck``, ``verify``. Each command's
logic lives in its module (:mod:`minivae.tool.train`, :mod:`minivae.tool.evaluate`,
:mod:`minivae.tool.diagnostics`, :mod:`minivae.theory.verify`); this file only parses
options. Every list of choices comes from the library's own constants.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

from .. import __version__
from ..checks import DTYPES
from ..layers import ACTIVATIONS
from ..likelihoods import LIKELIHOODS
from ..objectives import ESTIMATORS, OBJECTIVES
from ..optim import OPTIMIZERS
from ..theory import verify
from ..vae import KL_MODES
from .data import BINARIZE_MODES, DATASETS
from .diagnostics import gradcheck_configuration
from .evaluate import evaluate_run, sample_run
from .files import original_name
from .memory import retain_freed_memory
from .train import EXIT_FAILED, EXIT_INTERRUPTED, TrainConfig, option, train

#: exit status of a command refused before it started (bad option, file, checkpoint, ...)
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake reported in one line (the usage text is what --help is for)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def _number(minimum: float, *, strict: bool = False):
    """An argparse type: a finite number >= ``minimum`` (> with ``strict``)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(
                f"expected a finite number {'>' if strict else '>='} {minimum:g}, got {text!r}")
        return value
    return parse


def _path(text):
    """An argparse type: a non-empty path (an empty one would mean the current directory)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got ''")
    return text


POSITIVE, NON_NEGATIVE = _integer(1), _integer(0)

_TRAIN_HELP = """\
Train a VAE and write a run directory: config.json, metrics.jsonl (one JSON line per
epoch), checkpoints/latest.npz and checkpoints/best.npz (each with a readable .json
beside it) and pictures/: reconstructions below their inputs, samples from the prior,
the decoded manifold when --latent-dim is 2, and, if matplotlib is installed, the
encoder means coloured by label and the learning curves. Each KIND_latest.png shows
the latest epoch drawn; a copy KIND_epochNNN.png is kept every ceil(epochs/10) epochs
and at the last epoch. Every loss is the negative ELBO in nats per datapoint (summed over data
and latent dimensions, averaged over datapoints). A run directory belongs to one
process at a time (RUN_DIR/.lock); a second one is refused.

Exit status: 0 done (or early-stopped); 2 refused before training (an option, the
data, a checkpoint, the run directory, memory or disk space; nothing was written);
1 a file could not be written or memory ran out during the run (the last good
checkpoint is kept; continue with --resume RUN_DIR); 3 a non-finite loss or gradient
stopped the run (the last good checkpoint is kept); 130 interrupted by Ctrl-C (a
checkpoint was saved at the step boundary; continue with --resume RUN_DIR)."""


def _add_train(sub) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a VAE (default: digits, needs scikit-learn)",
                       description=_TRAIN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", metavar="RUN_DIR", default=None, type=_path,
                   help="continue the run in RUN_DIR from its latest checkpoint; its saved "
                   "options are used, only --epochs and --patience may be given")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help=f"which data (default: {d.dataset}; digits needs scikit-learn, "
                   "binarized-mnist and mnist read --data-dir)")
    g.add_argument("--data-dir", default=None, metavar="DIR", type=_path,
                   help="directory with the data files: binarized_mnist.npz or "
                   "binarized_mnist_{train,valid,test}.amat, or the MNIST IDX files "
                   "(default: none; binarized-mnist then uses $MINIVAE_DATA or "
                   "~/.cache/minivae, downloading when online)")
    g.add_argument("--data-seed", type=NON_NEGATIVE, default=None, metavar="INT",
                   help=f"seed of the data split, the synthetic data and the fixed "
                   f"binarization of the validation/test splits (default: {d.data_seed})")
    g.add_argument("--binarize", choices=BINARIZE_MODES, default=None,
                   help="draw 0/1 data x ~ Bernoulli(grey level): once (static) or afresh "
                   "each epoch (dynamic); auto = dynamic for grey-level data under the "
                   f"Bernoulli likelihood, none otherwise (default: {d.binarize})")
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=POSITIVE, nargs="*", default=None, metavar="WIDTH",
                   help=f"encoder hidden-layer widths, units (default: "
                   f"{' '.join(map(str, d.hidden))}; none = affine encoder)")
    g.add_argument("--decoder-hidden", type=POSITIVE, nargs="*", default=None, metavar="WIDTH",
                   help="decoder hidden-layer widths, units (default: the encoder's, reversed)")
    g.add_argument("--latent-dim", type=POSITIVE, default=None, metavar="Z",
                   help=f"latent dimensions (default: {d.latent_dim})")
    g.add_argument("--likelihood", choices=sorted(LIKELIHOODS), default=None,
                   help=f"decoder distribution p(x|z) (default: {d.likelihood})")
    g.add_argument("--activation", default=None, choices=sorted(ACTIVATIONS),
                   help=f"hidden-layer nonlinearity (default: {d.activation})")
    g.add_argument("--dtype", choices=DTYPES, default=None,
                   help=f"floating-point type of the model and data (default: {d.dtype})")
    g = p.add_argument_group("objective")
    g.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help=f"elbo, or iwae (the importance-weighted bound L_K of Burda et al.) "
                   f"(default: {d.objective})")
    g.add_argument("--estimator", choices=ESTIMATORS, default=None,
                   help="gradient estimator: pathwise (the exact gradient of the objective "
                   "at the drawn z), stl (sticking the landing: elbo with --kl mc) or dreg "
                   f"(doubly reparameterized: iwae) (default: {d.estimator})")
    g.add_argument("--k", type=POSITIVE, default=None, metavar="K",
                   help=f"samples of z per datapoint per step (default: {d.k})")
    g.add_argument("--kl", choices=KL_MODES, default=None,
                   help=f"KL term in closed form or by Monte Carlo at the same samples "
                   f"(default: {d.kl})")
    g.add_argument("--beta", type=_number(0), default=None,
                   help=f"weight of the KL term in the training loss; reported -ELBO always "
                   f"uses 1 (default: {d.beta:g})")
    g.add_argument("--warmup-epochs", type=_number(0), default=None, metavar="EPOCHS",
                   help=f"raise the KL weight linearly from 0 to --beta over this many epochs "
                   f"(default: {d.warmup_epochs:g} = no warm-up)")
    g = p.add_argument_group("optimization")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="adam, sgd, or burda-adam: the Adam of Burda et al.'s released IWAE "
                   "code (beta1 0.99, second moment started at ones, epsilon 1e-4 on "
                   "sqrt(v), simultaneous updates), on the gradient of the minibatch sum "
                   f"(grad_scale = --batch-size) (default: {d.optimizer})")
    g.add_argument("--lr", type=_number(0, strict=True), default=None,
                   help=f"learning rate (default: {d.lr:g})")
    g.add_argument("--batch-size", type=POSITIVE, default=None, metavar="B",
                   help=f"datapoints per step (default: {d.batch_size})")
    g.add_argument("--epochs", type=NON_NEGATIVE, default=None,
                   help=f"passes over the training set; with --resume, the new total "
                   f"(default: {d.epochs})")
    g.add_argument("--patience", type=POSITIVE, default=None, metavar="EPOCHS",
                   help="early stopping: stop after this many epochs without a lower "
                   "validation -ELBO (default: none = never)")
    g.add_argument("--seed", type=NON_NEGATIVE, default=None,
                   help=f"seed of the initialization, minibatch order, binarization and noise "
                   f"(default: {d.seed})")
    g = p.add_argument_group("output")
    g.add_argument("--run-dir", default=None, metavar="DIR", type=_path,
                   help="where config, metrics, checkpoints and pictures go; a new or empty "
                   "directory (default: the first of runs/run-1, runs/run-2, ... that does "
                   "not exist, claimed race-free)")
    g.add_argument("--no-pictures", action="store_true",
                   help="do not draw pictures after the epochs (default: draw them)")
    g.add_argument("--train-eval-size", type=POSITIVE, default=None, metavar="N",
                   help=f"training datapoints on which the end-of-epoch train -ELBO is "
                   f"measured (default: {d.train_eval_size})")
    p.set_defaults(run=_run_train)


_TRAIN_OPTIONS = ("dataset", "data_dir", "data_seed", "binarize", "hidden", "decoder_hidden",
                  "latent_dim", "likelihood", "activation", "dtype", "objective", "k", "kl",
                  "beta", "warmup_epochs", "optimizer", "lr", "batch_size", "epochs",
                  "patience", "seed", "train_eval_size", "estimator")


def _run_train(args) -> int:
    given = {name: getattr(args, name) for name in _TRAIN_OPTIONS
             if getattr(args, name) is not None}
    if args.no_pictures:
        given["pictures"] = False
    if args.resume is not None:
        if args.run_dir is not None:
            raise ValueError(f"--resume continues the run in its own directory "
                             f"({args.resume}); --run-dir cannot be given with it")
        fixed = sorted(set(given) - {"epochs", "patience"})
        if fixed:
            raise ValueError(f"--resume continues a run with its saved options; "
                             f"{', '.join(option(f) for f in fixed)} cannot be changed "
                             f"(only --epochs and --patience)")
        result = train(run_dir=args.resume, resume=True, overrides=given)
    else:
        if "kl" in given and given.get("objective") == "iwae":
            raise ValueError("--kl applies to the ELBO objective only; the IWAE bound has no "
                             "separate KL term (use --objective elbo, or drop --kl)")
        result = train(TrainConfig(**given), args.run_dir)
    return result.exit_code


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="test negative ELBO and importance-sampled log-likelihood",
        description="Evaluate a trained run: the negative ELBO (z sampled from q, beta = 1) "
        "with its reconstruction and KL parts, and the importance-sampled log p(x) with k "
        "samples per datapoint, both in nats per datapoint with standard errors. Writes "
        "RUN_DIR/evaluation_SPLIT.json.")
    p.add_argument("run_dir", metavar="RUN_DIR", type=_path,
                   help="a run directory (or a .npz checkpoint)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default=None,
                   help="which checkpoint of the run directory (default: best)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="test",
                   help="which split (default: test)")
    p.add_argument("--k", type=NON_NEGATIVE, default=1000,
                   help="importance samples per datapoint for log p(x); 0 skips it "
                   "(default: 1000)")
    p.add_argument("--n", type=POSITIVE, default=None,
                   help="evaluate only the first N datapoints of the split (default: all)")
    p.add_argument("--batch-size", type=POSITIVE, default=100, metavar="B",
                   help="datapoints per importance-sampling batch, and per batch whose q* "
                   "are optimized together for --gaps (default: 100)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0,
                   help="seed of the noise (default: 0)")
    p.add_argument("--data-dir", default=None, metavar="DIR", type=_path,
                   help="read the data from DIR instead of the run's saved --data-dir "
                   "(default: the run's)")
    g = p.add_argument_group(
        "where the gap goes",
        "log p(x) - ELBO split two ways (minivae.gaps), each number with its standard "
        "errors over datapoints and from the Monte Carlo noise")
    g.add_argument("--gaps", action="store_true",
                   help="inference gaps (Cremer et al. 2018) on --gaps-n datapoints drawn at "
                   "random (fixed by --seed): log p(x) - L[q*] (approximation: the Gaussian "
                   "family) and L[q*] - L[q] (amortization: one encoder for all x), q* the "
                   "best Gaussian for each "
                   "datapoint, found by Adam on its own mean and log-variance (default: off)")
    g.add_argument("--gaps-n", type=POSITIVE, default=300, metavar="N",
                   help="datapoints for --gaps, or all of the split if fewer (default: 300)")
    g.add_argument("--gaps-k", type=POSITIVE, default=5000, metavar="K",
                   help="importance samples per datapoint for log p(x) in --gaps "
                   "(default: 5000)")
    g.add_argument("--gaps-k-elbo", type=POSITIVE, default=1000, metavar="K",
                   help="samples per datapoint for L[q] and L[q*] in --gaps (default: 1000)")
    g.add_argument("--surgery", action="store_true",
                   help="ELBO surgery (Hoffman & Johnson 2016): the average KL(q(z|x) || p(z)) "
                   "over the training split = I(n; z) + KL(q(z) || p(z)), q(z) the average of "
                   "the encoder's Gaussians over all training points (default: off)")
    g.add_argument("--surgery-samples", type=POSITIVE, default=10000, metavar="M",
                   help="draws of z for --surgery, one from each of M training points; each "
                   "costs a pass over all N Gaussians (default: 10000)")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    evaluate_run(args.run_dir, which=args.checkpoint, split=args.split, k=args.k, n=args.n,
                 batch_size=args.batch_size, seed=args.seed, data_dir=args.data_dir,
                 gaps=args.gaps, gaps_n=args.gaps_n, gaps_k=args.gaps_k,
                 gaps_k_elbo=args.gaps_k_elbo, surgery=args.surgery,
                 surgery_samples=args.surgery_samples)
    return 0


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="write a grid of samples from a checkpoint",
                       description="Draw z ~ N(0, I), decode, and write a PNG grid of the "
                       "means of p(x|z) (or of draws x ~ p(x|z) with --binary).")
    p.add_argument("run_dir", metavar="RUN_DIR", type=_path,
                   help="a run directory (or a .npz checkpoint)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default=None,
                   help="which checkpoint of the run directory (default: best)")
    p.add_argument("--n", type=POSITIVE, default=64,
                   help="number of samples, drawn and written one row of the grid at a time "
                   "(default: 64)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of z (default: 0)")
    p.add_argument("--binary", action="store_true",
                   help="show a draw x ~ p(x|z) instead of its mean (default: the mean)")
    p.add_argument("--out", default=None, metavar="FILE.png", type=_path,
                   help="output file (default: RUN_DIR/samples.png)")
    p.set_defaults(run=_run_sample)


def _run_sample(args) -> int:
    out = args.out
    if out is None:
        base = Path(args.run_dir)
        out = (base.parent if base.suffix == ".npz" else base) / "samples.png"
    sample_run(args.run_dir, out, which=args.checkpoint, n=args.n, seed=args.seed,
               binary=args.binary)
    return 0


def _add_gradcheck(sub) -> None:
    p = sub.add_parser(
        "gradcheck", help="finite-difference check of a model's gradient",
        description="Build a small float64 model, draw x and eps, and compare the analytic "
        "gradient of the loss with fourth-order central differences along random "
        "directions, for all parameters together and for each parameter block. Prints the "
        "worst relative error per parameter; exits 1 if any exceeds --tol.")
    p.add_argument("--input-dim", type=POSITIVE, default=6, metavar="D",
                   help="data dimensions (default: 6)")
    p.add_argument("--latent-dim", type=POSITIVE, default=3, metavar="Z",
                   help="latent dimensions (default: 3)")
    p.add_argument("--hidden", type=POSITIVE, nargs="*", default=[5], metavar="WIDTH",
                   help="encoder hidden widths, units (default: 5)")
    p.add_argument("--decoder-hidden", type=POSITIVE, nargs="*", default=None, metavar="WIDTH",
                   help="decoder hidden widths (default: the encoder's, reversed)")
    p.add_argument("--likelihood", choices=sorted(LIKELIHOODS), default="bernoulli",
                   help="decoder distribution (default: bernoulli)")
    p.add_argument("--activation", default="tanh", choices=sorted(ACTIVATIONS),
                   help="nonlinearity (default: tanh)")
    p.add_argument("--objective", choices=OBJECTIVES, default="elbo",
                   help="loss to check (default: elbo)")
    p.add_argument("--kl", choices=KL_MODES, default=None,
                   help="KL term of the ELBO objective (default: analytic)")
    p.add_argument("--beta", type=_number(0), default=None,
                   help="KL weight of the ELBO objective (default: 1)")
    p.add_argument("--batch", type=POSITIVE, default=4, metavar="B",
                   help="datapoints (default: 4)")
    p.add_argument("--k", type=POSITIVE, default=2,
                   help="samples of z per datapoint (default: 2)")
    p.add_argument("--directions", type=POSITIVE, default=3,
                   help="random directions per check, at least 1 (default: 3)")
    p.add_argument("--tol", type=_number(0), default=1e-6,
                   help="largest acceptable relative error (default: 1e-6)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0,
                   help="seed of model, x, eps (default: 0)")
    p.set_defaults(run=_run_gradcheck)


def _run_gradcheck(args) -> int:
    if args.objective == "iwae":
        ignored = [name for name in ("kl", "beta") if getattr(args, name) is not None]
        if ignored:
            raise ValueError(f"{', '.join('--' + n for n in ignored)} apply to the ELBO "
                             f"objective only; the IWAE bound has no separate KL term (use "
                             f"--objective elbo, or drop them)")
    errors = gradcheck_configuration(
        input_dim=args.input_dim, latent_dim=args.latent_dim, hidden=args.hidden,
        decoder_hidden=args.decoder_hidden, likelihood=args.likelihood,
        activation=args.activation, batch=args.batch, k=args.k,
        kl="analytic" if args.kl is None else args.kl,
        beta=1.0 if args.beta is None else args.beta,
        objective=args.objective, n_directions=args.directions, seed=args.seed)
    width = max(map(len, errors))
    print(f"worst relative error of the directional derivative (tolerance {args.tol:g}):")
    for name, e in errors.items():
        print(f"  {name:<{width}}  {e:.2e}  {'ok' if e <= args.tol else 'FAIL'}")
    worst = max(errors.values())
    print(f"{'passed' if worst <= args.tol else 'FAILED'}: worst {worst:.2e}")
    return 0 if worst <= args.tol else 1


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="minivae",
        description="minivae: a NumPy variational autoencoder with hand-written, verified "
        "gradients. All losses are in nats per datapoint.",
    )
    parser.add_argument("--version", action="version", version=f"minivae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_sample(sub)
    _add_gradcheck(sub)
    verify.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; every refusal or failure is one line on stderr and an exit status.

    2: refused before the work started (a bad option, file, checkpoint or run directory,
    not enough memory), nothing changed; 1: the work failed (a file could not be written,
    memory ran out); 130: interrupted. A traceback means a bug in minivae.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if (getattr(args, "seed", None) or 0) < 0:  # verify's parser lives in minivae.theory
        parser.exit(EXIT_USAGE, f"minivae {args.command}: error: argument --seed: expected an "
                    f"integer >= 0, got {args.seed} (see minivae {args.command} --help)\n")
    retain_freed_memory()  # every step allocates the same large arrays: keep them (why: there)
    try:
        # NumPy's overflow warnings would add lines of their own; every number that matters
        # (a step's loss and gradient, an evaluation, a picture) is checked for being finite
        with np.errstate(all="ignore"):
            return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader of our output went away (| head): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:  # during the work: a full disk, a file that vanished
        where = f"{original_name(exc.filename)}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    except MemoryError as exc:
        print(f"error: out of memory ({exc or 'MemoryError'}); try smaller sizes (--k, "
              f"--batch-size, --n)", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
