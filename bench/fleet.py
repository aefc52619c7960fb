"""Fleet-scale routing benchmark: per-destination routing against today's per-source, same run.

    PYTHONPATH=services .venv/bin/python bench/fleet.py [--slots N] [--hours H] [--skip-10k]

Every figure is measured both ways in this run (``LinkModel.routing_method``) and printed with
the ratio; the routes are compared too (they must be equal).

1. One slot's decision (``LinkModel.decide``, slotted, steady state: the slot start's geometry is
   cached from the previous slot, its end is new, as in a live run) for 1 000 terminals from
   ``skyhaul scenario fleet`` over starlink-gen1, +grid, shortest-path, with 3 and 100 regions
   (goal <= 50 ms); the routing part alone (``solve_step``) is shown beside it.
2. The same for 10 000 terminals and 3 regions (goal <= 500 ms).
3. bench/links.py's Hypatia-sized step (starlink-shell1, 50 terminals + 50 gateways, each its own
   region, continuous mode): must not regress.
4. One route 24 h at 1 s, the PredictRoutes-equivalent of bench/links.py (starlink-shell1, slotted;
   bent pipe and +grid; each way run twice, alternating, best kept), with the SGP4 propagation of
   the slot boundaries alone as the floor. Timed with the default routing (``auto``, which for two
   terminals and two regions is per-source: too few pairs for per-destination to pay).
5. Visibility alone (``scheduler.visible_mask``) for 1 000 and 10 000 terminals over starlink-gen1:
   the KD-tree cull against the dense G x N test it replaces (same masks).
6. Fleet prediction (``PredictRoutes`` with all data centers): 1 000 data centers' summaries at 1 s
   samples over ``--fleet-hours`` (goal: 24 h in <= 120 s), RSS sampled per chunk (must stay flat),
   against predicting each route alone (timed on a few routes, scaled to the fleet); shorter windows
   are scaled to 24 h and say so.
7. Redis bytes per slot of the live engine at 10, 100 and 1 000 data centers (gen1, +grid, a
   steady-state slot): the per-data-center state layout, measured, against the old layout (every
   event also rewrote the whole fleet's snapshot under one key), replayed with the same events.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import links as links_bench  # noqa: E402  (bench/links.py: its ground points and its prediction set-up)

from skyhaul.core import routing, scheduler, timeline  # noqa: E402
from skyhaul.core.constellations import build_preset  # noqa: E402
from skyhaul.core.fleet import PLACES, fleet_scenario  # noqa: E402
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal  # noqa: E402
from skyhaul.core.propagate import Propagator  # noqa: E402
from skyhaul.core.scheduler import SchedulerConfig  # noqa: E402
from skyhaul.core.summary import (
    FleetAccumulator,  # noqa: E402
    TimelineAccumulator,  # noqa: E402
)
from skyhaul.core.timeline import LinkModel  # noqa: E402

EPOCH = 1717200000.0  # 2024-06-01T00:00:00Z, the generated fleet's epoch
METHODS = ("per-source", "per-destination")


@contextmanager
def timed_routing():
    """Record how long each ``solve_step`` inside ``LinkModel.decide`` takes (measurement only)."""
    spent: list[float] = []
    original = timeline.solve_step

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return out

    timeline.solve_step = timed
    try:
        yield spent
    finally:
        timeline.solve_step = original


def fleet_ground(n_terminals: int, n_regions: int, seed: int = 1) -> GroundSegment:
    """Terminals from the fleet generator; regions from its table, topped up past the table with
    jittered places (synthetic regions); one gateway at each region, as a scenario's default."""
    data = fleet_scenario(n_terminals, min(n_regions, 10), seed)
    regions = [Region(r["id"], r["location"]["lat"], r["location"]["lon"]) for r in data["regions"]]
    rng = np.random.default_rng(seed)
    for k in range(n_regions - len(regions)):
        name, lat, lon = PLACES[int(rng.integers(len(PLACES)))]
        regions.append(Region(f"x{k:03d}-{name}"[:40], lat + rng.uniform(-1, 1), lon + rng.uniform(-1, 1)))
    gateways = [Gateway(f"gw-{r.id}"[:40], r.id, r.lat_deg, r.lon_deg) for r in regions]
    terminals = [
        Terminal(dc["id"], dc["location"]["lat"], dc["location"]["lon"], home_region_id=dc["home_region"])
        for dc in data["data_centers"]
    ]
    return GroundSegment(terminals, gateways, regions)


