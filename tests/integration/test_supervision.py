"""`skyhaul up` supervises what it started: kill -9 of any child (Redis included) is survived, a
child that keeps crashing stops the run with one line naming it, the launcher's own death takes
every child with it, and SIGTERM works while the system is still starting."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import psutil
import pytest
from support.storage import list_blobs, list_objects, payload, put_object, sha256_hex, wait_until
from test_launcher import UpRun, _env, _skyhaul, alive, wait_gone

from skyhaul.runtime import clients
from skyhaul.runtime.launcher import CrashLoop, Launcher, RestartPolicy, _Child, find_run
from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc, region_pb2_grpc

DC = "mdc-kodiak"
KINDS = ["orbit", "links", "region-westus2", f"terminal-{DC}", DC, "redis"]
FAST_RESTARTS = ("--restart-delay", "0.2")


def _pid(run: UpRun, label: str) -> int:
    state = run.state()
    return state["redis_pid"] if label == "redis" else state["pids"][label]


def _serving_again(run: UpRun) -> bool:
    status = run.cli("status", "--json")
    return status.returncode == 0 and {e["status"] for e in json.loads(status.stdout).values()} == {"SERVING"}


async def _put_and_wait_synced(mdc, keys: list[str], digests: dict[str, str]) -> None:
    for i, key in enumerate(keys):
        data = payload(4096 + i, len(digests))
        digests[key] = sha256_hex(data)
        assert (await put_object(mdc, key, data)).sha256_hex == digests[key]

    async def synced() -> bool:
        objects = {o.key: o for o in await list_objects(mdc, prefix="chaos/")}
        return all(objects.get(k) and objects[k].state == mdc_pb2.SYNC_STATE_SYNCED for k in digests)

    # Bounded only so a broken sync fails; the link comes and goes with the constellation.
    await wait_until(synced, "every object synced", timeout=300, every=0.5)


@pytest.mark.slow
async def test_kill_9_of_each_kind_of_child_is_restarted_and_nothing_put_is_lost(tmp_path):
    run = UpRun(tmp_path, "run", *FAST_RESTARTS)
    digests: dict[str, str] = {}
    try:
        printed = await asyncio.to_thread(run.wait_serving)
        token = (run.run_dir / "token").read_text().strip()  # puts change state: the run's token
        async with clients.channel(printed["services"][DC], token=token) as channel:
            mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
            await _put_and_wait_synced(mdc, ["chaos/before.bin"], digests)
            for kind in KINDS:
                victim = _pid(run, kind)
                os.kill(victim, signal.SIGKILL)

                async def restarted(kind=kind, victim=victim) -> bool:
                    state = run.state()
                    return state["restarts"].get(kind, 0) >= 1 and _pid(run, kind) not in (None, victim)

                await wait_until(restarted, f"{kind} restarted", timeout=120, every=0.2)
                await wait_until(
                    lambda: asyncio.to_thread(_serving_again, run), f"SERVING after {kind}", timeout=120
                )
                assert not alive(victim)
                # The system works after each fault: a new object syncs, the ones before stay synced.
                await _put_and_wait_synced(mdc, [f"chaos/after-{kind}.bin"], digests)
            status = json.loads(run.cli("status", "--json").stdout)
            assert all(status[kind]["restarts"] >= 1 for kind in KINDS), status
            objects = {o.key: o for o in await list_objects(mdc, prefix="chaos/")}
        async with grpc.aio.insecure_channel(printed["services"]["region-westus2"]) as channel:
            blobs = {
                b.name: b
                for b in await list_blobs(region_pb2_grpc.CloudRegionServiceStub(channel), "mdc-sync")
            }
    finally:
        code, err = await asyncio.to_thread(run.stop)
    assert code == 0, err
    for key, digest in digests.items():
        assert objects[key].state == mdc_pb2.SYNC_STATE_SYNCED and blobs[key].sha256_hex == digest, key
        stamp = objects[key]
        assert stamp.synced_at.ToNanoseconds() >= stamp.created_at.ToNanoseconds(), key  # one clock
    for kind in KINDS:
        assert f"{kind} killed by SIGKILL; restarting" in err


@pytest.mark.slow
def test_a_child_that_keeps_crashing_stops_the_run_with_one_line_naming_it(tmp_path):
    run = UpRun(tmp_path, "run", *FAST_RESTARTS, "--max-restarts", "2", "--restart-window", "600")
    run.wait_serving()
    killed: set[int] = set()
    deadline = time.monotonic() + 120  # a bound so a broken supervisor fails, not a measurement
    while run.proc.poll() is None and time.monotonic() < deadline:
        pid = run.state()["pids"][DC]
        if pid not in killed and alive(pid):
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.05)
    code, err = run.stop()
    assert code == 1, err
    verdicts = [line for line in err.splitlines() if "keeps crashing" in line]
    assert len(verdicts) == 1 and verdicts[0].startswith(f"skyhaul: {DC} keeps crashing"), err
    assert "2 restarts" in verdicts[0] and f"logs/{DC}.log" in verdicts[0]
    assert len(killed) == 3  # the first run and two restarts
    assert run.state()["phase"] == "stopped"


@pytest.mark.slow
def test_kill_9_of_the_launcher_takes_every_child_with_it(tmp_path, monkeypatch):
    run = UpRun(tmp_path, "run")
    run.wait_serving()
    children = run.child_pids()
    redis_pid = run.state()["redis_pid"]
    assert redis_pid in children and len(children) >= 6
    run.proc.kill()
    run.proc.wait(timeout=30)
    assert wait_gone(children) == [], "children outlived the launcher"
    # Its stale index entry is not taken for a live run.
    monkeypatch.setenv("SKYHAUL_STATE_DIR", str(tmp_path / "state"))
    assert find_run() is None


def _black_hole() -> socket.socket:
    """A port that accepts connections and never answers: a Redis that never gets ready."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@pytest.mark.slow
