"""`skyhaul up --data-plane packet` end to end, driven through the CLI as a user drives it: every data
center in its own network namespace, the mdc inside it, `skyhaul run` for unmodified commands, the
region on its stable address behind the emulated link, and nothing left behind on exit.

Needs root (namespaces, TUN devices) and `ip` and `ping`: without them this module fails under
CI=true and skips otherwise. The store-and-forward test reuses test_store_and_forward's test as it
is, with the launcher switched to packet mode.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from skyhaul.runtime import netns
from skyhaul.runtime.clock import to_timestamp
from skyhaul.runtime.netns import PacketNetwork, missing_privileges
from skyhaul.runtime.scenario import DEFAULT_SCENARIO
from skyhaul.v1 import links_pb2, links_pb2_grpc

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
DC = "mdc-kodiak"  # the default scenario's data center
REGION = "westus2"


def _unavailable() -> str | None:
    if os.geteuid() != 0 and missing_privileges():
        return "needs root or CAP_NET_ADMIN+CAP_SYS_ADMIN (network namespaces, TUN devices)"
    missing = [tool for tool in ("ip", "ping") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} on PATH (apt-get install iproute2 iputils-ping)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


_REASON = _unavailable()


def _require_root() -> None:
    if _REASON is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"packet mode tests cannot run under CI: {_REASON}", pytrace=False)
        pytest.skip(_REASON)


# --- running the CLI --------------------------------------------------------------------------


def cli_env(state: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "SKYHAUL_STATE_DIR": str(state / "cli"),
        "SKYHAUL_NETNS_STATE_DIR": str(state / "netns"),
    }
    env["PYTHONPATH"] = os.pathsep.join([str(SERVICES_DIR), env.get("PYTHONPATH", "")])
    for var in ("SKYHAUL_REDIS_URL", "SKYHAUL_MDC_ADDR", "SKYHAUL_TERMINAL_ADDR", "SKYHAUL_REGION_ADDR"):
        env.pop(var, None)  # the CLI must find the running system by itself
    return env


def skyhaul(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skyhaul.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def namespaces_and_links() -> tuple[set[str], set[str]]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return (
        {line.split()[0] for line in namespaces.splitlines() if line.strip()},
        {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()},
    )


@dataclass
class PacketSystem:
    process: subprocess.Popen
    env: dict[str, str]
    endpoints: dict
    before: tuple[set[str], set[str]]

    @property
    def packet(self) -> dict:
        return self.endpoints["packet"]

    @property
    def region_address(self) -> str:
        return self.packet["regions"][REGION]

    @property
    def prefix(self) -> str:
        return self.packet["data_centers"][DC]["namespace"].split("-", 1)[0]

    def ours(self) -> tuple[set[str], set[str]]:
        """This run's namespaces and links that exist now."""
        namespaces, links = namespaces_and_links()
        return {n for n in namespaces if n.startswith(self.prefix)}, {
            n for n in links if n.startswith(self.prefix)
        }

    def emulated(self, wall: float) -> float:
        return self.endpoints["epoch_unix"] + (wall - self.endpoints["clock_start"]) * self.endpoints["speed"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PacketSystem]:
    _require_root()
    state = tmp_path_factory.mktemp("packet-state")
    env = cli_env(state)
    before = namespaces_and_links()
    run_dir = state / "run"
    # The built-in scenario on the propagation floor: these tests measure the packet engine against
    # the route's delay; what the calibrated model adds on top is tested against the traces.
    scenario = state / "floor.yaml"
    scenario.write_text(yaml.safe_dump({**DEFAULT_SCENARIO, "link_model": {"mode": "propagation"}}))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skyhaul.cli.main",
            "up",
            "--scenario",
            str(scenario),
            "--data-plane",
            "packet",
            "--json",
            "--run-dir",
            str(run_dir),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = None
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # --json: one line once every service is SERVING
        assert line.startswith("{"), (
            f"skyhaul up did not start: {line}{process.stderr.read() if process.stderr else ''}"
        )
        endpoints = json.loads((run_dir / "run.json").read_text())
        running = PacketSystem(process, env, endpoints, before)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if running is not None:  # whatever a failed test left: nothing of this run may remain
            for namespace in running.ours()[0]:
                subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


# --- through the link -------------------------------------------------------------------------


def one_way_delays_ms(system: PacketSystem, walls: list[float]) -> tuple[list[float], tuple[float, float]]:
    """The links service's one-way delay of the route at each wall time (GetRoute, explicit time),
    and the route's (uplink, downlink) capacity in Mbit/s."""
    with grpc.insecure_channel(system.endpoints["services"]["links"]) as channel:
        stub = links_pb2_grpc.LinkServiceStub(channel)
        delays = []
        for wall in walls:
            reply = stub.GetRoute(
                links_pb2.GetRouteRequest(data_center_id=DC, at=to_timestamp(system.emulated(wall))),
                timeout=10,
            )
            assert reply.route.available, reply
            delays.append(reply.route.one_way_delay_ms)
            capacities = (reply.route.capacity_up_mbps, reply.route.capacity_down_mbps)
    return delays, capacities


