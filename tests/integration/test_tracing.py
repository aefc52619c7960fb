"""Tracing across processes: links fetching elements from orbit is one trace in an OTLP receiver.

orbit and links run as real `skyhaul serve` subprocesses exporting OTLP/gRPC to a receiver in
this test, configured only by OTEL_* variables.
"""

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.otlp import OtlpReceiver

from skyhaul.runtime.redis_server import free_port

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
        if s.service == "skyhaul-orbit" and s.name == GET_ELEMENTS and s.kind == SPAN_KIND_SERVER
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
