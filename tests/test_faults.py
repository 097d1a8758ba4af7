"""Faults and bad input met by real ``python -m minivae`` processes.

Exit status, one line on stderr, no traceback, nothing lost or left behind, for: two
trainers on one run directory (and two without one), a trainer killed with SIGKILL, the
temporary files it leaves, a full disk during a checkpoint write (RLIMIT_FSIZE in the
child, SIGXFSZ ignored, so writes fail with EFBIG as they would with ENOSPC), read-only
directories, the memory of ``sample`` and ``evaluate`` at large sizes, and one example of
each other kind of user error (the rest of each kind is in ``test_cli_messages.py``).
Independent processes are started together, to keep the wall time down.
"""

import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from minivae.tool.checkpoint import load_checkpoint
from minivae.tool.train import EXIT_FAILED, TrainConfig, train

TINY = ["--dataset", "synthetic", "--hidden", "12", "--latent-dim", "2", "--batch-size", "200",
        "--train-eval-size", "100", "--no-pictures", "--seed", "3"]


def _config(**kw):
    base = dict(dataset="synthetic", hidden=[12], latent_dim=2, batch_size=200,
                train_eval_size=100, pictures=False, seed=3, epochs=1)
    return TrainConfig(**{**base, **kw})


@dataclass
class Done:
    code: int
    out: str
    err: str
    peak_mb: float  # the child's own peak resident memory (VmHWM), NaN if it was killed

    def one_line(self, expected: str) -> str:
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], self.err
        assert "Traceback" not in self.err
        return lines[0]


_CHILDREN = []


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test():
    yield
    while _CHILDREN:
        child = _CHILDREN.pop()
        if child.proc.returncode is None:
            child.proc.kill()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)


# Runs ``python -m minivae ARGS`` and, at exit, writes the process's own peak resident
# memory (VmHWM). Not wait4's ru_maxrss: a forked child's counts the parent's resident
# pages at the fork (the whole test process, hundreds of MB late in the suite).
_RUN_AND_RECORD_PEAK = """
import atexit, runpy, sys
def record(path=sys.argv[1]):
    status = open("/proc/self/status").read()
    open(path, "w").write(status.split("VmHWM:")[1].split()[0])
atexit.register(record)
sys.argv = ["minivae", *sys.argv[2:]]
runpy.run_module("minivae", run_name="__main__", alter_sys=True)
"""


class Child:
    """``python -m minivae ARGS`` with its output in files, and its own peak memory."""

    def __init__(self, args, cwd, preexec_fn=None):
        self.logs = Path(cwd) / f".child-{time.monotonic_ns()}"
        self.logs.mkdir(parents=True)
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        with open(self.logs / "out", "w") as out, open(self.logs / "err", "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _RUN_AND_RECORD_PEAK, str(self.logs / "peak_kb"),
                 *map(str, args)], cwd=cwd, stdout=out, stderr=err, env=env,
                preexec_fn=preexec_fn)
        self.pid = self.proc.pid
        _CHILDREN.append(self)

    def running(self) -> bool:
        """Still running? (Asked without reaping it, so that wait() can read its usage.)"""
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return info is None

    def wait(self, timeout=120) -> Done:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"timed out: {self.proc.args}")
            time.sleep(0.02)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        peak = self.logs / "peak_kb"  # absent when the process was killed
        done = Done(self.proc.returncode, (self.logs / "out").read_text(),
                    (self.logs / "err").read_text(),
                    int(peak.read_text()) / 1024 if peak.exists() else float("nan"))
        shutil.rmtree(self.logs)
        return done


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if ".tmp" in p.name]


# ------------------------------------------------------------------ concurrency, kill -9


