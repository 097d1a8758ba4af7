#!/usr/bin/env python
"""Benchmark minivae against PyTorch (eager, CPU) and JAX (jit, CPU), with numbers you can trust.

    python scripts/bench.py --data-dir DATA [--cases a,b] [--rounds 20] [--quick] [--json OUT]
    python scripts/bench.py --data-dir DATA --repeat 3     # three fresh processes, compared

The cases (``--cases``; a training step is forward + backward + Adam, Bernoulli
likelihood on logits, closed-form KL for K = 1, noise drawn inside the step by each
framework's own generator):

    vae400-f32-b128     784-400-20 ReLU, float32, batch 128, ELBO
    burda-f32-b20       784-200-200-50 tanh, float32, batch 20, ELBO
    burda-f32-b100      the same, batch 100
    iwae5-f32-b20       the same model, batch 20, IWAE bound with K = 5
    iwae50-f32-b20      the same, K = 50
    is1000-vae400-f32   784-400-20: importance-sampled log p(x), k = 1000 per datapoint,
                        batches of 100 test points in minivae's default chunks; per datapoint
    vae400-f64-b128     784-400-20 ReLU, float64, batch 128, ELBO

The contenders run the same model from the same weights: minivae's, after ``--warm-steps``
(default 50) of minivae training, copied into the others. Every timed block starts from
that snapshot again, so all blocks time the same state. (Trained parameters matter: in the
IWAE cases importance weights underflow as training goes on, and float32 operands in the
subnormal range make OpenBLAS much slower, see "subnormal" in the output.)

* minivae: ``loss_and_grad`` / ``iwae_loss_and_grad`` into a reused gradient, ``Adam.step``;
* PyTorch: ``nn.Linear`` layers, autograd, ``torch.optim.Adam`` (its default CPU path);
* JAX: ``value_and_grad`` and the Adam update in one ``jax.jit`` step (state donated);
* GEMM: exactly the step's matrix products (same shapes, transposes and dtype), NumPy
  with preallocated outputs, no bias, activation or anything else: a lower bound;
* Adam: minivae's optimizer step alone (for "where the time goes").

Before timing, a case is checked: for the same x and noise, all three give the same loss
and the same flat gradient (IS: the same log p(x) estimates). In float64, to 1e-10
relative to minivae (norm-wise; float64 roundoff is about 1e-16, so only an actual formula
difference gets near it). Float32 cases are also checked in float64 that way (the same
parameters, upcast) and then, in float32, each contender against that float64 result:
to 1e-5 (loss) and 1e-4 (gradient, norm-wise). Float32 carries 6e-8 relative per
operation; sums over 784 pixels and 200-800 hidden units in different orders give errors
around 1e-6 (printed for every case); 1e-4 leaves room for that while a wrong term or
factor is several orders larger. A case that fails is reported and not timed.

Timing protocol (``scripts/quiet_timing.py``):

* NumPy's OpenBLAS workers keep spinning on a core for about 0.1 s after the last matrix
  product; whatever the process does next starts with a core missing (that is what made
  the old back-to-back minivae-then-torch numbers wrong). The script measures it at
  start: this process's CPU time while it sleeps right after a burst of products (NumPy,
  torch, JAX), and sleeps a gap a margin longer than the longest spin before every block.
* Each round runs every contender's block once; the first contender changes round to
  round. A block is ``--block-seconds`` (default 0.3 s) of steps.
* Around every block, ``/proc/stat`` (all CPU time on the machine, steal included) and
  this process's CPU time are read; the difference is what other processes (or other
  VMs) took while we timed. A round in which they took more than ``--threshold``
  (default 3%) of the blocks' capacity (wall time x cores) is "disturbed": left out of
  the medians and replaced by another round, until ``--rounds`` (default 20) rounds are
  quiet or ``--max-rounds`` (default twice that) have run. Why 3%: with two threads on
  two cores, any CPU another process gets is taken from one of our threads, and a
  parallel GEMM waits for its slowest thread, so a disturbance of f of the capacity can
  slow a block by up to about 2f; an idle machine measures 0-1% here (jiffy resolution:
  10 ms over about 3 CPU-seconds per round).
* Reported per case: the median per-step time of each contender over quiet rounds, and
  for minivae/torch and minivae/JAX the median of the per-round ratios with their
  interquartile range (both sides of a ratio ran in the same round, seconds apart).
  Also the page faults per step (median over blocks): memory that has to be faulted in
  anew every step is a cost of the allocator, not of the computation, and shows there.

Threads: ``--threads N`` (default 2) is exported as OMP/OPENBLAS/MKL_NUM_THREADS before
NumPy is imported and passed to ``torch.set_num_threads``. XLA's CPU thread pool has no
setting between one thread and all cores: with N = 1 the script sets
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, otherwise
JAX uses every core (the default machine has 2 cores, so N = 2 means the same for all).
The thread pools actually loaded are reported (threadpoolctl).

Repeats: ``--repeat N`` runs the whole benchmark N times, each in a fresh process, and then
lists every run's ratios side by side. On a shared machine the speed of each library moves
between runs minutes apart, and not by the same factor for all (JAX's moved most here), so
a ratio is worth what its spread across runs says.

malloc: the process keeps freed memory for reuse, as minivae's commands do
(``minivae.tool.memory.retain_freed_memory``: glibc's mallopt). Without that, whether a
step's multi-MB temporaries are faulted in anew every step depends on what the process
allocated before, so the same case ran at two speeds in two processes (IWAE K = 50: 14.8
or 11.5 ms; IS: 7.8 or 4.5 ms per datapoint). It applies to everything that allocates
through malloc, PyTorch included; XLA has its own allocator. ``--default-malloc`` leaves
it alone.

Memory: ``--memory`` reruns each case in a fresh process per contender and reports its
peak RSS; ``--train-memory`` reports the peak RSS of ``python -m minivae train`` for one
epoch of the 784-400-20 model on binarized MNIST (needs ``--data-dir``).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding binarized_mnist.npz")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--rounds", type=int, default=20,
                   help="quiet timing rounds wanted per case (default 20)")
    p.add_argument("--max-rounds", type=int, default=None,
                   help="stop a case after this many rounds, quiet or not (default 2 x rounds)")
    p.add_argument("--block-seconds", type=float, default=0.3,
                   help="length of one timed block, s (default 0.3)")
    p.add_argument("--threads", type=int, default=2, help="threads for every library (default 2)")
    p.add_argument("--threshold", type=float, default=0.03,
                   help="a round is disturbed when other processes took more than this "
                   "fraction of its blocks' capacity (default 0.03)")
    p.add_argument("--warm-steps", type=int, default=50,
                   help="minivae training steps before the snapshot every block starts from "
                   "(default 50; 0 = time at initialization)")
    p.add_argument("--quick", action="store_true",
                   help="8 rounds of 0.15 s blocks (a rough number in about a minute)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-jax", action="store_true", help="leave JAX out")
    p.add_argument("--memory", action="store_true",
                   help="peak RSS of each case and contender in a fresh process")
    p.add_argument("--train-memory", action="store_true",
                   help="peak RSS of one epoch of `python -m minivae train` (784-400-20, B=128)")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc as it is (by default the process keeps freed "
                   "memory, as minivae's commands do: minivae.tool.memory.retain_freed_memory)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run the whole benchmark N times, each in a fresh process (one after "
                   "the other; --memory and --train-memory with the first), then print the "
                   "ratios of every run side by side: a ratio that holds in one run but not "
                   "in the next is not a result (default 1)")
    p.add_argument("--json", default=None, metavar="PATH", help="write everything as JSON")
    p.add_argument("--memory-case", nargs=2, metavar=("CASE", "IMPL"),
                   help=argparse.SUPPRESS)  # internal: one memory measurement, prints JSON
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.block_seconds = min(args.rounds, 8), min(args.block_seconds, 0.15)
    return args


ARGS = parse_args() if __name__ == "__main__" else None
XLA_FLAGS_SET = None
if ARGS is not None:  # before NumPy (and its BLAS) is imported
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
    if ARGS.threads == 1:
        XLA_FLAGS_SET = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + XLA_FLAGS_SET).strip()

import numpy as np  # noqa: E402  (after the thread variables are set)

sys.path.insert(0, REPO)

import quiet_timing as qt  # noqa: E402  (scripts/ is on sys.path)
from peak_memory import peak_rss_mb  # noqa: E402

from minivae import VAE, Adam  # noqa: E402
from minivae.objectives import (  # noqa: E402
    _default_chunk,
    importance_sampled_log_marginal,
    iwae_loss_and_grad,
)
from minivae.tool.memory import retain_freed_memory  # noqa: E402

D = 784
LR, BETA1, BETA2, ADAM_EPS = 1e-3, 0.9, 0.999, 1e-8
LOG_2PI = math.log(2 * math.pi)

# ----------------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    hidden: tuple
    latent: int
    act: str
    dtype: str
    kind: str  # "elbo" | "iwae" | "is"
    batch: int
    k: int  # samples per datapoint: 1 (ELBO), K (IWAE), k (IS)

    @property
    def np_dtype(self):
        return np.dtype(self.dtype).type

    def describe(self):
        arch = "-".join(str(s) for s in (D, *self.hidden, self.latent))
        what = {"elbo": "ELBO step", "iwae": f"IWAE K={self.k} step",
                "is": f"IS k={self.k} per datapoint"}[self.kind]
        return f"{arch} {self.act} {self.dtype} B={self.batch} {what}"


VAE400, BURDA = ((400,), 20, "relu"), ((200, 200), 50, "tanh")
CASES = {c.name: c for c in (
    Case("vae400-f32-b128", *VAE400, "float32", "elbo", 128, 1),
    Case("burda-f32-b20", *BURDA, "float32", "elbo", 20, 1),
    Case("burda-f32-b100", *BURDA, "float32", "elbo", 100, 1),
    Case("iwae5-f32-b20", *BURDA, "float32", "iwae", 20, 5),
    Case("iwae50-f32-b20", *BURDA, "float32", "iwae", 20, 50),
    Case("is1000-vae400-f32", *VAE400, "float32", "is", 100, 1000),
    Case("vae400-f64-b128", *VAE400, "float64", "elbo", 128, 1),
)}


def is_chunks(case: Case) -> list[int]:
    """The chunk sizes minivae's importance sampler uses by default for this batch."""
    size = _default_chunk(new_model(case), case.batch, case.k)
    return [min(size, case.k - s) for s in range(0, case.k, size)]


