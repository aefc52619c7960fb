"""What the services trace by default: polls (GetStatus, GetStats, GetLinkState) start no trace of
their own unless SKYHAUL_TRACE_VERBOSE=1; OTEL_TRACES_SAMPLER still decides everything else.

A real `skyhaul serve mdc` exports to a real OTLP/gRPC receiver; SIGTERM flushes its spans."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.otlp import OtlpReceiver
from support.storage import ServiceProcess, write_scenario

from skyhaul.runtime import telemetry
from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc

GET_STATUS = "/skyhaul.v1.ModularDataCenterService/GetStatus"
LIST_OBJECTS = "/skyhaul.v1.ModularDataCenterService/ListObjects"


async def _mdc_polled(tmp_path: Path, redis_url: str, env: dict[str, str]) -> list:
    """An mdc under these settings answers three GetStatus polls and one ListObjects; its spans."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    scenario = write_scenario(tmp_path / "scenario.yaml")
    with OtlpReceiver() as receiver:
        mdc = ServiceProcess(
            "mdc",
            {
                "SKYHAUL_SCENARIO": str(scenario),
                "SKYHAUL_DATA_DIR": str(tmp_path / "mdc"),
                "SKYHAUL_REGION_ADDR": "127.0.0.1:9",  # nothing to sync: no region needed
                "SKYHAUL_REDIS_URL": redis_url,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "SKYHAUL_TRACE_VERBOSE": "0",
                "OTEL_TRACES_SAMPLER": "",
                **env,
            },
            tmp_path / "mdc.log",
        )
        try:
            await mdc.wait_serving()
            async with grpc.aio.insecure_channel(mdc.address) as channel:
                stub = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
                for _ in range(3):
                    await stub.GetStatus(mdc_pb2.GetStatusRequest(), timeout=10)
                await stub.ListObjects(mdc_pb2.ListObjectsRequest(), timeout=10)
        finally:
            mdc.stop()
        assert mdc.process.returncode == 0, mdc.log_tail()
        return [s for s in receiver.spans() if s.service == telemetry.service_name("mdc")]


@pytest.mark.timeout(120)
async def test_a_poll_starts_no_trace_unless_verbose(tmp_path, redis_url):
    spans = await _mdc_polled(tmp_path / "quiet", redis_url, {})
    names = [s.name for s in spans]
    assert GET_STATUS not in names
    assert LIST_OBJECTS in names  # tracing is on: other calls are still traced

    spans = await _mdc_polled(tmp_path / "verbose", redis_url, {"SKYHAUL_TRACE_VERBOSE": "1"})
    polls = [s for s in spans if s.name == GET_STATUS]
    assert len(polls) == 3 and all(not s.parent_span_id for s in polls)


@pytest.mark.timeout(120)
async def test_otel_traces_sampler_still_decides_the_other_spans(tmp_path, redis_url):
    spans = await _mdc_polled(tmp_path, redis_url, {"OTEL_TRACES_SAMPLER": "always_off"})
    assert spans == []


def test_a_poll_inside_a_trace_follows_its_parent(monkeypatch):
    """QuietPolls drops only the root span of a poll: the sync's GetStats (a child) is recorded."""
    monkeypatch.delenv("SKYHAUL_TRACE_VERBOSE", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=telemetry.sampler())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    poll = "/skyhaul.v1.TerminalService/GetStats"
    with tracer.start_as_current_span(poll, kind=trace.SpanKind.SERVER) as root:
        assert not root.is_recording()
    with tracer.start_as_current_span("sync object"), tracer.start_as_current_span(poll):
        pass
    provider.shutdown()
    recorded = exporter.get_finished_spans()
    assert [s.name for s in recorded] == [poll, "sync object"]
    assert recorded[0].parent.span_id == recorded[1].context.span_id

    verbose = TracerProvider(sampler=telemetry.sampler({"SKYHAUL_TRACE_VERBOSE": "1"}))
    with verbose.get_tracer("test").start_as_current_span(poll, kind=trace.SpanKind.SERVER) as root:
        assert root.is_recording()
    verbose.shutdown()
