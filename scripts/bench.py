#!/usr/bin/env python
"""Benchmark minivae against PyTorch on the CPU, side by side, in one process.

What it measures (each for float32 and float64):

1. ``vae400``: one training step (forward, backward, Adam) of the 784-400-20 ReLU
   Bernoulli VAE, batch 128, K=1, closed-form KL (the PyTorch example's model);
2. ``burda-k1`` / ``burda-k5`` / ``burda-k50``: one training step of the
   784-200-200-50 tanh Bernoulli VAE, batch 100; K=1 is the ELBO, K=5 and K=50
   the IWAE bound (:func:`minivae.objectives.iwae_loss_and_grad`);
3. ``is-vae400`` / ``is-burda``: importance-sampled log p(x), k=1000 samples
   per datapoint, time *per datapoint* (``model.log_likelihood``);
4. the peak memory of each (see "Memory" below).

Timing: both implementations draw their own noise inside the timed step and
cycle through the same pre-converted data batches. The two are run in
alternating blocks (minivae, torch, torch, minivae, ...) and each reported time
is the median over ``--repeats`` blocks of the per-step (per-datapoint) time.
``ratio`` is minivae / torch: below 1 means minivae is faster.

Threads: ``--threads N`` (default: all cores) is exported as OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS and MKL_NUM_THREADS *before* NumPy is imported, and
passed to ``torch.set_num_threads``; the thread pools actually loaded are
reported (via threadpoolctl when it is installed).

FLOP rate: the matrix products of one step are counted (2*m*n*k each: the
forward products, and for the backward the weight gradient of every layer and
the input gradient of every layer except the encoder's first). ``GF/s`` is
that count divided by minivae's step time; ``mm GF/s`` is NumPy's own rate on
exactly those products (same shapes, transposes and dtype, preallocated
outputs), and ``mm%`` = matmul-only time / step time: the share of the step
that is matrix multiplication. ``adam`` is the time of minivae's optimizer step
alone. The rest of a step is elementwise work and Python overhead.

Memory: each case is rerun in a fresh subprocess (a few steps) and the peak
resident set size of that process is reported (Linux ``VmHWM``, which
includes the interpreter, NumPy/torch libraries and the data batch:
``rss``), together with how much it grew during the steps over the set-up
(``+rss``). For minivae the peak of NumPy's own allocations during one step is
also reported, from ``tracemalloc`` (``np peak``).

Data: ``--data-dir`` containing ``binarized_mnist.npz``. Without it the script
says so and times on random binary data of the same shape (which is fine for
timing: no step's cost depends on the pixel values).

This is a script, not a test: ``python scripts/bench.py --data-dir DIR --json out.json``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding binarized_mnist.npz")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for both NumPy's BLAS and torch (default: all cores)")
    p.add_argument("--repeats", type=int, default=7, help="timed blocks per implementation")
    p.add_argument("--block-seconds", type=float, default=0.3,
                   help="approximate length of one timed block")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--cases", default="vae400,burda-k1,burda-k5,burda-k50,is-vae400,is-burda")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--json", default=None, metavar="PATH", help="also write results as JSON")
    p.add_argument("--is-k", type=int, default=1000, help="importance samples per datapoint")
    p.add_argument("--memory-case", nargs=3, metavar=("CASE", "IMPL", "DTYPE"),
                   help=argparse.SUPPRESS)  # internal: one memory measurement, prints JSON
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread variables are set)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from peak_memory import peak_rss_mb  # noqa: E402  (scripts/ is on sys.path)

from minivae import VAE, Adam  # noqa: E402

try:
    from minivae import objectives as _objectives  # noqa: E402
except ImportError:  # written by another issue; reported as missing
    _objectives = None

# --------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------

CASES = {
    # name: (hidden, latent, activation, batch, K, kind)
    "vae400": ((400,), 20, "relu", 128, 1, "elbo"),
    "burda-k1": ((200, 200), 50, "tanh", 100, 1, "elbo"),
    "burda-k5": ((200, 200), 50, "tanh", 100, 5, "iwae"),
    "burda-k50": ((200, 200), 50, "tanh", 100, 50, "iwae"),
    "is-vae400": ((400,), 20, "relu", None, None, "is"),
    "is-burda": ((200, 200), 50, "tanh", None, None, "is"),
}
D = 784


def describe(case, is_k):
    hidden, Z, act, B, K, kind = CASES[case]
    arch = "-".join(str(s) for s in (D, *hidden, Z))
    if kind == "is":
        return f"{arch} {act} IS k={is_k}, per datapoint"
    what = "ELBO" if kind == "elbo" else f"IWAE K={K}"
    return f"{arch} {act} B={B} {what} step"


def load_data(data_dir):
    """Binarized MNIST train and test as uint8, or random binary data (labelled as such)."""
    if data_dir is not None:
        path = os.path.join(data_dir, "binarized_mnist.npz")
        if os.path.exists(path):
            with np.load(path) as d:
                return d["train"][:2560], d["test"][:200], f"binarized MNIST ({path})"
        print(f"NOTE: {path} not found", file=sys.stderr)
    else:
        print("NOTE: no --data-dir given", file=sys.stderr)
    print("NOTE: timing on RANDOM binary data of MNIST's shape (784 pixels), not on MNIST",
          file=sys.stderr)
    rng = np.random.default_rng(0)
    return ((rng.random((2560, D)) < 0.13).astype(np.uint8),
            (rng.random((200, D)) < 0.13).astype(np.uint8), "random binary data (no MNIST)")


def batches_of(train, B, n=20):
    return [train[i * B:(i + 1) * B] for i in range(min(n, len(train) // B))]


# --------------------------------------------------------------------------
# minivae side
# --------------------------------------------------------------------------


def minivae_runner(case, dtype, train, test, is_k):
    """A zero-argument function doing one unit of work (a step, or one datapoint's IS)."""
    hidden, Z, act, B, K, kind = CASES[case]
    model = VAE(D, Z, hidden=hidden, activation=act, dtype=dtype, seed=0)
    rng = np.random.default_rng(1)
    if kind == "is":
        if _objectives is None:
            return None, model
        xs = [test[i:i + 1].astype(dtype) for i in range(len(test))]
        state = {"i": 0}

        def run():
            x = xs[state["i"] % len(xs)]
            state["i"] += 1
            _objectives.importance_sampled_log_marginal(model, x, k=is_k, rng=rng)
        return run, model

    if kind == "iwae" and (_objectives is None or not hasattr(_objectives, "iwae_loss_and_grad")):
        return None, model
    xs = [b.astype(dtype) for b in batches_of(train, B)]
    opt = Adam(lr=1e-3)
    # one gradient buffer reused by every step (loss_and_grad's out=, when this version
    # of minivae has it: the script also times older versions for before/after numbers)
    reuse = {"out": model.new_grad()} \
        if "out" in inspect.signature(model.loss_and_grad).parameters else {}
    state = {"i": 0}

    def run():
        x = xs[state["i"] % len(xs)]
        state["i"] += 1
        eps = model.sample_eps(rng, B, K)
        if kind == "elbo":
            _, grads = model.loss_and_grad(x, eps, **reuse)
        else:
            _, grads = _objectives.iwae_loss_and_grad(model, x, eps)
        opt.step(model.flat, grads.flat)
    return run, model


def matmul_plan(case, is_k):
    """The (m, k, n, transA, transB) products of one unit of work, in minivae's layout."""
    hidden, Z, act, B, K, kind = CASES[case]
    enc = (D, *hidden, 2 * Z)
    dec = (Z, *reversed(hidden), D)
    plan = []
    if kind == "is":
        for a, b in zip(enc[:-1], enc[1:], strict=True):
            plan.append((1, a, b, False, False))
        for a, b in zip(dec[:-1], dec[1:], strict=True):
            plan.append((is_k, a, b, False, False))
        return plan
    for rows, sizes, first_dx in ((B, enc, False), (K * B, dec, True)):
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            plan.append((rows, a, b, False, False))  # forward  h W
            plan.append((a, rows, b, True, False))  # dW = h^T delta
            if i > 0 or first_dx:
                plan.append((rows, b, a, False, True))  # dx = delta W^T
    return plan


def plan_flops(plan):
    return sum(2 * m * k * n for m, k, n, _, _ in plan)


def matmul_runner(plan, dtype):
    rng = np.random.default_rng(0)
    ops = []
    for m, k, n, ta, tb in plan:
        A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
        Bm = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
        ops.append((A.T if ta else A, Bm.T if tb else Bm, np.empty((m, n), dtype)))

    def run():
        for A, Bm, out in ops:
            np.matmul(A, Bm, out=out)
    return run


# --------------------------------------------------------------------------
# PyTorch side: the same models, written the way a PyTorch user would
# --------------------------------------------------------------------------


def torch_runner(case, dtype, train, test, is_k, torch):
    import torch.nn.functional as F
    from torch import nn

    hidden, Z, act, B, K, kind = CASES[case]
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    Act = nn.ReLU if act == "relu" else nn.Tanh

    def mlp(sizes):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(Act())
        return nn.Sequential(*layers)

    torch.manual_seed(0)
    enc = mlp((D, *hidden, 2 * Z)).to(tdtype)
    dec = mlp((Z, *reversed(hidden), D)).to(tdtype)
    params = list(enc.parameters()) + list(dec.parameters())
    half_log2pi = 0.5 * float(np.log(2 * np.pi))

    def log_weights(x, eps):
        mu, log_var = enc(x).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * log_var) * eps  # (K, B, Z)
        logits = dec(z)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = -(0.5 * z * z + half_log2pi).sum(-1)
        log_qz = -(0.5 * (log_var + eps * eps) + half_log2pi).sum(-1)
        return log_px + log_pz - log_qz

    if kind == "is":
        xs = [torch.from_numpy(test[i:i + 1].astype(dtype)) for i in range(len(test))]
        state = {"i": 0}

        @torch.no_grad()
        def run():
            x = xs[state["i"] % len(xs)]
            state["i"] += 1
            eps = torch.randn(is_k, 1, Z, dtype=tdtype)
            lw = log_weights(x, eps)
            return torch.logsumexp(lw, dim=0) - float(np.log(is_k))
        return run

    xs = [torch.from_numpy(b.astype(dtype)) for b in batches_of(train, B)]
    opt = torch.optim.Adam(params, lr=1e-3)
    state = {"i": 0}

    def run():
        x = xs[state["i"] % len(xs)]
        state["i"] += 1
        eps = torch.randn(K, B, Z, dtype=tdtype)
        if kind == "elbo":
            mu, log_var = enc(x).chunk(2, dim=-1)
            z = mu + torch.exp(0.5 * log_var) * eps
            logits = dec(z)
            rec = F.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="sum") / (K * B)
            kl = 0.5 * (mu * mu + log_var.exp() - 1.0 - log_var).sum() / B
            loss = rec + kl
        else:
            lw = log_weights(x, eps)
            loss = -(torch.logsumexp(lw, dim=0) - float(np.log(K))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def calibrate(fn, target):
    """Warm up, then return how many calls make a block of about ``target`` seconds."""
    fn()
    fn()
    t = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t, 1e-6)
    return max(2, int(target / one))


