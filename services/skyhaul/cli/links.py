"""`skyhaul route`, `skyhaul rtt`, `skyhaul events`, `skyhaul contacts`: what the links service knows."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import sys
import time

from skyhaul.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    JSON_HELP,
    add_formatter,
    fail,
    pass_dict,
    print_json,
    print_passes,
    progress_bar,
    proto_dict,
    resolve_address,
    rfc3339,
    rpc_error_message,
    utc,
)
from skyhaul.runtime.clients import DEFAULT_DEADLINE_S, channel

MAX_RTT_HOURS = 7 * 24


def register(sub: argparse._SubParsersAction) -> None:
    route = sub.add_parser("route", help="a data center's route to a region: hops, delay, capacity, slot")
    add_formatter(
        route,
        """examples:
  skyhaul route mdc-kodiak                           to its home region, now (emulated)
  skyhaul route mdc-kodiak  westus2 --at 2020-10-30T01:00:00Z
  skyhaul route mdc-kodiak  --json
""",
    )
    route.add_argument("mdc", metavar="MDC", help="data center id")
    route.add_argument("region", metavar="REGION", nargs="?", default="", help="region id (default: home)")
    route.add_argument("--at", help="emulated UTC time, ISO 8601 (default: now on the emulation clock)")
    route.add_argument("--links", help="links service HOST:PORT")
    route.add_argument("--json", action="store_true", help=JSON_HELP)
    route.set_defaults(func=lambda a: asyncio.run(cmd_route(a)))

    rtt = sub.add_parser("rtt", help="predicted RTT, availability and outages of a route over hours")
    add_formatter(
        rtt,
        """Streams PredictRoutes from the links service (a 24 h window at 1 s is a normal request).

examples:
  skyhaul rtt mdc-kodiak  --hours 2
  skyhaul rtt mdc-kodiak  westus2 --hours 24 --step 1 --plot rtt.png
  skyhaul rtt mdc-kodiak  --hours 1 --start 2020-10-30T06:00:00Z --json
""",
    )
    rtt.add_argument("mdc", metavar="MDC", nargs="?", default="", help="data center id (or --all)")
    rtt.add_argument("region", metavar="REGION", nargs="?", default="", help="region id (default: home)")
    rtt.add_argument("--hours", type=float, required=True, help="window length")
    rtt.add_argument("--step", type=float, default=1.0, help="seconds between samples (default 1)")
    rtt.add_argument("--start", help="emulated UTC start, ISO 8601 (default: now on the emulation clock)")
    rtt.add_argument("--plot", metavar="FILE.png", help="write a PNG of RTT over time with outages shaded")
    rtt.add_argument("--links", help="links service HOST:PORT")
    rtt.add_argument("--json", action="store_true", help=JSON_HELP)
    rtt.add_argument(
        "--all",
        action="store_true",
        help="every data center of the fleet (to REGION, else each to its home): one line each",
    )
    rtt.set_defaults(func=lambda a: asyncio.run(cmd_rtt(a)))

    events = sub.add_parser("events", help="link-state events: slots, handovers, routes, link up/down")
    add_formatter(
        events,
        """Without --follow: the latest state (or, with --after, the events since that sequence), then exit.

examples:
  skyhaul events                                    the latest snapshot
  skyhaul events --follow                           stream events as they happen (Ctrl-C stops)
  skyhaul events --follow --mdc mdc-kodiak  --json  one JSON object a line, one data center
  skyhaul events --after 1200                       what happened since sequence 1200
""",
    )
    events.add_argument("--follow", action="store_true", help="keep streaming")
    events.add_argument("--mdc", action="append", default=[], metavar="ID", help="only this data center")
    events.add_argument("--region", action="append", default=[], metavar="ID", help="only this region")
    events.add_argument("--after", type=int, default=0, metavar="SEQ", help="replay events after SEQ")
    events.add_argument("--links", help="links service HOST:PORT")
    events.add_argument("--json", action="store_true", help=JSON_HELP)
    events.set_defaults(func=lambda a: asyncio.run(cmd_events(a)))

    contacts = sub.add_parser("contacts", help="contact windows of a terminal or gateway with the satellites")
    add_formatter(
        contacts,
        """examples:
  skyhaul contacts mdc-kodiak                      next hour, the terminal's own mask
  skyhaul contacts gw-anchorage --hours 6 --min-elevation 40 --min-duration 60
