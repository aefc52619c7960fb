"""A 1 000-data-center `skyhaul up` (scenarios/fleet-1000.yaml) on one machine: the launcher picks
the shards layout, every process reaches SERVING, every data center's first object syncs intact to
its home region (sha256 of the bytes the region serves = what the data center stored), and SIGTERM
leaves no process. Prints time to SERVING and the RSS of every process (figures, not assertions).
"""

from __future__ import annotations

import hashlib
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

from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc, region_pb2, region_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "scenarios" / "fleet-1000.yaml"
SYNC_BOUND_S = 900.0  # a safety bound for the whole fleet's first objects, not a measurement
FIRST = "00000000"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _first_objects(services: dict, hosts: dict) -> dict[str, mdc_pb2.ObjectInfo]:
    """data center id -> its first workload object, as each mdc shard reports it (synced or not)."""
    found = {}
    for label, data_centers in hosts.items():
        if not label.startswith("mdc"):
            continue
        with grpc.insecure_channel(services[label]) as channel:
            stub = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
            for dc in data_centers:
                listed = stub.ListObjects(
                    mdc_pb2.ListObjectsRequest(
                        data_center_id=dc, prefix=f"sensor/{dc}/{FIRST}", max_results=1
                    ),
                    timeout=30,
                )
                if listed.objects:
                    found[dc] = listed.objects[0]
    return found


@pytest.mark.slow
def test_a_thousand_data_centers_come_up_sync_their_first_objects_and_stop(tmp_path):
    scenario = yaml.safe_load(FLEET.read_text())
    homes = {dc["id"]: dc["home_region"] for dc in scenario["data_centers"]}
    assert len(homes) == 1000
    env = {**os.environ, "SKYHAUL_STATE_DIR": str(tmp_path / "state")}
    env.pop("SKYHAUL_REDIS_URL", None)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skyhaul.cli.main",
            "up",
            "--json",
            "--scenario",
            str(FLEET),
            "--run-dir",
            str(run_dir),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    try:
        line = up.stdout.readline()
        assert line, f"skyhaul up printed nothing; stderr:\n{up.stderr.read()[-4000:]}"
        serving_s = time.monotonic() - started
        state = json.loads((run_dir / "run.json").read_text())
        pids = [c.pid for c in psutil.Process(up.pid).children(recursive=True)]
        services, hosts = state["services"], state["hosts"]
        assert state["layout"].startswith("shards")
        assert sorted(dc for label, ids in hosts.items() if label.startswith("mdc") for dc in ids) == sorted(
            homes
        )
        # 2 000 processes would not fit; the layout keeps it to a few per core
        assert len([p for p in pids if _alive(p)]) <= 8 + 2 * (2 * (os.cpu_count() or 1)) + 2

        deadline = time.monotonic() + SYNC_BOUND_S
        first: dict[str, mdc_pb2.ObjectInfo] = {}
        while time.monotonic() < deadline:
            first = _first_objects(services, hosts)
            synced = [dc for dc, info in first.items() if info.state == mdc_pb2.SYNC_STATE_SYNCED]
            if len(synced) == len(homes):
                break
            time.sleep(5)
        synced_s = time.monotonic() - started
        missing = sorted(set(homes) - {dc for dc, i in first.items() if i.state == mdc_pb2.SYNC_STATE_SYNCED})
        assert not missing, f"{len(missing)} data centers did not sync their first object, e.g. {missing[:5]}"

        # Intact at the home region: the bytes the region serves hash to what the data center stored.
        for region in set(homes.values()):
            with grpc.insecure_channel(services[f"region-{region}"]) as channel:
                stub = region_pb2_grpc.CloudRegionServiceStub(channel)
                for dc in (dc for dc, home in homes.items() if home == region):
                    key = first[dc].key
                    data = b"".join(
                        part.data
                        for part in stub.GetBlob(
                            region_pb2.GetBlobRequest(container="mdc-sync", blob=key), timeout=30
                        )
                    )
                    assert hashlib.sha256(data).hexdigest() == first[dc].sha256_hex, dc
                    assert (
                        len(data) == first[dc].size == scenario["data_centers"][0]["workload"]["size_bytes"]
                    )

        rss = {label: psutil.Process(pid).memory_info().rss / 2**20 for label, pid in state["pids"].items()}
        print(
            f"\nfleet-1000: layout {state['layout']}, SERVING after {serving_s:.1f} s, "
            f"every first object synced after {synced_s:.1f} s; RSS MiB: "
            + ", ".join(f"{label} {mib:.0f}" for label, mib in sorted(rss.items()))
            + f"; total {sum(rss.values()):.0f} MiB"
        )
    finally:
        pids += [c.pid for c in psutil.Process(up.pid).children(recursive=True)] if _alive(up.pid) else []
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
        try:
            up.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            up.kill()
            up.communicate()
    gone_by = time.monotonic() + 30  # a safety bound
    while time.monotonic() < gone_by and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert [p for p in pids if _alive(p)] == [], "SIGTERM left processes behind"
