"""`skyhaul calibrate TRACE`: fit the terminal link model to a recorded trace and print it as a
scenario snippet, with the fit's quantiles beside the trace's.

The floor under the trace (what propagation alone gives) comes from ``--location``: a terminal
there over starlink-gen1 (the Walker preset at the trace's time) through the Starlink gateways
wired to the PoP it is homed to (community map of 2023-10-10), fibre to that PoP — the first IP
hop that dish pings usually reach. Without a location the floor is ``--floor-ms`` (nominal 10 ms).
"""

from __future__ import annotations

import argparse

import numpy as np

from skyhaul.cli.common import EXIT_OK, EXIT_USAGE, add_formatter, fail, print_json

FORMATS = ("auto", "ping", "csv", "dish")
NOMINAL_FLOOR_MS = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("calibrate", help="fit the link model to a latency trace (scenario snippet)")
    add_formatter(
        parser,
        """examples:
  skyhaul calibrate ping.log --location 48.43,-123.37
  skyhaul calibrate dish_history.csv --format dish --floor-ms 12
  skyhaul calibrate isl_ping.txt --location -4.68,55.49 --laser --json

trace formats: `ping -D` logs, CSV `unix_time_s,rtt_ms` (empty = lost), dish get_history/status
exports with pop_ping_latency_ms (see docs/link-model.md).
""",
    )
    parser.add_argument("trace", help="the trace file")
    parser.add_argument("--location", help="LAT,LON of the dish (the floor is computed for it)")
    parser.add_argument(
        "--format", choices=FORMATS, default="auto", help="the trace's format (default: detect)"
    )
    parser.add_argument(
        "--laser", action="store_true", help="the path uses inter-satellite links (laser profile)"
    )
    parser.add_argument(
        "--floor-ms",
        type=float,
        default=None,
        help=f"propagation floor without --location (default {NOMINAL_FLOOR_MS:g})",
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=cmd_calibrate)


def _location(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--location {text!r}: expected LAT,LON in degrees, e.g. 48.43,-123.37") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"--location {text!r}: ({lat}, {lon}) is not a location")
    return lat, lon


def floor_at(trace, lat: float, lon: float, laser: bool) -> tuple[np.ndarray, str]:
    """The propagation floor (ms) at the trace's probe times for a dish at (lat, lon), and its PoP."""
    from skyhaul.core.calibrate import link_floor_ms
    from skyhaul.core.constellations import build_preset
    from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
    from skyhaul.core.latency import STARLINK
    from skyhaul.core.scheduler import SchedulerConfig
    from skyhaul.core.starlink_ground import home_pop
    from skyhaul.core.timeline import LinkModel
    from skyhaul.runtime.linkdata import starlink_ground

    preset = starlink_ground()
    pop = home_pop(lat, lon, preset)
    gateways = tuple(
        Gateway(f"gw-{k}", "pop", g.lat_deg, g.lon_deg, fibre_route_factor=STARLINK.gateway_pop_route_factor)
        for k, g in enumerate(preset.gateways_of(pop.name))
    )
    segment = GroundSegment(
        (Terminal("dish", lat, lon),), gateways, (Region("pop", pop.lat_deg, pop.lon_deg),)
    )
    config = SchedulerConfig(isl="+grid", policy="shortest-path") if laser else SchedulerConfig()
    model = LinkModel.from_elements(build_preset("starlink-gen1", float(trace.t_unix[0])), segment, config)
    return link_floor_ms(model, "dish", "pop", trace.t_unix), pop.name


def cmd_calibrate(args: argparse.Namespace) -> int:
    from skyhaul.core.calibrate import CalibrationError, calibrate, scenario_snippet
    from skyhaul.core.traces import TraceFormatError
    from skyhaul.runtime.linkdata import load_replay_trace

    try:
        trace = load_replay_trace(args.trace, args.format)
        if args.location is not None:
            if args.floor_ms is not None:
                return fail("give --location or --floor-ms, not both", EXIT_USAGE)
            floor, pop = floor_at(trace, *_location(args.location), args.laser)
            if not np.isfinite(floor).any():
                return fail(f"no satellite route from {args.location} during the trace", EXIT_USAGE)
            floor_note = f"starlink-gen1 floor to the {pop} PoP, median {np.nanmedian(floor):.1f} ms"
        else:
            floor = args.floor_ms if args.floor_ms is not None else NOMINAL_FLOOR_MS
            if not (np.isfinite(floor) and floor >= 0):
                return fail(f"--floor-ms {floor} must be a number >= 0", EXIT_USAGE)
            floor_note = f"nominal floor {floor:g} ms (give --location for the real one)"
        fit = calibrate(trace, floor, laser=args.laser)
    except (TraceFormatError, CalibrationError, ValueError) as exc:
        return fail(str(exc), EXIT_USAGE)
    rows = fit.comparison.rows()
    snippet = scenario_snippet(fit.params, args.laser)
    if args.json:
        profile = fit.params.profile(args.laser)
        print_json(
            {
                "trace": args.trace,
                "floor": floor_note,
                "slots": fit.slots_used,
                "profile": "laser" if args.laser else "bent_pipe",
                "parameters": {name: getattr(profile, name) for name in profile.__dataclass_fields__},
                "figures": [{"figure": f, "trace": _num(a), "fit": _num(b)} for f, a, b in rows],
                "snippet": snippet,
            }
        )
        return EXIT_OK
    print(f"# {args.trace}: {trace.t_unix.size} probes, {fit.slots_used} slots; {floor_note}")
    print(snippet)
    print(f"\n{'figure':<36}{'trace':>10}{'fit':>10}")
    for figure, trace_value, fit_value in rows:
        print(f"{figure:<36}{trace_value:>10.2f}{fit_value:>10.2f}")
    return EXIT_OK


def _num(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)