def time_block(fn, n):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def time_adam(flat, dtype):
    """Median time of minivae's Adam step alone on a parameter vector like ``flat``."""
    opt = Adam(lr=1e-3)
    g = np.full_like(flat, 1e-3)
    params = flat.copy()

    def step():
        opt.step(params, g)
    return statistics.median(time_block(step, 50) for _ in range(5))


def compare(fns, repeats, block_seconds):
    """Median per-call time of each function, run in alternating blocks."""
    ns = {name: calibrate(fn, block_seconds) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(time_block(fns[name], ns[name]))
    return {name: statistics.median(ts) for name, ts in times.items()}, times


# --------------------------------------------------------------------------
# Memory (one case in a fresh process)
# --------------------------------------------------------------------------


def memory_child(case, impl, dtype_name, args):
    dtype = np.dtype(dtype_name).type
    train, test, _ = load_data(args.data_dir)
    if impl == "torch":
        import torch
        torch.set_num_threads(args.threads)
        fn = torch_runner(case, dtype, train, test, args.is_k, torch)
    else:
        fn, _ = minivae_runner(case, dtype, train, test, args.is_k)
    if fn is None:
        print(json.dumps(None))
        return
    setup = peak_rss_mb()
    np_peak = None
    if impl == "minivae":
        import tracemalloc
        fn()  # first call allocates optimizer state; measure a steady-state call
        tracemalloc.start()
        fn()
        np_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    for _ in range(3):
        fn()
    print(json.dumps({"rss_mb": peak_rss_mb(), "setup_rss_mb": setup, "np_peak_mb": np_peak}))


def measure_memory(case, impl, dtype_name, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
           "--is-k", str(args.is_k), "--memory-case", case, impl, dtype_name]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def thread_report(torch):
    info = {var: os.environ.get(var) for var in
            ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        from threadpoolctl import threadpool_info
        info["numpy_pools"] = [
            f"{p['internal_api']} {p.get('version')} threads={p['num_threads']}"
            for p in threadpool_info() if "numpy" in p.get("filepath", "")
            or "openblas" in p.get("internal_api", "")]
    except ImportError:
        info["numpy_pools"] = "threadpoolctl not installed"
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    return info


def fmt_ms(t):
    return "-" if t is None else f"{t * 1e3:9.3f}"


def main(args):
    if args.memory_case:
        memory_child(*args.memory_case, args)
        return
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            print("NOTE: torch is not installed; timing minivae alone", file=sys.stderr)
    train, test, data_name = load_data(args.data_dir)
    dtypes = [s.strip() for s in args.dtypes.split(",") if s.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c!r}; choose from {sorted(CASES)}")

    machine = {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "torch": None if torch is None else torch.__version__,
        "threads": args.threads, "thread_report": thread_report(torch), "data": data_name,
    }
    results = []
    for dtype_name in dtypes:
        dtype = np.dtype(dtype_name).type
        for case in cases:
            fn, model = minivae_runner(case, dtype, train, test, args.is_k)
            row = {"case": case, "what": describe(case, args.is_k), "dtype": dtype_name}
            plan = matmul_plan(case, args.is_k)
            fns = {}
            if fn is None:
                row["minivae_missing"] = "minivae.objectives (iwae_loss_and_grad / " \
                    "importance_sampled_log_marginal) not available"
            else:
                fns["minivae"] = fn
            if torch is not None:
                fns["torch"] = torch_runner(case, dtype, train, test, args.is_k, torch)
            fns["matmul"] = matmul_runner(plan, dtype)
            med, raw = compare(fns, args.repeats, args.block_seconds)
            row["minivae_s"] = med.get("minivae")
            row["torch_s"] = med.get("torch")
            row["matmul_only_s"] = med["matmul"]
            row["raw"] = raw
            flops = plan_flops(plan)
            row["gflop"] = flops / 1e9
            row["matmul_gflops"] = flops / med["matmul"] / 1e9
            if row["minivae_s"]:
                row["minivae_gflops"] = flops / row["minivae_s"] / 1e9
                row["matmul_share"] = med["matmul"] / row["minivae_s"]
            if row["minivae_s"] and row["torch_s"]:
                row["ratio"] = row["minivae_s"] / row["torch_s"]
            if CASES[case][5] != "is" and fn is not None:
                row["adam_s"] = time_adam(model.flat, dtype)
            if not args.no_memory:
                row["memory"] = {"minivae": measure_memory(case, "minivae", dtype_name, args)}
                if torch is not None:
                    row["memory"]["torch"] = measure_memory(case, "torch", dtype_name, args)
            results.append(row)
            print_row(row, header=len(results) == 1)
    print_footer(machine)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "results": results}, f, indent=1)
        print(f"wrote {args.json}")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem(row, impl, key):
    m = row.get("memory", {}).get(impl)
    if not m or "error" in m or m.get(key) is None:
        return "-"
    return f"{m[key]:.0f}"