""",
    )
    contacts.add_argument(
        "ground", metavar="GROUND_ID", help="a data center id (its terminal) or a gateway id"
    )
    contacts.add_argument("--hours", type=float, default=1.0, help="window length from now (default 1)")
    contacts.add_argument(
        "--min-elevation", type=float, default=0.0, help="degrees (default: the ground's mask)"
    )
    contacts.add_argument("--min-duration", type=float, default=0.0, help="seconds")
    contacts.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    contacts.add_argument("--links", help="links service HOST:PORT")
    contacts.add_argument("--json", action="store_true", help=JSON_HELP)
    contacts.set_defaults(func=lambda a: asyncio.run(cmd_contacts(a)))


# --- formatting ---------------------------------------------------------------------------------


def _unix(ts) -> float:
    return ts.seconds + ts.nanos * 1e-9


def _seconds(d) -> float:
    return d.seconds + d.nanos * 1e-9


def parse_time(text: str) -> float:
    """ISO 8601 (Z or offset; naive = UTC) to Unix seconds; ValueError names the bad text."""
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time like 2020-10-30T01:00:00Z") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def _ms(value: float, digits: int = 2) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def _sat(index: int) -> str:
    return "none" if index < 0 else f"sat-{index}"


SEGMENT_NAMES = {1: "uplink", 2: "isl", 3: "downlink", 4: "fibre"}


def route_dict(route) -> dict:
    samples = list(route.delay_samples_ms)
    return {
        "data_center": route.data_center_id,
        "region": route.region_id,
        "at": rfc3339(route.at),
        "available": route.available,
        "one_way_delay_ms": route.one_way_delay_ms if route.available else None,
        "rtt_ms": 2 * route.one_way_delay_ms if route.available else None,
        "capacity_up_mbps": route.capacity_up_mbps,
        "capacity_down_mbps": route.capacity_down_mbps,
        "satellite": route.first_satellite_index if route.first_satellite_index >= 0 else None,
        "gateway": route.gateway_id,
        "slot": {
            "index": route.slot.index,
            "start": rfc3339(route.slot.start),
            "end": rfc3339(route.slot.end),
        },
        "handover_stall_ms": (route.handover_stall.seconds * 1e3 + route.handover_stall.nanos / 1e6),
        "hops": [
            {
                "segment": SEGMENT_NAMES.get(h.segment, "?"),
                "from": h.from_id,
                "to": h.to_id,
                "distance_km": h.distance_km,
                "delay_ms": h.delay_ms,
            }
            for h in route.hops
        ],
        "delay_samples_ms": [s if math.isfinite(s) else None for s in samples],
        "samples_start": rfc3339(route.samples_start) if route.HasField("samples_start") else None,
        "samples_step_s": route.samples_step.seconds + route.samples_step.nanos * 1e-9,
        # The link model's round trip and loss per sample (floor + what a real terminal adds).
        "rtt_samples_ms": [s if math.isfinite(s) else None for s in route.rtt_samples_ms],
        "loss_probability": list(route.loss_probability),
        "link_model": ("replay" if route.HasField("replay") else route.terminal_model.mode or "propagation"),
    }


def event_line(event) -> str:
    """One human line per event: sequence, emulated time, kind, summary."""
    body = event.WhichOneof("body")
    head = f"{event.sequence:>8d}  {utc(event.emulated_time)}  "
    if body == "slot_started":
        s = event.slot_started
        summary = (
            f"slot {s.slot.index} [{utc(s.slot.start, '%H:%M:%S')}, {utc(s.slot.end, '%H:%M:%S')})"
            f"  ISLs {s.isl_count}"
        )
    elif body == "handover":
        h = event.handover
        stall = h.stall.seconds * 1e3 + h.stall.nanos / 1e6
        summary = f"{h.ground_id}: {_sat(h.from_satellite)} -> {_sat(h.to_satellite)}"
        if stall > 0:
            summary += f" (stall {stall:g} ms)"
    elif body == "route_changed":
        r = event.route_changed.route
        if r.available:
            samples = [s for s in r.delay_samples_ms if math.isfinite(s)]
            summary = (
                f"{r.data_center_id} -> {r.region_id}: RTT {_ms(2 * r.one_way_delay_ms)} ms via "
                f"{_sat(r.first_satellite_index)} / {r.gateway_id}"
            )
            if len(samples) < len(r.delay_samples_ms):
                summary += f" (breaks after {len(samples)} of {len(r.delay_samples_ms)} samples)"
        else:
            summary = f"{r.data_center_id} -> {r.region_id}: no route"
        if event.route_changed.path_changed:
            summary += "  [new path]"
    elif body == "link_status":
        s = event.link_status
        summary = f"{s.data_center_id} -> {s.region_id}: {'UP' if s.up else 'DOWN'} ({s.reason})"
    elif body == "snapshot":
        snap = event.snapshot
        down = [r.data_center_id for r in snap.routes if not r.available]
        summary = f"latest state: slot {snap.slot.index}, {len(snap.routes)} route(s)"
        summary += f", down: {', '.join(down)}" if down else ", all up"
        for r in snap.routes:
            rtt = f"RTT {_ms(2 * r.one_way_delay_ms)} ms" if r.available else "no route"
            summary += f"\n{'':>10}{r.data_center_id} -> {r.region_id}: {rtt}"
    else:
        summary = ""
    return head + f"{body or 'unknown':<14s} {summary}"


# --- commands -----------------------------------------------------------------------------------


async def _now(stub) -> float:
    """Now on the service's emulation clock."""
    from skyhaul.v1 import links_pb2

    state = await stub.GetLinkState(links_pb2.GetLinkStateRequest(), timeout=DEFAULT_DEADLINE_S)
    return _unix(state.at)


