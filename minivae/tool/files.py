"""Files written whole, and the temporary files of writers that died.

Every file the tool writes (checkpoints, metrics, configuration, pictures, evaluations)
goes to a temporary name ``.NAME.tmpPID`` in the same directory and is renamed over
``NAME`` with :func:`os.replace` only once it is complete. So a crash, a kill -9 or a
full disk never leaves a torn ``NAME``: the old file stays as it was. When the write
itself fails (``ENOSPC``, ``EFBIG``), the writer removes its temporary file before the
error goes on, so a failure does not keep the disk full. A writer killed outright cannot
clean up; :func:`remove_stale_temporaries` removes what it left at the next start.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

#: ``.NAME.tmpPID`` (``.NAME.tmpPID.EXT`` when a library needs the extension to pick a format)
TEMPORARY = re.compile(r"^\..+\.tmp(\d+)(\.[A-Za-z0-9]+)?$")


def temporary_name(path: Path, suffix: str = "") -> Path:
    """Where ``path`` is written before it is complete: ``.NAME.tmpPID`` beside it."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")


def original_name(path) -> Path:
    """The file a temporary name stands for (``.NAME.tmpPID`` -> ``NAME``); other paths
    unchanged. For messages: a failed write should name the file the user knows."""
    path = Path(path)
    m = TEMPORARY.match(path.name)
    return path.with_name(path.name[1:m.start(1) - len(".tmp")]) if m else path


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on failure remove it.

    ``suffix`` is appended to the temporary name (e.g. ``.png`` for a plotting library
    that chooses the format from the file name).
    """
    path = Path(path)
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path, *, sync: bool = False):
    """A binary file to write ``path`` through; it appears under its name only when complete.

    ``sync=True`` also flushes the data to the disk before the rename (checkpoints), so
    that after a power loss the name holds either the old or the new file.
    """
    with atomic_path(path) as tmp:
        f = open(tmp, "wb")
        try:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
            f.close()
        except BaseException as exc:
            with contextlib.suppress(OSError):
                f.close()  # closes the descriptor even when flushing the rest fails again
            if isinstance(exc, OSError) and exc.filename is None:
                # a failed write (ENOSPC, EFBIG) names no file: name the one being written
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise


def atomic_write(path, data: bytes, *, sync: bool = False) -> Path:
    """Write ``data`` to ``path`` whole (see :func:`atomic_open`)."""
    with atomic_open(path, sync=sync) as f:
        f.write(data)
    return Path(path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(*directories) -> list[Path]:
    """Remove ``.NAME.tmpPID`` files whose writer (process PID) no longer runs.

    They are half-written files of a process that was killed while writing, or of a
    version that did not clean up after a failed write; they hold nothing usable and may
    be what keeps a disk full. A temporary file of a live process (another command still
    writing there) is left alone. Returns the files removed.
    """
    removed = []
    for d in directories:
        d = Path(d)
        if not d.is_dir():
            continue
        for p in d.iterdir():
            m = TEMPORARY.match(p.name)
            if m and p.is_file() and not _alive(int(m.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def writable_directory(directory, what: str) -> Path:
    """Raise :class:`NotWritableError` unless a file can be created in ``directory``.

    Tried by writing and removing a small file (permission bits alone do not tell: a
    read-only file system, or a process running as root).
    """
    directory = Path(directory)
    probe = temporary_name(directory / "write-test")
    try:
        with open(probe, "wb") as f:
            f.write(b"minivae")
    except OSError as exc:
        raise NotWritableError(f"cannot write in {what} {directory} ({exc.strerror}); "
                               f"nothing was done") from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return directory


class NotWritableError(ValueError):
    """A directory the command must write in does not accept files (checked up front)."""
