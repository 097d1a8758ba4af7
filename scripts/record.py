#!/usr/bin/env python
"""Run an experiment and keep what it printed as a report, with the machine and the date.

    DATA=/path/to/data python scripts/record.py NAME -- python scripts/reproduce.py --data-dir $DATA

runs the command after ``--``, shows its output as it comes, and when it succeeds writes
``scripts/results/NAME.txt``: a header (the command, the date, the machine, the software
versions, the commit of the code) and then exactly what the command printed on stdout.
The reference site's results page shows every such report, and a number the README quotes
from one is checked against it by the tests: no result is typed by hand.

Paths are not machine-specific in the report: the value of the environment variable
``DATA`` is written as ``$DATA`` and the project's directory as ``.``.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "scripts" / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def versions() -> str:
    import numpy
    import scipy

    return (f"python {platform.python_version()}, numpy {numpy.__version__}, "
            f"scipy {scipy.__version__}")


def commit() -> str:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def anonymize(text: str) -> str:
    """No machine paths: $DATA for the data directory, . for the project."""
    data = os.environ.get("DATA")
    if data:
        text = text.replace(str(Path(data).resolve()), "$DATA").replace(data, "$DATA")
    return text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".")


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1 or len(argv) < 3:
        print("usage: python scripts/record.py NAME -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    name, command = argv[0], argv[2:]
    if not name.replace("-", "").replace("_", "").isalnum():
        print(f"error: NAME must be letters, digits, - or _, got {name!r}", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc)
    code = commit()  # the code the command runs: read before it starts, not after
    threads = {v: os.environ[v] for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
               if v in os.environ}
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    status = proc.wait()
    if status != 0:
        print(f"record: the command failed (exit status {status}); no report written",
              file=sys.stderr)
        return status
    minutes = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60
    header = [
        f"$ {shlex.join(command)}",
        f"date: {started:%Y-%m-%d %H:%M} UTC ({minutes:.1f} min)",
        f"machine: {cpu_name()}, {os.cpu_count()} cores; {platform.system()} "
        f"{platform.release()}" + (f"; {', '.join(f'{k}={v}' for k, v in threads.items())}"
                                   if threads else ""),
        f"software: {versions()}; minivae at commit {code}",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.txt"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(anonymize("\n".join(header) + "".join(lines)))
    os.replace(tmp, path)
    print(f"record: wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