def same_routes(a: routing.StepRoutes, b: routing.StepRoutes) -> bool:
    both = np.isfinite(a.delay_s) & np.isfinite(b.delay_s)
    return (
        a.paths.shape == b.paths.shape
        and np.array_equal(a.paths, b.paths)
        and np.array_equal(np.isfinite(a.delay_s), np.isfinite(b.delay_s))
        and bool(np.all(np.abs(a.delay_s[both] - b.delay_s[both]) <= 1e-9))
    )


def bench_decision(elements, ground: GroundSegment, slots: int, label: str, goal_ms: float) -> None:
    cfg = SchedulerConfig(isl="+grid", policy="shortest-path")
    results = {}
    for method in METHODS:
        lm = LinkModel.from_elements(elements, ground, cfg, propagator=Propagator(elements))
        lm.routing_method = method
        td0 = lm.decision_time(EPOCH + 600.0)
        lm.decide(td0)  # warm-up: the first slot also computes its start's geometry
        decide_ms = []
        with timed_routing() as spent:
            for k in range(1, slots + 1):
                start = time.perf_counter()
                dec = lm.decide(td0 + k * cfg.slot_interval_s)
                decide_ms.append((time.perf_counter() - start) * 1e3)
        results[method] = (statistics.median(decide_ms), statistics.median(spent) * 1e3, dec.routes)
    (old_ms, old_route_ms, old), (new_ms, new_route_ms, new) = (
        results["per-source"],
        results["per-destination"],
    )
    verdict = "meets" if new_ms <= goal_ms else "misses"
    print(
        f"  {label}: decide {new_ms:7.1f} ms (per-source {old_ms:7.1f} ms) -> {old_ms / new_ms:5.1f}x; "
        f"routing alone {new_route_ms:6.1f} ms (per-source {old_route_ms:7.1f}) -> "
        f"{old_route_ms / new_route_ms:5.1f}x; {verdict} the {goal_ms:g} ms goal; "
        f"same routes: {same_routes(new, old)}"
    )


def bench_hypatia_step(steps: int) -> None:
    """bench/links.py's step (starlink-shell1, its 50 + 50 ground points), both ways."""
    elements = build_preset("starlink-shell1", links_bench.EPOCH)
    ground = links_bench.ground_points()
    cfg = SchedulerConfig(mode="continuous", isl="+grid", policy="shortest-path")
    results = {}
    for method in METHODS:
        lm = LinkModel.from_elements(elements, ground, cfg, propagator=Propagator(elements))
        lm.routing_method = method
        lm.decide(links_bench.EPOCH)  # warm-up
        decide_ms = []
        with timed_routing() as spent:
            for k in range(steps):
                start = time.perf_counter()
                dec = lm.decide(links_bench.EPOCH + 60.0 + 37.0 * k)
                decide_ms.append((time.perf_counter() - start) * 1e3)
        results[method] = (statistics.median(decide_ms), statistics.median(spent) * 1e3, dec.routes)
    (old_ms, old_route_ms, old), (new_ms, new_route_ms, new) = (
        results["per-source"],
        results["per-destination"],
    )
    print(
        f"  starlink-shell1, 50 terminals x 50 regions: decide {new_ms:6.2f} ms (per-source {old_ms:6.2f}) -> "
        f"{old_ms / new_ms:4.2f}x; routing alone {new_route_ms:6.2f} ms (per-source {old_route_ms:6.2f}) -> "
        f"{old_route_ms / new_route_ms:4.2f}x; same routes: {same_routes(new, old)}"
    )


