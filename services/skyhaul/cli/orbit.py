"""`skyhaul sats`, `skyhaul passes`: what the orbit service knows."""

from __future__ import annotations

import argparse
import asyncio

import numpy as np

from skyhaul.cli.common import (
    EXIT_OK,
    JSON_HELP,
    add_formatter,
    fail,
    pass_dict,
    print_json,
    print_passes,
    resolve_address,
    rfc3339,
    rpc_error_message,
    utc,
)
from skyhaul.runtime.clients import DEFAULT_DEADLINE_S, channel


def register(sub: argparse._SubParsersAction) -> None:
    sats = sub.add_parser("sats", help="a constellation: count, shells, a few positions")
    add_formatter(
        sats,
        """examples:
  skyhaul sats                                  the scenario's constellation
  skyhaul sats --constellation starlink-gen1 --show 5
  skyhaul sats --list                           every constellation the orbit service knows
""",
    )
    sats.add_argument("--constellation", default="", help="name (default: the scenario's)")
    sats.add_argument("--list", action="store_true", help="list constellations instead")
    sats.add_argument("--show", type=int, default=5, help="positions to print (default 5)")
    sats.add_argument("--orbit", help="orbit service HOST:PORT")
    sats.add_argument("--json", action="store_true", help=JSON_HELP)
    sats.set_defaults(func=lambda a: asyncio.run(cmd_sats(a)))

    passes = sub.add_parser("passes", help="satellite passes over a ground point")
    add_formatter(
        passes,
        """examples:
  skyhaul passes --lat 47.6 --lon -122.3                         next hour, 25 deg mask
  skyhaul passes --lat 70.25 --lon -148.3 --hours 6 --min-elevation 40 --constellation starlink-2020-10
""",
    )
    passes.add_argument("--lat", type=float, required=True)
    passes.add_argument("--lon", type=float, required=True)
    passes.add_argument("--alt-m", type=float, default=0.0)
    passes.add_argument("--min-elevation", type=float, default=25.0, help="degrees (default 25)")
    passes.add_argument("--hours", type=float, default=1.0, help="window length from now (default 1)")
    passes.add_argument("--min-duration", type=float, default=0.0, help="seconds")
    passes.add_argument("--constellation", default="")
    passes.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    passes.add_argument("--orbit", help="orbit service HOST:PORT")
    passes.add_argument("--json", action="store_true", help=JSON_HELP)
    passes.set_defaults(func=lambda a: asyncio.run(cmd_passes(a)))


async def cmd_sats(args: argparse.Namespace) -> int:
    import grpc

    from skyhaul.contract.orbit_codec import from_bytes
    from skyhaul.v1 import orbit_pb2, orbit_pb2_grpc

    address = resolve_address("orbit", args.orbit)
    async with channel(address) as ch:
        stub = orbit_pb2_grpc.OrbitServiceStub(ch)
        try:
            if args.list:
                listing = await stub.ListConstellations(orbit_pb2.ListConstellationsRequest(), timeout=60)
                rows = [
                    (c.name, c.satellite_count, len(c.shells), c.description) for c in listing.constellations
                ]
                if args.json:
                    print_json(
                        [
                            dict(zip(("name", "satellites", "shells", "description"), r, strict=True))
                            for r in rows
                        ]
                    )
                else:
                    for name, count, shells, description in rows:
                        print(f"{name:20s} {count:6d} sats  {shells} shell(s)  {description}")
                return EXIT_OK
            info = await stub.GetConstellation(
                orbit_pb2.GetConstellationRequest(constellation=args.constellation),
                timeout=DEFAULT_DEADLINE_S,
            )
            frame = await stub.GetPositions(
                orbit_pb2.GetPositionsRequest(
                    constellation=args.constellation, fields=orbit_pb2.PositionFields(geodetic=True)
                ),
                timeout=DEFAULT_DEADLINE_S,
            )
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    lat, lon, alt = (from_bytes(b) for b in (frame.latitude_deg, frame.longitude_deg, frame.altitude_km))
    s = info.summary
    shown = [
        {
            "index": i,
            "name": info.satellites[i].name,
            "lat_deg": round(float(lat[i]), 3),
            "lon_deg": round(float(lon[i]), 3),
            "alt_km": round(float(alt[i]), 1),
        }
        for i in range(min(args.show, s.satellite_count))
    ]
    if args.json:
        print_json(
            {
                "name": s.name,
                "satellites": s.satellite_count,
                "elements_version": s.elements_version,
                "at": rfc3339(frame.at),
                "shells": [
                    {
                        "name": sh.name,
                        "planes": sh.planes,
                        "per_plane": sh.satellites_per_plane,
                        "altitude_km": sh.altitude_km,
                        "inclination_deg": sh.inclination_deg,
                        "satellites": sh.satellite_count,
                    }
                    for sh in s.shells
                ],
                "altitude_km": {"min": float(np.nanmin(alt)), "max": float(np.nanmax(alt))},
                "positions": shown,
            }
        )
        return EXIT_OK
    print(f"{s.name}: {s.satellite_count} satellites — {s.description}")
    for sh in s.shells:
        geometry = (
            f"{sh.planes} x {sh.satellites_per_plane}, {sh.altitude_km:.0f} km, {sh.inclination_deg:.1f} deg"
            if sh.planes
            else "catalogue"
        )
        print(f"  shell {sh.name:20s} {sh.satellite_count:5d} sats  {geometry}")
    print(f"at {utc(frame.at)} UTC (emulated): altitude {np.nanmin(alt):.1f}–{np.nanmax(alt):.1f} km")
    for row in shown:
        print(
            f"  #{row['index']:<5d} {row['name']:24s} lat {row['lat_deg']:8.3f}  lon {row['lon_deg']:9.3f}  alt {row['alt_km']:7.1f} km"
        )
    return EXIT_OK


async def cmd_passes(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import duration_pb2

    from skyhaul.runtime.clock import to_timestamp
    from skyhaul.v1 import common_pb2, orbit_pb2, orbit_pb2_grpc

    address = resolve_address("orbit", args.orbit)
    async with channel(address) as ch:
        stub = orbit_pb2_grpc.OrbitServiceStub(ch)
        try:
            # "now" is the emulation clock's: take it from the service, then ask for the window.
            first = await stub.GetLookAngles(
                orbit_pb2.GetLookAnglesRequest(
                    constellation=args.constellation,
                    observer=common_pb2.GeoPoint(latitude_deg=args.lat, longitude_deg=args.lon),
                    min_elevation_deg=90,
                ),
                timeout=DEFAULT_DEADLINE_S,
            )
            start = first.at.seconds + first.at.nanos * 1e-9
            request = orbit_pb2.ListPassesRequest(
                constellation=args.constellation,
                observer=common_pb2.GeoPoint(
                    latitude_deg=args.lat, longitude_deg=args.lon, altitude_m=args.alt_m
                ),
                window=common_pb2.TimeWindow(
                    start=to_timestamp(start), end=to_timestamp(start + args.hours * 3600)
                ),
                min_elevation_deg=args.min_elevation,
                min_duration=duration_pb2.Duration(seconds=int(args.min_duration)),
            )
            reply = await stub.ListPasses(request, timeout=300)
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    passes = list(reply.passes)
    if args.json:
        print_json([pass_dict(p) for p in passes])
        return EXIT_OK
    print(
        f"{len(passes)} passes above {args.min_elevation:g} deg over ({args.lat:g}, {args.lon:g}) in {args.hours:g} h"
    )
    print_passes(passes, args.limit)
    return EXIT_OK