async def cmd_route(args: argparse.Namespace) -> int:
    import grpc

    from skyhaul.runtime.clock import to_timestamp
    from skyhaul.v1 import links_pb2, links_pb2_grpc

    request = links_pb2.GetRouteRequest(data_center_id=args.mdc, region_id=args.region)
    if args.at:
        try:
            request.at.CopyFrom(to_timestamp(parse_time(args.at)))
        except ValueError as exc:
            return fail(f"--at: {exc}", EXIT_USAGE)
    address = resolve_address("links", args.links)
    async with channel(address) as ch:
        try:
            reply = await links_pb2_grpc.LinkServiceStub(ch).GetRoute(request, timeout=DEFAULT_DEADLINE_S)
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    r = reply.route
    if args.json:
        print_json(route_dict(r))
        return EXIT_OK
    print(
        f"{r.data_center_id} -> {r.region_id} at {utc(r.at)} UTC (emulated), slot {r.slot.index} "
        f"[{utc(r.slot.start, '%H:%M:%S')}, {utc(r.slot.end, '%H:%M:%S')})"
    )
    if r.hops:
        print(f"  {'segment':9s} {'from':20s} {'to':20s} {'km':>10s} {'ms':>9s}")
        for h in r.hops:
            print(
                f"  {SEGMENT_NAMES.get(h.segment, '?'):9s} {h.from_id:20s} {h.to_id:20s} "
                f"{h.distance_km:10.1f} {h.delay_ms:9.3f}"
            )
    if r.available:
        print(
            f"one-way {r.one_way_delay_ms:.2f} ms, RTT {2 * r.one_way_delay_ms:.2f} ms; capacity up "
            f"{r.capacity_up_mbps:g} / down {r.capacity_down_mbps:g} Mbit/s; {_sat(r.first_satellite_index)} "
            f"via {r.gateway_id}"
        )
    else:
        print("no route now: an outage (no usable satellite or no path to a gateway)")
    samples = [s for s in r.delay_samples_ms if math.isfinite(s)]
    if samples:
        step = r.samples_step.seconds + r.samples_step.nanos * 1e-9
        print(
            f"one-way delay across the slot: {min(samples):.2f}-{max(samples):.2f} ms "
            f"({len(r.delay_samples_ms)} samples, {step:g} s apart"
            + (
                f", {len(r.delay_samples_ms) - len(samples)} without a route)"
                if len(samples) < len(r.delay_samples_ms)
                else ")"
            )
        )
    stall = r.handover_stall.seconds * 1e3 + r.handover_stall.nanos / 1e6
    if stall > 0:
        print(f"handover at this slot: traffic held {stall:g} ms from the slot start")
    return EXIT_OK


