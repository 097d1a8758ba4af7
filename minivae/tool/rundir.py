"""The run directory: its paths, and its ownership by one process at a time.

A training run writes ``config.json``, ``metrics.jsonl``, ``checkpoints/`` and
``pictures/`` in its directory. :func:`new_run` and :func:`existing_run` hand the
directory to one process:

* **one owner**: the process holds an exclusive ``flock`` on ``RUN_DIR/.lock`` for
  as long as it trains. The kernel releases it when the process ends, however it
  ends (kill -9 included), so a crash never leaves a run locked; a second process
  that tries to train in the same directory is refused at once;
* **a race-free new name**: without a directory, a new run claims the first free
  ``runs/run-N`` with :func:`os.mkdir`, which exactly one of two concurrent
  processes can win;
* **checks before the work starts**: a new run's directory is new or empty (a
  directory holding files of something else is never written over); the directory
  accepts files; the disk has room for the checkpoints;
* **nothing left behind**: a new run that fails before it has trained a step is
  removed again (:meth:`RunOwner.discard`); temporary files of crashed writers are
  removed at the next start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from .files import TEMPORARY, remove_stale_temporaries, writable_directory

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

LOCK_NAME = ".lock"


class RunDirError(ValueError):
    """A run directory that cannot be used: in use, not empty, not a directory, not a run."""


class RunDir:
    """Paths inside a run directory."""

    def __init__(self, path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.latest = self.checkpoints / "latest.npz"
        self.best = self.checkpoints / "best.npz"
        self.pictures = self.path / "pictures"

    def directories(self) -> tuple[Path, ...]:
        """Every directory a run writes in."""
        return self.path, self.checkpoints, self.pictures


class RunOwner:
    """This process's exclusive hold on a run directory; :meth:`release` lets it go."""

    def __init__(self, run: RunDir, *, created: Path | None = None):
        self.run = run
        self.created = created  # the topmost directory this process created, if any
        self.fd = None
        self.removed_temporaries: list[Path] = []

    def lock(self) -> RunOwner:
        """Take the lock, or raise :class:`RunDirError` naming the process that holds it."""
        if fcntl is None:
            return self
        path = self.run.path / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(f"cannot write in the run directory {self.run.path} "
                              f"({exc.strerror}); nothing was done") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise _in_use(self.run.path, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def discard(self) -> None:
        """Remove what this process created for a new run that failed before any step."""
        self.release()
        if self.created is not None:
            _remove_created(self.run.path, self.created)
        else:  # an empty directory given by the user: empty it again
            for p in self.run.path.iterdir():
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        p.unlink()

    def check_writable(self) -> None:
        for d in self.run.directories():
            if d.is_dir():
                writable_directory(d, "the run directory")

    def clean_temporaries(self) -> None:
        self.removed_temporaries = remove_stale_temporaries(*self.run.directories())


def _leftovers(path: Path) -> list[str]:
    """What a directory holds besides the lock file and dead writers' temporary files."""
    return sorted(p.name for p in path.iterdir()
                  if p.name != LOCK_NAME and not TEMPORARY.match(p.name))


def _read_holder(fd: int, tries: int = 50) -> str:
    """The pid the lock's holder wrote in the lock file, or "?".

    The holder writes its pid just after it takes the lock, so a process that finds the
    lock taken can read the file in between and see it empty (seen once in the test suite,
    with two trainers started together on a loaded machine): it reads again for up to 0.5 s.
    """
    for _ in range(tries):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "?"


def _in_use(path: Path, holder: str) -> RunDirError:
    return RunDirError(f"{path} is in use: another minivae process (pid {holder}) is training "
                       f"in it; wait for it to end, or choose another --run-dir")


def _lock_holder(run: RunDir) -> str | None:
    """The pid written in the run's lock file if another process holds the lock, else None.

    Opens an existing lock file only (never creates one) and tries the lock without
    waiting, so asking leaves nothing behind.
    """
    if fcntl is None:
        return None
    try:
        fd = os.open(run.path / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_holder(fd)
    finally:
        os.close(fd)  # also lets go of the shared lock, if it was taken
    return None


def _check_empty(run: RunDir, *, locked: bool = False) -> None:
    """Refuse an existing directory for a new run unless it is empty (or holds only a lock
    file and dead writers' temporary files). Before this process holds the lock
    (``locked=False``), a directory another process is training in is refused as in use,
    whatever it already holds."""
    path = run.path
    holder = None if locked else _lock_holder(run)  # our own lock would look like another's
    if holder is not None:
        raise _in_use(path, holder)
    if run.latest.exists():
        raise FileExistsError(f"{path} already holds a run; continue it with --resume {path} "
                              f"or choose another --run-dir")
    found = _leftovers(path)
    if found:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise RunDirError(f"--run-dir {path} is not empty ({shown}) and holds no run to "
                          f"resume (no checkpoints/latest.npz); choose another --run-dir, or "
                          f"empty it")


def _mkdir_new(path: Path, what: str = "--run-dir") -> Path | None:
    """Create ``path`` (and missing parents); return the topmost directory created, or None
    if ``path`` already was a directory."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"{what} {path} exists and is not a directory") from None
    except NotADirectoryError:
        blocker = next((str(p) for p in path.parents if p.exists() and not p.is_dir()), "")
        raise RunDirError(f"cannot create {what} {path}: {blocker or 'a parent'} is a file, "
                          f"not a directory") from None
    except OSError as exc:
        raise RunDirError(f"cannot create {what} {path} ({exc.strerror})") from None
    if not path.is_dir():
        raise RunDirError(f"{what} {path} exists and is not a directory")
    return missing[-1] if missing else None


def _remove_created(path: Path, created: Path) -> None:
    """Remove ``path``, then its parents up to ``created`` while they are empty (another
    process may have made its own run beside it in the meantime)."""
    shutil.rmtree(path, ignore_errors=True)
    for p in path.parents:
        if p != created and created not in p.parents:
            break
        try:
            p.rmdir()
        except OSError:
            break


def claim_next_run_dir(parent="runs", stem: str = "run") -> tuple[Path, Path | None]:
    """Create and return the first free ``parent/stem-N`` (N = 1, 2, ...), race-free.

    :func:`os.mkdir` either creates the directory or fails because it exists, in one
    step, so two processes starting together get two different directories. Also
    returns the topmost directory created (``parent`` itself when it was new).
    """
    parent = Path(parent)
    created_parent = _mkdir_new(parent, "the runs directory")
    i = 1
    while True:
        path = parent / f"{stem}-{i}"
        try:
            path.mkdir()
        except FileExistsError:
            i += 1
            continue
        except OSError as exc:
            raise RunDirError(f"cannot create a run directory in {parent} ({exc.strerror}); "
                              f"choose one with --run-dir") from None
        return path, created_parent or path


def new_run(path=None) -> RunOwner:
    """Own a directory for a new run: ``path`` (new, or an empty directory), or the next
    free ``runs/run-N``. Raises :class:`RunDirError` or :class:`FileExistsError` (a run to
    resume is there) before anything is written."""
    if path is None:
        path, created = claim_next_run_dir()
    else:
        path = Path(path)
        if str(path) == "":
            raise RunDirError("--run-dir must name a directory, got ''")
        created = _mkdir_new(path)
    owner = RunOwner(RunDir(path), created=created)
    if created is None:
        _check_empty(owner.run)  # before the lock file is made: a refusal leaves nothing
    try:
        owner.lock()
        if created is None:
            owner.clean_temporaries()
            _check_empty(owner.run, locked=True)  # again, now that no other process can fill it
        owner.check_writable()
    except BaseException:
        owner.release()
        if created is not None:
            _remove_created(path, created)
        raise
    return owner


def existing_run(path) -> RunOwner:
    """Own the directory of a run to resume: it holds ``checkpoints/latest.npz``, no other
    process trains in it, and it accepts files. Removes dead writers' temporary files."""
    if path is None or str(path) == "":
        raise RunDirError(f"--resume must name a run directory, got {str(path or '')!r}")
    run = RunDir(path)
    if not run.path.is_dir():
        raise FileNotFoundError(f"--resume {path}: no such directory")
    if not run.latest.is_file():
        raise FileNotFoundError(f"--resume {path}: no run to resume there (no "
                                f"checkpoints/latest.npz)")
    owner = RunOwner(run).lock()
    try:
        owner.clean_temporaries()
        owner.check_writable()
    except BaseException:
        owner.release()
        raise
    return owner
