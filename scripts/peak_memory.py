"""Peak resident memory of the running process, for the benchmark and reproduction scripts.

As a script, it runs a module the way ``python -m`` does and, when the module is done,
writes that process's peak RSS to a JSON file (used by ``bench.py --train-memory``)::

    python scripts/peak_memory.py --out peak.json -m minivae train --epochs 1 ...
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys


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


def run_module(out: str, module: str, argv: list[str]) -> int:
    """Run ``module`` as ``__main__`` with ``argv``; write its peak RSS to ``out``."""
    sys.argv = [module, *argv]
    sys.path[0] = os.getcwd()  # as `python -m` does: the module is found from the cwd
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    with open(out, "w") as f:
        json.dump({"peak_rss_mb": peak_rss_mb(), "exit_code": code}, f)
    return code


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[1] != "--out" or sys.argv[3] != "-m":
        raise SystemExit("usage: peak_memory.py --out FILE -m MODULE [ARGS...]")
    sys.exit(run_module(sys.argv[2], sys.argv[4], sys.argv[5:]))