def bench_route_24h(hours: float) -> None:
    elements = build_preset("starlink-shell1", links_bench.EPOCH)
    t0 = links_bench.EPOCH
    ground = GroundSegment(
        [Terminal("mdc-wa", 47.6, -122.3), Terminal("mdc-ny", 40.7, -74.0)],
        [Gateway("gw-quincy", "westus2", 47.233, -119.852), Gateway("gw-boydton", "eastus", 36.67, -78.39)],
        [Region("westus2", 47.233, -119.852), Region("eastus", 37.3719, -79.8164)],
    )
    propagator = Propagator(elements)
    start = time.perf_counter()
    for k in range(int(hours * 3600 / 15) + 1):
        propagator.ecef(t0 + 15.0 * k, with_velocity=True)
    floor_s = time.perf_counter() - start
    print(f"  SGP4 alone for the {int(hours * 240)} slot boundaries (1 584 satellites): {floor_s:5.2f} s")
    for isl, policy, terminal in (
        ("none", "highest-elevation", "mdc-wa"),
        ("+grid", "shortest-path", "mdc-ny"),
    ):
        cfg = SchedulerConfig(isl=isl, policy=policy)
        spent: dict[str, tuple[float, float]] = {}
        summaries = {}
        # Alternating runs, best of two each: the machine's load drifts over a minute-long run.
        for method in ("per-source", "auto") * 2:
            lm = LinkModel.from_elements(elements, ground, cfg, propagator=Propagator(elements))
            lm.routing_method = method
            acc = TimelineAccumulator(1.0, cfg.handover_stall_ms)
            with timed_routing() as routing_s:
                start = time.perf_counter()
                for chunk in lm.predict_route(terminal, "westus2", t0, t0 + 3600 * hours, 1.0):
                    acc.add(chunk)
                run = (time.perf_counter() - start, sum(routing_s))
            spent[method] = min(spent.get(method, run), run)
            summaries[method] = acc.summary()
        (old_s, old_r), (new_s, new_r) = spent["per-source"], spent["auto"]
        a, b = summaries["auto"], summaries["per-source"]
        same = (a.available_samples, a.handovers, a.rtt_ms_p50, a.rtt_ms_p95) == (
            b.available_samples,
            b.handovers,
            b.rtt_ms_p50,
            b.rtt_ms_p95,
        )
        print(
            f"  {isl:5s} {policy:17s} {terminal} -> westus2, {hours:g} h at 1 s, default routing: {new_s:5.2f} s "
            f"(per-source {old_s:5.2f} s) -> {old_s / new_s:4.2f}x; routing {new_r:4.2f} s "
            f"(per-source {old_r:4.2f}); {'meets' if new_s <= 3.0 * hours / 24 else 'misses'} the 3 s/24 h goal; "
            f"same summary: {same}"
        )


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def bench_visibility(elements, repeats: int) -> None:
    propagator = Propagator(elements)
    sats = propagator.ecef(EPOCH + 600.0).r_km
    for n_terminals in (1000, 10_000):
        ground = fleet_ground(n_terminals, 3)
        obs, up, masks = ground.positions_ecef(EPOCH), ground.up_vectors(EPOCH), ground.min_elevation_deg
        spent = {"dense": [], "culled": []}
        for _ in range(repeats):  # alternating: the machine's load drifts
            start = time.perf_counter()
            dense = scheduler._visible_dense(obs, up, sats, masks)
            spent["dense"].append(time.perf_counter() - start)
            start = time.perf_counter()
            culled = scheduler.visible_mask(obs, up, sats, masks)
            spent["culled"].append(time.perf_counter() - start)
        old, new = (1e3 * statistics.median(spent[k]) for k in ("dense", "culled"))
        print(
            f"  {obs.shape[0]:6d} ground nodes x {sats.shape[0]} sats: culled {new:6.1f} ms (dense {old:7.1f} ms) "
            f"-> {old / new:4.1f}x; same mask: {bool(np.array_equal(dense, culled))}"
        )


