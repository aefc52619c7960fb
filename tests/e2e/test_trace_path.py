"""One trace spans mdc -> terminal -> region: an object's sync asks the dish what it sees, then
stages and commits through the relay. The local twin of `make e2e-kind`'s Jaeger check.

Also what a person following the traces needs: the sync trace links to the PutObject that queued
the object; polls (GetStats, GetStatus, GetLinkState) and received link events leave no spans of
their own; skyhaul.link_up says up whenever the sync span names the satellite it crossed."""

import asyncio
import os
import time
from collections import defaultdict
from pathlib import Path

import pytest
from support.otlp import OtlpReceiver

from skyhaul.runtime import clients
from skyhaul.runtime.launcher import Launcher
from skyhaul.v1 import links_pb2, links_pb2_grpc, mdc_pb2, mdc_pb2_grpc, terminal_pb2, terminal_pb2_grpc

SEED = Path(__file__).resolve().parents[2] / "scenarios" / "azure-mdc-2020.yaml"
PUT_OBJECT = "/skyhaul.v1.ModularDataCenterService/PutObject"
POLLS = {
    "/skyhaul.v1.TerminalService/GetStats",
    "/skyhaul.v1.ModularDataCenterService/GetStatus",
    "/skyhaul.v1.LinkService/GetLinkState",
}


async def _run(scenario: Path, tmp_path: Path, monkeypatch, receiver: OtlpReceiver, *, poll: bool) -> None:
    """Start the scenario, put trace/probe, (poll like the CLI does), wait until it is synced, stop."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("SKYHAUL_TRACE_VERBOSE", raising=False)
    launcher = Launcher(str(scenario), tmp_path / "run")
    endpoints = await asyncio.to_thread(launcher.start)
    try:
        terminal = next(a for label, a in endpoints.services.items() if label.startswith("terminal"))
        async with (
            clients.channel(endpoints.services["mdc-kodiak"]) as channel,  # PutObject needs the token
            clients.channel(terminal) as terminal_channel,
            clients.channel(endpoints.first("links")) as links_channel,
        ):
            mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)

            async def parts():
                yield mdc_pb2.PutObjectRequest(
                    header=mdc_pb2.ObjectHeader(key="trace/probe", priority=mdc_pb2.PRIORITY_CLASS_TELEMETRY)
                )
                yield mdc_pb2.PutObjectRequest(data=os.urandom(100_000))

            await mdc.PutObject(parts(), timeout=30)
            if poll:  # what `skyhaul status` and the demo's live view do every second
                for _ in range(3):
                    await terminal_pb2_grpc.TerminalServiceStub(terminal_channel).GetStats(
                        terminal_pb2.GetStatsRequest(), timeout=10
                    )
                    await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=10)
                    await links_pb2_grpc.LinkServiceStub(links_channel).GetLinkState(
                        links_pb2.GetLinkStateRequest(), timeout=10
                    )
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                listing = await mdc.ListObjects(mdc_pb2.ListObjectsRequest(prefix="trace/"), timeout=10)
                if listing.objects and listing.objects[0].state == mdc_pb2.SYNC_STATE_SYNCED:
                    break
                await asyncio.sleep(0.5)
            assert listing.objects[0].state == mdc_pb2.SYNC_STATE_SYNCED
    finally:
        await asyncio.to_thread(launcher.stop)  # SIGTERM flushes every exporter


# Wall-clock fidelity check on a shared 2-vCPU machine: a scheduler hiccup can push one run past
# the tolerance, so it gets two more tries; a real regression fails all three.
@pytest.mark.flaky(reruns=2)
@pytest.mark.slow
async def test_a_sync_trace_spans_mdc_terminal_and_region(tmp_path, monkeypatch):
    with OtlpReceiver() as receiver:
        await _run(SEED, tmp_path, monkeypatch, receiver, poll=True)
        spans = receiver.spans()
    services_by_trace = defaultdict(set)
    names_by_trace = defaultdict(set)
    for span in spans:
        services_by_trace[span.trace_id].add(span.service)
        names_by_trace[span.trace_id].add(span.name)
    full = [
        t for t, s in services_by_trace.items() if {"skyhaul-mdc", "skyhaul-terminal", "skyhaul-region"} <= s
    ]
    assert full, dict(services_by_trace)
    names = names_by_trace[full[0]]
    assert "sync object" in names
    assert {
        "/skyhaul.v1.TerminalService/GetStats",
        "/skyhaul.v1.CloudRegionService/CommitBlockList",
    } <= names

    # The sync of trace/probe links to the PutObject that queued it (every attempt, if several).
    (put,) = [
        s
        for s in spans
        if s.name == PUT_OBJECT
        and s.service == "skyhaul-mdc"
        and s.attributes.get("skyhaul.key") == "trace/probe"
    ]
    syncs = [s for s in spans if s.name == "sync object" and s.attributes.get("skyhaul.key") == "trace/probe"]
    assert syncs
    for sync in syncs:
        assert not sync.parent_span_id  # its own trace: the sync may come hours after the put
        assert [(link.trace_id, link.span_id) for link in sync.links] == [(put.trace_id, put.span_id)]

    # Polls start no trace of their own; inside a sync they are recorded (with a parent).
    assert not [s for s in spans if s.name in POLLS and not s.parent_span_id]
    assert [s for s in spans if s.name == "/skyhaul.v1.TerminalService/GetStats" and s.parent_span_id]
    # No span per received link event.
    assert not [s for s in spans if s.name.startswith("receive ") or s.name == "terminal.apply_route"]

    # skyhaul.link_up is the data center's view as the object starts (the worker starts none while
    # it is down): a sync span that names the satellite it crossed says the link was up.
    crossed = [s for s in spans if s.name == "sync object" and s.attributes.get("skyhaul.satellite", -1) >= 0]
    assert crossed and all(s.attributes["skyhaul.link_up"] is True for s in crossed)