def test_one_trainer_per_run_dir_and_a_killed_one_leaves_nothing_stuck(tmp_path):
    a = tmp_path / "a"
    # two trainers on one --run-dir, and two without one, all started together
    both = [Child(["train", *TINY, "--epochs", "100000", "--run-dir", a], tmp_path)
            for _ in range(2)]
    c, d = (Child(["train", *TINY, "--epochs", "1"], tmp_path) for _ in range(2))
    deadline = time.monotonic() + 60
    while all(t.running() for t in both):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    loser = next(t for t in both if not t.running())
    winner = next(t for t in both if t is not loser)
    refused = loser.wait()
    assert refused.code == 2
    refused.one_line(f"{a} is in use: another minivae process (pid {winner.pid}) is training")
    while not (a / "metrics.jsonl").exists():  # let the winner finish an epoch
        assert time.monotonic() < deadline and winner.running()
        time.sleep(0.05)
    os.kill(winner.pid, signal.SIGKILL)  # the kernel releases its lock; it cannot clean up
    assert winner.wait().code == -signal.SIGKILL

    done_c, done_d = c.wait(), d.wait()
    assert done_c.code == done_d.code == 0, (done_c.err, done_d.err)
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["run-1", "run-2"]
    assert {f"run directory: runs/run-{i}" in (done_c.out + done_d.out) for i in (1, 2)} == {True}
    for r in runs.iterdir():
        assert load_checkpoint(r / "checkpoints" / "latest.npz").meta["epoch"] == 1

    epoch = load_checkpoint(a / "checkpoints" / "latest.npz").meta["epoch"]  # never torn
    assert epoch >= 1
    dead = a / "checkpoints" / f".latest.npz.tmp{refused_pid(tmp_path)}"
    dead.write_bytes(b"half a checkpoint of a process that died")
    live = a / "checkpoints" / f".best.npz.tmp{os.getpid()}"  # a writer still running
    live.write_bytes(b"being written")
    resumed = Child(["train", "--resume", a, "--epochs", epoch + 1], tmp_path).wait()
    assert resumed.code == 0, resumed.err  # the killed trainer's lock is not stuck
    assert "removed" in resumed.out and str(dead) in resumed.out and not dead.exists()
    assert live.exists() and str(live) not in resumed.out
    assert load_checkpoint(a / "checkpoints" / "latest.npz").meta["epoch"] == epoch + 1


def refused_pid(cwd) -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"], cwd=cwd)
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ a full disk


