"""Peak resident memory of the running process, for the benchmark and reproduction scripts."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux's VmHWM (the high-water mark of this address space, which starts afresh at
    exec) rather than getrusage's ru_maxrss, which a subprocess inherits from the parent
    it was forked from (in bench.py: one with torch loaded). Elsewhere, ru_maxrss.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