async def cmd_rtt(args: argparse.Namespace) -> int:
    import grpc
    import numpy as np

    from skyhaul.runtime.clock import to_timestamp
    from skyhaul.v1 import common_pb2, links_pb2, links_pb2_grpc

    if not (args.hours > 0 and args.hours <= MAX_RTT_HOURS):
        return fail(f"--hours must be in (0, {MAX_RTT_HOURS}], got {args.hours:g}", EXIT_USAGE)
    if not args.step > 0:
        return fail(f"--step must be > 0 s, got {args.step:g}", EXIT_USAGE)
    if args.all:
        if args.mdc and not args.region:  # `rtt --all westus2`: the one positional is the region
            args.mdc, args.region = "", args.mdc
        if args.mdc:
            return fail("give MDC or --all, not both", EXIT_USAGE)
        if args.plot:
            return fail("--plot draws one route: give MDC instead of --all", EXIT_USAGE)
        return await _fleet_rtt(args)
    if not args.mdc:
        return fail("give a data center id (MDC), or --all for the whole fleet", EXIT_USAGE)
    address = resolve_address("links", args.links)
    async with channel(address) as ch:
        stub = links_pb2_grpc.LinkServiceStub(ch)
        try:
            if args.start:
                try:
                    start = parse_time(args.start)
                except ValueError as exc:
                    return fail(f"--start: {exc}", EXIT_USAGE)
            else:
                start = await _now(stub)
            ground = await stub.GetGroundSegment(
                links_pb2.GetGroundSegmentRequest(), timeout=DEFAULT_DEADLINE_S
            )
            homes = {t.data_center_id: t.home_region_id for t in ground.terminals}
            region = args.region or homes.get(args.mdc, "home region")
            interval = _seconds(ground.scheduler.slot_interval) or 15.0
            offset = _seconds(ground.scheduler.slot_offset)
            end = start + args.hours * 3600
            request = links_pb2.PredictRoutesRequest(
                data_center_id=args.mdc,
                region_id=args.region,
                window=common_pb2.TimeWindow(start=to_timestamp(start), end=to_timestamp(end)),
            )
            request.step.FromNanoseconds(int(round(args.step * 1e9)))
            total = math.ceil((end - start) / args.step - 1e-9)
            times: list = []
            rtts: list = []
            summary = None
            began = time.perf_counter()
            with progress_bar(total, "predicting") as advance:
                async for message in stub.PredictRoutes(request, timeout=max(600.0, args.hours * 60)):
                    if message.HasField("chunk"):
                        c = message.chunk
                        n = len(c.rtt_ms)
                        if args.plot:
                            step = c.step.seconds + c.step.nanos * 1e-9
                            times.append(_unix(c.start) + step * np.arange(n))
                            rtts.append(np.array(c.rtt_ms))
                        advance(n)
                    else:
                        summary = message.summary
            wall = time.perf_counter() - began
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    if summary is None:
        return fail("the prediction stream ended without a summary")
    outages = [(_unix(w.start), _unix(w.end)) for w in summary.outages]
    result = {
        "data_center": args.mdc,
        "region": region,
        "start": rfc3339(start),
        "hours": args.hours,
        "step_s": args.step,
        "samples": summary.samples,
        "availability": summary.availability,
        "rtt_ms": {
            "min": summary.rtt_min_ms,
            "p50": summary.rtt_p50_ms,
            "p95": summary.rtt_p95_ms,
            "max": summary.rtt_max_ms,
        },
        "link_model": summary.link_model or "propagation",
        "floor_rtt_p50_ms": summary.floor_rtt_p50_ms,
        "expected_loss": summary.expected_loss,
        "handovers": summary.handovers,
        "outages": len(outages),
        "outage_s": sum(b - a for a, b in outages),
        "longest_outage_s": summary.longest_outage_s,
        "compute_seconds": summary.compute_seconds,
        "wall_seconds": wall,
    }
    if args.plot:
        from skyhaul.cli.plots import plot_rtt

        title = (
            f"{args.mdc} -> {region}: RTT over {args.hours:g} h "
            f"(availability {100 * summary.availability:.1f} %, {len(outages)} outages)"
        )
        try:
            plot_rtt(np.concatenate(times), np.concatenate(rtts), outages, interval, offset, args.plot, title)
        except OSError as exc:
            return fail(f"--plot: cannot write {args.plot}: {exc.strerror or exc}", EXIT_USAGE)
        result["plot"] = args.plot
    if args.json:
        print_json({**result, "outage_windows": [[rfc3339(a), rfc3339(b)] for a, b in outages]})
        return EXIT_OK
    print(
        f"{args.mdc} -> {region}: {args.hours:g} h from {utc(start)} UTC at {args.step:g} s "
        f"({summary.samples} samples, computed in {summary.compute_seconds:.1f} s wall clock)"
    )
    print(f"  availability  {100 * summary.availability:.2f} %")
    print(
        f"  RTT           min {_ms(summary.rtt_min_ms)}  p50 {_ms(summary.rtt_p50_ms)}  "
        f"p95 {_ms(summary.rtt_p95_ms)}  max {_ms(summary.rtt_max_ms)} ms"
    )
    print(
        f"  link model    {result['link_model']} (propagation floor p50 {_ms(summary.floor_rtt_p50_ms)} ms, "
        f"expected loss {100 * summary.expected_loss:.2f} %)"
    )
    print(f"  handovers     {summary.handovers}")
    print(
        f"  outages       {len(outages)} (total {result['outage_s']:.0f} s, longest {summary.longest_outage_s:.0f} s; emulated time)"
    )
    for a, b in outages[:10]:
        print(f"                {utc(a)} - {utc(b, '%H:%M:%S')}  ({b - a:.0f} s)")
    if len(outages) > 10:
        print(f"                ... {len(outages) - 10} more (--json)")
    if args.plot:
        print(f"  plot          {args.plot}")
    return EXIT_OK


