"""The timing protocol of ``scripts/bench.py``: idle gaps, rotating rounds, disturbance accounting.

Three things make side-by-side timings on a small shared machine lie, and each has a
counter-measure here:

1. **Spinning worker threads.** After a matrix product, OpenBLAS's worker threads keep
   polling for new work for a while (about 0.1 s) before they sleep, and each one holds a
   core while it does. Whatever runs next in the same process starts with fewer free cores.
   :func:`spin_profile` measures this (the process's CPU time while its only Python
   thread sleeps right after a burst of work), :func:`choose_gap` picks an idle gap a
   margin longer, and :func:`time_block` sleeps that gap before every timed block.

2. **Order effects.** Each round runs every contender once; the first contender changes
   from round to round (:func:`round_order`), so no contender always follows the same
   one or always runs first.

3. **Other processes.** During each timed block the CPU time of the whole machine
   (``/proc/stat``: user + nice + system + irq + softirq + steal, over all cores) and of
   this process (``time.process_time``, all its threads) are read; their difference is
   the CPU time *other* processes, or other virtual machines through steal time, took
   while we were timing. A round whose blocks lost more than a fraction ``threshold`` of
   their capacity (wall time x cores) to others is *disturbed*: it is kept in the raw
   data but left out of the summary, and another round is run in its place (up to a cap),
   so that a busy minute on a shared machine costs time rather than the result.

Statistics (:func:`summarize`): the median per-step time of each contender over the
quiet rounds, and for each pair the median over quiet rounds of the *per-round* ratio,
with its interquartile range. Both contenders of a ratio ran within the same round, a
few seconds apart, so slow drifts of the machine (frequency, other VMs) cancel in the
ratio; the IQR says how much the ratio moved from round to round.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_seconds() -> float | None:
    """CPU seconds used by everything on this machine since boot (all cores), or None.

    From the first line of ``/proc/stat``: user + nice + system + irq + softirq + steal
    (steal: time the hypervisor gave our virtual CPUs to someone else). guest and
    guest_nice are already inside user and nice; idle and iowait are not busy.
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def page_faults() -> int:
    """Minor page faults of this process so far: a step that faults fresh memory in every
    time (a few thousand per step) is paying the kernel, not computing."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def own_cpu_seconds() -> float:
    """CPU time of this process, all threads (CLOCK_PROCESS_CPUTIME_ID, ns resolution)."""
    return time.process_time()


# ----------------------------------------------------------------------------------------
# 1. Spinning threads and the idle gap
# ----------------------------------------------------------------------------------------


def spin_profile(burst: Callable[[], None], length: float = 0.3, window: float = 0.01):
    """CPU time this process burns while sleeping right after ``burst()``.

    Returns ``[(t, cpu), ...]``: ``cpu`` is the CPU time (s) used since the burst ended,
    read after sleeping until ``t`` (s) in steps of ``window``; this thread is asleep, so
    any growth is other threads of the process (BLAS workers) still spinning.
    """
    burst()
    t0, c0 = time.perf_counter(), own_cpu_seconds()
    points = []
    while time.perf_counter() - t0 < length:
        time.sleep(window)
        points.append((time.perf_counter() - t0, own_cpu_seconds() - c0))
    return points


def spin_seconds(points, busy: float = 0.1) -> float:
    """When the spinning stopped: the end of the last window that used more than ``busy``
    of a core (0.1: 1 ms of CPU in a 10 ms window; the sleeping loop itself uses ~1%)."""
    end, prev_t, prev_c = 0.0, 0.0, 0.0
    for t, c in points:
        if c - prev_c > busy * (t - prev_t):
            end = t
        prev_t, prev_c = t, c
    return end


def cpu_by(points, t: float) -> float:
    """CPU time (s) used between the end of the burst and ``t`` seconds after it."""
    return max((c for tt, c in points if tt <= t + 1e-9), default=0.0)


def choose_gap(spins: Sequence[float], margin: float = 0.05, floor: float = 0.05) -> float:
    """The idle gap before each timed block: the longest spin seen plus ``margin``,
    rounded up to 10 ms, and at least ``floor``."""
    return max(floor, math.ceil((max(spins, default=0.0) + margin) * 100) / 100)


# ----------------------------------------------------------------------------------------
# 2. Blocks and rounds
# ----------------------------------------------------------------------------------------


@dataclass
class Contender:
    """Something to time: ``block(n)`` does n units of work and returns when they are done
    (e.g. after JAX's ``block_until_ready``); ``reset()`` runs untimed before every block
    (e.g. restore the parameters every block starts from); a unit is ``per`` steps
    (e.g. a batch of 100 datapoints when the reported time is per datapoint)."""

    name: str
    block: Callable[[int], None]
    reset: Callable[[], None] = lambda: None
    per: int = 1
    n: int = 1  # units per timed block, set by calibrate()


def calibrate(c: Contender, block_seconds: float, warm: int = 2, tries: int = 3) -> None:
    """Warm up, then set ``c.n`` so that one timed block lasts about ``block_seconds``.

    The time of one unit is the fastest of ``tries`` short runs (at least 50 ms each), so
    that a calibration caught by a busy moment does not make every block too short.
    """
    c.reset()
    c.block(warm)
    best = math.inf
    for _ in range(tries):
        c.reset()
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < 0.05:
            c.block(1)
            n += 1
        best = min(best, (time.perf_counter() - t0) / n)
    c.n = max(1, round(block_seconds / best))


@dataclass
class Block:
    seconds: float  # wall time of the block
    step: float  # seconds per step (per unit / per)
    others_cpu: float | None  # CPU seconds other processes used during the block
    faults: float = 0.0  # page faults (minor) of this process per step during the block


def time_block(c: Contender, gap: float) -> Block:
    """Reset, sleep ``gap`` (spinning threads park), then time ``c.n`` units."""
    c.reset()
    time.sleep(gap)
    m0, o0, f0 = machine_busy_seconds(), own_cpu_seconds(), page_faults()
    t0 = time.perf_counter()
    c.block(c.n)
    t1 = time.perf_counter()
    o1, m1, f1 = own_cpu_seconds(), machine_busy_seconds(), page_faults()
    others = None if m0 is None or m1 is None else max(0.0, (m1 - m0) - (o1 - o0))
    return Block(t1 - t0, (t1 - t0) / (c.n * c.per), others, (f1 - f0) / (c.n * c.per))


def round_order(names: Sequence[str], r: int) -> list[str]:
    """Round r's order: rotate by r, and every other full rotation run backwards, so that
    each contender runs first and follows each other contender about equally often."""
    base = list(names) if (r // len(names)) % 2 == 0 else list(names)[::-1]
    k = r % len(names)
    return base[k:] + base[:k]


@dataclass
class Round:
    order: list[str]
    blocks: dict[str, Block] = field(default_factory=dict)

    def others_fraction(self, cores: int) -> float | None:
        """CPU time others took during this round's blocks / (their wall time x cores)."""
        if any(b.others_cpu is None for b in self.blocks.values()):
            return None
        wall = sum(b.seconds for b in self.blocks.values())
        return sum(b.others_cpu for b in self.blocks.values()) / (wall * cores)


def run_rounds(contenders: Sequence[Contender], rounds: int, gap: float, cores: int,
               threshold: float, max_rounds: int | None = None) -> list[Round]:
    """Rounds until ``rounds`` of them are quiet, or ``max_rounds`` (default 2 x rounds)
    have run: on a shared machine, disturbed rounds are replaced rather than just dropped."""
    by_name = {c.name: c for c in contenders}
    out, quiet = [], 0
    while quiet < rounds and len(out) < (max_rounds or 2 * rounds):
        rnd = Round(round_order(list(by_name), len(out)))
        for name in rnd.order:
            rnd.blocks[name] = time_block(by_name[name], gap)
        out.append(rnd)
        f = rnd.others_fraction(cores)
        quiet += f is None or f <= threshold
    return out


# ----------------------------------------------------------------------------------------
# 3. Summary
# ----------------------------------------------------------------------------------------


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile), linear interpolation."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summarize(rnds: Sequence[Round], pairs: Sequence[tuple[str, str]], cores: int,
              threshold: float, min_quiet: int = 3) -> dict:
    """Medians over quiet rounds (or over all rounds, flagged, when fewer than
    ``min_quiet`` are quiet) and per-round ratios with their quartiles."""
    fractions = [r.others_fraction(cores) for r in rnds]
    quiet = [r for r, f in zip(rnds, fractions, strict=True) if f is None or f <= threshold]
    used, basis = (quiet, "quiet") if len(quiet) >= min_quiet else (list(rnds), "all")
    names = rnds[0].order if rnds else []
    steps = {n: statistics.median(r.blocks[n].step for r in used) for n in names}
    faults = {n: statistics.median(r.blocks[n].faults for r in used) for n in names}
    ratios = {}
    for a, b in pairs:
        if a in steps and b in steps:
            q1, med, q3 = quartiles([r.blocks[a].step / r.blocks[b].step for r in used])
            ratios[f"{a}/{b}"] = {"median": med, "q1": q1, "q3": q3}
    return {"step_s": steps, "faults_per_step": faults, "ratios": ratios, "basis": basis,
            "quiet": len(quiet),
            "disturbed": len(rnds) - len(quiet), "others_fraction": fractions,
            "measured": all(f is not None for f in fractions)}
