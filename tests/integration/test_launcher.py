"""`skyhaul up`: every service reaches SERVING, reflection lists each, SIGTERM leaves no process;
each run keeps its own state (run.json in its run dir) and the CLI reaches the right one; the
emulation clock continues across a restart on the same run dir; --forward relays a user's TCP app.
"""

import json
import os
import signal
import socket
import socketserver
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest
import yaml
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from skyhaul.runtime.launcher import check_health, free_port
from skyhaul.runtime.scenario import DEFAULT_SCENARIO
from skyhaul.runtime.services import SERVICES

EXPECTED_SERVICES = {
    "orbit": "skyhaul.v1.OrbitService",
    "links": "skyhaul.v1.LinkService",
    "region-westus2": "skyhaul.v1.CloudRegionService",
    "terminal-mdc-kodiak": "skyhaul.v1.TerminalService",
    "mdc-kodiak": "skyhaul.v1.ModularDataCenterService",
}


def _skyhaul(*args):
    return [sys.executable, "-m", "skyhaul.cli.main", *args]


def _env(tmp_path, redis_url=None):
    env = {**os.environ, "SKYHAUL_STATE_DIR": str(tmp_path / "state")}
    env.pop("SKYHAUL_REDIS_URL", None)
    if redis_url:
        env["SKYHAUL_REDIS_URL"] = redis_url
    return env


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids, timeout: float = 20.0) -> list[int]:
    """The pids still alive after `timeout` (a safety bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


class UpRun:
    """`skyhaul up` as a person runs it, in its own run dir, with the test's state dir."""

    def __init__(self, tmp_path: Path, name: str, *args: str, env: dict | None = None) -> None:
        self.tmp_path = tmp_path
        self.run_dir = tmp_path / name
        self.env = env or _env(tmp_path)
        self.proc = subprocess.Popen(
            _skyhaul("up", "--json", "--run-dir", str(self.run_dir), *args),
            env=self.env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pids: list[int] = []

    def wait_serving(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"skyhaul up printed nothing; stderr:\n{self.proc.stderr.read()}"
        self.pids = self.child_pids()
        return json.loads(line)

    def state(self) -> dict:
        return json.loads((self.run_dir / "run.json").read_text())

    def child_pids(self) -> list[int]:
        return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(_skyhaul(*args), env=self.env, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> tuple[int, str]:
        """SIGTERM; returns (exit code, stderr) once every process of the run is gone."""
        pids = self.pids + (self.child_pids() if self.proc.poll() is None else [])
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        assert wait_gone(set(pids)) == [], "processes left behind"
        return self.proc.returncode, err


def _reflected_services(address):
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request]), timeout=5))
        return {s.name for s in response.list_services_response.service}


