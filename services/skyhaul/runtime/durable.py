"""Durable-file helpers for services that keep data on local disk (the region's blob store, the mdc's
object store): fsync a directory, write or create durably, clear crash leftovers, own a directory.

POSIX makes a rename or a new directory entry durable only once the directory itself is fsynced,
so every helper here fsyncs the parent of what it changes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from pathlib import Path

from skyhaul.runtime.errors import FailedPrecondition


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (POSIX needs the directory fsynced too)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Replace `path` with `data` atomically: temp file in `tmp_dir` (same filesystem), fsync, rename."""
    tmp = tmp_dir / f"{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def replace_durably(source: Path, target: Path) -> None:
    """Rename `source` to `target` (same filesystem), creating target's directory, and make it durable.

    The caller fsynced `source` itself; this makes the new directory entries survive a crash.
    """
    make_dirs_durably(target.parent)
    os.replace(source, target)
    fsync_dir(target.parent)


def make_dirs_durably(path: Path) -> None:
    """Create `path` and its missing parents, fsyncing each parent so the new entries survive a crash."""
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        os.mkdir(directory)
        fsync_dir(directory.parent)


def clear_directory(path: Path) -> int:
    """Remove everything inside `path` (crash leftovers); returns how many entries went."""
    removed = 0
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
        removed += 1
    return removed


class DirectoryLock:
    """An exclusive flock on `<directory>/.lock`: one process owns a data directory.

    Recovery at open deletes temp files; a second live process on the same directory would lose
    its in-flight writes. The kernel drops the lock when the owner dies, even by kill -9.
    """

    def __init__(self, directory: Path, owner: str) -> None:
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FailedPrecondition(
                f"{directory} is in use by another {owner}; stop it or give this one another SKYHAUL_DATA_DIR"
            ) from None
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