def load_data(data_dir):
    """(train, test, name) as uint8 0/1 arrays, or random binary data when there is no file."""
    if data_dir is not None:
        path = os.path.join(data_dir, "binarized_mnist.npz")
        if os.path.exists(path):
            with np.load(path) as d:
                return d["train"][:5000], d["test"][:400], "binarized_mnist.npz"
        print("NOTE: binarized_mnist.npz not found in --data-dir", file=sys.stderr)
    print("NOTE: timing on RANDOM binary data of MNIST's shape, not on MNIST", file=sys.stderr)
    rng = np.random.default_rng(0)
    return ((rng.random((5000, D)) < 0.13).astype(np.uint8),
            (rng.random((400, D)) < 0.13).astype(np.uint8), "random binary data")


def batches(case: Case, train, test, n=20):
    src = test if case.kind == "is" else train
    B = case.batch
    # C order, as minivae's data loader gives them (the .npz arrays are stored in Fortran
    # order, and a slice of one stays Fortran-ordered: elementwise work that mixes it with
    # C-ordered arrays is several times slower, in NumPy and in PyTorch alike)
    return [np.ascontiguousarray(src[i * B:(i + 1) * B], dtype=case.dtype)
            for i in range(min(n, len(src) // B))]


# ----------------------------------------------------------------------------------------
# minivae
# ----------------------------------------------------------------------------------------


def new_model(case: Case, dtype=None) -> VAE:
    return VAE(D, case.latent, hidden=case.hidden, activation=case.act,
               dtype=dtype or case.np_dtype, seed=0)


def minivae_loss_and_grad(case, model, x, eps, out):
    if case.kind == "iwae":
        return iwae_loss_and_grad(model, x, eps, out=out)
    return model.loss_and_grad(x, eps, kl="analytic", out=out)


def warm_up(case: Case, model: VAE, train, steps: int) -> None:
    """Train ``model`` for ``steps`` steps with the case's objective (IS cases: the ELBO)."""
    rng = np.random.default_rng(2)
    opt, grads = new_adam(), model.new_grad()
    train_case = case if case.kind != "is" else Case(**{**asdict(case), "kind": "elbo", "k": 1})
    xs = batches(train_case, train, None)
    for i in range(steps):
        eps = model.sample_eps(rng, train_case.batch, train_case.k)
        minivae_loss_and_grad(train_case, model, xs[i % len(xs)], eps, grads)
        opt.step(model.flat, grads.flat)


def new_adam() -> Adam:
    return Adam(lr=LR, beta1=BETA1, beta2=BETA2, eps=ADAM_EPS)


def minivae_contender(case, model, snapshot, xs) -> qt.Contender:
    rng, next_x = np.random.default_rng(1), itertools.cycle(xs).__next__

    def reset():
        model.flat[...] = snapshot

    if case.kind == "is":
        chunk = is_chunks(case)[0]

        def block(n):
            for _ in range(n):
                importance_sampled_log_marginal(model, next_x(), k=case.k, rng=rng,
                                                chunk_size=chunk)
        return qt.Contender("minivae", block, reset, per=case.batch)

    opt, grads = new_adam(), model.new_grad()

    def block(n):
        for _ in range(n):
            eps = model.sample_eps(rng, case.batch, case.k)
            minivae_loss_and_grad(case, model, next_x(), eps, grads)
            opt.step(model.flat, grads.flat)
    return qt.Contender("minivae", block, reset)


def adam_contender(snapshot, grad) -> qt.Contender:
    """minivae's Adam step alone, on a copy of the parameters and a real gradient."""
    params, opt = snapshot.copy(), new_adam()

    def block(n):
        for _ in range(n):
            opt.step(params, grad)

    def reset():
        params[...] = snapshot
    return qt.Contender("adam", block, reset)


SEED_IS = 11  # the generator of minivae's IS noise in the check


def minivae_eval(case, model, x, eps):
    """(loss or IS values, flat gradient or None) for given noise (IS: a list of chunks)."""
    if case.kind == "is":
        rng = np.random.default_rng(SEED_IS)  # the stream is_eps() reproduces
        est = importance_sampled_log_marginal(model, x, k=case.k, rng=rng,
                                              chunk_size=is_chunks(case)[0])
        return np.asarray(est.values, dtype=np.float64), None
    loss, grads = minivae_loss_and_grad(case, model, x, eps, model.new_grad())
    return np.float64(loss), grads.flat.copy()


def is_eps(case, model):
    """The noise minivae's importance sampler draws from default_rng(SEED_IS), chunk by chunk."""
    rng = np.random.default_rng(SEED_IS)
    return [model.sample_eps(rng, case.batch, c) for c in is_chunks(case)]


# ----------------------------------------------------------------------------------------
# GEMM-only lower bound
# ----------------------------------------------------------------------------------------


def matmul_plan(case: Case):
    """The (m, k, n, transA, transB) products of one unit of work, in minivae's layout:
    forward h W for every layer; backward dW = h^T delta for every layer and
    dx = delta W^T for every layer but the encoder's first (z needs the decoder's)."""
    enc = (D, *case.hidden, 2 * case.latent)
    dec = (case.latent, *reversed(case.hidden), D)
    pairs = lambda sizes: list(zip(sizes[:-1], sizes[1:], strict=True))  # noqa: E731
    if case.kind == "is":
        plan = [(case.batch, a, b, False, False) for a, b in pairs(enc)]
        for c in is_chunks(case):
            plan += [(c * case.batch, a, b, False, False) for a, b in pairs(dec)]
        return plan
    plan = []
    for rows, sizes, first_dx in ((case.batch, enc, False), (case.k * case.batch, dec, True)):
        for i, (a, b) in enumerate(pairs(sizes)):
            plan.append((rows, a, b, False, False))
            plan.append((a, rows, b, True, False))
            if i > 0 or first_dx:
                plan.append((rows, b, a, False, True))
    return plan


def plan_gflop(plan):
    return sum(2 * m * k * n for m, k, n, _, _ in plan) / 1e9


def gemm_contender(case: Case) -> qt.Contender:
    rng = np.random.default_rng(0)
    ops = []
    for m, k, n, ta, tb in matmul_plan(case):
        A = rng.standard_normal((k, m) if ta else (m, k)).astype(case.dtype)
        B = rng.standard_normal((n, k) if tb else (k, n)).astype(case.dtype)
        ops.append((A.T if ta else A, B.T if tb else B, np.empty((m, n), case.dtype)))

    def block(n):
        for _ in range(n):
            for A, B, out in ops:
                np.matmul(A, B, out=out)
    return qt.Contender("gemm", block, per=case.batch if case.kind == "is" else 1)


# ----------------------------------------------------------------------------------------
# PyTorch: the same model, written the way a PyTorch user would write it
# ----------------------------------------------------------------------------------------


class TorchVAE:
    """nn.Linear layers (weight = minivae's W transposed), autograd, torch.optim.Adam."""

    def __init__(self, torch, case: Case, params, dtype):
        self.torch, self.case = torch, case
        self.tdtype = torch.float64 if dtype == np.float64 else torch.float32
        self.act = torch.relu if case.act == "relu" else torch.tanh
        self.layers = {}  # minivae name -> (tensor, transposed)
        self.enc, self.dec = self._mlp(params, "encoder"), self._mlp(params, "decoder")
        self.names = list(params)
        self.load(params)
        self.opt = torch.optim.Adam([t for t, _ in self.layers.values()], lr=LR,
                                    betas=(BETA1, BETA2), eps=ADAM_EPS)
        self.gen = torch.Generator().manual_seed(1)

    def _mlp(self, params, prefix):
        layers, i = [], 0
        while f"{prefix}.{i}.W" in params:
            lin = self.torch.nn.Linear(*params[f"{prefix}.{i}.W"].shape, dtype=self.tdtype)
            self.layers[f"{prefix}.{i}.W"] = (lin.weight, True)
            self.layers[f"{prefix}.{i}.b"] = (lin.bias, False)
            layers.append(lin)
            i += 1
        return layers

    def load(self, params):
        with self.torch.no_grad():
            for name, (t, transposed) in self.layers.items():
                a = params[name].T if transposed else params[name]
                t.copy_(self.torch.from_numpy(np.ascontiguousarray(a)))

    def flat_grad(self):
        parts = []
        for name in self.names:
            t, transposed = self.layers[name]
            g = t.grad.numpy()
            parts.append((g.T if transposed else g).ravel())
        return np.concatenate(parts)

    def mlp(self, layers, h):
        for i, lin in enumerate(layers):
            h = lin(h)
            if i < len(layers) - 1:
                h = self.act(h)
        return h

    def forward(self, x, eps):
        mu, log_var = self.mlp(self.enc, x).chunk(2, dim=-1)
        z = mu + self.torch.exp(0.5 * log_var) * eps
        return mu, log_var, z, self.mlp(self.dec, z)

    def log_w(self, x, eps):
        F = self.torch.nn.functional
        mu, log_var, z, logits = self.forward(x, eps)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = -0.5 * (z * z).sum(-1) - 0.5 * self.case.latent * LOG_2PI
        log_qz = (-0.5 * (log_var + (z - mu) ** 2 * self.torch.exp(-log_var)).sum(-1)
                  - 0.5 * self.case.latent * LOG_2PI)
        return log_px + log_pz - log_qz, logits

    def loss(self, x, eps):
        """(loss, logits): negative ELBO or negative IWAE bound, nats per datapoint."""
        torch, (K, B) = self.torch, eps.shape[:2]
        if self.case.kind == "elbo":
            mu, log_var, _, logits = self.forward(x, eps)
            rec = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="sum") / (K * B)
            kl = 0.5 * (mu * mu + torch.exp(log_var) - 1.0 - log_var).sum() / B
            return rec + kl, logits
        lw, logits = self.log_w(x, eps)
        return -(torch.logsumexp(lw, dim=0) - math.log(K)).mean(), logits

    def log_likelihood(self, x, eps_chunks):
        with self.torch.no_grad():
            lw = self.torch.cat([self.log_w(x, e)[0] for e in eps_chunks])
            return self.torch.logsumexp(lw, dim=0) - math.log(self.case.k)

    def eval(self, x, eps):
        """(loss or IS values, flat gradient or None, dL/dlogits) for given noise."""
        torch = self.torch
        x = torch.from_numpy(x)
        if self.case.kind == "is":
            ll = self.log_likelihood(x, [torch.from_numpy(e) for e in eps])
            return ll.double().numpy(), None, None
        self.opt.zero_grad(set_to_none=True)
        loss, logits = self.loss(x, torch.from_numpy(eps))
        logits.retain_grad()
        loss.backward()
        return np.float64(loss.item()), self.flat_grad(), logits.grad.numpy()

    def contender(self, snapshot, xs) -> qt.Contender:
        torch, case = self.torch, self.case
        next_x = itertools.cycle([torch.from_numpy(x) for x in xs]).__next__
        shape = (case.k, case.batch, case.latent)

        if case.kind == "is":
            def block(n):
                for _ in range(n):
                    x = next_x()
                    self.log_likelihood(x, (torch.randn(c, case.batch, case.latent,
                                                        dtype=self.tdtype, generator=self.gen)
                                            for c in is_chunks(case)))
            return qt.Contender("torch", block, lambda: self.load(snapshot), per=case.batch)

        def block(n):
            for _ in range(n):
                eps = torch.randn(shape, dtype=self.tdtype, generator=self.gen)
                loss, _ = self.loss(next_x(), eps)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
        return qt.Contender("torch", block, lambda: self.load(snapshot))


# ----------------------------------------------------------------------------------------
# JAX: jit of value_and_grad and the Adam update, one compiled step
# ----------------------------------------------------------------------------------------


class JaxVAE:
    """The same model as a pure function of a dict of minivae-named arrays."""

    def __init__(self, jax, case: Case, params, dtype):
        jax.config.update("jax_enable_x64", dtype == np.float64)
        self.jax, self.jnp, self.case, self.dtype = jax, jax.numpy, case, dtype
        self.act = jax.nn.relu if case.act == "relu" else jax.numpy.tanh
        self.names = list(params)
        self.n_enc = sum(1 for n in params if n.startswith("encoder.") and n.endswith(".W"))
        self.n_dec = sum(1 for n in params if n.startswith("decoder.") and n.endswith(".W"))
        self.value_and_grad = jax.jit(jax.value_and_grad(self.loss))
        self.log_w_jit = jax.jit(self.log_w)
        self.train_step = jax.jit(self._train_step, donate_argnums=0)
        self.chunk_log_w = jax.jit(self._chunk_log_w, static_argnums=3)
        self.logmeanexp = jax.jit(lambda lws: jax.nn.logsumexp(
            jax.numpy.concatenate(lws), axis=0) - math.log(case.k))

    def device_params(self, params):
        return {n: self.jnp.array(np.asarray(params[n])) for n in self.names}

    def mlp(self, p, prefix, n, h):
        for i in range(n):
            h = h @ p[f"{prefix}.{i}.W"] + p[f"{prefix}.{i}.b"]
            if i < n - 1:
                h = self.act(h)
        return h

    def forward(self, p, x, eps):
        Z = self.case.latent
        out = self.mlp(p, "encoder", self.n_enc, x)
        mu, log_var = out[:, :Z], out[:, Z:]
        z = mu + self.jnp.exp(0.5 * log_var) * eps
        return mu, log_var, z, self.mlp(p, "decoder", self.n_dec, z)

    def log_w(self, p, x, eps):
        jnp, Z = self.jnp, self.case.latent
        mu, log_var, z, logits = self.forward(p, x, eps)
        log_px = jnp.sum(x * logits - self.jax.nn.softplus(logits), axis=-1)
        log_pz = -0.5 * jnp.sum(z * z, axis=-1) - 0.5 * Z * LOG_2PI
        log_qz = (-0.5 * jnp.sum(log_var + (z - mu) ** 2 * jnp.exp(-log_var), axis=-1)
                  - 0.5 * Z * LOG_2PI)
        return log_px + log_pz - log_qz

    def loss(self, p, x, eps):
        jnp, (K, B) = self.jnp, eps.shape[:2]
        if self.case.kind == "elbo":
            mu, log_var, _, logits = self.forward(p, x, eps)
            rec = -jnp.sum(x * logits - self.jax.nn.softplus(logits)) / (K * B)
            kl = 0.5 * jnp.sum(mu * mu + jnp.exp(log_var) - 1.0 - log_var) / B
            return rec + kl
        lw = self.log_w(p, x, eps)
        return -jnp.mean(self.jax.nn.logsumexp(lw, axis=0) - math.log(K))

    def _train_step(self, state, x):
        jax, jnp, case = self.jax, self.jnp, self.case
        p, m, v, t, key = state
        key, sub = jax.random.split(key)
        eps = jax.random.normal(sub, (case.k, case.batch, case.latent), self.dtype)
        _, g = jax.value_and_grad(self.loss)(p, x, eps)
        t = t + 1
        m = jax.tree.map(lambda m, g: BETA1 * m + (1 - BETA1) * g, m, g)
        v = jax.tree.map(lambda v, g: BETA2 * v + (1 - BETA2) * g * g, v, g)
        step = LR / (1 - BETA1 ** t)
        root = 1 / jnp.sqrt(1 - BETA2 ** t)
        p = jax.tree.map(lambda p, m, v: p - step * m / (jnp.sqrt(v) * root + ADAM_EPS), p, m, v)
        return (p, m, v, t, key)

    def _chunk_log_w(self, p, x, key, c):
        key, sub = self.jax.random.split(key)
        eps = self.jax.random.normal(sub, (c, self.case.batch, self.case.latent), self.dtype)
        return self.log_w(p, x, eps), key

    def eval(self, params, x, eps):
        p = self.device_params(params)
        if self.case.kind == "is":
            lws = [self.log_w_jit(p, x, e) for e in eps]
            return np.asarray(self.logmeanexp(lws), dtype=np.float64), None
        loss, g = self.value_and_grad(p, x, eps)
        flat = np.concatenate([np.asarray(g[n]).ravel() for n in self.names])
        if flat.dtype != self.dtype:
            raise TypeError(f"JAX computed in {flat.dtype}, not {np.dtype(self.dtype)}")
        return np.float64(loss), flat

    def contender(self, snapshot, xs) -> qt.Contender:
        jax, jnp, case = self.jax, self.jnp, self.case
        next_x = itertools.cycle([jnp.asarray(x) for x in xs]).__next__
        if case.kind == "is":
            return self._is_contender(snapshot, next_x)

        def zeros():
            return {n: jnp.zeros(np.shape(snapshot[n]), self.dtype) for n in self.names}
        state = [(self.device_params(snapshot), zeros(), zeros(), jnp.zeros((), self.dtype),
                  jax.random.key(1))]

        def reset():  # the snapshot's parameters; the optimizer state goes on
            _, m, v, t, key = state[0]
            state[0] = (self.device_params(snapshot), m, v, t, key)

        def block(n):
            for _ in range(n):
                state[0] = self.train_step(state[0], next_x())
            jax.block_until_ready(state[0])
        return qt.Contender("jax", block, reset)

    def _is_contender(self, snapshot, next_x) -> qt.Contender:
        state = {"p": None, "key": self.jax.random.key(1)}

        def reset():
            state["p"] = self.device_params(snapshot)

        def block(n):
            for _ in range(n):
                x, key, lws = next_x(), state["key"], []
                for c in is_chunks(self.case):
                    lw, key = self.chunk_log_w(state["p"], x, key, c)
                    lws.append(lw)
                state["key"] = key
                out = self.logmeanexp(lws)
            out.block_until_ready()
        return qt.Contender("jax", block, reset, per=self.case.batch)


# ----------------------------------------------------------------------------------------
# Correctness: the same loss and gradient from all three, before anything is timed
# ----------------------------------------------------------------------------------------

TOL = {  # (loss, gradient), relative, norm-wise: see the module docstring
    "float64": (1e-10, 1e-10),
    "float32": (1e-5, 1e-4),
}


def rel_err(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-300))


def cast_model(case, model, dtype):
    """A copy of ``model`` in ``dtype`` (the same parameters, rounded or exactly upcast)."""
    out = new_model(case, dtype)
    out.flat[...] = model.flat.astype(dtype)
    return out


def check_noise(case, model):
    """Noise for the check in the model's dtype; for IS, the chunks its importance sampler draws."""
    if case.kind == "is":
        return is_eps(case, model)
    return model.sample_eps(np.random.default_rng(7), case.batch, case.k)


def as_dtype(eps, dtype):
    return [e.astype(dtype) for e in eps] if isinstance(eps, list) else eps.astype(dtype)


def evaluate_all(libs, case, model, x, eps):
    """{impl: (loss, grad)} of minivae and each library at the model's dtype, and the
    torch dL/dlogits (for the subnormal count). IS: minivae draws ``eps`` itself."""
    dtype = model.dtype.type
    x = x.astype(dtype)
    out, dlogits = {"minivae": minivae_eval(case, model, x, eps)}, None
    if "torch" in libs:
        loss, grad, dlogits = TorchVAE(libs["torch"], case, model.params, dtype).eval(x, eps)
        out["torch"] = (loss, grad)
    if "jax" in libs:
        out["jax"] = JaxVAE(libs["jax"], case, model.params, dtype).eval(model.params, x, eps)
    return out, dlogits


def float64_reference(libs, case, model64, x, eps):
    """The float64 result at exactly the float32 inputs. minivae's IS draws its own noise,
    so there the reference is torch's or JAX's float64 (checked against minivae's above)."""
    if case.kind != "is":
        return minivae_eval(case, model64, x.astype(np.float64), as_dtype(eps, np.float64))
    for name, cls in (("torch", TorchVAE), ("jax", JaxVAE)):
        if name in libs:
            impl = cls(libs[name], case, model64.params, np.float64)
            args = (x.astype(np.float64), as_dtype(eps, np.float64))
            res = impl.eval(*args) if name == "torch" else impl.eval(model64.params, *args)
            return res[0], res[1]
    return None


def compare(results, ref, dtype_name):
    """Relative loss and gradient errors of each result against ``ref``, and pass/fail."""
    tol_loss, tol_grad = TOL[dtype_name]
    rows = {}
    for impl, (loss, grad) in results.items():
        e_loss = rel_err(loss, ref[0])
        e_grad = None if grad is None else rel_err(grad, ref[1])
        ok = e_loss <= tol_loss and (e_grad is None or e_grad <= tol_grad)
        rows[impl] = {"loss_rel_err": e_loss, "grad_rel_err": e_grad, "ok": ok}
    return rows


def subnormal_fraction(a):
    if a is None or a.dtype != np.float32:
        return None
    mag = np.abs(a)
    return float(np.count_nonzero((mag > 0) & (mag < np.finfo(np.float32).tiny)) / mag.size)


def check_case(libs, case, model, x):
    """Float64 agreement of all three, and for float32 cases each against float64."""
    model64 = cast_model(case, model, np.float64)
    eps = check_noise(case, model)
    eps64 = check_noise(case, model64) if case.kind == "is" else as_dtype(eps, np.float64)
    r64, _ = evaluate_all(libs, case, model64, x, eps64)
    report, subnormal, grad = {"float64": compare(r64, r64["minivae"], "float64")}, {}, None
    if case.dtype == "float32":
        r32, dlogits = evaluate_all(libs, case, model, x, eps)
        ref = float64_reference(libs, case, model64, x, eps)
        if ref is not None:
            report["float32 vs float64"] = compare(r32, ref, "float32")
        subnormal = {"dL/dlogits (torch)": subnormal_fraction(dlogits),
                     "gradient (minivae)": subnormal_fraction(r32["minivae"][1])}
        grad = r32["minivae"][1]
    else:
        grad = r64["minivae"][1]
    ok = all(row["ok"] for rows in report.values() for row in rows.values())
    return ok, report, subnormal, grad


def print_check(case, report, subnormal):
    parts = []
    for label, rows in report.items():
        errs = ", ".join(
            f"{impl} {r['loss_rel_err']:.0e}/" + ("-" if r["grad_rel_err"] is None
                                                  else f"{r['grad_rel_err']:.0e}")
            + ("" if r["ok"] else " FAIL") for impl, r in rows.items())
        parts.append(f"{label}: {errs}")
    print(f"  check {case.name}: loss/grad rel. err. " + "; ".join(parts))
    if any(v is not None for v in subnormal.values()):
        print("  subnormal float32 values at the snapshot: " + ", ".join(
            f"{k} {100 * v:.2f}%" for k, v in subnormal.items() if v is not None))


# ----------------------------------------------------------------------------------------
# Spinning threads: how long to wait before each block
# ----------------------------------------------------------------------------------------


def bursts(libs):
    """0.1 s or so of matrix products in each library, to see what its threads do after."""
    a = np.random.default_rng(0).standard_normal((128, 784)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((784, 400)).astype(np.float32)
    out = np.empty((128, 400), np.float32)
    found = {"numpy": lambda: [np.matmul(a, w, out=out) for _ in range(300)]}
    if "torch" in libs:
        ta, tw = libs["torch"].from_numpy(a), libs["torch"].from_numpy(w)
        found["torch"] = lambda: [ta @ tw for _ in range(300)]
    if "jax" in libs:
        jax = libs["jax"]
        jax.config.update("jax_enable_x64", False)
        f = jax.jit(lambda a, w: jax.numpy.tanh(a @ w))
        ja, jw = jax.numpy.asarray(a), jax.numpy.asarray(w)
        found["jax"] = lambda: [f(ja, jw) for _ in range(300)][-1].block_until_ready()
    return found


def measure_spin(libs, reps=3):
    """Per library: CPU (s) burnt by t = each of SPIN_AT after the burst (max over reps),
    and when the spinning stopped."""
    out = {}
    for name, burst in bursts(libs).items():
        burst()  # warm (JIT, thread start)
        profiles = [qt.spin_profile(burst) for _ in range(reps)]
        out[name] = {"cpu_by_s": {str(t): max(qt.cpu_by(p, t) for p in profiles)
                                  for t in SPIN_AT},
                     "spin_s": max(qt.spin_seconds(p) for p in profiles)}
    return out


SPIN_AT = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


def print_spin(spin, gap):
    print("Spinning threads: CPU time (ms) this process used while sleeping, by t after "
          "~0.1 s of matrix products (max of 3):")
    print("          " + "".join(f"{f't={1e3 * t:.0f}ms':>10}" for t in SPIN_AT) + "  spin ends")
    for name, s in spin.items():
        print(f"  {name:<8}" + "".join(f"{1e3 * s['cpu_by_s'][str(t)]:10.1f}" for t in SPIN_AT)
              + f"  {1e3 * s['spin_s']:6.0f} ms")
    print(f"idle gap before every timed block: {gap:.2f} s (longest spin + 50 ms)\n")


# ----------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------


def run_case(case, libs, train, test, args, gap, cores):
    print(f"{case.name}: {case.describe()}", flush=True)
    model = new_model(case)
    warm_up(case, model, train, args.warm_steps)
    snapshot = model.flat.copy()  # every block starts from these parameters
    named = {n: a.copy() for n, a in model.params.items()}  # the same, by name
    xs = batches(case, train, test)
    ok, report, subnormal, grad = check_case(libs, case, model, xs[0])
    print_check(case, report, subnormal)
    row = {"case": asdict(case), "what": case.describe(), "check": report, "check_ok": ok,
           "subnormal_at_snapshot": subnormal, "gflop_per_unit": plan_gflop(matmul_plan(case))}
    if not ok:
        print(f"  ABORTED {case.name}: the implementations disagree beyond the tolerance "
              f"(see the errors above); not timed\n")
        return row
    contenders = [minivae_contender(case, model, snapshot, xs)]
    if "torch" in libs:
        contenders.append(TorchVAE(libs["torch"], case, model.params, case.np_dtype)
                          .contender(named, xs))
    if "jax" in libs:
        contenders.append(JaxVAE(libs["jax"], case, model.params, case.np_dtype)
                          .contender(named, xs))
    contenders.append(gemm_contender(case))
    if case.kind != "is":
        contenders.append(adam_contender(snapshot, grad))
    for c in contenders:
        qt.calibrate(c, args.block_seconds)
    rounds = qt.run_rounds(contenders, args.rounds, gap, cores, args.threshold,
                           args.max_rounds)
    pairs = [("minivae", "torch"), ("minivae", "jax"), ("minivae", "gemm")]
    row["summary"] = qt.summarize(rounds, pairs, cores, args.threshold)
    row["units_per_block"] = {c.name: c.n for c in contenders}
    row["rounds"] = [{"order": r.order, "others_fraction": r.others_fraction(cores),
                      "blocks": {n: asdict(b) for n, b in r.blocks.items()}} for r in rounds]
    model.flat[...] = snapshot
    print_case_summary(row)
    return row


def print_case_summary(row):
    s = row["summary"]
    times = "  ".join(f"{n} {1e3 * t:.3f}" for n, t in s["step_s"].items())
    flag = "" if s["basis"] == "quiet" else "  (TOO FEW QUIET ROUNDS: medians over ALL rounds)"
    others = [f for f in s["others_fraction"] if f is not None]
    load = (f"; others took median {100 * sorted(others)[len(others) // 2]:.1f}%, "
            f"max {100 * max(others):.1f}% of capacity" if others else "")
    faults = "  ".join(f"{n} {f:.0f}" for n, f in s["faults_per_step"].items())
    print(f"  ms/step: {times}; rounds quiet {s['quiet']}, disturbed {s['disturbed']}"
          f"{load}{flag}")
    print(f"  page faults/step: {faults}\n", flush=True)


# ----------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------


def memory_child(args):
    """One case, one contender, in this fresh process: peak RSS after a few steps."""
    case, impl = CASES[args.memory_case[0]], args.memory_case[1]
    args.no_torch, args.no_jax = impl != "torch", impl != "jax"  # load only what is measured
    libs = import_libs(args, quiet=True)
    train, test, _ = load_data(args.data_dir)
    model = new_model(case)
    xs, snapshot = batches(case, train, test), model.flat.copy()
    if impl == "minivae":
        c = minivae_contender(case, model, snapshot, xs)
    else:
        cls = TorchVAE if impl == "torch" else JaxVAE
        c = cls(libs[impl], case, model.params, case.np_dtype).contender(model.params, xs)
    setup = peak_rss_mb()
    c.reset()
    c.block(3)
    print(json.dumps({"rss_mb": peak_rss_mb(), "setup_rss_mb": setup}))


def case_memory(case, impl, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
           "--memory-case", case.name, impl]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def train_memory(args):
    """Peak RSS of one epoch of `python -m minivae train` (784-400-20, B=128), fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peak.json")
        cmd = [sys.executable, os.path.join(HERE, "peak_memory.py"), "--out", out,
               "-m", "minivae", "train", "--dataset", "binarized-mnist",
               "--data-dir", args.data_dir, "--hidden", "400", "--latent-dim", "20",
               "--batch-size", "128", "--epochs", "1", "--no-pictures",
               "--run-dir", os.path.join(tmp, "run")]
        t = time.perf_counter()
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t
        if res.returncode != 0 or not os.path.exists(out):
            return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
        with open(out) as f:
            peak = json.load(f)
    return {"command": "python -m minivae train --dataset binarized-mnist --data-dir DIR "
                       "--hidden 400 --latent-dim 20 --batch-size 128 --epochs 1 "
                       "--no-pictures --run-dir TMP",
            "peak_rss_mb": peak["peak_rss_mb"], "wall_s": seconds}


# ----------------------------------------------------------------------------------------
# Libraries, machine, report
# ----------------------------------------------------------------------------------------


def import_libs(args, quiet=False):
    """{"torch": module, "jax": module} for those importable and wanted."""
    libs = {}
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
            libs["torch"] = torch
        except ImportError:
            if not quiet:
                print("NOTE: torch is not importable; timing without it")
    if not args.no_jax:
        try:
            import jax
            jax.config.update("jax_platforms", "cpu")
            libs["jax"] = jax
        except ImportError:
            if not quiet:
                print("NOTE: jax is not importable; timing without it")
    return libs


def thread_report(libs, threads):
    info = {"requested": threads,
            "env": {v: os.environ.get(v) for v in
                    ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
            "xla_flags_set": XLA_FLAGS_SET}
    try:
        from threadpoolctl import threadpool_info
        info["blas_pools"] = [
            " ".join(str(v) for v in (p["internal_api"], p.get("version"),
                                      p.get("architecture")) if v)
            + f" threads={p['num_threads']} ({library_name(p['filepath'])})"
            for p in threadpool_info()]
    except ImportError:
        info["blas_pools"] = ["threadpoolctl not installed"]
    if "torch" in libs:
        t = libs["torch"]
        info["torch"] = f"intra-op {t.get_num_threads()}, inter-op {t.get_num_interop_threads()}"
    if "jax" in libs:
        info["jax"] = ("XLA_FLAGS " + repr(os.environ.get("XLA_FLAGS")) + "; "
                       + ("intra-op 1" if XLA_FLAGS_SET else "XLA's own pool (all cores)"))
    return info


def library_name(path):
    """``numpy.libs/libscipy_openblas64_....so``: which package ships it, not where it is."""
    return os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))


def numpy_blas():
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{cfg.get('name')} {cfg.get('version')}"
    except Exception:  # noqa: BLE001  (best effort: only for the footer)
        return "unknown"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(libs, args, data_name):
    return {
        "cpu": cpu_name(), "cores": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(), "numpy": np.__version__, "blas": numpy_blas(),
        "torch": libs["torch"].__version__ if "torch" in libs else None,
        "jax": libs["jax"].__version__ if "jax" in libs else None,
        "threads": thread_report(libs, args.threads), "data": data_name,
    }


def fmt_ms(s, key):
    t = s["step_s"].get(key)
    return f"{1e3 * t:8.3f}" if t is not None else f"{'-':>8}"


def fmt_ratio(s, key):
    r = s["ratios"].get(key)
    return f"{'-':>17}" if r is None else f"{r['median']:5.2f} ({r['q1']:.2f}-{r['q3']:.2f})"


def print_table(rows):
    print("ms per step (IS: per datapoint), medians over quiet rounds; ratios: median of "
          "per-round ratios (IQR)")
    print(f"{'case':<18} {'minivae':>8} {'torch':>8} {'JAX':>8} {'GEMM':>8}  "
          f"{'minivae/torch':>17}  {'minivae/JAX':>17}  {'mv/GEMM':>7}  quiet/dist")
    for row in rows:
        if "summary" not in row:
            print(f"{row['case']['name']:<18} not timed: correctness check failed")
            continue
        s = row["summary"]
        g = s["ratios"].get("minivae/gemm")
        flag = "" if s["basis"] == "quiet" else " ALL"
        print(f"{row['case']['name']:<18} {fmt_ms(s, 'minivae')} {fmt_ms(s, 'torch')} "
              f"{fmt_ms(s, 'jax')} {fmt_ms(s, 'gemm')}  {fmt_ratio(s, 'minivae/torch')}  "
              f"{fmt_ratio(s, 'minivae/jax')}  {g['median']:7.2f}  "
              f"{s['quiet']:>2}/{s['disturbed']:<2}{flag}")


def share(t, step):
    return f"{1e3 * t:7.3f} ({100 * t / step:3.0f}%)"


def print_breakdown(rows):
    print("\nWhere minivae's step goes (medians over quiet rounds; GEMM and Adam timed alone, "
          "so the shares are estimates):")
    print(f"{'case':<18} {'step ms':>8} {'GEMM ms':>14} {'Adam ms':>14} {'rest ms':>14} "
          f"{'GF/s step':>9} {'GF/s GEMM':>9}")
    for row in rows:
        s = row.get("summary", {}).get("step_s", {})
        if "minivae" not in s:
            continue
        step, gemm, adam = s["minivae"], s["gemm"], s.get("adam", 0.0)
        per = row["case"]["batch"] if row["case"]["kind"] == "is" else 1
        gf = row["gflop_per_unit"] / per

        adam_txt = share(adam, step) if "adam" in s else f"{'-':>14}"
        print(f"{row['case']['name']:<18} {1e3 * step:8.3f} {share(gemm, step)} {adam_txt} "
              f"{share(step - gemm - adam, step)} {gf / step:9.1f} {gf / gemm:9.1f}")


def print_memory(rows, train_mem):
    if any("memory" in r for r in rows):
        print("\nPeak RSS (MB) of a fresh process running each case a few steps "
              "(interpreter, libraries and data included):")
        for r in rows:
            if "memory" in r:
                print(f"  {r['case']['name']:<18} " + "  ".join(
                    f"{impl} {m['rss_mb']:.0f}" if "rss_mb" in m else f"{impl} error"
                    for impl, m in r["memory"].items()))
    if train_mem:
        if "error" in train_mem:
            print(f"\ntrain peak RSS: error: {train_mem['error']}")
        else:
            print(f"\nPeak RSS of `{train_mem['command']}`: {train_mem['peak_rss_mb']:.0f} MB "
                  f"({train_mem['wall_s']:.0f} s)")


def print_footer(machine, protocol, rows):
    tr = machine["threads"]
    quiet = sum(r["summary"]["quiet"] for r in rows if "summary" in r)
    dist = sum(r["summary"]["disturbed"] for r in rows if "summary" in r)
    print()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores; {machine['date']}")
    print(f"versions: python {machine['python']}, numpy {machine['numpy']} "
          f"(BLAS {machine['blas']}), torch {machine['torch']}, jax {machine['jax']}")
    print(f"threads: {tr['requested']} (OMP/OPENBLAS/MKL_NUM_THREADS="
          f"{'/'.join(str(v) for v in tr['env'].values())}); loaded BLAS: "
          f"{'; '.join(tr['blas_pools'])}; torch: {tr.get('torch', '-')}; "
          f"JAX: {tr.get('jax', '-')}")
    print(f"malloc: {machine['malloc']}")
    print(f"protocol: rounds until {protocol['rounds']} are quiet (at most "
          f"{protocol['max_rounds']}) per case, blocks of ~{protocol['block_s']} s, "
          f"idle gap {protocol['gap_s']:.2f} s before each, rotating order; a round is "
          f"disturbed when other processes took > {100 * protocol['threshold']:.0f}% of its "
          f"blocks' CPU capacity (/proc/stat); rounds quiet/disturbed: {quiet}/{dist}")
    print(f"ratios: per round, minivae's step time / the other's in the same round; median "
          f"and interquartile range over quiet rounds. Parameters: every block starts from "
          f"minivae's after {protocol['warm_steps']} training steps. Data: {machine['data']}")


def write_json(path, payload):
    """Atomically: a temporary file in the same folder, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".bench-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------


def selected_cases(spec):
    names = list(CASES) if spec is None else [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    return [CASES[n] for n in names]


def main(args):
    if args.memory_case:
        memory_child(args)
        return
    cases = selected_cases(args.cases)
    # as minivae's commands do; it holds for every contender that allocates through malloc
    # (NumPy, PyTorch), and without it a step's multi-MB temporaries may be faulted in anew
    # every step, or not, depending on what the process allocated before
    retained = False if args.default_malloc else retain_freed_memory()
    libs = import_libs(args)
    train, test, data_name = load_data(args.data_dir)
    cores = os.cpu_count()
    if qt.machine_busy_seconds() is None:
        print("NOTE: no /proc/stat: disturbances by other processes cannot be detected")

    spin = measure_spin(libs)
    gap = qt.choose_gap([s["spin_s"] for s in spin.values()])
    print_spin(spin, gap)

    rows = [run_case(case, libs, train, test, args, gap, cores) for case in cases]
    if args.memory:
        for row, case in zip(rows, cases, strict=True):
            row["memory"] = {impl: case_memory(case, impl, args)
                             for impl in ("minivae", *libs)}
    train_mem = None
    if args.train_memory:
        train_mem = (train_memory(args) if data_name == "binarized_mnist.npz"
                     else {"error": "--train-memory needs --data-dir with binarized_mnist.npz"})

    machine = machine_info(libs, args, data_name)
    machine["malloc"] = ("glibc keeps freed memory (M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD "
                         "512 MiB), as minivae's commands set it" if retained else
                         "the C library's defaults")
    protocol = {"rounds": args.rounds, "max_rounds": args.max_rounds or 2 * args.rounds,
                "block_s": args.block_seconds, "gap_s": gap,
                "threshold": args.threshold, "warm_steps": args.warm_steps, "spin": spin}
    print()
    print_table(rows)
    print_breakdown(rows)
    print_memory(rows, train_mem)
    print_footer(machine, protocol, rows)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("data_dir", "json")}
        write_json(args.json, {"machine": machine, "protocol": protocol, "args": settings,
                               "cases": rows, "train_memory": train_mem})
        print(f"wrote {os.path.basename(args.json)}")


def repeat(args, argv):
    """``--repeat N``: N runs, each a fresh process with this script's other options (and its
    own JSON), their full output as it comes, then one table of their ratios."""
    if args.repeat < 2:
        raise SystemExit("--repeat: expected a number of runs >= 2")
    rest, skip = [], False
    for a in argv:  # this command line without --repeat, --json, --memory, --train-memory
        if skip:
            skip = False
        elif a in ("--repeat", "--json"):
            skip = True
        elif not (a.startswith("--repeat=") or a.startswith("--json=")
                  or a in ("--memory", "--train-memory")):
            rest.append(a)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            print(f"=== run {i + 1} of {args.repeat} (a fresh process) ===", flush=True)
            extra = [a for a, on in (("--memory", args.memory),
                                     ("--train-memory", args.train_memory)) if on and i == 0]
            path = os.path.join(tmp, f"run{i + 1}.json")
            done = subprocess.run([sys.executable, os.path.abspath(__file__), *rest, *extra,
                                   "--json", path])
            if done.returncode != 0:
                raise SystemExit(f"run {i + 1} failed (exit {done.returncode})")
            with open(path) as f:
                runs.append(json.load(f))
            print(flush=True)
    print_repeats(runs)
    if args.json:
        write_json(args.json, {"runs": runs})
        print(f"wrote {os.path.basename(args.json)}")


def print_repeats(runs):
    """Per case, each run's median ratios (minivae/torch and minivae/JAX), and their median."""
    print(f"ratios of {len(runs)} runs (each: the median of its per-round ratios), "
          f"run 1 / run 2 / ... and their median:")
    print(f"{'case':<18} {'minivae/torch':>{7 * len(runs) + 8}}   "
          f"{'minivae/JAX':>{7 * len(runs) + 8}}")
    for rows in zip(*(r["cases"] for r in runs), strict=True):
        name = rows[0]["case"]["name"]
        cells = []
        for pair in ("minivae/torch", "minivae/jax"):
            vals = [r["summary"]["ratios"].get(pair, {}).get("median") for r in rows
                    if "summary" in r]
            vals = [v for v in vals if v is not None]
            cells.append(" / ".join(f"{v:.2f}" for v in vals) + f"  ({statistics.median(vals):.2f})"
                         if vals else "-")
        print(f"{name:<18} {cells[0]:>{7 * len(runs) + 8}}   {cells[1]:>{7 * len(runs) + 8}}")
    dates = [r["machine"]["date"] for r in runs]
    print(f"runs ended {', '.join(dates)}")


if __name__ == "__main__":
    if ARGS.repeat != 1:
        repeat(ARGS, sys.argv[1:])
    else:
        main(ARGS)