async def _fleet_rtt(args: argparse.Namespace) -> int:
    """`skyhaul rtt --all`: one fleet prediction, a progress bar, one line per data center."""
    import grpc

    from skyhaul.runtime.clock import to_timestamp
    from skyhaul.v1 import common_pb2, links_pb2, links_pb2_grpc

    address = resolve_address("links", args.links)
    async with channel(address) as ch:
        stub = links_pb2_grpc.LinkServiceStub(ch)
        try:
            if args.start:
                try:
                    start = parse_time(args.start)
                except ValueError as exc:
                    return fail(f"--start: {exc}", EXIT_USAGE)
            else:
                start = await _now(stub)
            end = start + args.hours * 3600
            request = links_pb2.PredictRoutesRequest(
                all_data_centers=True,
                region_id=args.region,
                window=common_pb2.TimeWindow(start=to_timestamp(start), end=to_timestamp(end)),
            )
            request.step.FromNanoseconds(int(round(args.step * 1e9)))
            total = math.ceil((end - start) / args.step - 1e-9)
            rows = []
            done = 0
            began = time.perf_counter()
            with progress_bar(total, "predicting the fleet") as advance:
                async for message in stub.PredictRoutes(request, timeout=max(1800.0, args.hours * 600)):
                    if message.HasField("progress"):
                        advance(message.progress.samples_done - done)
                        done = message.progress.samples_done
                    elif message.HasField("data_center_summary"):
                        rows.append(message.data_center_summary)
            wall = time.perf_counter() - began
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    if not rows:
        return fail("the fleet prediction stream ended without any data center's summary")
    results = [
        {
            "data_center": row.data_center_id,
            "region": row.region_id,
            "samples": row.summary.samples,
            "availability": row.summary.availability,
            "rtt_ms": {"p50": row.summary.rtt_p50_ms, "p95": row.summary.rtt_p95_ms},
            "handovers": row.summary.handovers,
            "outages": row.summary.outage_count,
            "longest_outage_s": row.summary.longest_outage_s,
        }
        for row in rows
    ]
    compute_s = rows[0].summary.compute_seconds
    if args.json:
        print_json(
            {
                "start": rfc3339(start),
                "hours": args.hours,
                "step_s": args.step,
                "compute_seconds": compute_s,
                "wall_seconds": wall,
                "data_centers": results,
            }
        )
        return EXIT_OK
    print(
        f"{len(rows)} data centers: {args.hours:g} h from {utc(start)} UTC at {args.step:g} s "
        f"(computed in {compute_s:.1f} s)"
    )
    width = max(len(r["data_center"]) for r in results)
    print(
        f"{'DATA CENTER':{width}s}  {'REGION':14s} {'AVAIL %':>8s} {'OUTAGES':>7s} {'LONGEST s':>9s} "
        f"{'HANDOVERS':>9s} {'P50 ms':>7s} {'P95 ms':>7s}"
    )
    for r in results:
        print(
            f"{r['data_center']:{width}s}  {r['region']:14s} {100 * r['availability']:8.2f} {r['outages']:7d} "
            f"{r['longest_outage_s']:9.0f} {r['handovers']:9d} {_ms(r['rtt_ms']['p50']):>7s} "
            f"{_ms(r['rtt_ms']['p95']):>7s}"
        )
    worst = min(results, key=lambda r: r["availability"])
    print(f"lowest availability: {worst['data_center']} {100 * worst['availability']:.2f} %")
    return EXIT_OK


