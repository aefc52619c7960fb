"""OpenTelemetry, configured only by the standard OTEL_* variables, by the SDK's own configurator.

Exporters, protocol, sampler and resource come from the SDK's environment configuration (the
configurator opentelemetry-distro and `opentelemetry-instrument` run), so every variable means
here what it means in the OpenTelemetry docs:

- OTEL_TRACES_EXPORTER: otlp, console, none (or several, comma-separated);
- OTEL_EXPORTER_OTLP_PROTOCOL / OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: grpc or http/protobuf;
- OTEL_EXPORTER_OTLP_ENDPOINT and the rest of OTEL_EXPORTER_OTLP_*: read by the exporter;
- OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_SDK_DISABLED.

One default differs, so that a laptop run without a collector stays quiet: with
OTEL_TRACES_EXPORTER unset, traces go to OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and nowhere otherwise.

service.name is `skyhaul-<service>` (service_name()) in local runs and in the Helm chart alike;
OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES override it. Health checks are never traced.

SKYHAUL_TRACE_VERBOSE=1 (trace_verbose()) asks for spans of routine, high-rate work too (a span
per GetStats poll, per received link event); off by default, and code that would emit such spans
asks trace_verbose() first.

Sampling: the root spans of the polls in POLL_METHODS (what the CLI and the demo call every
second) are dropped unless SKYHAUL_TRACE_VERBOSE is on; the same call inside a trace (the sync's
GetStats, which has a parent) follows its parent like any span. Every other decision is the
sampler OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG name (the SDK's default, parentbased_always_on,
when unset): the poll rule comes first, then the standard variable.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

log = logging.getLogger(__name__)

_NOT_HEALTH = filters.negate(filters.health_check())
TRACE_VERBOSE_ENV = "SKYHAUL_TRACE_VERBOSE"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

POLL_METHODS = frozenset(
    {
        "/skyhaul.v1.TerminalService/GetStats",
        "/skyhaul.v1.ModularDataCenterService/GetStatus",
        "/skyhaul.v1.LinkService/GetLinkState",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    }
)
"""The RPCs clients poll (span names of their gRPC server spans): no root trace of their own
unless SKYHAUL_TRACE_VERBOSE is on. The one place to list them."""


def service_name(service: str) -> str:
    """The service.name a Skyhaul service reports (the chart sets the same; tests check both)."""
    return f"skyhaul-{service}"


def trace_verbose(env: Mapping[str, str] = os.environ) -> bool:
    """True when SKYHAUL_TRACE_VERBOSE asks for spans of every poll and every received event."""
    value = env.get(TRACE_VERBOSE_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{TRACE_VERBOSE_ENV}={env[TRACE_VERBOSE_ENV]!r}: give 1/true/yes/on or 0/false/no/off")


def traces_exporter(env: Mapping[str, str] = os.environ) -> str:
    """OTEL_TRACES_EXPORTER as the services apply it: the variable when set, else otlp if an OTLP
    endpoint is set, else none. OTEL_SDK_DISABLED=true means none."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    configured = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if configured:
        return configured
    has_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return "otlp" if has_endpoint else "none"


def export_enabled(env: Mapping[str, str] = os.environ) -> bool:
    return traces_exporter(env).lower() != "none"


class QuietPolls(Sampler):
    """Drops the root spans of `POLL_METHODS`; every other span is what `inner` decides."""

    def __init__(self, inner: Sampler, polls: frozenset[str] = POLL_METHODS) -> None:
        self.inner = inner
        self.polls = polls

    def should_sample(
        self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None
    ) -> SamplingResult:
        if name in self.polls and not trace.get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.DROP)
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"QuietPolls{{{self.inner.get_description()}}}"


def sampler(env: Mapping[str, str] = os.environ) -> Sampler:
    """The services' sampler: the one OTEL_TRACES_SAMPLER names (read by the SDK, from os.environ),
    wrapped in QuietPolls unless SKYHAUL_TRACE_VERBOSE is on."""
    standard = TracerProvider(shutdown_on_exit=False).sampler  # the SDK's own reading of the variables
    return standard if trace_verbose(env) else QuietPolls(standard)


@dataclass
class Telemetry:
    enabled: bool
    provider: object | None = None

    def shutdown(self) -> None:
        """Flush spans still in the batch queue; called once on exit."""
        if self.provider is not None:
            self.provider.shutdown()  # type: ignore[attr-defined]


def setup_telemetry(service: str) -> Telemetry:
    """Configure the SDK from the environment (this process's os.environ, which the SDK reads).

    Bad values (an unknown exporter or protocol, a SKYHAUL_TRACE_VERBOSE that is no boolean) end
    the process with exit code 2 and a one-line message naming the variable, before anything is
    served.
    """
    try:
        trace_verbose()
    except ValueError as exc:
        print(f"{service_name(service)}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    exporter = traces_exporter(os.environ)
    if exporter.lower() == "none":
        return Telemetry(enabled=False)
    from opentelemetry.distro import OpenTelemetryConfigurator
    from opentelemetry.sdk.resources import OTELResourceDetector

    # The SDK's environment defaults, made explicit for the configurator (as opentelemetry-distro
    # does); metrics and logs keep the SDK's own defaults (none unless their variables are set).
    os.environ["OTEL_TRACES_EXPORTER"] = exporter
    # Resource attributes given to the configurator win over the environment's: pass ours under
    # what OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES say, so those still override.
    attributes = {
        "service.name": service_name(service),
        "service.namespace": "skyhaul",
        **OTELResourceDetector().detect().attributes,
    }
    try:
        OpenTelemetryConfigurator().configure(resource_attributes=attributes, sampler=sampler())
    except RuntimeError as exc:  # unknown exporter or protocol: the SDK's own message
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", ""
        )
        print(
            f"{service_name(service)}: bad OpenTelemetry settings (OTEL_TRACES_EXPORTER={exporter!r}, "
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}): {exc}",
            file=sys.stderr,
        )
        raise SystemExit(2) from exc
    provider = trace.get_tracer_provider()
    log.info(
        "tracing on",
        extra={
            "otel_traces_exporter": exporter,
            "otlp_endpoint": os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        },
    )
    return Telemetry(enabled=True, provider=provider)


def server_interceptors() -> list:
    return [aio_server_interceptor(filter_=_NOT_HEALTH)]


def client_interceptors() -> list:
    return aio_client_interceptors(filter_=_NOT_HEALTH)
