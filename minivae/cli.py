"""Command line: ``python -m minivae COMMAND ...`` (also the ``minivae`` console script)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import __version__, verify


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE",
        description="Train a VAE on the built-in synthetic bars dataset (8x8 binary images) "
        "and print the negative ELBO in nats per datapoint after each epoch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    p.add_argument("--n-train", type=int, default=2000, help="number of synthetic images")
    p.add_argument("--hidden", type=int, nargs="*", default=[64], help="hidden widths")
    p.add_argument("--latent-dim", type=int, default=8, help="latent dimensions Z")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=50, help="datapoints per step")
    p.add_argument("--seed", type=int, default=0, help="seed for data, init and noise")
    p.set_defaults(run=_run_train)


def _run_train(args) -> int:
    from .data import synthetic_bars
    from .train import fit
    from .vae import VAE

    rng = np.random.default_rng(args.seed)
    x = synthetic_bars(args.n_train, rng)
    model = VAE(x.shape[1], args.latent_dim, hidden=tuple(args.hidden), seed=args.seed)
    print(model)
    fit(model, x, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minivae",
        description="minivae: a NumPy variational autoencoder with hand-written, verified "
        "gradients. All losses are in nats per datapoint.",
    )
    parser.add_argument("--version", action="version", version=f"minivae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    verify.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