async def cmd_events(args: argparse.Namespace) -> int:
    import grpc

    from skyhaul.v1 import links_pb2, links_pb2_grpc

    if args.after < 0:
        return fail(f"--after must be >= 0, got {args.after}", EXIT_USAGE)
    request = links_pb2.WatchEventsRequest(
        data_center_ids=args.mdc, region_ids=args.region, after_sequence=args.after, include_snapshot=True
    )
    address = resolve_address("links", args.links)
    latest: int | None = None  # without --follow: stop once the events up to the latest state are out
    async with channel(address) as ch:
        stream = links_pb2_grpc.LinkServiceStub(ch).WatchEvents(request)
        try:
            iterator = stream.__aiter__()
            while True:
                try:
                    # Without --follow an idle stream means there is nothing more to show.
                    event = await (
                        iterator.__anext__() if args.follow else asyncio.wait_for(iterator.__anext__(), 3.0)
                    )
                except (StopAsyncIteration, TimeoutError):
                    break
                is_snapshot = event.WhichOneof("body") == "snapshot"
                if latest is None and is_snapshot:
                    latest = event.sequence
                    if args.after and not args.follow:
                        if args.after >= latest:
                            break
                        continue  # replaying: the snapshot only marks where to stop
                if args.json:
                    print_json(proto_dict(event), line=True)
                else:
                    print(event_line(event), flush=True)
                if not args.follow and (latest is None or event.sequence >= latest):
                    break
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return EXIT_OK
            return fail(*rpc_error_message(exc, address))
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and keep Python's exit flush quiet too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        finally:
            stream.cancel()
    return EXIT_OK


async def cmd_contacts(args: argparse.Namespace) -> int:
    import grpc

    from skyhaul.runtime.clock import to_timestamp
    from skyhaul.v1 import common_pb2, links_pb2, links_pb2_grpc

    if not args.hours > 0:
        return fail(f"--hours must be > 0, got {args.hours:g}", EXIT_USAGE)
    address = resolve_address("links", args.links)
    async with channel(address) as ch:
        stub = links_pb2_grpc.LinkServiceStub(ch)
        try:
            start = await _now(stub)
            request = links_pb2.ListContactsRequest(
                ground_id=args.ground,
                window=common_pb2.TimeWindow(
                    start=to_timestamp(start), end=to_timestamp(start + args.hours * 3600)
                ),
                min_elevation_deg=args.min_elevation,
            )
            request.min_duration.FromNanoseconds(int(round(args.min_duration * 1e9)))
            reply = await stub.ListContacts(request, timeout=300)
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    contacts = list(reply.contacts)
    if args.json:
        print_json([pass_dict(p) for p in contacts])
        return EXIT_OK
    mask = f"{args.min_elevation:g} deg" if args.min_elevation else "its own mask"
    print(
        f"{len(contacts)} contact windows of {args.ground} above {mask} in {args.hours:g} h from {utc(start)} UTC"
    )
    print_passes(contacts, args.limit)
    if reply.truncated:
        print("(the service truncated the list: shorten the window)")
    return EXIT_OK
