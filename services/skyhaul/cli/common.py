"""Helpers every CLI command shares: finding services, printing tables or JSON, one-line errors."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any

from skyhaul.runtime.settings import ADDR_VARS, SERVICE_PORTS

EXIT_OK = 0
EXIT_FAILURE = 1  # the thing asked about is unhealthy / not found
EXIT_USAGE = 2  # bad arguments or input
EXIT_UNAVAILABLE = 3  # a service could not be reached
EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}  ok
  {EXIT_FAILURE}  unhealthy, not found or failed
  {EXIT_USAGE}  bad arguments or input (nothing was changed)
  {EXIT_UNAVAILABLE}  a service could not be reached (is `skyhaul up` running?)
"""
JSON_HELP = "print JSON for programs instead of text"


def add_formatter(parser: argparse.ArgumentParser, epilog: str) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = epilog


def running_endpoints() -> dict[str, Any] | None:
    """The state of the run to talk to: `--run DIR` (SKYHAUL_RUN), else the one live `skyhaul up`
    (found in the index under SKYHAUL_STATE_DIR), else None. Several live runs and none chosen:
    one line on stderr and exit code 2, never a guess."""
    from skyhaul.runtime.launcher import RunSelectionError, find_run

    try:
        return find_run()
    except RunSelectionError as exc:
        raise SystemExit(fail(str(exc), EXIT_USAGE)) from None


DC_HELP = "data center id: which hosted data center (needed when a process hosts several, e.g. a shard)"


def resolve_address(
    service: str, explicit: str | None = None, label: str | None = None, data_center: str | None = None
) -> str:
    """--flag, then SKYHAUL_<SERVICE>_ADDR, then the running `skyhaul up`, then the default port.

    With `data_center` (--dc) and a running `skyhaul up`: the process hosting that data center
    (run.json's `data_centers` map; an unknown id is one line on stderr and exit code 2)."""
    if explicit:
        return explicit
    env = os.environ.get(ADDR_VARS[service])
    if env:
        return env
    running = running_endpoints()
    if running:
        services = running.get("services", {})
        if data_center:
            placed = running.get("data_centers", {})
            if data_center not in placed:
                shown = ", ".join(list(placed)[:5]) + (", ..." if len(placed) > 5 else "")
                raise SystemExit(
                    fail(
                        f"--dc {data_center!r} is not a data center of the running scenario ({shown})",
                        EXIT_USAGE,
                    )
                )
            hosting = placed[data_center].get(service)
            if hosting in services:
                return services[hosting]
        if label and label in services:
            return services[label]
        for name, addr in services.items():
            if name == service or name.startswith(service + "-"):
                return addr
    return f"127.0.0.1:{SERVICE_PORTS[service]}"


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def fail(message: str, code: int = EXIT_FAILURE) -> int:
    """One line on stderr that says what went wrong and what to do."""
    print(f"skyhaul: {message}", file=sys.stderr)
    return code


def rpc_error_message(exc: Exception, address: str) -> tuple[str, int]:
    import grpc

    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return (f"cannot reach {address} ({code.name}); is `skyhaul up` running?", EXIT_UNAVAILABLE)
        if code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION,
        ):
            return (exc.details() or code.name, EXIT_USAGE)
        return (f"{code.name}: {exc.details()}", EXIT_FAILURE)
    return (str(exc), EXIT_FAILURE)


def utc(ts_or_unix, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A protobuf Timestamp or Unix seconds as UTC text."""
    t = ts_or_unix if isinstance(ts_or_unix, int | float) else ts_or_unix.seconds + ts_or_unix.nanos * 1e-9
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt)


def pass_dict(p) -> dict[str, Any]:
    """A skyhaul.v1.Pass (an orbit pass or a links contact window) for --json output."""
    return {
        "satellite_index": p.satellite_index,
        "satellite": p.satellite_name,
        "rise": utc(p.rise_time),
        "culmination": utc(p.culmination_time),
        "set": utc(p.set_time),
        "max_elevation_deg": round(p.max_elevation_deg, 2),
        "duration_s": round(p.duration_s, 1),
        "rise_azimuth_deg": round(p.rise_azimuth_deg, 1),
        "set_azimuth_deg": round(p.set_azimuth_deg, 1),
        "rise_clipped": p.rise_clipped,
        "set_clipped": p.set_clipped,
    }


def print_passes(passes: list, limit: int) -> None:
    """The pass / contact-window table of `skyhaul passes` and `skyhaul contacts`."""
    print(
        f"{'satellite':22s} {'rise (UTC)':19s} {'az':>5s}  {'max el':>6s}  {'set (UTC)':19s} {'az':>5s}  {'dur s':>6s}"
    )
    for p in passes[:limit]:
        clipped = " (cut by the window)" if p.rise_clipped or p.set_clipped else ""
        print(
            f"{p.satellite_name:22s} {utc(p.rise_time)} {p.rise_azimuth_deg:5.0f}  {p.max_elevation_deg:6.1f}  "
            f"{utc(p.set_time)} {p.set_azimuth_deg:5.0f}  {p.duration_s:6.0f}{clipped}"
        )
    if len(passes) > limit:
        print(f"... {len(passes) - limit} more (--limit, --json)")


class progress_bar:  # noqa: N801 - used as a context manager, reads like a phrase
    """A rich progress bar on stderr when it is a terminal, a no-op otherwise: `advance(n)`."""

    def __init__(self, total: int, label: str) -> None:
        self.total = total
        self.label = label
        self._progress = None

    def __enter__(self):
        if not sys.stderr.isatty():
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn(self.label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        task = self._progress.add_task(self.label, total=self.total)
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
