#!/usr/bin/env python
"""Train on binarized MNIST and report the numbers the papers report.

Two experiments:

* default: the PyTorch example's VAE, 784-400-20 ReLU, Bernoulli likelihood,
  Adam (lr 1e-3), batch 128, 10 epochs. Reports the test negative ELBO (one
  sampled z per test point, closed-form KL), the importance-sampled test
  log-likelihood (k=1000 samples per point from q(z|x)), the wall time of
  training and evaluation, and the peak resident memory of the process::

      python scripts/reproduce.py --data-dir DIR [--json out.json]

* ``--burda``: Burda, Grosse & Salakhutdinov (2015)'s model, 784-200-200-50 tanh,
  trained with the recipe of their released code (:mod:`minivae.tool.burda`: their Adam
  variant, schedule, fixed minibatch order, initialization, log-std encoder head,
  Monte Carlo ELBO), 3,280 epochs in all, and evaluated as they evaluate (importance
  sampling with 5,000 samples). ``--k 1`` trains the VAE, ``--k 5``/``--k 50`` the IWAE.
  It checkpoints into ``--run-dir`` after every epoch (atomically, see
  :mod:`minivae.tool.checkpoint`) and resumes from there when rerun, so it can be
  run ``--max-minutes`` at a time; it evaluates along the way and prints and
  stores the curve (``curve.json`` in the run directory)::

      python scripts/reproduce.py --burda --data-dir DIR --run-dir runs/burda-k1 \\
          --max-minutes 20

All numbers are nats per datapoint. Training uses the statically binarized
MNIST training split (50,000 images); test numbers use its 10,000 test images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from peak_memory import peak_rss_mb  # noqa: E402  (scripts/ is on sys.path)

from minivae import VAE, Adam  # noqa: E402
from minivae.objectives import importance_sampled_log_marginal  # noqa: E402
from minivae.tool import burda  # noqa: E402
from minivae.tool.checkpoint import (  # noqa: E402
    check_architecture,
    load_checkpoint,
    param_specs_json,
    save_checkpoint,
)
from minivae.tool.data import load_binarized_mnist  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder holding binarized_mnist.npz")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10, help="(default mode) training epochs")
    p.add_argument("--batch", type=int, default=None, help="batch size (128; --burda: 20)")
    p.add_argument("--lr", type=float, default=1e-3, help="(default mode) Adam learning rate")
    p.add_argument("--is-k", type=int, default=1000, help="importance samples per test point")
    p.add_argument("--is-n", type=int, default=None,
                   help="test points for the IS estimate (default: all 10,000)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    p.add_argument("--burda", action="store_true", help="Burda et al.'s model and schedule")
    p.add_argument("--k", type=int, default=1, help="(--burda) samples per datapoint: "
                   "1 = VAE (ELBO), >1 = IWAE")
    p.add_argument("--run-dir", default=None, help="(--burda) checkpoint and curve folder")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="(--burda) stop (after a whole epoch, checkpointed) once this much "
                        "wall time has passed in this invocation")
    p.add_argument("--eval-is-n", type=int, default=1000,
                   help="(--burda) test points for the IS estimate along the curve (the first n)")
    p.add_argument("--final-k", type=int, default=burda.IS_SAMPLES,
                   help="(--burda) importance samples per test point in the final evaluation "
                        "(default: 5000, as Burda et al.)")
    p.add_argument("--final-eval", action="store_true",
                   help="(--burda) when this invocation stops, evaluate the test -ELBO and the "
                        "IS log-likelihood on the whole test set (or --is-n points); with "
                        "--max-minutes 0 this only evaluates the checkpoint")
    return p.parse_args(argv)


def load_data(args, dtype):
    data = load_binarized_mnist(args.data_dir, download=False)
    return data.train.astype(dtype), data.test.astype(dtype), data.description


def test_neg_elbo(model: VAE, x: np.ndarray, rng: np.random.Generator, batch: int = 500) -> float:
    """Negative ELBO (one sampled z per point, closed-form KL), nats per datapoint."""
    total = 0.0
    for s in range(0, len(x), batch):
        xb = x[s:s + batch]
        total += model.loss(xb, model.sample_eps(rng, len(xb), 1)) * len(xb)
    return total / len(x)


def test_is_ll(model: VAE, x: np.ndarray, k: int, rng: np.random.Generator, batch: int = 100):
    """Importance-sampled log p(x) (k samples per point): mean and its standard error."""
    values = []
    for s in range(0, len(x), batch):
        values.append(importance_sampled_log_marginal(model, x[s:s + batch], k=k, rng=rng).values)
    v = np.concatenate(values)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))


def train_epoch(model, opt, x_train, batch, rng) -> float:
    """One pass over ``x_train`` in a random order (ELBO, K = 1); the mean training loss."""
    order = rng.permutation(len(x_train))
    total = 0.0
    grad_buffer = model.new_grad()  # one gradient buffer, overwritten by every step
    for s in range(0, len(order), batch):
        xb = x_train[order[s:s + batch]]
        loss, grads = model.loss_and_grad_sampled(xb, rng, out=grad_buffer)
        if not np.isfinite(loss):
            raise FloatingPointError("non-finite training loss")
        opt.step(model.flat, grads.flat)
        total += loss * len(xb)
    return total / len(x_train)


# --------------------------------------------------------------------------
# The PyTorch example's model, 10 epochs
# --------------------------------------------------------------------------


def run_default(args):
    dtype = np.dtype(args.dtype).type
    x_train, x_test, source = load_data(args, dtype)
    batch = args.batch or 128
    model = VAE(784, 20, hidden=(400,), activation="relu", dtype=dtype, seed=args.seed)
    opt = Adam(lr=args.lr)
    rng = np.random.default_rng(args.seed)
    print(f"data: {source}")
    print(f"model: {model!r}; Adam lr {args.lr}, batch {batch}, {args.epochs} epochs")
    t0 = time.perf_counter()
    history = []
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(model, opt, x_train, batch, rng)
        history.append(loss)
        print(f"epoch {epoch:3d}  train -ELBO {loss:9.4f} nats  "
              f"({time.perf_counter() - t0:7.1f} s)", flush=True)
    train_s = time.perf_counter() - t0

    eval_rng = np.random.default_rng(args.seed + 1)
    t1 = time.perf_counter()
    neg_elbo = test_neg_elbo(model, x_test, eval_rng)
    elbo_s = time.perf_counter() - t1
    x_is = x_test if args.is_n is None else x_test[:args.is_n]
    t2 = time.perf_counter()
    ll, ll_se = test_is_ll(model, x_is, args.is_k, eval_rng)
    is_s = time.perf_counter() - t2
    result = {
        "experiment": "784-400-20 relu VAE, Adam 1e-3, batch 128",
        "dtype": args.dtype, "epochs": args.epochs, "batch": batch, "seed": args.seed,
        "train_neg_elbo_per_epoch": history,
        "test_neg_elbo": neg_elbo,
        "test_is_log_likelihood": ll, "test_is_log_likelihood_stderr": ll_se,
        "is_k": args.is_k, "is_n": len(x_is),
        "train_seconds": train_s, "train_seconds_per_epoch": train_s / args.epochs,
        "test_elbo_seconds": elbo_s, "is_seconds": is_s,
        "is_ms_per_datapoint": 1e3 * is_s / len(x_is),
        "peak_rss_mb": peak_rss_mb(), "data": source,
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default (all cores)"),
    }
    print(f"test -ELBO                {neg_elbo:9.3f} nats (one z per point, closed-form KL)")
    print(f"test log p(x), IS k={args.is_k:<5d} {ll:9.3f} +- {ll_se:.3f} nats "
          f"(n={len(x_is)}; +- is the standard error over test points)")
    print(f"train {train_s:.1f} s ({train_s / args.epochs:.1f} s/epoch); test ELBO {elbo_s:.1f} s;"
          f" IS {is_s:.1f} s ({result['is_ms_per_datapoint']:.2f} ms/point); "
          f"peak RSS {result['peak_rss_mb']:.0f} MB")
    return result


# --------------------------------------------------------------------------
# Burda et al.'s model and recipe, resumable
# --------------------------------------------------------------------------


def should_evaluate(epoch: int) -> bool:
    """Evaluate at epochs 1, 2, 3, 5, 8, 13, ... (roughly geometric) and at stage ends."""
    stage_ends = {sum(3**j for j in range(i + 1)) for i in range(burda.N_STAGES)}
    marks = {1, 2, 3, 5, 8, 13, 20, 30, 50, 80, 120, 200, 300, 500, 800, 1200, 2000, 3000}
    return epoch in stage_ends or epoch in marks


def run_burda(args):
    if args.run_dir is None:
        raise SystemExit("--burda needs --run-dir (where the checkpoint and curve live)")
    if args.k < 1:
        raise SystemExit(f"--k must be >= 1, got {args.k}")
    dtype = np.dtype(args.dtype).type
    x_train, x_test, source = load_data(args, dtype)
    batch = args.batch or burda.BATCH_SIZE
    model = burda.make_model(x_train, dtype)
    opt = burda.make_optimizer(batch)
    rng = np.random.default_rng(args.seed)
    eval_rng = np.random.default_rng(args.seed + 1)
    grads = model.new_grad()
    ckpt_path = os.path.join(args.run_dir, "checkpoint.npz")
    curve_path = os.path.join(args.run_dir, "curve.json")
    config = {"recipe": "burda2015-released-code", "k": args.k, "batch": batch,
              "dtype": args.dtype, "seed": args.seed, "model": model.config()}
    done, curve, train_seconds = 0, [], 0.0
    if os.path.exists(ckpt_path):
        ckpt = load_checkpoint(ckpt_path)
        check_architecture(ckpt, model)
        if ckpt.meta.get("config") != config:
            raise SystemExit(f"{ckpt_path} was written with {ckpt.meta.get('config')}, "
                             f"not {config}; use another --run-dir")
        model.set_flat(ckpt.params)
        opt.load_state_dict(ckpt.optimizer_state)
        rng, eval_rng = ckpt.rngs["train"], ckpt.rngs["eval"]
        done, curve = ckpt.meta["epoch"], ckpt.meta["curve"]
        train_seconds = ckpt.meta["train_seconds"]
        print(f"resumed from {ckpt_path} at epoch {done} ({train_seconds / 60:.1f} min trained)")
    what = "VAE (Monte Carlo ELBO)" if args.k == 1 else f"IWAE K={args.k}"
    print(f"data: {source}")
    print(f"model: {model!r}; {what}, batch {batch} in a fixed order, their Adam "
          f"(beta1 0.99, beta2 0.999, eps 1e-4 on sqrt(v), v0 = 1, gradient of the batch "
          f"sum), lr 1e-4*round(10^(1-i/7), 1) for 3^i epochs, i=0..7")
    print(f"{'epoch':>5} {'stage':>5} {'lr':>9} {'train loss':>10} {'test -ELBO':>10} "
          f"{'test IS LL':>10} {'train min':>9}")
    print(f"(test -ELBO over all {len(x_test)} test points; test IS LL = log p(x) by importance "
          f"sampling, k={args.is_k}, over the first {min(args.eval_is_n, len(x_test))})")
    for row in curve:
        print_curve_row(row)
    start = time.perf_counter()
    for stage, epoch, lr in burda.schedule():
        if epoch <= done:
            continue
        if args.max_minutes is not None and time.perf_counter() - start > 60 * args.max_minutes:
            print(f"stopping after {args.max_minutes} min (checkpoint at epoch {done}); "
                  f"rerun the same command to continue")
            break
        opt.lr = lr
        t = time.perf_counter()
        loss = burda.train_epoch(model, opt, x_train, rng, k=args.k, batch_size=batch,
                                 grads=grads)
        train_seconds += time.perf_counter() - t
        done = epoch
        row = {"epoch": epoch, "stage": stage, "lr": lr, "train_loss": loss,
               "train_minutes": train_seconds / 60}
        if should_evaluate(epoch):
            row["test_neg_elbo"] = test_neg_elbo(model, x_test, eval_rng)
            n = min(args.eval_is_n, len(x_test))
            row["test_is_ll"], row["test_is_ll_stderr"] = test_is_ll(
                model, x_test[:n], args.is_k, eval_rng)
            row["is_n"], row["is_k"] = n, args.is_k
        curve.append(row)
        print_curve_row(row)
        meta = {"config": config, "epoch": done, "curve": curve, "train_seconds": train_seconds,
                "param_specs": param_specs_json(model)}
        save_checkpoint(ckpt_path, model.flat, opt.state_dict(),
                        {"train": rng, "eval": eval_rng}, meta)
        with open(curve_path + ".tmp", "w") as f:
            json.dump({"config": config, "curve": curve}, f, indent=1)
        os.replace(curve_path + ".tmp", curve_path)
    result = {"experiment": f"Burda et al. 784-200-200-50 tanh, {what}", "config": config,
              "epochs_done": done, "curve": curve, "train_seconds": train_seconds, "data": source}
    if args.final_eval:
        # a generator of its own, so evaluating does not change the training stream
        final_rng = np.random.default_rng(args.seed + 2)
        x_is = x_test if args.is_n is None else x_test[:args.is_n]
        final_k = args.final_k
        t = time.perf_counter()
        neg_elbo = test_neg_elbo(model, x_is, final_rng)
        ll, ll_se = test_is_ll(model, x_is, final_k, final_rng)
        result["final_eval"] = {"epoch": done, "n": len(x_is), "is_k": final_k,
                                "test_neg_elbo": neg_elbo, "test_is_ll": ll,
                                "test_is_ll_stderr": ll_se,
                                "seconds": time.perf_counter() - t}
        print(f"epoch {done}, {len(x_is)} test points: test -ELBO {neg_elbo:.3f} nats, "
              f"IS log p(x) (k={final_k}) {ll:.3f} +- {ll_se:.3f} nats")
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def print_curve_row(row):
    elbo = f"{row['test_neg_elbo']:10.3f}" if "test_neg_elbo" in row else " " * 10
    ll = f"{row['test_is_ll']:10.3f}" if "test_is_ll" in row else " " * 10
    print(f"{row['epoch']:5d} {row['stage']:5d} {row['lr']:9.2e} {row['train_loss']:10.3f} "
          f"{elbo} {ll} {row['train_minutes']:9.1f}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.data_dir):
        raise SystemExit(f"--data-dir {args.data_dir} is not a directory")
    result = run_burda(args) if args.burda else run_default(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
