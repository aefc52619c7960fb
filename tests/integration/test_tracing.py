"""Tracing across processes, configured only by OTEL_* variables as the OpenTelemetry SDK reads them.

orbit and links run as real `skyhaul serve` subprocesses: links fetching elements from orbit is one
trace in an OTLP/gRPC receiver; OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf sends to an OTLP/HTTP
receiver instead; OTEL_TRACES_EXPORTER=console prints spans, =none exports nothing.
"""

import gzip
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from support.otlp import OtlpReceiver

from skyhaul.runtime import telemetry
from skyhaul.runtime.redis_server import free_port
from skyhaul.v1 import orbit_pb2, orbit_pb2_grpc

SPAN_KIND_SERVER, SPAN_KIND_CLIENT, SPAN_KIND_PRODUCER = 2, 3, 4
GET_ELEMENTS = "/skyhaul.v1.OrbitService/GetElements"


def _serve(service: str, env: dict[str, str], log_path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process below
    process = subprocess.Popen(
        [sys.executable, "-m", "skyhaul.cli.main", "serve", service],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def _status(address: str, service: str = "") -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.RpcError:
            return None
        return reply.status


def _wait_serving(address: str, process: subprocess.Popen, log_path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{address} exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        if _status(address) == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.1)
    raise AssertionError(f"{address} never became SERVING:\n{log_path.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.log.close()


@pytest.mark.timeout(120)
def test_links_loading_elements_from_orbit_is_one_trace_across_both_services(tmp_path, redis_url):
    with OtlpReceiver() as receiver:
        orbit_addr = f"127.0.0.1:{free_port()}"
        links_addr = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYHAUL_", "OTEL_"))}
        env.update(
            SKYHAUL_REDIS_URL=redis_url,
            SKYHAUL_ORBIT_ADDR=orbit_addr,
            SKYHAUL_CLOCK_START=repr(time.time()),
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="200",
        )
        # links first: it must wait (NOT_SERVING) until orbit answers, then load the elements.
        links = _serve("links", {**env, "SKYHAUL_LISTEN": links_addr}, tmp_path / "links.log")
        orbit = None
        try:
            deadline = time.monotonic() + 30
            while _status(links_addr) is None and time.monotonic() < deadline:
                assert links.poll() is None, (tmp_path / "links.log").read_text()
                time.sleep(0.1)
            assert _status(links_addr) == health_pb2.HealthCheckResponse.NOT_SERVING
            orbit = _serve("orbit", {**env, "SKYHAUL_LISTEN": orbit_addr}, tmp_path / "orbit.log")
            _wait_serving(orbit_addr, orbit, tmp_path / "orbit.log")
            _wait_serving(links_addr, links, tmp_path / "links.log")
            time.sleep(0.5)  # a few slots published, a few health checks more
        finally:
            _stop(links)
            if orbit is not None:
                _stop(orbit)
        assert links.returncode == 0 and orbit.returncode == 0
        spans = receiver.spans()

    by_id = {s.span_id: s for s in spans}
    server = [
        s
        for s in spans
        if s.service == telemetry.service_name("orbit")
        and s.name == GET_ELEMENTS
        and s.kind == SPAN_KIND_SERVER
    ]
    assert server, sorted({(s.service, s.name) for s in spans})
    traced = []
    for srv in server:
        client = by_id.get(srv.parent_span_id)
        if client is None:
            continue
        load = by_id.get(client.parent_span_id)
        traced.append((srv, client, load))
    assert traced, "orbit's GetElements span has no parent span from links"
    srv, client, load = traced[0]
    assert (
        client.service == "skyhaul-links" and client.kind == SPAN_KIND_CLIENT and client.name == GET_ELEMENTS
    )
    assert load is not None and load.service == "skyhaul-links" and load.name == "links.load_elements"
    assert srv.trace_id == client.trace_id == load.trace_id

    # The live engine traces its slots; the bus's publish spans are their children.
    slots = {s.span_id for s in spans if s.service == "skyhaul-links" and s.name == "links.slot"}
    assert slots
    publishes = [s for s in spans if s.kind == SPAN_KIND_PRODUCER and s.parent_span_id in slots]
    assert publishes and all(s.name.startswith("publish skyhaul.v1.link-events") for s in publishes)

    # Health checks (polled above and by the runner) leave no spans.
    assert not [s for s in spans if "grpc.health" in s.name.lower() or "Health" in s.name]


LIST_CONSTELLATIONS = "/skyhaul.v1.OrbitService/ListConstellations"


class OtlpHttpReceiver:
    """OTLP/HTTP with protobuf bodies on POST /v1/traces: records (service.name, span name)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                receiver.paths.append(self.path)
                for resource_spans in request.resource_spans:
                    service = next(
                        (
                            a.value.string_value
                            for a in resource_spans.resource.attributes
                            if a.key == "service.name"
                        ),
                        "",
                    )
                    for scope in resource_spans.scope_spans:
                        receiver.spans.extend((service, span.name) for span in scope.spans)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


def _orbit_called_once(tmp_path, redis_url, otel: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """orbit under these OTEL_* settings answers one ListConstellations, then drains on SIGTERM
    (which flushes its spans). Returns the finished process and its output."""
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYHAUL_", "OTEL_"))}
    env.update(
        SKYHAUL_REDIS_URL=redis_url,
        SKYHAUL_LISTEN=address,
        SKYHAUL_CLOCK_START=repr(time.time()),
        OTEL_BSP_SCHEDULE_DELAY="200",
        **otel,
    )
    log_path = tmp_path / "orbit.log"
    orbit = _serve("orbit", env, log_path)
    try:
        _wait_serving(address, orbit, log_path)
        with grpc.insecure_channel(address) as channel:
            reply = orbit_pb2_grpc.OrbitServiceStub(channel).ListConstellations(
                orbit_pb2.ListConstellationsRequest(), timeout=10
            )
        assert reply.constellations
    finally:
        _stop(orbit)
    return orbit, log_path.read_text()


@pytest.mark.timeout(120)
def test_otlp_protocol_http_protobuf_exports_to_an_http_receiver(tmp_path, redis_url):
    with OtlpHttpReceiver() as http_receiver, OtlpReceiver() as grpc_receiver:
        orbit, output = _orbit_called_once(
            tmp_path,
            redis_url,
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
        )
        assert orbit.returncode == 0, output
        assert (telemetry.service_name("orbit"), LIST_CONSTELLATIONS) in http_receiver.spans, output
        assert set(http_receiver.paths) == {"/v1/traces"}
        assert grpc_receiver.spans() == []


@pytest.mark.timeout(120)
def test_console_exporter_prints_spans(tmp_path, redis_url):
    orbit, output = _orbit_called_once(tmp_path, redis_url, {"OTEL_TRACES_EXPORTER": "console"})
    assert orbit.returncode == 0, output
    # ConsoleSpanExporter prints one JSON document per span
    decoder, spans, index = json.JSONDecoder(), [], 0
    while (start := output.find("{\n", index)) != -1:
        try:
            document, index = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        if isinstance(document, dict) and "context" in document:
            spans.append(document)
    assert any(
        s["name"] == LIST_CONSTELLATIONS
        and s["resource"]["attributes"]["service.name"] == telemetry.service_name("orbit")
        for s in spans
    ), output[-3000:]


@pytest.mark.timeout(120)
def test_exporter_none_exports_nothing_even_with_an_endpoint(tmp_path, redis_url):
    with OtlpReceiver() as receiver:
        orbit, output = _orbit_called_once(
            tmp_path,
            redis_url,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_EXPORTER": "none"},
        )
        assert orbit.returncode == 0, output
        assert receiver.spans() == []


@pytest.mark.parametrize(
    ("otel", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "jaeger-thrift"}, "OTEL_TRACES_EXPORTER"),
        ({"SKYHAUL_TRACE_VERBOSE": "maybe"}, "SKYHAUL_TRACE_VERBOSE"),
    ],
)
def test_bad_telemetry_settings_exit_2_naming_the_variable(tmp_path, otel, named):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYHAUL_", "OTEL_"))}
    env.update(
        SKYHAUL_LISTEN=f"127.0.0.1:{free_port()}",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        **otel,
    )
    result = subprocess.run(
        [sys.executable, "-m", "skyhaul.cli.main", "serve", "orbit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr


def test_trace_verbose_flag():
    assert telemetry.trace_verbose({}) is False
    assert telemetry.trace_verbose({"SKYHAUL_TRACE_VERBOSE": "0"}) is False
    assert telemetry.trace_verbose({"SKYHAUL_TRACE_VERBOSE": "1"}) is True
    assert telemetry.trace_verbose({"SKYHAUL_TRACE_VERBOSE": " True "}) is True
    with pytest.raises(ValueError, match="SKYHAUL_TRACE_VERBOSE"):
        telemetry.trace_verbose({"SKYHAUL_TRACE_VERBOSE": "maybe"})


def test_traces_exporter_follows_the_sdk_variables():
    assert telemetry.traces_exporter({}) == "none"  # no collector configured: stay quiet
    assert telemetry.traces_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == "otlp"
    assert telemetry.traces_exporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318"}) == "otlp"
    assert telemetry.traces_exporter({"OTEL_TRACES_EXPORTER": "console"}) == "console"
    assert (
        telemetry.traces_exporter({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"})
        == "none"
    )
    assert (
        telemetry.traces_exporter({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}) == "none"
    )
