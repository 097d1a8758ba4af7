"""``python -m minivae verify``: check every identity of the derivation with numbers.

Runs :func:`minivae.theory.identities.run_all` on a small linear-Gaussian model and a
Gaussian mixture (exact models, so the truth is known), prints one row per
identity (left side, right side, difference, pass/fail, and where the
identity comes from) and the supporting tables, and exits non-zero if any
identity fails. ``--plots DIR`` also draws the identities that have a picture
(:mod:`minivae.theory.plots`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .identities import IDENTITIES, IdentityResult, default_problem, run_all
from .plots import PLOTS, write_plots


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``verify`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "verify",
        help="check the identities of the VAE derivation on exact models",
        description="Check the numbered identities of the ELBO derivation (bounds, the KL gap, "
        "Jensen's gap, Fisher's identity, mean-field optimum, IWAE, gradient estimators; then "
        "the questions people ask: which KL direction, prior or posterior, ELBO surgery, "
        "sticking the landing, IWAE's signal-to-noise and DReG, and the VAE network's own "
        "ELBO) on a linear-Gaussian model and a Gaussian mixture whose marginal likelihood and "
        "posterior are known exactly. Prints left side, right side and difference (in nats "
        "unless stated) and exits with status 1 if any identity fails. Monte Carlo identities "
        "pass when the estimate is within 4 standard errors of the exact value.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random model, datapoint and Monte Carlo noise; the same "
                   "seed prints the same numbers")
    p.add_argument("--json", action="store_true",
                   help="print the results as one JSON document instead of the table")
    p.add_argument("--only", type=int, nargs="+", metavar="N", default=sorted(IDENTITIES),
                   choices=sorted(IDENTITIES), help="the identity numbers to check")
    p.add_argument("--no-details", action="store_true",
                   help="print the table only, without the supporting tables below it")
    p.add_argument("--brief", action="store_true",
                   help="one line per identity (number, PASS or FAIL, what it says, its two "
                   "sides) and nothing else")
    p.add_argument("--plots", metavar="DIR", default=None,
                   help="also write one PNG per identity that has a picture "
                   f"({', '.join(map(str, sorted(PLOTS)))}) into DIR; needs matplotlib "
                   "(default: no pictures)")
    p.set_defaults(run=run)
    return p


def _fmt(value: float) -> str:
    return f"{value:+.6f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:+.3e}"


def format_table(results: list[IdentityResult]) -> str:
    """One row per identity; the line under it says where the identity comes from."""
    header = f"{'#':>2}  {'identity':<56} {'left side':>13} {'right side':>13} " \
             f"{'difference':>11}  result"
    lines = [header, "-" * len(header)]
    for r in results:
        name = r.name if len(r.name) <= 56 else r.name[:53] + "..."
        lines.append(f"{r.number:>2}  {name:<56} {_fmt(r.lhs):>13} {_fmt(r.rhs):>13} "
                     f"{r.difference:>+11.2e}  {'PASS' if r.passed else 'FAIL'}")
        lines.append(f"    from: {r.source}")
        lines.append(f"    test: {r.criterion}")
    return "\n".join(lines)


def format_brief(results: list[IdentityResult]) -> str:
    """One line per identity: number, verdict, statement, left and right side (nats)."""
    return "\n".join(f"{r.number:>2} {'PASS' if r.passed else 'FAIL'}  {r.name:<56} "
                     f"{_fmt(r.lhs):>13} {_fmt(r.rhs):>13}" for r in results)


def format_details(results: list[IdentityResult]) -> str:
    """Each identity's own summary lines (tables, variances), under its number."""
    out = []
    for r in results:
        for i, line in enumerate(r.summary):
            out.append(f"#{r.number:<2} {line}" if i == 0 else f"    {line}")
    return "\n".join(out)


def _write_plots(results, directory, stream) -> list[str] | None:
    """Write the pictures if asked; say what happened on ``stream``; the paths, or None."""
    if directory is None:
        return None
    paths = write_plots(results, directory)
    if paths is None:
        print("--plots: matplotlib is not installed (pip install 'minivae[plots]'); "
              "no pictures written", file=stream)
        return None
    print(f"pictures: {len(paths)} written to {directory}"
          + "".join(f"\n  {p}" for p in paths), file=stream)
    return [str(p) for p in paths]


def run(args) -> int:
    """Run the checks; print a table (or JSON); return 0 if every identity held, else 1."""
    start = time.perf_counter()
    results = run_all(seed=args.seed, numbers=args.only)
    elapsed = time.perf_counter() - start
    n_passed = sum(r.passed for r in results)
    ok = n_passed == len(results)
    if args.json:
        # the JSON document alone goes to stdout; what the pictures did goes to stderr
        plots = _write_plots(results, args.plots, sys.stderr)
        doc = {"seed": args.seed, "passed": ok, "n_passed": n_passed, "n_total": len(results),
               "elapsed_seconds": elapsed, "plots": plots,
               "identities": [r.to_dict() for r in results]}
        print(json.dumps(doc, indent=2))
        return 0 if ok else 1
    if args.brief:
        print(format_brief(results))
        _write_plots(results, args.plots, sys.stdout)
        return 0 if ok else 1
    p = default_problem(args.seed)
    print(f"minivae verify (seed {args.seed}): linear-Gaussian model D={p.model.D}, "
          f"Z={p.model.Z}, {'diagonal' if p.model.diagonal_noise else 'full'} noise; "
          f"mixture K={p.mixture.K}, D={p.mixture.D}; one datapoint drawn from each. "
          f"Values in nats.")
    print(format_table(results))
    if not args.no_details:
        print()
        print(format_details(results))
    print()
    print(f"{n_passed}/{len(results)} identities hold ({elapsed:.1f} s)")
    _write_plots(results, args.plots, sys.stdout)
    return 0 if ok else 1
