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

from skyhaul.runtime.launcher import check_health
from skyhaul.runtime.scenario import DEFAULT_SCENARIO

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
