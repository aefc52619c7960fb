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
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import links as links_bench  # noqa: E402  (bench/links.py: its ground points and its prediction set-up)

from skyhaul.core import routing, timeline  # noqa: E402
from skyhaul.core.constellations import build_preset  # noqa: E402
from skyhaul.core.fleet import PLACES, fleet_scenario  # noqa: E402
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal  # noqa: E402
from skyhaul.core.propagate import Propagator  # noqa: E402
from skyhaul.core.scheduler import SchedulerConfig  # noqa: E402
from skyhaul.core.summary import TimelineAccumulator  # noqa: E402
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=5, help="timed slots per fleet configuration")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of the Hypatia-sized case")
    parser.add_argument("--hours", type=float, default=24.0, help="route prediction window (h)")
    parser.add_argument("--skip-10k", action="store_true", help="skip the 10 000-terminal case")
    args = parser.parse_args(argv)

    gen1 = build_preset("starlink-gen1", EPOCH)
    print("One slot's decision, starlink-gen1 (4 408 sats), +grid, shortest-path (median of slots):")
    bench_decision(gen1, fleet_ground(1000, 3), args.slots, "1 000 terminals,   3 regions", 50.0)
    bench_decision(gen1, fleet_ground(1000, 100), args.slots, "1 000 terminals, 100 regions", 50.0)
    if not args.skip_10k:
        bench_decision(
            gen1, fleet_ground(10_000, 3), max(2, args.slots // 2), "10 000 terminals,  3 regions", 500.0
        )
    print("bench/links.py's Hypatia-sized step, continuous, +grid, shortest-path (median of steps):")
    bench_hypatia_step(args.steps)
    print("One route, PredictRoutes-equivalent (starlink-shell1, slotted):")
    bench_route_24h(args.hours)
    return 0


if __name__ == "__main__":
    sys.exit(main())
