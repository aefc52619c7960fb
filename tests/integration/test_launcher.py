"""`skyhaul up`: every service reaches SERVING, reflection lists each, SIGTERM leaves no process."""

import json
import os
import signal
import subprocess
import sys
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
        endpoints = json.loads((run_dir / "endpoints.json").read_text())
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
    assert not Path(tmp_path / "state" / "endpoints.json").exists()


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
