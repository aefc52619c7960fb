"""Helpers every CLI command shares: finding services, printing tables or JSON, one-line errors."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
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


def use_running_token() -> None:
    """Point SKYHAUL_TOKEN_FILE at the running `skyhaul up`'s token unless a token is given already:
    every channel the CLI opens (runtime/clients.py) then sends it."""
    from skyhaul.runtime import auth

    if os.environ.get(auth.TOKEN_ENV) or os.environ.get(auth.TOKEN_FILE_ENV):
        return
    running = running_endpoints()
    token_file = Path(running.get("run_dir", "")) / auth.TOKEN_FILE_NAME if running else None
    if token_file is not None and token_file.is_file():
        os.environ[auth.TOKEN_FILE_ENV] = str(token_file)


DC_HELP = "data center id (--dc is the same flag): the process hosting it is found in the running system"


def resolve_address(
    service: str, explicit: str | None = None, label: str | None = None, data_center: str | None = None
) -> str:
    """--flag, then SKYHAUL_<SERVICE>_ADDR, then the running `skyhaul up`, then the default port.

    With `data_center` (--dc) and a running `skyhaul up`: the process hosting that data center
    (run.json's `data_centers` map; an unknown id is one line on stderr and exit code 2)."""
    use_running_token()
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


# --- JSON for programs: one encoder for every --json output -------------------------------------
# Times are RFC 3339 in UTC with a `Z`; "no value" is null (never "-", -1 or NaN); NaN and infinity
# are never written (json.dumps would write the non-JSON token NaN).


def rfc3339(value: Any) -> str | None:
    """A protobuf Timestamp, Unix seconds or datetime as '2020-10-30T00:10:31Z' (with milliseconds
    when not whole); None for an unset Timestamp or a non-finite number."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    else:
        if hasattr(value, "seconds") and hasattr(value, "nanos"):
            if not value.seconds and not value.nanos:
                return None
            value = value.seconds + value.nanos * 1e-9
        if not math.isfinite(value):
            return None
        stamp = dt.datetime.fromtimestamp(round(float(value), 3), dt.UTC)
    stamp = stamp.astimezone(dt.UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if stamp.microsecond:
        text += f".{stamp.microsecond // 1000:03d}"
    return text + "Z"


def proto_dict(message: Any) -> dict[str, Any]:
    """A protobuf message as JSON-ready values: field names as in the .proto, every field present,
    Timestamps as RFC 3339, non-finite doubles as None and a satellite index of -1 ("none") as None."""
    from google.protobuf.descriptor import FieldDescriptor
    from google.protobuf.json_format import MessageToDict

    int64_types = (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    )

    def clean(msg: Any, data: dict[str, Any]) -> dict[str, Any]:
        for fd in msg.DESCRIPTOR.fields:
            if fd.name not in data:
                continue
            value = getattr(msg, fd.name)
            repeated = fd.is_repeated
            if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
                if repeated:
                    data[fd.name] = [v if math.isfinite(v) else None for v in value]
                else:
                    data[fd.name] = value if math.isfinite(value) else None
            elif fd.name.endswith("satellite_index"):
                data[fd.name] = (
                    [v if v >= 0 else None for v in value] if repeated else (value if value >= 0 else None)
                )
            elif (
                fd.type in int64_types
            ):  # proto3 JSON writes 64-bit integers as strings; programs want numbers
                data[fd.name] = list(value) if repeated else value
            elif fd.type == FieldDescriptor.TYPE_MESSAGE and not fd.message_type.full_name.startswith(
                "google.protobuf."
            ):
                if fd.message_type.GetOptions().map_entry:
                    continue
                if repeated:
                    data[fd.name] = [clean(m, d) for m, d in zip(value, data[fd.name], strict=True)]
                else:
                    data[fd.name] = clean(value, data[fd.name])
        return data

    return clean(
        message,
        MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True),
    )


def json_ready(value: Any) -> Any:
    """Plain JSON values: non-finite floats -> None, datetimes and Timestamps -> RFC 3339, protobuf
    messages -> proto_dict, numpy scalars and arrays -> Python numbers and lists, paths -> text."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if hasattr(value, "DESCRIPTOR") and hasattr(value, "ListFields"):
        if value.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
            return rfc3339(value)
        return json_ready(proto_dict(value))
    if hasattr(value, "tolist"):  # numpy
        return json_ready(value.tolist())
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"no JSON form for {type(value).__name__}")


def to_json(value: Any, indent: int | None = 2) -> str:
    return json.dumps(json_ready(value), indent=indent, allow_nan=False, ensure_ascii=False)


def print_json(value: Any, *, line: bool = False) -> None:
    """--json output: indented, or one object a line (`line=True`, for streams)."""
    sys.stdout.write(to_json(value, None if line else 2) + "\n")
    if line:
        sys.stdout.flush()


JSON_HELP = "print JSON for programs (times RFC 3339 UTC, null for no value)"


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
        "rise": rfc3339(p.rise_time),
        "culmination": rfc3339(p.culmination_time),
        "set": rfc3339(p.set_time),
        "max_elevation_deg": round(p.max_elevation_deg, 2),
        "duration_s": round(p.duration_s, 1),
        "rise_azimuth_deg": round(p.rise_azimuth_deg, 1),
        "set_azimuth_deg": round(p.set_azimuth_deg, 1),
        "rise_clipped": p.rise_clipped,
        "set_clipped": p.set_clipped,
    }


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    """A table through rich: headers aligned with their columns whatever the widths. A column named
    with a leading '>' is right-aligned (numbers). Piped output is never wrapped or cut."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name in columns:
        right = name.startswith(">")
        table.add_column(name.lstrip(">"), justify="right" if right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 10_000, highlight=False).print(table)


def print_passes(passes: list, limit: int) -> None:
    """The pass / contact-window table of `skyhaul passes` and `skyhaul contacts`."""
    print_table(
        ["satellite", "rise (UTC)", ">az", ">max el", "set (UTC)", ">az", ">dur s", "note"],
        [
            [
                p.satellite_name,
                utc(p.rise_time),
                f"{p.rise_azimuth_deg:.0f}",
                f"{p.max_elevation_deg:.1f}",
                utc(p.set_time),
                f"{p.set_azimuth_deg:.0f}",
                f"{p.duration_s:.0f}",
                "cut by the window" if p.rise_clipped or p.set_clipped else "",
            ]
            for p in passes[:limit]
        ],
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