def bench_fleet_prediction(elements, hours: float, data_centers: int) -> None:
    ground = fleet_ground(data_centers, 3)
    cfg = SchedulerConfig(isl="+grid", policy="shortest-path")
    pairs = [(t.id, t.home_region_id) for t in ground.terminals]
    chunk_samples = max(1, min(3600, 1_000_000 // len(pairs)))  # as the links service chunks a fleet
    lm = LinkModel.from_elements(elements, ground, cfg, propagator=Propagator(elements))
    acc = FleetAccumulator(len(pairs), 1.0, cfg.handover_stall_ms)
    rss = []
    start = time.perf_counter()
    for chunk in lm.predict(pairs, EPOCH, EPOCH + hours * 3600.0, 1.0, chunk_samples):
        acc.add(chunk)
        rss.append(rss_mb())
    fleet_s = time.perf_counter() - start
    summaries = acc.summaries()
    # Today's way: one PredictRoutes per data center; each recomputes every slot's decision.
    probe_s = min(hours * 3600.0, 900.0)
    alone_s = []
    for terminal, region in pairs[:2]:
        lm_alone = LinkModel.from_elements(elements, ground, cfg, propagator=Propagator(elements))
        begin = time.perf_counter()
        for _ in lm_alone.predict_route(terminal, region, EPOCH, EPOCH + probe_s, 1.0):
            pass
        alone_s.append(time.perf_counter() - begin)
    alone_fleet_s = statistics.mean(alone_s) * (hours * 3600.0 / probe_s) * len(pairs)
    scale = 24.0 / hours
    available = statistics.median(s.availability for s in summaries)
    print(
        f"  {len(pairs)} data centers, {hours:g} h at 1 s ({acc.samples} samples each): {fleet_s:7.1f} s "
        f"(one route at a time, scaled from {len(alone_s)} x {probe_s:g} s: {alone_fleet_s:8.0f} s) -> "
        f"{alone_fleet_s / fleet_s:5.0f}x; median availability {100 * available:.1f} %"
    )
    goal = "meets" if fleet_s * scale <= 120.0 else "misses"
    scaled = "" if hours >= 24 else f" (scaled x{scale:g} from {hours:g} h)"
    print(
        f"  24 h for the fleet: {fleet_s * scale:7.0f} s{scaled}; {goal} the 120 s goal. RSS after chunk 1 "
        f"{rss[0]:.0f} MiB, at half way {rss[len(rss) // 2]:.0f} MiB, at the end {rss[-1]:.0f} MiB, max "
        f"{max(rss):.0f} MiB over {len(rss)} chunks (second half grew {max(rss) - rss[len(rss) // 2]:+.0f} MiB)"
    )


async def _bytes_in(admin) -> int:
    return int((await admin.info("stats"))["total_net_input_bytes"])


async def _publish_old_layout(
    redis_url: str, channel: str, events, full_snapshot, sample: int
) -> tuple[int, int]:
    """The old write path (event in the log and on pub/sub, and the whole fleet's snapshot SET under
    the latest key with every event), for the first ``sample`` events: (bytes in, events replayed)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        before = await _bytes_in(client)
        for k, (event, _) in enumerate(events[:sample]):
            event.sequence = k + 1
            payload = event.SerializeToString()
            full_snapshot.sequence = k + 1
            async with client.pipeline(transaction=True) as pipe:
                pipe.xadd(f"{channel}:log", {b"e": payload}, id=f"{k + 1}-0", maxlen=10_000, approximate=True)
                pipe.set(f"{channel}:latest", full_snapshot.SerializeToString())
                pipe.publish(channel, payload)
                await pipe.execute()
        return await _bytes_in(client) - before, min(sample, len(events))
    finally:
        await client.aclose()


async def _bench_redis_bytes(sizes) -> None:
    import redis.asyncio as aioredis

    from skyhaul.core.fleet import fleet_scenario
    from skyhaul.links import route_view
    from skyhaul.links.engine import LinkEngine, compute_slot
    from skyhaul.links.ground_from_scenario import ground_segment
    from skyhaul.runtime.bus import EventPublisher
    from skyhaul.runtime.clock import EmulationClock
    from skyhaul.runtime.redis_server import start_redis_server
    from skyhaul.runtime.scenario import parse_scenario

    server = start_redis_server()
    admin = aioredis.Redis.from_url(server.url)
    elements = None
    try:
        for size in sizes:
            scenario = parse_scenario(fleet_scenario(size, 3, 7))
            elements = elements or build_preset("starlink-gen1", scenario.epoch_unix)
            ground = ground_segment(scenario)
            model = route_view.new_model(elements, ground, scenario.scheduler)
            first = compute_slot(model, scenario.epoch_unix + 600.0)
            second = compute_slot(model, first.end)
            clock = EmulationClock(scenario.epoch_unix, 1.0, time.time())
            engine = LinkEngine(ground, scenario.scheduler, clock, server.url, f"new-{size}")
            engine._publisher = EventPublisher(server.url, f"new-{size}")
            await engine._publish_slot(first)
            events = engine._slot_events(second)  # what the steady-state slot publishes
            before = await _bytes_in(admin)
            await engine._publish_slot(second)
            new_bytes = await _bytes_in(admin) - before
            await engine._publisher.aclose()
            engine._executor.shutdown()
            sample = min(len(events), 300)
            old_sampled, replayed = await _publish_old_layout(
                server.url, f"old-{size}", events, second.snapshot(second.start), sample
            )
            old_bytes = old_sampled * len(events) / replayed
            note = (
                "" if replayed == len(events) else f" (replayed {replayed} of {len(events)} events, scaled)"
            )
            print(
                f"  {size:5d} data centers, {len(events):5d} events/slot: {new_bytes / 1e6:8.3f} MB/slot "
                f"({new_bytes / size:6.0f} B per data center); old layout {old_bytes / 1e6:9.1f} MB/slot "
                f"({old_bytes / size:9.0f} B per data center){note} -> {old_bytes / new_bytes:6.0f}x less"
            )
            await admin.delete(
                f"old-{size}:log", f"old-{size}:latest", f"new-{size}:log", f"new-{size}:state"
            )
    finally:
        await admin.aclose()
        server.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=5, help="timed slots per fleet configuration")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of the Hypatia-sized case")
    parser.add_argument("--hours", type=float, default=24.0, help="route prediction window (h)")
    parser.add_argument("--skip-10k", action="store_true", help="skip the 10 000-terminal case")
    parser.add_argument(
        "--fleet-hours",
        type=float,
        default=24.0,
        help="fleet prediction window (h); shorter is scaled to 24 h",
    )
    parser.add_argument("--fleet-size", type=int, default=1000, help="data centers in the fleet prediction")
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: decide,hypatia,route,vis,fleet,redis"
    )
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    gen1 = build_preset("starlink-gen1", EPOCH)
    if "decide" not in skip:
        print("One slot's decision, starlink-gen1 (4 408 sats), +grid, shortest-path (median of slots):")
        bench_decision(gen1, fleet_ground(1000, 3), args.slots, "1 000 terminals,   3 regions", 50.0)
        bench_decision(gen1, fleet_ground(1000, 100), args.slots, "1 000 terminals, 100 regions", 50.0)
        if not args.skip_10k:
            bench_decision(
                gen1, fleet_ground(10_000, 3), max(2, args.slots // 2), "10 000 terminals,  3 regions", 500.0
            )
    if "hypatia" not in skip:
        print("bench/links.py's Hypatia-sized step, continuous, +grid, shortest-path (median of steps):")
        bench_hypatia_step(args.steps)
    if "route" not in skip:
        print("One route, PredictRoutes-equivalent (starlink-shell1, slotted):")
        bench_route_24h(args.hours)
    if "vis" not in skip:
        print("Visibility alone, starlink-gen1, fleet terminals + 3 gateways (median):")
        bench_visibility(gen1, max(3, args.slots))
    if "fleet" not in skip:
        print("Fleet prediction, starlink-gen1, +grid, shortest-path, every data center to its home region:")
        bench_fleet_prediction(gen1, args.fleet_hours, args.fleet_size)
    if "redis" not in skip:
        print("Redis bytes per slot, live engine, starlink-gen1, +grid, 3 regions (a steady-state slot):")
        asyncio.run(_bench_redis_bytes((10, 100, 1000)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