def test_ping_from_the_data_center_takes_twice_the_routes_one_way_delay(system):
    start = time.time()
    result = skyhaul(
        system.env, "run", "-d", DC, "--", "ping", "-n", "-c", "20", "-i", "0.1", system.region_address
    )
    end = time.time()
    assert result.returncode == 0, result.stderr
    rtts = [float(v) for v in re.findall(r"time=([\d.]+) ms", result.stdout)]
    assert len(rtts) >= 18, result.stdout  # a handover stall may take one or two
    delays, (up_mbps, down_mbps) = one_way_delays_ms(
        system, [start + k * (end - start) / 10 for k in range(11)]
    )
    # Tolerance from the link model: the delay's own change over the pings, serialising an 84-byte
    # ICMP packet at each direction's capacity, and the 1 ms the issue allows for the engine.
    serialisation_ms = 84 * 8 / (up_mbps * 1e3) + 84 * 8 / (down_mbps * 1e3)
    low = 2 * min(delays) - 1.0
    high = 2 * max(delays) + serialisation_ms + 1.0
    assert low <= statistics.median(rtts) <= high, (rtts, delays)


def test_skyhaul_run_passes_the_exit_code_and_prints_the_region_address(system):
    assert skyhaul(system.env, "run", "-d", DC, "--", "sh", "-c", "exit 7").returncode == 7
    printed = skyhaul(system.env, "run", "--print-address", REGION)
    assert printed.returncode == 0 and printed.stdout.strip() == system.region_address == "198.18.0.1"
    # Inside, the region is reached through the TUN only; the host's loopback is not the region.
    routes = skyhaul(system.env, "run", "-d", DC, "--", "ip", "-o", "route")
    assert routes.returncode == 0
    assert "198.18.0.0/24" in routes.stdout and "default" not in routes.stdout
    status = skyhaul(system.env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"region {REGION}: 198.18.0.1" in status.stdout


def test_bad_input_gets_one_line_and_leaves_nothing_behind(system, tmp_path):
    before = namespaces_and_links()
    cases = {
        "unknown data center": ("run", "-d", "mdc-nowhere", "--", "true"),
        "missing command": ("run", "-d", DC, "--", "no-such-command-skyhaul"),
        "unknown region": ("run", "--print-address", "nowhere"),
        "no command": ("run", "-d", DC),
    }
    for case, args in cases.items():
        result = skyhaul(system.env, *args)
        assert result.returncode != 0, case
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("skyhaul: "), (case, result.stderr)
    nothing_running = cli_env(tmp_path)
    result = skyhaul(nothing_running, "run", "-d", DC, "--", "true")
    assert result.returncode != 0 and "no system running" in result.stderr and result.stderr.count("\n") == 1
    for after, earlier in zip(namespaces_and_links(), before, strict=True):
        assert {name for name in after ^ earlier if not _another_run(system, name)} == set()


def _another_run(system: PacketSystem, name: str) -> bool:
    """Other packet-mode runs and test sessions on this machine (random sk… / st… prefixes) may
    come and go meanwhile; nothing else may change."""
    return re.match(r"^s[kt][0-9a-f]", name) is not None and not name.startswith(system.prefix)


@pytest.mark.slow  # a 20 s outage, then the sync
def test_during_a_forced_outage_put_reaches_the_data_center_and_syncs_after(system, tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "during-outage.bin"
    path.write_bytes(data)
    outage_s = 20
    cut = skyhaul(system.env, "terminal", "set", "--outage", "--for", str(outage_s))
    assert cut.returncode == 0, cut.stderr
    outage_end = time.time() + outage_s
    put = skyhaul(system.env, "put", str(path), "--key", "outage/one.bin", "--json")
    assert put.returncode == 0, put.stderr  # the control network is not the shaped link
    objects = json.loads(skyhaul(system.env, "objects", "--json").stdout)
    during = next(o for o in objects if o["key"] == "outage/one.bin")
    assert time.time() < outage_end, "the put took the whole outage: test inconclusive"
    assert during["state"] != "synced"
    lost = skyhaul(
        system.env, "run", "-d", DC, "--", "ping", "-n", "-c", "2", "-W", "1", system.region_address
    )
    assert lost.returncode != 0  # the data path is cut meanwhile
    deadline = time.time() + outage_s + 120
    synced = None
    while time.time() < deadline:
        objects = json.loads(skyhaul(system.env, "objects", "--json").stdout)
        synced = next(o for o in objects if o["key"] == "outage/one.bin")
        if synced["state"] == "synced":
            break
        time.sleep(1)
    assert synced is not None and synced["state"] == "synced", synced
    assert time.time() >= outage_end
    blobs = json.loads(skyhaul(system.env, "blobs", "--json").stdout)
    blob = next(b for b in blobs if b["name"] == "outage/one.bin")
    import hashlib

    assert blob["sha256"] == hashlib.sha256(data).hexdigest() == synced["sha256"]
    stats = json.loads(skyhaul(system.env, "terminal", "stats", "--json").stdout)
    assert stats["data_plane"] == "packet"
    assert stats["uplink"]["drops"]["outage"] > 0 and stats["uplink"]["packets"] > 0


def test_exit_removes_every_namespace_and_device(system):
    assert system.ours()[0], "the run's namespace should exist while it runs"
    assert system.stop() == 0
    assert system.ours() == (set(), set())
    assert not list(Path(system.env["SKYHAUL_NETNS_STATE_DIR"]).glob("*.json"))


# --- without privileges, and after a crash ---------------------------------------------------


def test_without_privileges_packet_mode_fails_at_once_and_makes_nothing(tmp_path, monkeypatch, capsys):
    from skyhaul.cli.main import main

    monkeypatch.setattr(netns, "missing_privileges", lambda: ["CAP_NET_ADMIN"])
    monkeypatch.setenv("SKYHAUL_STATE_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("SKYHAUL_NETNS_STATE_DIR", str(tmp_path / "netns"))
    run_dir = tmp_path / "run"
    code = main(["up", "--data-plane", "packet", "--run-dir", str(run_dir)])
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1 and "CAP_NET_ADMIN" in error and "data_plane: relay" in error, error
    # Nothing made: no run directory, no state (a namespace would have been recorded there first).
    assert not run_dir.exists() and not (tmp_path / "netns").exists() and not (tmp_path / "cli").exists()


@pytest.mark.slow
def test_a_killed_launcher_leaves_nothing_after_the_next_start(tmp_path):
    _require_root()
    env = cli_env(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "skyhaul.cli.main", "up", "--data-plane", "packet", "--json"]
        + ["--run-dir", str(tmp_path / "run")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("{")
        endpoints = json.loads((tmp_path / "run" / "run.json").read_text())
        namespace = endpoints["packet"]["data_centers"][DC]["namespace"]
        process.kill()  # SIGKILL: no cleanup of its own
        process.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(
            subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode == 0
            for pid in endpoints["pids"].values()
        ):
            time.sleep(0.2)  # the children follow their parent (PDEATHSIG)
        assert namespace in namespaces_and_links()[0]
        gone = skyhaul(env, "run", "-d", DC, "--", "true")
        assert gone.returncode != 0 and "no system running" in gone.stderr
        with PacketNetwork(state_dir=env["SKYHAUL_NETNS_STATE_DIR"]):  # what the next start does first
            assert namespace not in namespaces_and_links()[0]
        prefix = namespace.split("-", 1)[0]
        assert {n for n in namespaces_and_links()[1] if n.startswith(prefix)} == set()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- store and forward over the packet link ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1500)
async def test_200_objects_across_outages_arrive_whole_over_the_packet_link(tmp_path, monkeypatch):
    """test_store_and_forward's own test, with every data center in its namespace and its sync
    over real TCP through the packet engine. Random loss is off here: with the default 1 %, one
    cubic flow gets a few Mbit/s (the Mathis bound) and the test would take half an hour; loss is
    what test_packet_plane measures."""
    _require_root()
    import test_store_and_forward as store_and_forward

    from skyhaul.runtime.launcher import Launcher

    monkeypatch.setenv("SKYHAUL_NETNS_STATE_DIR", str(tmp_path / "netns"))
    monkeypatch.setenv("SKYHAUL_PACKET_LOSS_PERCENT", "0")
    # The calibrated link model brings its own loss (0.2 % and more at slot boundaries): the floor.
    with_loss = store_and_forward.scenario_file

    def lossless(path_dir):
        path, dc_id, region_id = with_loss(path_dir)
        data = yaml.safe_load(path.read_text())
        data["link_model"] = {"mode": "propagation"}
        path.write_text(yaml.safe_dump(data))
        return path, dc_id, region_id

    monkeypatch.setattr(store_and_forward, "scenario_file", lossless)
    monkeypatch.setattr(store_and_forward, "SYNC_BUDGET_S", 1000.0)
    monkeypatch.setattr(store_and_forward, "Launcher", functools.partial(Launcher, data_plane="packet"))
    await store_and_forward.test_200_objects_across_outages_arrive_whole_and_exactly_once(tmp_path)
    assert not list((tmp_path / "netns").glob("*.json"))  # its namespaces went with it
