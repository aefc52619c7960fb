"""OpenTelemetry, configured only by the standard OTEL_* variables.

Export is on when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set and
OTEL_SDK_DISABLED is not true; otherwise nothing is exported and nothing is set up. The exporter
reads its own OTEL_EXPORTER_OTLP_* settings. Health checks are left out of traces.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters

log = logging.getLogger(__name__)

_NOT_HEALTH = filters.negate(filters.health_check())


def export_enabled(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


@dataclass
class Telemetry:
    enabled: bool
    provider: object | None = None

    def shutdown(self) -> None:
        """Flush spans still in the batch queue; called once on exit."""
        if self.provider is not None:
            self.provider.shutdown()  # type: ignore[attr-defined]


def setup_telemetry(service: str, env: Mapping[str, str] = os.environ) -> Telemetry:
    if not export_enabled(env):
        return Telemetry(enabled=False)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our default name.
    resource = Resource.create({"service.name": f"skyhaul-{service}", "service.namespace": "skyhaul"})
    resource = resource.merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing on", extra={"otlp_endpoint": env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")})
    return Telemetry(enabled=True, provider=provider)


def server_interceptors() -> list:
    return [aio_server_interceptor(filter_=_NOT_HEALTH)]


def client_interceptors() -> list:
    return aio_client_interceptors(filter_=_NOT_HEALTH)
