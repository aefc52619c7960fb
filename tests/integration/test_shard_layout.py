"""A 10-data-center fleet in the shards layout (2 shards): each data center keeps its own store,
sync relay, region path and stats although two processes host all ten; requests name their data
center, and the CLI finds the hosting process from run.json."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml

from skyhaul.core.fleet import fleet_scenario as generate_fleet
from skyhaul.runtime import auth
from skyhaul.runtime.launcher import Launcher
from skyhaul.runtime.settings import shard_members
from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc, region_pb2, region_pb2_grpc, terminal_pb2, terminal_pb2_grpc

DATA_CENTERS = 10
SHARDS = 2


def fleet_scenario(tmp_path: Path) -> tuple[Path, dict]:
    """A generated 10-site fleet, each data center syncing into a container of its own, no workload."""
    scenario = generate_fleet(DATA_CENTERS, 3, 3)
    for dc in scenario["data_centers"]:
        dc["workload"] = {"objects": 0}
        dc["sync"] = {"container": f"sync-{dc['id']}"}
    path = tmp_path / "fleet10.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path, scenario


def _put(stub, dc_id: str, key: str, data: bytes):
    def messages():
        yield mdc_pb2.PutObjectRequest(header=mdc_pb2.ObjectHeader(key=key, data_center_id=dc_id))
        yield mdc_pb2.PutObjectRequest(data=data)

    # The launcher shares its run's token with this process (SKYHAUL_TOKEN_FILE): writes need it.
    token = auth.load_token()
    return stub.PutObject(messages(), timeout=30, metadata=(("authorization", f"Bearer {token}"),))


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout  # a safety bound, not a measurement
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("shards")
    path, scenario = fleet_scenario(tmp_path)
    launcher = Launcher(str(path), tmp_path / "run", redis_url="", layout="shards", shards=SHARDS)
    launcher.start()
    try:
        yield launcher, scenario
    finally:
        launcher.stop()


def test_two_shard_pairs_host_all_ten_by_position(fleet):
    launcher, scenario = fleet
    ids = [dc["id"] for dc in scenario["data_centers"]]
    state = json.loads(launcher.state_path.read_text())
    assert state["layout"] == f"shards {SHARDS}"
    hosting = {label: hosts for label, hosts in state["hosts"].items()}
    assert set(hosting) == {f"{service}-shard-{k}" for service in ("mdc", "terminal") for k in range(SHARDS)}
    for k in range(SHARDS):
        assert (
            hosting[f"mdc-shard-{k}"] == hosting[f"terminal-shard-{k}"] == list(shard_members(ids, k, SHARDS))
        )
    assert set(state["data_centers"]) == set(ids)
    # one sync relay per data center, on its own port
    relay_ports = [int(p) for relays in state["relays"].values() for p in relays]
    assert len(relay_ports) == len(set(relay_ports)) == DATA_CENTERS


def test_puts_land_in_each_data_centers_own_region_path_and_stats_stay_apart(fleet):
    launcher, scenario = fleet
    state = json.loads(launcher.state_path.read_text())
    services = state["services"]
    homes = {dc["id"]: dc["home_region"] for dc in scenario["data_centers"]}
    # Sizes 64 KiB apart: a dish's byte count tells whose object it carried.
    payloads = {dc: os.urandom(65536 * (n + 1)) for n, dc in enumerate(homes)}
    for dc, data in payloads.items():
        placed = state["data_centers"][dc]
        with grpc.insecure_channel(services[placed["mdc"]]) as channel:
            reply = _put(mdc_pb2_grpc.ModularDataCenterServiceStub(channel), dc, "probe.bin", data)
        assert reply.object.sha256_hex == hashlib.sha256(data).hexdigest()

    def synced(dc: str) -> bool:
        with grpc.insecure_channel(services[state["data_centers"][dc]["mdc"]]) as channel:
            status = mdc_pb2_grpc.ModularDataCenterServiceStub(channel).GetStatus(
                mdc_pb2.GetStatusRequest(data_center_id=dc), timeout=10
            )
        return status.totals.objects_synced == 1

    for dc in payloads:
        _wait(lambda dc=dc: synced(dc), 180, f"{dc}'s object to sync")

    for dc, data in payloads.items():
        # In its home region, in its own container, with its own bytes...
        with grpc.insecure_channel(services[f"region-{homes[dc]}"]) as channel:
            region = region_pb2_grpc.CloudRegionServiceStub(channel)
            props = region.GetBlobProperties(
                region_pb2.GetBlobPropertiesRequest(container=f"sync-{dc}", blob="probe.bin"), timeout=10
            )
            assert props.sha256_hex == hashlib.sha256(data).hexdigest() and props.size == len(data)
            fetched = b"".join(
                r.data
                for r in region.GetBlob(
                    region_pb2.GetBlobRequest(container=f"sync-{dc}", blob="probe.bin"), timeout=10
                )
            )
            assert fetched == data
        # ...and in no other region.
        for other in {r for r in homes.values() if r != homes[dc]}:
            with grpc.insecure_channel(services[f"region-{other}"]) as channel:
                with pytest.raises(grpc.RpcError) as missing:
                    region_pb2_grpc.CloudRegionServiceStub(channel).GetBlobProperties(
                        region_pb2.GetBlobPropertiesRequest(container=f"sync-{dc}", blob="probe.bin"),
                        timeout=10,
                    )
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    # Stats are per data center: each mdc counts its one put, each dish the bytes of its own sync.
    for dc, data in payloads.items():
        placed = state["data_centers"][dc]
        with grpc.insecure_channel(services[placed["mdc"]]) as channel:
            status = mdc_pb2_grpc.ModularDataCenterServiceStub(channel).GetStatus(
                mdc_pb2.GetStatusRequest(data_center_id=dc), timeout=10
            )
        assert status.data_center_id == dc
        assert (status.totals.objects_put, status.totals.bytes_put) == (1, len(data))
        with grpc.insecure_channel(services[placed["terminal"]]) as channel:
            stats = terminal_pb2_grpc.TerminalServiceStub(channel).GetStats(
                terminal_pb2.GetStatsRequest(data_center_id=dc), timeout=10
            )
        assert stats.data_center_id == dc
        relay_port = {int(p) for p in state["relays"][placed["terminal"]]}
        assert [f.listen_port for f in stats.forwards] and {
            f.listen_port for f in stats.forwards
        } <= relay_port
        # its uplink carried its own object plus gRPC framing: less than the next size up
        assert len(data) <= stats.uplink.bytes_in < len(data) + 65536
    all_forwards = []
    for dc in payloads:
        placed = state["data_centers"][dc]
        with grpc.insecure_channel(services[placed["terminal"]]) as channel:
            stats = terminal_pb2_grpc.TerminalServiceStub(channel).GetStats(
                terminal_pb2.GetStatsRequest(data_center_id=dc), timeout=10
            )
        all_forwards += [f.listen_port for f in stats.forwards]
    assert len(all_forwards) == len(set(all_forwards)) == DATA_CENTERS  # no dish shares a relay


def test_requests_must_name_a_hosted_data_center(fleet):
    launcher, scenario = fleet
    state = json.loads(launcher.state_path.read_text())
    services = state["services"]
    with grpc.insecure_channel(services["mdc-shard-0"]) as channel:
        stub = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
        with pytest.raises(grpc.RpcError) as unnamed:
            stub.GetStatus(mdc_pb2.GetStatusRequest(), timeout=10)
        assert unnamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "data_center_id" in unnamed.value.details()
        elsewhere = state["hosts"]["mdc-shard-1"][0]
        with pytest.raises(grpc.RpcError) as foreign:
            stub.GetStatus(mdc_pb2.GetStatusRequest(data_center_id=elsewhere), timeout=10)
        assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as unnamed_put:
            _put(stub, "", "x.bin", b"x")
        assert unnamed_put.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with grpc.insecure_channel(services["terminal-shard-1"]) as channel:
        with pytest.raises(grpc.RpcError) as unnamed_stats:
            terminal_pb2_grpc.TerminalServiceStub(channel).GetStats(
                terminal_pb2.GetStatsRequest(), timeout=10
            )
        assert unnamed_stats.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing was stored by the refused put.
    for dc in state["hosts"]["mdc-shard-0"]:
        with grpc.insecure_channel(services["mdc-shard-0"]) as channel:
            listed = mdc_pb2_grpc.ModularDataCenterServiceStub(channel).ListObjects(
                mdc_pb2.ListObjectsRequest(data_center_id=dc, prefix="x.bin"), timeout=10
            )
        assert list(listed.objects) == []


def test_the_cli_resolves_a_data_center_through_run_json(fleet, tmp_path):
    launcher, scenario = fleet
    state = json.loads(launcher.state_path.read_text())
    dc = state["hosts"]["mdc-shard-1"][-1]
    env = {**os.environ, "SKYHAUL_RUN": str(launcher.run_dir), "SKYHAUL_STATE_DIR": str(tmp_path / "state")}
    for var in ("SKYHAUL_MDC_ADDR", "SKYHAUL_TERMINAL_ADDR"):
        env.pop(var, None)

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "skyhaul.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    status = cli("mdc-status", "--dc", dc, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["data_center_id"] == dc
    stats = cli("terminal", "--dc", dc, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert dc in stats.stdout
    unknown = cli("mdc-status", "--dc", "mdc-nowhere")
    assert unknown.returncode == 2 and "mdc-nowhere" in unknown.stderr
    unnamed = cli("mdc-status")  # the first mdc process hosts five: it asks for an id
    assert unnamed.returncode == 2 and "--dc" in unnamed.stderr
    listing = cli("status", "--json")
    assert json.loads(listing.stdout)["mdc-shard-1"]["hosts"] == state["hosts"]["mdc-shard-1"]
