"""kill -9 at every step: the crash harness of the stores' durability tests.

A child process runs a script that arms `crash_before_call` and then performs one operation (a
commit, a put). The child counts the file-system calls the operation makes and SIGKILLs itself
just before call number CRASH_AT; with CRASH_AT 0 it never does, and prints how many calls the
operation made. `kill_at_every_step` runs that dry run once, then kills a fresh copy of the same
store before each of those calls in turn and hands every crashed copy to the test to inspect.

This module is imported by the child too (the harness puts tests/ on its PYTHONPATH), so it
imports nothing beyond the standard library.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
SERVICES_DIR = TESTS_DIR.parent / "services"
# Every os call that changes or walks a store's files: a crash point before each.
FILE_SYSTEM_CALLS = ("replace", "rename", "fsync", "unlink", "mkdir", "rmdir", "scandir")
CHILD_TIMEOUT_S = 60.0  # only so that a hung child fails the test instead of hanging it


def child_env() -> dict[str, str]:
    """The environment of a child: this tree's services and the test support on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SERVICES_DIR), str(TESTS_DIR)])}


class CallCounter:
    """How many of the armed calls the child has made so far."""

    def __init__(self) -> None:
        self.calls = 0


def crash_before_call(crash_at: int, names: tuple[str, ...] = FILE_SYSTEM_CALLS) -> CallCounter:
    """In the child: count calls of these `os` functions; SIGKILL this process just before call
    number `crash_at` (0: never). Returns the counter, for the dry run to print."""
    counter = CallCounter()
    for name in names:
        real = getattr(os, name)

        def counted(*args, _real=real, **kwargs):
            counter.calls += 1
            if counter.calls == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(*args, **kwargs)

        setattr(os, name, counted)
    return counter


def run_child(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run `python -c script args...` to its end (or its kill), capturing its output."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )


def kill_at_every_step(
    template: Path,
    work_dir: Path,
    run: Callable[[Path, int], subprocess.CompletedProcess],
    min_steps: int,
) -> Iterator[tuple[int, Path]]:
    """Yield (crash_at, root) for a copy of `template` killed before each call of the operation.

    `run(root, crash_at)` runs the child on the store at `root`. The dry run (crash_at 0) must
    succeed and report at least `min_steps` calls, so a broken harness cannot pass by testing
    nothing; every other run must end by SIGKILL.
    """
    dry = work_dir / "dry"
    shutil.copytree(template, dry)
    result = run(dry, 0)
    assert result.returncode == 0, result.stderr
    steps = int(result.stdout)
    assert steps >= min_steps, f"the operation made {steps} counted calls, expected at least {min_steps}"
    for crash_at in range(1, steps + 1):
        root = work_dir / f"crash-{crash_at}"
        shutil.copytree(template, root)
        result = run(root, crash_at)
        assert result.returncode == -signal.SIGKILL, (crash_at, result.stderr)
        yield crash_at, root