@pytest.mark.slow
def test_up_serves_everything_and_sigterm_leaves_no_process(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _skyhaul("up", "--json", "--run-dir", "run"),  # relative, as a person would type it
        env=_env(tmp_path),  # no SKYHAUL_REDIS_URL: `up` starts its own Redis
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, f"skyhaul up printed nothing; stderr:\n{proc.stderr.read()}"
        endpoints = json.loads((run_dir / "run.json").read_text())
        assert stat.S_IMODE((run_dir / "run.json").stat().st_mode) == 0o600  # will carry a token
        services = endpoints["services"]
        assert set(services) == set(EXPECTED_SERVICES)
        for label, full_name in EXPECTED_SERVICES.items():
            assert check_health(services[label]) == "SERVING", label
            assert full_name in _reflected_services(services[label]), label
        # `skyhaul status` finds the running system by itself and agrees.
        status = subprocess.run(
            _skyhaul("status", "--json"), env=_env(tmp_path), capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert {v["status"] for v in json.loads(status.stdout).values()} == {"SERVING"}
        children = psutil.Process(proc.pid).children(recursive=True)
        pids = [c.pid for c in children]
        assert set(endpoints["pids"].values()) <= set(pids)
        assert len(pids) >= 6  # five services and Redis
        # each service runs as its own entry point, named in the registry
        for label, pid in endpoints["pids"].items():
            service = next(name for name in SERVICES if label == name or label.startswith(f"{name}-"))
            assert psutil.Process(pid).cmdline()[1:] == ["-m", SERVICES[service].module], label
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids
    ):
        time.sleep(0.1)
    survivors = [
        p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert survivors == [], f"processes left behind: {survivors}"
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d["data_centers"][0]["location"].update(lat=91), "data_centers[0].location.lat"),
        (lambda d: d.update(speed=-1), "speed"),
    ],
)
def test_up_with_a_bad_scenario_names_the_field_and_starts_nothing(tmp_path, mutate, field):
    data = json.loads(json.dumps(DEFAULT_SCENARIO))
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    run_dir = tmp_path / "run"
    result = subprocess.run(
        _skyhaul("up", "--scenario", str(path), "--run-dir", str(run_dir)),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert field in result.stderr and "nothing was started" in result.stderr
    assert not run_dir.exists()
    assert not list(Path(tmp_path / "state").glob("runs/*.json"))


# --- one entry point per service, reached through the registry ------------------------------------


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_has_its_own_entry_point_that_rejects_bad_settings_in_one_line(service):
    env = {**os.environ, "SKYHAUL_LOG_LEVEL": "chatty"}
    result = subprocess.run(
        [sys.executable, "-m", SERVICES[service].module], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert (
        result.stderr.strip() == "skyhaul: SKYHAUL_LOG_LEVEL: 'CHATTY' is not DEBUG, INFO, WARNING or ERROR"
    )


@pytest.mark.parametrize(
    "command", [["-m", "skyhaul.orbit"], ["-m", "skyhaul.cli.main", "serve", "orbit"]], ids=["module", "cli"]
)
def test_a_service_serves_until_sigterm_then_drains_and_exits_0(command, redis_url, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "SKYHAUL_LISTEN": f"127.0.0.1:{port}",
        "SKYHAUL_REDIS_URL": redis_url,
        "SKYHAUL_CLOCK_START": repr(time.time()),
        "SKYHAUL_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.Popen(
        [sys.executable, *command], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while check_health(f"127.0.0.1:{port}", timeout=1.0) != "SERVING":
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "orbit never became SERVING"
            time.sleep(0.2)
        assert "skyhaul.v1.OrbitService" in _reflected_services(f"127.0.0.1:{port}")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert '"message": "draining"' in output


# --- run state: each run its own, the CLI reaches the right one ---------------------------------


@pytest.mark.slow
def test_two_runs_side_by_side_each_keep_working_and_the_cli_reaches_the_chosen_one(tmp_path):
    first, second = UpRun(tmp_path, "run-a"), UpRun(tmp_path, "run-b")
    try:
        a, b = first.wait_serving(), second.wait_serving()
        assert set(a["services"].values()).isdisjoint(b["services"].values())
        for run, printed in ((first, a), (second, b)):
            status = run.cli("--run", str(run.run_dir), "status", "--json")
            assert status.returncode == 0, status.stderr
            report = json.loads(status.stdout)
            assert {name: entry["address"] for name, entry in report.items() if name != "redis"} == printed[
                "services"
            ]
            assert {entry["status"] for entry in report.values()} == {"SERVING"}
        # Two live runs and none chosen: one line that says how to choose, usage error.
        for command in (["status"], ["terminal", "stats"]):
            ambiguous = first.cli(*command)
            assert ambiguous.returncode == 2, ambiguous.stdout + ambiguous.stderr
            lines = ambiguous.stderr.strip().splitlines()
            assert len(lines) == 1 and "--run" in lines[0], ambiguous.stderr
            assert str(first.run_dir) in lines[0] and str(second.run_dir) in lines[0]
        code, err = first.stop()
        assert code == 0, err
        # One live run left: commands find it without being told, and it still serves.
        status = second.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["orbit"]["address"] == b["services"]["orbit"]
        # The stopped run's state stays in its run dir, marked stopped; it left nothing in the index.
        assert first.state()["phase"] == "stopped"
        assert len(list((tmp_path / "state" / "runs").glob("*.json"))) == 1
    finally:
        for run in (first, second):
            if run.proc.poll() is None:
                run.stop()


def test_run_option_on_a_dir_without_a_run_is_one_line_and_usage_error(tmp_path):
    result = subprocess.run(
        _skyhaul("--run", str(tmp_path), "status"), env=_env(tmp_path), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "run.json" in result.stderr


# --- the emulation clock continues across restarts ----------------------------------------------


def test_the_clock_start_is_persisted_in_the_run_dir_for_its_scenario(tmp_path):
    from skyhaul.runtime.launcher import load_clock_start
    from skyhaul.runtime.scenario import default_scenario, parse_scenario

    scenario = default_scenario()
    start = load_clock_start(tmp_path, scenario)
    assert stat.S_IMODE((tmp_path / "clock.json").stat().st_mode) == 0o600
    time.sleep(0.01)
    assert load_clock_start(tmp_path, scenario) == start
    faster = parse_scenario({**json.loads(json.dumps(DEFAULT_SCENARIO)), "speed": 10})
    assert load_clock_start(tmp_path, faster) > start  # another clock: a new start, persisted
    assert load_clock_start(tmp_path, faster) != start


async def test_a_service_without_skyhaul_up_keeps_its_clock_start_when_redis_forgot_it(tmp_path, redis_url):
    import redis.asyncio as aioredis

    from skyhaul.runtime.context import make_clock
    from skyhaul.runtime.settings import Settings

    env = {"SKYHAUL_REDIS_URL": redis_url, "SKYHAUL_DATA_DIR": str(tmp_path / "data")}
    first = await make_clock(Settings.from_env("links", env))
    admin = aioredis.from_url(redis_url)
    try:
        await admin.flushall()  # Redis restarted empty
        again = await make_clock(Settings.from_env("links", env))
        assert again.start_wall == first.start_wall
        # ... and the restored start is the one every other service now agrees on.
        other = await make_clock(Settings.from_env("orbit", {**env, "SKYHAUL_DATA_DIR": str(tmp_path / "o")}))
        assert other.start_wall == first.start_wall
    finally:
        await admin.aclose()
    unreachable = {**env, "SKYHAUL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert (await make_clock(Settings.from_env("links", unreachable))).start_wall == first.start_wall


@pytest.mark.slow
def test_up_again_on_the_same_run_dir_continues_the_same_clock(tmp_path):
    first = UpRun(tmp_path, "run")
    first.wait_serving()
    clock_start = first.state()["clock_start"]
    mdc_pid = first.state()["pids"]["mdc-kodiak"]
    assert psutil.Process(mdc_pid).environ()["SKYHAUL_CLOCK_START"] == repr(clock_start)
    code, err = first.stop()
    assert code == 0, err
    second = UpRun(tmp_path, "run")
    try:
        second.wait_serving()
        assert second.state()["clock_start"] == clock_start
        mdc_pid = second.state()["pids"]["mdc-kodiak"]
        assert psutil.Process(mdc_pid).environ()["SKYHAUL_CLOCK_START"] == repr(clock_start)
    finally:
        code, err = second.stop()
    assert code == 0, err


# --- the user's own TCP applications behind the terminal ----------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.mark.slow
def test_forward_reaches_a_tcp_echo_server_on_the_host_through_the_relay(tmp_path):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    echo = f"127.0.0.1:{server.server_address[1]}"
    from_cli, from_scenario = free_port(), free_port()
    scenario = json.loads(json.dumps(DEFAULT_SCENARIO))
    scenario["data_centers"][0]["forwards"] = [f"{from_scenario}={echo}"]
    path = tmp_path / "with-forwards.yaml"
    path.write_text(yaml.safe_dump(scenario))
    run = UpRun(tmp_path, "run", "--scenario", str(path), "--forward", f"{from_cli}={echo}")
    try:
        printed = run.wait_serving()
        relays = printed["relays"]["terminal-mdc-kodiak"]
        assert relays[str(from_cli)] == echo and relays[str(from_scenario)] == echo
        status = run.cli("status", "--json")
        assert json.loads(status.stdout)["terminal-mdc-kodiak"]["relays"][str(from_cli)] == echo
        for port in (from_cli, from_scenario):
            with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
                conn.settimeout(120)  # held while the link is down; only a bound, not a measurement
                conn.sendall(b"hello through the sky")
                received = b""
                while len(received) < 21:
                    chunk = conn.recv(64)
                    assert chunk, "the relay closed the connection"
                    received += chunk
            assert received == b"hello through the sky"
    finally:
        run.stop()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("forward", "says"),
    [
        ("8080", "LOCALPORT=HOST:PORT"),
        ("8080=nohost", "not HOST:PORT"),
        ("elsewhere:8080=127.0.0.1:9", "'elsewhere' is not a data center"),
        ("{busy}=127.0.0.1:9", "in use"),
    ],
)
def test_a_bad_forward_is_one_line_and_starts_nothing(tmp_path, forward, says):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        forward = forward.format(busy=busy.getsockname()[1])
        result = subprocess.run(
            _skyhaul("up", "--run-dir", str(tmp_path / "run"), "--forward", forward),
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "nothing was started" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()


def test_a_scenario_forward_that_is_not_port_equals_hostport_names_the_field(tmp_path):
    from skyhaul.runtime.scenario import ScenarioError, parse_scenario

    scenario = json.loads(json.dumps(DEFAULT_SCENARIO))
    scenario["data_centers"][0]["forwards"] = ["8080=127.0.0.1:9", "99999=127.0.0.1:9"]
    with pytest.raises(ScenarioError, match=r"data_centers\[0\]\.forwards\[1\]: '99999=127.0.0.1:9'"):
        parse_scenario(scenario)


def test_up_refuses_a_run_dir_that_a_live_up_is_using(tmp_path, monkeypatch):
    from skyhaul.runtime.launcher import register_run

    monkeypatch.setenv("SKYHAUL_STATE_DIR", str(tmp_path / "state"))
    register_run(tmp_path / "run")  # this test process stands for the live launcher
    result = subprocess.run(
        _skyhaul("up", "--run-dir", str(tmp_path / "run")),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"in use by the skyhaul up with pid {os.getpid()}" in result.stderr
    assert not (tmp_path / "run").exists()
