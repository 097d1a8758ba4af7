"""How much memory a command will need, estimated before it starts, and refused if too much.

The commands work in bounded memory where they can (``evaluate`` and ``sample`` go
chunk by chunk, whatever ``--k`` or ``--n``). What cannot be chunked is one training
step: its arrays grow with K x B (samples x datapoints) times the decoder's widths, and
the model's own arrays with its number of parameters. Those are estimated here from
the configuration alone, without allocating anything, and a command that would not
fit in the memory available is refused with the estimate, instead of being killed
by the operating system or ending in a MemoryError after its run directory was made.

The factors were measured with :mod:`tracemalloc` (784-400-20 and 784-200-200-50,
ELBO and IWAE, float32 and float64): a step's peak is 3 to 4 arrays of
K x B x (decoder widths + output width) numbers, counted here as 4.
"""

from __future__ import annotations

import ctypes
import os
import resource

import numpy as np

from ..likelihoods import make_likelihood
from ..mlp import MLP

#: arrays of K x B x (decoder widths + output width) numbers alive at a step's peak (measured)
STEP_ARRAYS = 4
#: parameter-sized arrays of a training run: parameters, gradient, Adam's m and v, a buffer
PARAM_ARRAYS = 5


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def retain_freed_memory(mmap_threshold: int = 32 * 2**20,
                        trim_threshold: int = 512 * 2**20) -> bool:
    """Ask the C library's malloc to keep freed memory for reuse; True if it took the request.

    Why: a training step (or a chunk of an importance-sampling estimate) allocates the
    same large arrays every time and frees them at its end. By default glibc serves an
    allocation of a few MB with a fresh ``mmap`` whose pages the kernel must fault in and
    zero on first touch, or returns the freed top of its heap to the kernel once more
    than a few MB are free there, and the next step faults it in again. Whether that
    happens depends on what the process allocated before (glibc's thresholds adapt), so
    the same call ran at two speeds in two processes. Measured (float32, 2 threads):
    an IWAE step with K = 50, B = 20 took 3,422 page faults and 14.8 ms, 0 and 11.5 ms
    with this setting; importance sampling of log p(x) with k = 1000 on 784-400-20 took
    301,720 faults and 7.8 ms per datapoint, 0 and 4.5 ms.

    What it does: allocations below ``mmap_threshold`` (32 MiB) come from the heap, and up
    to ``trim_threshold`` (512 MiB) of freed heap memory is kept instead of being returned
    to the kernel (so a process's memory stays at its peak until it exits, rather than
    falling back after each step). Only glibc has ``mallopt``; elsewhere this does
    nothing and returns False. minivae's commands call it at start; the core library
    never changes the process it runs in, so scripts that train in a loop of their own
    can call it themselves.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold))


class MemoryBudgetError(ValueError):
    """The command would need more memory than the machine has available."""


def fmt_bytes(n: float) -> str:
    """``n`` bytes in the largest unit that keeps the number >= 1 (1 kB = 1000 bytes)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def available_bytes() -> int | None:
    """Memory this process can still get: the kernel's MemAvailable, or less under
    ``ulimit -v``; None when it cannot be told (no /proc)."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            used = 0
        avail = soft - used if avail is None else min(avail, soft - used)
    return avail


def require(nbytes: float, what: str, advice: str) -> None:
    """Raise :class:`MemoryBudgetError` if ``nbytes`` exceed the memory available."""
    avail = available_bytes()
    if avail is not None and nbytes > avail:
        raise MemoryBudgetError(f"{what} would need about {fmt_bytes(nbytes)} of memory, but "
                                f"{fmt_bytes(avail)} are available; {advice}")


def param_count(input_dim: int, latent_dim: int, hidden, decoder_hidden,
                likelihood: str) -> int:
    """The number of parameters of :class:`~minivae.vae.VAE` with these sizes, from the
    layer and likelihood descriptions alone (nothing is allocated)."""
    hidden = tuple(hidden)
    decoder_hidden = tuple(reversed(hidden)) if decoder_hidden is None else tuple(decoder_hidden)
    lik = make_likelihood(likelihood)
    specs = (MLP((input_dim, *hidden, 2 * latent_dim)).param_specs()
             + MLP((latent_dim, *decoder_hidden, lik.out_dim(input_dim))).param_specs()
             + lik.param_specs(input_dim))
    return sum(int(np.prod(shape, dtype=np.float64)) for _, shape in specs)


def check_model_fits(input_dim: int, latent_dim: int, hidden, decoder_hidden, likelihood: str,
                     dtype) -> int:
    """Refuse a model whose training arrays (:data:`PARAM_ARRAYS` copies) cannot fit.

    Returns the number of parameters.
    """
    n = param_count(input_dim, latent_dim, hidden, decoder_hidden, likelihood)
    itemsize = np.dtype(dtype).itemsize
    require(PARAM_ARRAYS * n * itemsize,
            f"a model with {n:,} parameters ({fmt_bytes(n * itemsize)} in {np.dtype(dtype)}; "
            f"training keeps {PARAM_ARRAYS} such arrays)",
            "choose smaller --hidden, --decoder-hidden or --latent-dim")
    return n


def step_bytes(k: int, batch: int, input_dim: int, latent_dim: int, hidden, decoder_hidden,
               likelihood: str, dtype) -> float:
    """Estimated peak bytes of the arrays of one training step on K x B samples."""
    hidden = tuple(hidden)
    decoder_hidden = tuple(reversed(hidden)) if decoder_hidden is None else tuple(decoder_hidden)
    out_dim = make_likelihood(likelihood).out_dim(input_dim)
    per_sample = sum(decoder_hidden) + out_dim + 2 * latent_dim
    per_datapoint = sum(hidden) + input_dim + 2 * latent_dim
    itemsize = np.dtype(dtype).itemsize
    return float(STEP_ARRAYS * itemsize * (float(k) * batch * per_sample + batch * per_datapoint))
