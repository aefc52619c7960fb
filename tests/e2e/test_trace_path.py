"""One trace spans mdc -> terminal -> region: an object's sync asks the dish what it sees, then
stages and commits through the relay. The local twin of `make e2e-kind`'s Jaeger check."""

import asyncio
import os
import time
from collections import defaultdict
from pathlib import Path

import pytest
from support.otlp import OtlpReceiver

from skyhaul.runtime import clients
from skyhaul.runtime.launcher import Launcher
from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc

SEED = Path(__file__).resolve().parents[2] / "scenarios" / "azure-mdc-2020.yaml"


# Wall-clock fidelity check on a shared 2-vCPU machine: a scheduler hiccup can push one run past
# the tolerance, so it gets two more tries; a real regression fails all three.
@pytest.mark.flaky(reruns=2)
@pytest.mark.slow
async def test_a_sync_trace_spans_mdc_terminal_and_region(tmp_path, monkeypatch):
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        launcher = Launcher(str(SEED), tmp_path / "run")
        endpoints = await asyncio.to_thread(launcher.start)
        try:
            async with clients.channel(endpoints.services["mdc-kodiak"]) as channel:
                mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)

                async def parts():
                    yield mdc_pb2.PutObjectRequest(
                        header=mdc_pb2.ObjectHeader(
                            key="trace/probe", priority=mdc_pb2.PRIORITY_CLASS_TELEMETRY
                        )
                    )
                    yield mdc_pb2.PutObjectRequest(data=os.urandom(100_000))

                await mdc.PutObject(parts(), timeout=30)
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline:
                    listing = await mdc.ListObjects(mdc_pb2.ListObjectsRequest(prefix="trace/"), timeout=10)
                    if listing.objects and listing.objects[0].state == mdc_pb2.SYNC_STATE_SYNCED:
                        break
                    await asyncio.sleep(0.5)
                assert listing.objects[0].state == mdc_pb2.SYNC_STATE_SYNCED
        finally:
            await asyncio.to_thread(launcher.stop)  # SIGTERM flushes every exporter
        services_by_trace = defaultdict(set)
        names_by_trace = defaultdict(set)
        for span in receiver.spans():
            services_by_trace[span.trace_id].add(span.service)
            names_by_trace[span.trace_id].add(span.name)
        full = [
            t
            for t, s in services_by_trace.items()
            if {"skyhaul-mdc", "skyhaul-terminal", "skyhaul-region"} <= s
        ]
        assert full, dict(services_by_trace)
        names = names_by_trace[full[0]]
        assert "sync object" in names
        assert {
            "/skyhaul.v1.TerminalService/GetStats",
            "/skyhaul.v1.CloudRegionService/CommitBlockList",
        } <= names
