"""`skyhaul terminal stats|set|clear`: the data plane's counters and chaos on demand."""

from __future__ import annotations

import argparse
import asyncio
import time

from skyhaul.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    JSON_HELP,
    add_formatter,
    fail,
    print_json,
    resolve_address,
    rfc3339,
    rpc_error_message,
    running_endpoints,
    utc,
)
from skyhaul.runtime.clients import DEFAULT_DEADLINE_S, channel


def register(sub: argparse._SubParsersAction) -> None:
    terminal = sub.add_parser("terminal", help="the data center's dish: stats, overrides (chaos on demand)")
    add_formatter(
        terminal,
        """examples:
  skyhaul terminal stats
  skyhaul terminal --mdc mdc-kodiak stats --json
  skyhaul terminal set --outage --for 30          force a 30 s outage
  skyhaul terminal set --extra-delay-ms 100 --for 60
  skyhaul terminal set --rate-cap-mbps 5          until cleared
  skyhaul terminal set --loss-percent 2 --for 60  packet mode: 2 % random loss each way
  skyhaul terminal clear
""",
    )
    terminal.add_argument(
        "--mdc",
        "--dc",
        dest="mdc",
        metavar="ID",
        help="data center id whose terminal to use (default: the first)",
    )
    terminal.add_argument("--terminal", help="terminal control HOST:PORT (default: the running system's)")
    actions = terminal.add_subparsers(dest="action", metavar="ACTION", required=True)
    stats = actions.add_parser("stats", help="per-direction bytes, queue, delay, rate, outage time")
    stats.add_argument("--json", action="store_true", help=JSON_HELP)
    stats.set_defaults(func=lambda a: asyncio.run(cmd_stats(a)))
    over = actions.add_parser("set", help="pin extra delay, cap the rate, force an outage or set the loss")
    over.add_argument("--extra-delay-ms", type=float)
    over.add_argument("--rate-cap-mbps", type=float, help="0 removes the cap")
    over.add_argument("--outage", action="store_true", help="force an outage (needs --for)")
    over.add_argument(
        "--loss-percent",
        type=float,
        help="packet mode: random loss in %% each way instead of the configured one (negative removes it)",
    )
    over.add_argument(
        "--for", dest="duration", type=float, default=0.0, help="seconds these last (0 = until cleared)"
    )
    over.add_argument("--json", action="store_true", help=JSON_HELP)
    over.set_defaults(func=lambda a: asyncio.run(cmd_set(a)))
    clear = actions.add_parser("clear", help="remove every override")
    clear.add_argument("--json", action="store_true", help=JSON_HELP)
    clear.set_defaults(func=lambda a: asyncio.run(cmd_clear(a)))


def _overrides_dict(o) -> dict:
    """The overrides in force; a value's `*_until` is when it lapses (wall clock, UTC), null = until cleared."""
    value = {
        "extra_delay_ms": o.extra_delay_ms or None,
        "extra_delay_until": rfc3339(o.extra_delay_until) if o.extra_delay_ms else None,
        "rate_cap_mbps": o.rate_cap_mbps or None,
        "rate_cap_until": rfc3339(o.rate_cap_until) if o.rate_cap_mbps else None,
        "forced_outage": o.forced_outage,
        "forced_outage_until": rfc3339(o.forced_outage_until) if o.forced_outage else None,
        "loss_percent": o.loss_percent if o.HasField("loss_percent") else None,
        "loss_until": rfc3339(o.loss_until) if o.HasField("loss_percent") else None,
    }
    return value


def describe_overrides(o) -> str:
    """What is in force, in words: 'extra delay 100 ms for 60 s more (wall); no rate cap; no forced outage'."""
    now = time.time()

    def lasting(until) -> str:
        if not until.seconds and not until.nanos:
            return "until cleared"
        left = until.seconds + until.nanos * 1e-9 - now
        return f"for {max(left, 0):.0f} s more (wall clock, until {utc(until, '%H:%M:%S')} UTC)"

    parts = [
        f"extra delay {o.extra_delay_ms:g} ms {lasting(o.extra_delay_until)}"
        if o.extra_delay_ms
        else "no extra delay",
        f"rate cap {o.rate_cap_mbps:g} Mbit/s {lasting(o.rate_cap_until)}"
        if o.rate_cap_mbps
        else "no rate cap",
        f"forced outage {lasting(o.forced_outage_until)}" if o.forced_outage else "no forced outage",
    ]
    if o.HasField("loss_percent"):  # packet data plane only
        parts.append(f"loss {o.loss_percent:g} % {lasting(o.loss_until)}")
    return "; ".join(parts)


async def _call(args, method: str, request):
    import grpc

    from skyhaul.v1 import terminal_pb2_grpc

    running = None if args.terminal or not args.mdc else running_endpoints()
    if running and running.get("data_centers"):  # where the run says this data center lives
        address = resolve_address("terminal", args.terminal, data_center=args.mdc)
    else:
        address = resolve_address("terminal", args.terminal, f"terminal-{args.mdc}" if args.mdc else None)
    request.data_center_id = args.mdc or ""
    async with channel(address) as ch:
        try:
            return await getattr(terminal_pb2_grpc.TerminalServiceStub(ch), method)(
                request, timeout=DEFAULT_DEADLINE_S
            ), None
        except grpc.RpcError as exc:
            return None, rpc_error_message(exc, address)