@pytest.mark.parametrize("redis", ["never-answers", "embedded"])
def test_sigterm_while_starting_stops_promptly_and_leaves_nothing(tmp_path, redis):
    hole = _black_hole()
    env = _env(tmp_path, f"redis://127.0.0.1:{hole.getsockname()[1]}/0" if redis == "never-answers" else None)
    run = subprocess.Popen(
        _skyhaul("up", "--run-dir", str(tmp_path / "run")),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state_file = tmp_path / "run" / "run.json"
    try:
        deadline = time.monotonic() + 60
        while not state_file.exists():  # every child spawned, none SERVING yet
            assert run.poll() is None, run.stderr.read()
            assert time.monotonic() < deadline, "skyhaul up never spawned its children"
            time.sleep(0.05)
        if redis == "never-answers":
            time.sleep(3)  # well into waiting for SERVING, which never comes
            assert json.loads(state_file.read_text())["phase"] == "starting"
        children = [c.pid for c in psutil.Process(run.pid).children(recursive=True)]
        run.send_signal(signal.SIGTERM)
        # Bounded well below the 90 s readiness timeout the launcher used to sit out.
        _, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
        hole.close()
    assert wait_gone(children) == [], "processes left behind"
    assert run.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("skyhaul: interrupted while starting"), err
    assert not list((tmp_path / "state").glob("runs/*.json"))


# --- the restart policy itself, on a real (short-lived) process and a simulated clock -----------


class _Supervised(Launcher):
    """A launcher whose one child is `python -c pass`: it dies at once, every time."""

    def __init__(self, tmp_path, policy: RestartPolicy) -> None:
        super().__init__(None, tmp_path / "run", redis_url="redis://unused", restart_policy=policy)
        self.run_dir.mkdir(parents=True)
        self.children["worker"] = _Child("worker", self._short_lived(), 0.0, served=True)

    def _short_lived(self) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        process.wait()
        return process

    def _respawn(self, name: str) -> None:
        self.children[name].process = self._short_lived()


def _delays(launcher: _Supervised, crashes: int, *, ran_s: float = 0.0) -> list[float]:
    """Let the child crash `crashes` times, each after running `ran_s`; the backoffs chosen."""
    child, now, delays = launcher.children["worker"], 0.0, []
    for _ in range(crashes):
        child.started = now - ran_s
        launcher.supervise(now=now)  # schedules the restart
        delays.append(child.delay_s)
        now = child.restart_at
        launcher.supervise(now=now)  # runs it
    return delays


def test_restarts_back_off_exponentially_up_to_the_cap(tmp_path):
    policy = RestartPolicy(initial_delay_s=1, max_delay_s=8, max_restarts=100, window_s=1e9)
    launcher = _Supervised(tmp_path, policy)
    assert _delays(launcher, 6) == [1, 2, 4, 8, 8, 8]
    assert launcher.restarts() == {"worker": 6}


def test_a_child_that_ran_for_the_stable_period_starts_again_from_the_first_delay(tmp_path):
    policy = RestartPolicy(initial_delay_s=1, max_delay_s=8, stable_after_s=60, max_restarts=100, window_s=1)
    launcher = _Supervised(tmp_path, policy)
    assert _delays(launcher, 3) == [1, 2, 4]
    assert _delays(launcher, 2, ran_s=61) == [1, 1]


def test_more_restarts_than_allowed_within_the_window_is_a_crash_loop_naming_the_child(tmp_path):
    launcher = _Supervised(tmp_path, RestartPolicy(initial_delay_s=1, max_restarts=3, window_s=100))
    (launcher.run_dir / "logs").mkdir()
    (launcher.run_dir / "logs" / "worker.log").write_text("starting\nTraceback: boom\n")
    _delays(launcher, 3)
    with pytest.raises(CrashLoop) as raised:
        launcher.supervise(now=99.0)  # the fourth crash, 98 s after the first restart
    assert str(raised.value).startswith("worker keeps crashing (exited with code 0; 3 restarts")
    assert "\n" not in str(raised.value) and raised.value.log_tail.endswith("Traceback: boom")


def test_restarts_spread_wider_than_the_window_never_stop_the_run(tmp_path):
    launcher = _Supervised(
        tmp_path, RestartPolicy(initial_delay_s=1, max_delay_s=1, max_restarts=2, window_s=5)
    )
    child, now = launcher.children["worker"], 0.0
    for _ in range(10):  # one crash every 10 s: never more than one in any 5 s window
        launcher.supervise(now=now)
        launcher.supervise(now=child.restart_at)
        now += 10
    assert launcher.restarts() == {"worker": 10}


def test_nothing_restarts_once_stopping(tmp_path):
    launcher = _Supervised(tmp_path, RestartPolicy())
    launcher.stop_event.set()
    assert launcher.supervise(now=100.0) == [] and launcher.restarts() == {"worker": 0}