def _file_size_limit(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_full_disk_during_a_checkpoint_write_loses_nothing(tmp_path):
    run, reference = tmp_path / "run", tmp_path / "reference"
    train(_config(epochs=1), run)
    size = (run / "checkpoints" / "latest.npz").stat().st_size
    before = _files(run)
    full = _file_size_limit(size // 2)  # every checkpoint write fails half way
    stopped = Child(["train", "--resume", run, "--epochs", "2"], tmp_path, full)
    # a new run whose very first checkpoint (epoch 0, no optimizer state yet) cannot be written
    fresh = Child(["train", *TINY, "--epochs", "1", "--run-dir", tmp_path / "new"], tmp_path,
                  _file_size_limit(size // 4))
    train(_config(epochs=2), reference)  # the same run, never stopped
    done = stopped.wait()
    assert done.code == EXIT_FAILED
    line = done.one_line("stopped at step 20: could not write ")
    assert "(File too large). The last good checkpoint is kept: " in line
    assert f"latest.npz (epoch 1); continue with: python -m minivae train --resume {run}" in line
    assert _files(run) == before and not _temporaries(run)  # intact, nothing left

    new = fresh.wait()  # its first checkpoint (epoch 0) cannot be written: no run is left
    assert new.code == EXIT_FAILED
    new.one_line(f"error: {tmp_path / 'new'}/checkpoints/latest.npz: File too large")
    assert not (tmp_path / "new").exists()

    # space freed: the resume repeats epoch 2 exactly
    assert Child(["train", "--resume", run, "--epochs", "2"], tmp_path).wait().code == 0
    for name in ("latest.npz", "best.npz"):
        np.testing.assert_array_equal(load_checkpoint(run / "checkpoints" / name).params,
                                      load_checkpoint(reference / "checkpoints" / name).params)
    assert not _temporaries(run)


# ------------------------------------------------------------------ read-only directories


def _without_root_override():
    """For root, drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set before
    exec, so permission bits bind (as for any other user)."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    probe = os.fork()
    if probe == 0:  # try it in a throwaway child first
        os._exit(0 if libc.prctl(24, 1, 0, 0, 0) == 0 else 1)
    if os.waitstatus_to_exitcode(os.waitpid(probe, 0)[1]) != 0:
        pytest.skip("running as root without the capability to drop CAP_DAC_OVERRIDE")

    def preexec():
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH; 24 = PR_CAPBSET_DROP
            libc.prctl(24, cap, 0, 0, 0)
    return preexec


def test_read_only_directories_are_refused_before_any_work(tmp_path):
    preexec = _without_root_override()
    run = tmp_path / "run"
    train(_config(epochs=1), run)
    ro = tmp_path / "ro"
    ro.mkdir()
    before = _files(run)
    for d in (run, run / "checkpoints", ro):
        d.chmod(0o555)
    try:
        children = {
            "resume": Child(["train", "--resume", run, "--epochs", "5"], tmp_path, preexec),
            "new run": Child(["train", *TINY, "--run-dir", ro / "new"], tmp_path, preexec),
            "evaluate": Child(["evaluate", run, "--k", "5"], tmp_path, preexec),
            "sample": Child(["sample", run, "--out", ro / "s.png"], tmp_path, preexec),
        }
        done = {name: child.wait() for name, child in children.items()}
    finally:
        for d in (run, run / "checkpoints", ro):
            d.chmod(0o755)
    for name, expected in (("resume", f"cannot write in the run directory {run} "),
                           ("new run", f"cannot create --run-dir {ro / 'new'} (Permission"),
                           ("evaluate", f"cannot write in the run directory {run} "),
                           ("sample", f"cannot write in the directory of --out {ro} ")):
        assert done[name].code == 2, (name, done[name].err)
        done[name].one_line(expected)
    assert "epoch" not in done["resume"].out  # refused before training, not after an epoch
    assert _files(run) == before and list(ro.iterdir()) == []


# ------------------------------------------------------------------ memory


def test_sample_and_evaluate_work_in_bounded_memory(tmp_path):
    """30,000 samples: the old code built the whole picture in float64, enlarged 14 times
    (about 4 GB for 8x8 images); evaluate with k = 5,000 works chunk by chunk (all the
    samples of a batch at once would take about 600 MB)."""
    run = tmp_path / "run"
    train(_config(epochs=1), run)
    sample = Child(["sample", run, "--n", "30000", "--out", tmp_path / "big.png"], tmp_path)
    evaluate = Child(["evaluate", run, "--k", "5000", "--n", "100"], tmp_path)
    s, e = sample.wait(), evaluate.wait()
    assert s.code == 0 and e.code == 0, (s.err, e.err)
    raw = (tmp_path / "big.png").read_bytes()
    # ceil(sqrt(30000)) = 174 columns of 8x8 images with 1-pixel borders, 173 rows, below
    # a title of a few lines
    width, height = struct.unpack(">II", raw[16:24])
    assert width == 174 * 9 + 1 and 173 * 9 + 1 < height < 173 * 9 + 1 + 100
    assert s.peak_mb < 250 and e.peak_mb < 250, (s.peak_mb, e.peak_mb)
    assert json.loads((run / "evaluation_test.json").read_text())["k"] == 5000


# ------------------------------------------------------------------ one of each other kind


def test_user_errors_in_real_processes(tmp_path):
    run = tmp_path / "run"
    train(_config(epochs=1), run)
    nan = tmp_path / "nan"
    shutil.copytree(run, nan)
    for name in ("latest.npz", "best.npz"):
        with np.load(nan / "checkpoints" / name) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["params"] = np.full_like(arrays["params"], np.nan)
        np.savez(nan / "checkpoints" / name, **arrays)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "binarized_mnist.npz").write_bytes(b"\x80\x04 not a zip archive")
    before = _files(tmp_path)
    cases = {  # one of each category; every kind is tried in test_cli_messages.py
        ("train", "--resume", run, "--run-dir", "other"): "--run-dir cannot be given with it",
        ("evaluate", nan): f"{nan}/checkpoints/best.npz holds non-finite parameters",
        ("train", *TINY, "--objective", "iwae", "--k", "20000000", "--run-dir", "big"):
            "would need about",
        ("train", "--dataset", "binarized-mnist", "--data-dir", "data", "--run-dir", "x"):
            "data/binarized_mnist.npz is not a .npz file",
    }
    children = {args: Child(args, tmp_path) for args in cases}
    # and a reader of the output that goes away (| head -1): a quiet end, a usable run
    piped = subprocess.Popen([sys.executable, "-m", "minivae", "train", *TINY, "--epochs", "50",
                              "--run-dir", "piped"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    for line in piped.stdout:  # up to the first epoch's line
        if line.startswith(b"epoch"):
            break
    else:
        pytest.fail(f"no epoch line: {piped.stderr.read()!r}")
    piped.stdout.close()
    assert piped.wait(timeout=120) == EXIT_FAILED and piped.stderr.read() == b""
    piped.stderr.close()
    assert load_checkpoint(tmp_path / "piped" / "checkpoints" / "latest.npz").meta["epoch"] >= 1
    shutil.rmtree(tmp_path / "piped")
    for args, child in children.items():
        done = child.wait()
        assert done.code == 2, (args, done.err)
        assert "allow_pickle" not in done.one_line(cases[args])
    assert _files(tmp_path) == before  # nothing written, nothing removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "nan", "run"]