async def cmd_stats(args: argparse.Namespace) -> int:
    from skyhaul.v1 import terminal_pb2

    s, error = await _call(args, "GetStats", terminal_pb2.GetStatsRequest())
    if error:
        return fail(*error)

    def direction(d) -> dict:
        return {
            "bytes_in": d.bytes_in,
            "bytes_out": d.bytes_out,
            "queued_bytes": d.queued_bytes,
            "delay_ms": round(d.current_delay_ms, 3),
            "rate_mbps": round(d.current_rate_mbps, 3),
        }

    def packets(d) -> dict:
        return {
            "packets": d.packets,
            "bytes_delivered": d.bytes_delivered,
            "drops": {
                "queue": d.drops_queue,
                "random": d.drops_random,
                "handover": d.drops_handover,
                "outage": d.drops_outage,
            },
            "queue_delay_p50_ms": round(d.queue_delay_p50_ms, 3),
            "queue_delay_p99_ms": round(d.queue_delay_p99_ms, 3),
            "loss_percent": d.loss_percent,
        }

    packet_mode = s.data_plane == "packet"

    value = {
        "data_center": s.data_center_id,
        "link_up": s.link_up,
        "satellite": s.satellite_index if s.link_up and s.satellite_index >= 0 else None,
        "uplink": direction(s.uplink),
        "downlink": direction(s.downlink),
        "outage_wall_seconds": round(s.outage_seconds_total, 3),
        "connections": {"active": s.active_connections, "total": s.total_connections},
        "forwards": [f"127.0.0.1:{f.listen_port} -> {f.target}" for f in s.forwards],
        "overrides": _overrides_dict(s.overrides),
        "route_stale": s.route_stale,
        "last_event_sequence": s.last_event_sequence,
        "data_plane": s.data_plane or "relay",
    }
    if packet_mode:
        for name in ("uplink", "downlink"):
            value[name].update(packets(getattr(s, name)))
        del value["connections"], value["forwards"]
    if args.json:
        print_json(value)
        return EXIT_OK
    print(
        f"{s.data_center_id}: link {'UP' if s.link_up else 'DOWN'}"
        + (f", satellite {s.satellite_index}" if s.link_up and s.satellite_index >= 0 else "")
        + f", outage time {s.outage_seconds_total:.1f} s wall clock since the terminal started"
        + (" (route stale)" if s.route_stale else "")
    )
    for name in ("uplink", "downlink"):
        d = value[name]
        rate = f"{d['rate_mbps']:.1f} Mbit/s" if d["rate_mbps"] else "uncapped"
        print(
            f"  {name:8s} in {d['bytes_in']:>12,d} B  out {d['bytes_out']:>12,d} B  queued {d['queued_bytes']:>10,d} B  delay {d['delay_ms']:7.2f} ms  {rate}"
        )
    if packet_mode:
        for name in ("uplink", "downlink"):
            d = value[name]
            drops = ", ".join(f"{cause} {count}" for cause, count in d["drops"].items())
            print(
                f"  {name:8s} {d['packets']:,d} packets, {d['bytes_delivered']:,d} B delivered; drops: {drops}; "
                f"queue delay p50 {d['queue_delay_p50_ms']:.2f} ms p99 {d['queue_delay_p99_ms']:.2f} ms; loss {d['loss_percent']:g} %"
            )
    else:
        print(
            f"  connections: {s.active_connections} active, {s.total_connections} total; forwards: {', '.join(value['forwards']) or 'none'}"
        )
    if any(v for v in value["overrides"].values()):
        print(f"  overrides: {describe_overrides(s.overrides)}")
    return EXIT_OK


async def cmd_set(args: argparse.Namespace) -> int:
    from google.protobuf import duration_pb2

    from skyhaul.v1 import terminal_pb2

    if (
        args.extra_delay_ms is None
        and args.rate_cap_mbps is None
        and not args.outage
        and args.loss_percent is None
    ):
        return fail(
            "nothing to set: give --extra-delay-ms, --rate-cap-mbps, --outage or --loss-percent", EXIT_USAGE
        )
    request = terminal_pb2.SetOverridesRequest(
        duration=duration_pb2.Duration(seconds=int(args.duration), nanos=int((args.duration % 1) * 1e9))
    )
    if args.extra_delay_ms is not None:
        request.extra_delay_ms = args.extra_delay_ms
    if args.rate_cap_mbps is not None:
        request.rate_cap_mbps = args.rate_cap_mbps
    if args.outage:
        request.forced_outage = True
    if args.loss_percent is not None:
        request.loss_percent = args.loss_percent
    reply, error = await _call(args, "SetOverrides", request)
    if error:
        return fail(*error)
    if args.json:
        print_json(_overrides_dict(reply.overrides))
    else:
        print(f"set; now in force: {describe_overrides(reply.overrides)}")
    return EXIT_OK


async def cmd_clear(args: argparse.Namespace) -> int:
    from skyhaul.v1 import terminal_pb2

    reply, error = await _call(args, "ClearOverrides", terminal_pb2.ClearOverridesRequest())
    if error:
        return fail(*error)
    if args.json:
        print_json(_overrides_dict(reply.overrides))
    else:
        print(f"overrides cleared; now in force: {describe_overrides(reply.overrides)}")
    return EXIT_OK
