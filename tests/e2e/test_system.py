"""Scenario checks of a whole running system: local (started here) or deployed (`make e2e-kind`).

Data put into the modular data center reaches the cloud region through the terminal intact,
the links service answers with routes, and the terminal carried the bytes.
"""

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from skyhaul.runtime import clients
from skyhaul.runtime.launcher import Launcher, check_health
from skyhaul.runtime.scenario import load_scenario
from skyhaul.v1 import (
    links_pb2,
    links_pb2_grpc,
    mdc_pb2,
    mdc_pb2_grpc,
    region_pb2,
    region_pb2_grpc,
    terminal_pb2,
    terminal_pb2_grpc,
)

EXTERNAL = os.environ.get("SKYHAUL_E2E_EXTERNAL") == "1"

SEED = Path(__file__).resolve().parents[2] / "scenarios" / "azure-mdc-2020.yaml"
SERVICES = ("orbit", "links", "region", "mdc", "terminal")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """service name -> address, plus the data center id."""
    if EXTERNAL:
        addresses = {name: os.environ[f"SKYHAUL_{name.upper()}_ADDR"] for name in SERVICES}
        yield addresses, os.environ.get("SKYHAUL_E2E_DATA_CENTER", "")
        return
    scenario = load_scenario(SEED)
    dc = scenario.data_centers[0].id
    launcher = Launcher(str(SEED), tmp_path_factory.mktemp("system"))
    endpoints = launcher.start()
    try:
        s = endpoints.services
        yield (
            {
                "orbit": s["orbit"],
                "links": s["links"],
                "region": s[f"region-{scenario.regions[0].id}"],
                "mdc": s[dc],
                "terminal": s[f"terminal-{dc}"],
            },
            dc,
        )
    finally:
        launcher.stop()


async def _put(mdc, key: str, payload: bytes):
    async def parts():
        yield mdc_pb2.PutObjectRequest(
            header=mdc_pb2.ObjectHeader(key=key, priority=mdc_pb2.PRIORITY_CLASS_TELEMETRY)
        )
        for i in range(0, len(payload), 256 * 1024):
            yield mdc_pb2.PutObjectRequest(data=payload[i : i + 256 * 1024])

    return await mdc.PutObject(parts(), timeout=30)


@pytest.mark.slow
@pytest.mark.external
def test_every_service_is_serving(system):
    addresses, _ = system
    assert {name: check_health(addr, 5.0) for name, addr in addresses.items()} == dict.fromkeys(
        SERVICES, "SERVING"
    )


@pytest.mark.slow
@pytest.mark.external
async def test_objects_reach_the_region_intact_through_the_terminal(system):
    addresses, dc = system
    async with (
        clients.channel(addresses["mdc"]) as mdc_ch,
        clients.channel(addresses["region"]) as region_ch,
        clients.channel(addresses["links"]) as links_ch,
        clients.channel(addresses["terminal"]) as terminal_ch,
    ):
        mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(mdc_ch)
        region = region_pb2_grpc.CloudRegionServiceStub(region_ch)
        info = await mdc.GetInfo(mdc_pb2.GetInfoRequest(), timeout=10)
        dc = dc or info.data_center_id

        route = (
            await links_pb2_grpc.LinkServiceStub(links_ch).GetRoute(
                links_pb2.GetRouteRequest(data_center_id=dc), timeout=30
            )
        ).route
        assert route.region_id == info.home_region_id
        assert route.available == (route.first_satellite_index >= 0)

        run = f"e2e/{int(time.time() * 1000)}"
        payloads = {f"{run}/{i}": os.urandom(size) for i, size in enumerate((1024, 300_000, 2_000_000))}
        for key, payload in payloads.items():
            put = await _put(mdc, key, payload)
            assert put.object.sha256_hex == hashlib.sha256(payload).hexdigest()

        # The link comes and goes: give the store-and-forward time, then everything must be there.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            listing = await mdc.ListObjects(mdc_pb2.ListObjectsRequest(prefix=run), timeout=10)
            if len(listing.objects) == len(payloads) and all(
                o.state == mdc_pb2.SYNC_STATE_SYNCED for o in listing.objects
            ):
                break
            await asyncio.sleep(1.0)
        states = {o.key: mdc_pb2.SyncState.Name(o.state) for o in listing.objects}
        assert set(states.values()) == {"SYNC_STATE_SYNCED"}, states

        container = os.environ.get("SKYHAUL_E2E_CONTAINER", "mdc-sync")
        for key, payload in payloads.items():
            blob = await region.GetBlobProperties(
                region_pb2.GetBlobPropertiesRequest(container=container, blob=key), timeout=10
            )
            assert (blob.size, blob.sha256_hex) == (len(payload), hashlib.sha256(payload).hexdigest())

        stats = await terminal_pb2_grpc.TerminalServiceStub(terminal_ch).GetStats(
            terminal_pb2.GetStatsRequest(), timeout=10
        )
        assert stats.uplink.bytes_out >= sum(map(len, payloads.values()))
        assert stats.downlink.bytes_out > 0
