"""`skyhaul k8s traces`: until Jaeger's query API holds a trace spanning the given services.

Jaeger has no "wait for a trace" of its own, so this polls GET /api/traces (plain HTTP, no
kubectl): point --jaeger-url at a forward (`skyhaul k8s forward jaeger 16686:16686`) or a NodePort.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TextIO

from skyhaul.cli.k8s.api import EXIT_NOT_READY, EXIT_OK
from skyhaul.runtime.telemetry import service_name


def trace_services(trace: dict[str, Any]) -> set[str]:
    """Service names of the spans of one trace in Jaeger's /api/traces format."""
    processes = trace.get("processes") or {}
    names = set()
    for span in trace.get("spans") or []:
        process = processes.get(span.get("processID")) or span.get("process") or {}
        if process.get("serviceName"):
            names.add(process["serviceName"])
    return names


def find_spanning_trace(payload: dict[str, Any], required: set[str]) -> tuple[str | None, int, set[str]]:
    """(id of a trace with spans from every required service or None, traces seen, services seen)."""
    seen: set[str] = set()
    traces = payload.get("data") or []
    for trace in traces:
        services = trace_services(trace)
        seen |= services
        if required <= services:
            return trace.get("traceID"), len(traces), seen
    return None, len(traces), seen


def fetch_jaeger_traces(base_url: str, service: str, lookback: str, limit: int = 200) -> dict[str, Any]:
    query = urllib.parse.urlencode({"service": service, "lookback": lookback, "limit": limit})
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/api/traces?{query}", timeout=10) as response:
        return json.load(response)


def _reported_name(name: str) -> str:
    return name if name.startswith("skyhaul-") else service_name(name)


def run_traces(
    args: argparse.Namespace,
    fetch: Callable[[str, str, str], dict[str, Any]] = fetch_jaeger_traces,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    out = out or sys.stdout
    # Users name services as the CLI does (mdc); Jaeger knows them by their service.name.
    service = _reported_name(args.service)
    required = {_reported_name(name.strip()) for name in args.require.split(",") if name.strip()} | {service}
    start = clock()
    last = ""
    while True:
        try:
            trace_id, count, seen = find_spanning_trace(
                fetch(args.jaeger_url, service, args.lookback), required
            )
            if trace_id:
                print(f"trace {trace_id} spans {', '.join(sorted(required))}", file=out)
                print(f"  {args.jaeger_url.rstrip('/')}/trace/{trace_id}", file=out)
                return EXIT_OK
            status = f"{count} traces of {service}; services seen: {', '.join(sorted(seen)) or 'none'}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            status = f"Jaeger at {args.jaeger_url} not answering: {exc}"
        if status != last:
            print(f"waiting: {status}", file=out, flush=True)
            last = status
        if clock() - start >= args.timeout:
            print(
                f"timed out after {args.timeout:.0f} s: no trace of {service} spans "
                f"{', '.join(sorted(required))} ({status})",
                file=out,
            )
            return EXIT_NOT_READY
        sleep(args.interval)