def print_row(row, header=False):
    if header:
        print(f"{'case':<46} {'dtype':<7} {'minivae ms':>10} {'torch ms':>9} {'ratio':>6} "
              f"{'GF/s':>6} {'mm GF/s':>7} {'mm%':>4} {'adam ms':>7} "
              f"{'rss mv/pt MB':>13} {'+rss mv/pt':>11} {'np peak':>7}")
    ratio = f"{row['ratio']:6.2f}" if "ratio" in row else "     -"
    gf = f"{row['minivae_gflops']:6.1f}" if "minivae_gflops" in row else "     -"
    share = f"{100 * row['matmul_share']:3.0f}%" if "matmul_share" in row else "   -"
    adam = f"{row['adam_s'] * 1e3:7.3f}" if "adam_s" in row else "      -"
    rss = f"{_mem(row, 'minivae', 'rss_mb')}/{_mem(row, 'torch', 'rss_mb')}"
    grow = "-"
    m = row.get("memory", {})
    if m:
        parts = []
        for impl in ("minivae", "torch"):
            r = m.get(impl)
            parts.append("-" if not r or "error" in r else f"{r['rss_mb'] - r['setup_rss_mb']:.0f}")
        grow = "/".join(parts)
    print(f"{row['what']:<46} {row['dtype']:<7} {fmt_ms(row['minivae_s']):>10} "
          f"{fmt_ms(row['torch_s']):>9} {ratio} {gf} {row['matmul_gflops']:7.1f} {share} "
          f"{adam} {rss:>13} {grow:>11} {_mem(row, 'minivae', 'np_peak_mb'):>7}", flush=True)
    if "minivae_missing" in row:
        print(f"    minivae: MISSING - {row['minivae_missing']}")


def print_footer(machine):
    print()
    print("times: median over alternating blocks; IS rows are per datapoint; ratio = minivae/torch")
    print("GF/s: minivae's matmul FLOPs / its step time; mm GF/s: NumPy matmul alone at the same "
          "shapes; mm%: matmul-only time / minivae time")
    print("rss: peak RSS (MB) of a fresh process running the case (incl. interpreter, libraries, "
          "data); +rss: growth during the steps; np peak: tracemalloc peak of one minivae call")
    tr = machine["thread_report"]
    print(f"machine: {machine['cpu']}, {machine['cores']} cores; python {machine['python']}, "
          f"numpy {machine['numpy']}, torch {machine['torch']}")
    print(f"threads: {machine['threads']} (OMP/OPENBLAS/MKL_NUM_THREADS="
          f"{tr['OMP_NUM_THREADS']}/{tr['OPENBLAS_NUM_THREADS']}/{tr['MKL_NUM_THREADS']}; "
          f"numpy BLAS: {tr['numpy_pools']}; torch threads: {tr.get('torch_threads')}, "
          f"interop {tr.get('torch_interop_threads')})")
    print(f"data: {machine['data']}")


if __name__ == "__main__":
    main(ARGS)
