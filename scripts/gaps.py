#!/usr/bin/env python
"""Where the gap between the ELBO and log p(x) goes, on trained binarized-MNIST models.

For each checkpoint: the inference gaps on ``--n`` test images drawn at random (log p(x) by
importance sampling, L[q] of the encoder, L[q*] of the best Gaussian per image; the
approximation gap log p(x) - L[q*] and the amortization gap L[q*] - L[q]), and ELBO
surgery over the 50,000 training images (the average KL term = I(n; z) + KL(q(z) || p(z))),
each number with its standard errors over datapoints and from the Monte Carlo noise
(:mod:`minivae.gaps`). Prints a report (machine, date, command line, settings, wall
times) and writes it to ``--report`` and, as JSON, beside it::

    python scripts/gaps.py --data-dir DIR --report /tmp/gaps.txt \\
        --checkpoint e10=runs/mlp400/checkpoints/latest.npz \\
        --checkpoint burda-e200=/path/to/epoch200.npz

A checkpoint is a run directory or ``.npz`` written by ``minivae train`` (its latest
checkpoint), or a ``.npz`` written by ``scripts/reproduce.py --burda``; ``LABEL=`` is
optional. All numbers are nats per datapoint.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minivae import VAE  # noqa: E402
from minivae.gaps import QOptimizer, elbo_surgery, inference_gaps  # noqa: E402
from minivae.objectives import importance_sampled_log_marginal  # noqa: E402
from minivae.tool.checkpoint import check_architecture, load_checkpoint  # noqa: E402
from minivae.tool.data import load_binarized_mnist  # noqa: E402
from minivae.tool.diagnostics import evaluate_elbo  # noqa: E402
from minivae.tool.evaluate import load_run  # noqa: E402
from minivae.tool.files import atomic_write  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder holding binarized_mnist.npz")
    p.add_argument("--checkpoint", action="append", required=True, metavar="[LABEL=]PATH",
                   help="a checkpoint to analyse (repeat for several)")
    p.add_argument("--report", required=True, metavar="PATH",
                   help="write the report here (and PATH.json)")
    p.add_argument("--n", type=int, default=300,
                   help="test images for the gaps, drawn at random with --seed (default 300)")
    p.add_argument("--k", type=int, default=5000,
                   help="importance samples per image for log p(x) (default 5000)")
    p.add_argument("--k-elbo", type=int, default=1000,
                   help="samples per image for L[q] and L[q*] (default 1000)")
    p.add_argument("--batch-size", type=int, default=100,
                   help="images optimized together (default 100)")
    p.add_argument("--surgery-samples", type=int, default=10000,
                   help="draws of z for ELBO surgery, one per training image (default 10000)")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="the images of the gaps: test (default) or train, to compare the "
                   "encoder on the images it was trained on")
    p.add_argument("--is-repeats", type=int, default=0, metavar="R",
                   help="also check the importance-sampling standard error: R independent "
                   "estimates of log p(x) on the first 100 images of the subset, their spread "
                   "against the reported standard error (default 0: skip)")
    p.add_argument("--no-gaps", action="store_true", help="skip the inference gaps")
    p.add_argument("--no-surgery", action="store_true", help="skip ELBO surgery")
    p.add_argument("--seed", type=int, default=0, help="seed of all the noise (default 0)")
    return p.parse_args(argv)


def load_model(path: Path) -> tuple[VAE, dict]:
    """The model of a ``minivae train`` run or checkpoint, or of a reproduce.py --burda one."""
    if path.suffix == ".npz":
        meta = load_checkpoint(path).meta
        if "model_config" not in meta:  # scripts/reproduce.py --burda
            ckpt = load_checkpoint(path)
            model = VAE.from_config(meta["config"]["model"])
            check_architecture(ckpt, model)
            model.set_flat(ckpt.params)
            return model, {"epoch": meta["epoch"], "recipe": meta["config"].get("recipe")}
    _, model, ckpt = load_run(path, None if path.suffix == ".npz" else "latest")
    return model, {"epoch": ckpt.meta["epoch"], "recipe": "minivae train"}


def machine() -> str:
    threads = {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
               if os.environ.get(v)}
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"{platform.node()}, {cpu}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, NumPy {np.__version__}"
            + (f", {threads}" if threads else ""))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def is_repeatability(model: VAE, x: np.ndarray, k: int, repeats: int,
                     rng: np.random.Generator) -> dict:
    """``repeats`` independent importance-sampling estimates of log p(x) for each row of x:
    the spread across them (the Monte Carlo noise, measured) against the delta-method
    standard error each one reports (an estimate that is too small when the weights are
    heavy-tailed, i.e. when q is narrower than the posterior somewhere)."""
    values, stderrs = [], []
    for _ in range(repeats):
        ests = [importance_sampled_log_marginal(model, x[s:s + 100], k=k, rng=rng)
                for s in range(0, len(x), 100)]
        values.append(np.concatenate([e.values for e in ests]))
        stderrs.append(np.concatenate([e.stderr for e in ests]))
    values, stderrs = np.array(values), np.array(stderrs)
    measured = float(np.sqrt(np.mean(np.var(values, axis=0, ddof=1))))
    reported = float(np.sqrt(np.mean(stderrs**2)))
    return {"images": len(x), "repeats": repeats, "k": k, "measured_sd": measured,
            "reported_stderr": reported, "ratio": measured / reported,
            "worst_image_ratio": float(np.max(np.std(values, axis=0, ddof=1)
                                              / np.sqrt(np.mean(stderrs**2, axis=0))))}


def table(results: list[dict]) -> str:
    """One row per checkpoint: the gaps (+- over datapoints, Monte Carlo) and the surgery."""
    def pm(d):
        return f"{d['mean']:7.2f} +- {d['data_stderr']:.2f} ({d['mc_stderr']:.3f})"
    rows = ["summary (nats; +- over datapoints, (Monte Carlo)):",
            f"{'model':<16}{'epoch':>6}  {'log p(x)':>24}  {'approximation gap':>24}  "
            f"{'amortization gap':>24}  {'avg KL':>7}  {'I(n;z)':>14}  {'KL(q(z)||p(z))':>14}"]
    for r in results:
        g, s = r.get("gaps"), r.get("surgery")
        row = f"{r['label']:<16}{r['epoch']:>6}  "
        row += (f"{pm(g['log_marginal']):>24}  {pm(g['approximation_gap']):>24}  "
                f"{pm(g['amortization_gap']):>24}  " if g else " " * 78)
        if s:
            row += (f"{s['average_kl']:7.2f}  {s['mutual_information']:7.3f} +- "
                    f"{s['stderr']:.3f}  {s['marginal_kl']:7.3f} +- {s['stderr']:.3f}")
        rows.append(row)
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = Path(args.report)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say("Where the gap between the ELBO and log p(x) goes (minivae.gaps), binarized MNIST")
    say(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    say(f"machine: {machine()}")
    say(f"command: {shlex.join(['python', *sys.argv])}")
    say(f"minivae commit: {git_commit()}")
    q = QOptimizer()
    say(f"settings: gaps on {args.n} {args.split} images drawn at random (seed "
        f"[{args.seed}, 14]) from the split, log p(x) with k={args.k} "
        f"importance samples, L[q] and L[q*] with {args.k_elbo} common samples each; q* by "
        f"Adam ({q.samples} samples/step, lr {q.lr:g} falling to {q.lr_min:g} per image on "
        f"its own plateaus, stop when no gain > {q.tol:g} nats in {q.patience} checks at the "
        f"floor); surgery over the 50,000 training images with {args.surgery_samples} draws "
        f"of z; seed {args.seed}")
    say("standard errors: '+- a over datapoints' is sd/sqrt(n) over the images (the number "
        "as an estimate for the test distribution; it includes the Monte Carlo noise); "
        "'+- b Monte Carlo' is the noise of the estimate for these images")

    data = load_binarized_mnist(args.data_dir, download=False)
    # a random subset: the test split's order is not random (its first 300 images have 16%
    # more ink than the rest, and a -ELBO 11 nats higher)
    images = getattr(data, args.split)
    subset = np.sort(np.random.default_rng([args.seed, 14]).choice(
        len(images), size=min(args.n, len(images)), replace=False))
    x_test = images[subset]
    results = []
    for spec in args.checkpoint:
        label, _, path = spec.rpartition("=")
        path = Path(path)
        model, info = load_model(path)
        label = label or path.stem
        say()
        say(f"== {label}: {path} (epoch {info['epoch']}, {info['recipe']})")
        say(f"   {model!r}")
        entry = {"label": label, "path": str(path), **info, "model": model.config()}
        rng = np.random.default_rng(args.seed)
        whole = evaluate_elbo(model, data.test.astype(model.dtype), rng, k=10)
        say(f"   for reference: -ELBO on the whole test split {whole.loss:.3f} +- "
            f"{whole.stderr:.3f} (10 samples per image)")
        entry["test_neg_elbo"] = {"mean": whole.loss, "data_stderr": whole.stderr}
        if not args.no_gaps:
            t0 = time.perf_counter()
            gaps = inference_gaps(
                model, x_test.astype(model.dtype), rng, k=args.k, k_elbo=args.k_elbo,
                batch_size=args.batch_size,
                progress=lambda done, total, t0=t0: print(
                    f"   ... gaps {done}/{total} images, {time.perf_counter() - t0:.0f} s",
                    file=sys.stderr, flush=True))
            seconds = time.perf_counter() - t0
            for line in gaps.lines():
                say("   " + line)
            say(f"   ({seconds:.0f} s)")
            entry["gaps"] = {**gaps.summary(), "seconds": seconds}
        if args.is_repeats > 1:
            t0 = time.perf_counter()
            rep = is_repeatability(model, x_test[:100].astype(model.dtype), args.k,
                                   args.is_repeats, rng)
            say(f"   importance-sampling noise, measured: {rep['repeats']} independent estimates "
                f"of log p(x) (k={rep['k']}) on {rep['images']} images spread by "
                f"{rep['measured_sd']:.3f} nats per image (rms), against a reported standard "
                f"error of {rep['reported_stderr']:.3f} (ratio {rep['ratio']:.2f}; worst image "
                f"{rep['worst_image_ratio']:.1f}) ({time.perf_counter() - t0:.0f} s)")
            entry["is_repeatability"] = rep
        if not args.no_surgery:
            t0 = time.perf_counter()
            surgery = elbo_surgery(model, data.train, rng, samples=args.surgery_samples)
            seconds = time.perf_counter() - t0
            for line in surgery.lines():
                say("   " + line)
            say(f"   ({seconds:.0f} s)")
            entry["surgery"] = {**surgery.summary(), "seconds": seconds}
        results.append(entry)
        atomic_write(report, ("\n".join(lines) + "\n").encode())
        atomic_write(report.with_name(report.name + ".json"),
                     (json.dumps({"argv": sys.argv, "results": results}, indent=1)
                      + "\n").encode())
    say()
    say(table(results))
    say()
    say(f"written: {report} and {report.name}.json")
    atomic_write(report, ("\n".join(lines) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
