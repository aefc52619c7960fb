"""The README's tour runs as printed: start the system the way the README says, then run every line
of the tour block against it, each with exit code 0. A line that follows forever (`--follow`) is
stopped after a while and accepted if it printed events."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # .venv/bin: where `source .venv/bin/activate` puts skyhaul
TOUR_MARKER = "<!-- tour:"
FOLLOW_SECONDS = 20


def readme_blocks() -> tuple[list[str], list[str]]:
    """(the lines that start the system, the tour's lines), as printed in README.md."""
    text = (ROOT / "README.md").read_text()
    tour_at = text.index(TOUR_MARKER)
    blocks = re.findall(r"```sh\n(.*?)```", text[:tour_at], re.S)
    start = [line for line in blocks[-1].splitlines() if line.strip()]
    tour_block = re.match(r"[^\n]*\n```sh\n(.*?)```", text[tour_at:], re.S)
    assert tour_block, "the tour marker must sit right above the tour's ```sh block"
    return start, [line for line in tour_block.group(1).splitlines() if line.strip()]


def test_the_readme_says_how_to_get_skyhaul_on_path_and_the_tour_uses_it():
    start, tour = readme_blocks()
    assert start[0] == "source .venv/bin/activate" and start[1].startswith("skyhaul up ")
    assert sum(line.startswith("skyhaul ") for line in tour) >= 10


@pytest.mark.slow
def test_the_readme_tour_runs_as_printed(tmp_path):
    start, tour = readme_blocks()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # what `source .venv/bin/activate` does
        "SKYHAUL_STATE_DIR": str(tmp_path / "state"),  # this test's system only
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("SKYHAUL_REDIS_URL", None)
    up_line = start[1].split("#")[0].strip() + f" --run-dir {tmp_path / 'run'}"  # keep runs/ out of the repo
    up = subprocess.Popen(
        ["bash", "-c", f"exec {up_line}"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while subprocess.run(["skyhaul", "status"], env=env, capture_output=True).returncode != 0:
            assert up.poll() is None, f"skyhaul up exited: {up.stdout.read()}"
            assert time.monotonic() < deadline, "the system never became SERVING"
            time.sleep(2)
        failures = []
        for line in tour:
            follows = "--follow" in line
            proc = subprocess.Popen(
                ["bash", "-c", f"set -e\n{line}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, start_new_session=True,
            )  # fmt: skip
            try:
                out, err = proc.communicate(timeout=FOLLOW_SECONDS if follows else 300)
            except subprocess.TimeoutExpired:
                if not follows:
                    raise
                os.killpg(proc.pid, signal.SIGINT)
                out, err = proc.communicate(timeout=30)
                if not out.strip():
                    failures.append(
                        f"{line}\n  printed no events in {FOLLOW_SECONDS} s; stderr: {err[-500:]}"
                    )
                continue
            if proc.returncode != 0:
                failures.append(f"{line}\n  rc {proc.returncode}; stderr: {err[-800:]}")
        assert not failures, "\n".join(failures)
        assert (tmp_path / "rtt.png").stat().st_size > 10_000  # the plot the tour asked for
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
