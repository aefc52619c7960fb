"""Links benchmark: one routing step for 100 ground points, against Hypatia's way of doing it.

    PYTHONPATH=services .venv/bin/python bench/links.py [--steps N] [--skip-baseline] [--hours H]

1. Step time (propagate + visibility + graph + all routes) for starlink-shell1 and starlink-gen1
   with +grid ISLs, 50 terminals and 50 gateways (each gateway its own region) spread over the
   populated latitudes, shortest-path policy, routes from every terminal to every region.
2. The same starlink-shell1 step done the way Hypatia's satgenpy does it: a networkx graph of the
   satellites and ISLs, ``networkx.floyd_warshall_numpy`` over the satellites, then for each
   (terminal, gateway) pair the minimum over the pair's visible satellites of
   GSL + satellite-to-satellite distance + GSL. Needs networkx (a bench extra); skipped with a
   message when it is missing. Both answers are compared.
3. A 24 h PredictRoutes-equivalent for one route at 1 s on starlink-shell1 with the slot scheduler,
   with resident memory sampled after every chunk to show it stays flat.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import numpy as np

from skyhaul.core.constants import C_KM_S
from skyhaul.core.constellations import build_preset
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.propagate import Propagator
from skyhaul.core.routing import build_graph, extract_paths, ground_links, shortest_trees
from skyhaul.core.scheduler import SchedulerConfig, elevation_deg, visible_mask
from skyhaul.core.summary import TimelineAccumulator
from skyhaul.core.timeline import LinkModel

EPOCH = 1604016000.0  # 2020-10-30T00:00:00Z


def ground_points(n_terminals: int = 50, n_gateways: int = 50) -> GroundSegment:
    """Deterministic points over the populated latitudes (56°S to 60°N), uniform on the sphere."""
    rng = np.random.default_rng(2020)

    def draw(n):
        z = rng.uniform(np.sin(np.radians(-56)), np.sin(np.radians(60)), n)
        return np.degrees(np.arcsin(z)), rng.uniform(-180, 180, n)

    tlat, tlon = draw(n_terminals)
    glat, glon = draw(n_gateways)
    terminals = [
        Terminal(f"t{k:02d}", float(a), float(b)) for k, (a, b) in enumerate(zip(tlat, tlon, strict=True))
    ]
    regions = [
        Region(f"r{k:02d}", float(a), float(b)) for k, (a, b) in enumerate(zip(glat, glon, strict=True))
    ]
    gateways = [
        Gateway(f"g{k:02d}", r.id, r.lat_deg, r.lon_deg, fibre_route_factor=1.0)
        for k, r in enumerate(regions)
    ]
    return GroundSegment(terminals, gateways, regions)


def timed_step(lm: LinkModel, t: float) -> dict[str, float]:
    """The work of one step, stage by stage, with the core's own functions (as LinkModel.decide)."""
    gs, lay = lm.ground, lm.layout
    stages = {}
    t0 = time.perf_counter()
    r = lm.propagator.ecef(t).r_km
    t1 = time.perf_counter()
    g, up = gs.positions_ecef(t), gs.up_vectors(t)
    visible = visible_mask(g, up, r, gs.min_elevation_deg)
    t2 = time.perf_counter()
    isl = lm.isl_topology().active(r)
    links = ground_links(visible[: gs.n_terminals], visible[gs.n_terminals :], g, r)
    graph = build_graph(lay, links, isl, gs.fibre_delay_s, gs.gateway_region)
    t3 = time.perf_counter()
    dist, pred = shortest_trees(graph, lay)
    reach = np.isfinite(dist[:, lay.region0 :])
    paths = extract_paths(pred, lay, reach)
    t4 = time.perf_counter()
    stages.update(propagate=t1 - t0, visibility=t2 - t1, graph=t3 - t2, routes=t4 - t3, total=t4 - t0)
    stages["_delay"] = dist[:, lay.region0 :]
    stages["_paths"] = paths
    return stages


def hypatia_step(lm: LinkModel, t: float):
    """Hypatia satgenpy's shortest-path step (networkx + Floyd-Warshall, then per-pair minimum)."""
    import networkx as nx

    gs = lm.ground
    r = lm.propagator.ecef(t).r_km
    isl = lm.isl_topology().active(r)
    graph = nx.Graph()
    graph.add_nodes_from(range(lm.n_sats))
    for a, b, km in zip(isl.i.tolist(), isl.j.tolist(), isl.length_km.tolist(), strict=True):
        graph.add_edge(a, b, weight=km)
    sat_dist = nx.floyd_warshall_numpy(graph, nodelist=list(range(lm.n_sats)), weight="weight")
    g, up = gs.positions_ecef(t), gs.up_vectors(t)
    elev = elevation_deg(g, up, r)
    rng_km = np.linalg.norm(r[None, :, :] - g[:, None, :], axis=-1)
    n_t = gs.n_terminals
    visible = [np.flatnonzero(elev[k] >= gs.min_elevation_deg[k]).tolist() for k in range(gs.n_ground)]
    delay = np.full((n_t, gs.n_gateways), np.inf)
    for src in range(n_t):
        for dst in range(gs.n_gateways):
            best = np.inf
            for a in visible[src]:
                for b in visible[n_t + dst]:
                    d = rng_km[src, a] + sat_dist[a, b] + rng_km[n_t + dst, b]
                    if d < best:
                        best = d
            delay[src, dst] = best / C_KM_S
    return delay


def bench_steps(preset: str, steps: int, gs: GroundSegment) -> tuple[LinkModel, list[dict]]:
    elements = build_preset(preset, EPOCH)
    cfg = SchedulerConfig(mode="continuous", isl="+grid", policy="shortest-path")
    lm = LinkModel.from_elements(elements, gs, cfg, propagator=Propagator(elements))
    lm.isl_topology()
    timed_step(lm, EPOCH)  # warm-up (imports, first allocations)
    runs = [timed_step(lm, EPOCH + 60.0 + 37.0 * k) for k in range(steps)]
    med = {
        k: statistics.median(run[k] for run in runs) * 1e3
        for k in ("propagate", "visibility", "graph", "routes")
    }
    total = statistics.median(run["total"] for run in runs) * 1e3
    # The same step through LinkModel.decide: also candidates, true delays, capacities, bookkeeping.
    decide_ms = []
    for k in range(steps):
        start = time.perf_counter()
        lm.decide(EPOCH + 5000.0 + 37.0 * k)
        decide_ms.append((time.perf_counter() - start) * 1e3)
    pairs = int(np.isfinite(runs[-1]["_delay"]).sum())
    print(
        f"{preset:16s} {lm.n_sats:5d} sats, {len(lm.isl_topology().pairs):5d} ISLs, "
        f"{gs.n_terminals}x{len(gs.regions)} routes ({pairs} reachable): {total:7.2f} ms/step  "
        + "  ".join(f"{k} {v:.2f}" for k, v in med.items())
        + f"  | whole LinkModel.decide {statistics.median(decide_ms):.2f}"
    )
    return lm, runs


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover - psutil is a project dependency
        return float("nan")


def bench_prediction(hours: float) -> None:
    elements = build_preset("starlink-shell1", EPOCH)
    gs = GroundSegment(
        [Terminal("mdc-wa", 47.6, -122.3), Terminal("mdc-ny", 40.7, -74.0)],
        [Gateway("gw-quincy", "westus2", 47.233, -119.852), Gateway("gw-boydton", "eastus", 36.67, -78.39)],
        [Region("westus2", 47.233, -119.852), Region("eastus", 37.3719, -79.8164)],
    )
    # Bent pipe needs the terminal and the gateway under one satellite: Seattle -> Quincy. With
    # ISLs, New York -> Quincy crosses the continent in space.
    for isl, policy, terminal in (
        ("none", "highest-elevation", "mdc-wa"),
        ("+grid", "shortest-path", "mdc-ny"),
    ):
        cfg = SchedulerConfig(isl=isl, policy=policy)
        lm = LinkModel.from_elements(elements, gs, cfg, propagator=Propagator(elements))
        acc = TimelineAccumulator(1.0, cfg.handover_stall_ms)
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        samples_rss = []
        start = time.perf_counter()
        chunks = lm.predict_route(terminal, "westus2", EPOCH, EPOCH + 3600 * hours, 1.0, chunk_samples=3600)
        for chunk in chunks:
            acc.add(chunk)
            samples_rss.append(rss_mb())
        elapsed = time.perf_counter() - start
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        s = acc.summary()
        first = samples_rss[0]
        print(
            f"  {isl:5s} {policy:17s} {terminal} -> westus2: {hours:g} h at 1 s = {s.samples} samples "
            f"in {elapsed:5.1f} s; availability {s.availability:.4f}, RTT p50 {s.rtt_ms_p50:.2f} p95 {s.rtt_ms_p95:.2f} "
            f"min {s.rtt_ms_min:.2f} max {s.rtt_ms_max:.2f} ms, {s.handovers} handovers, "
            f"{len(s.outages)} outages"
        )
        print(
            f"         RSS after hour 1 {first:.1f} MiB, max over the run {max(samples_rss):.1f} MiB "
            f"(growth {max(samples_rss) - first:+.1f} MiB); ru_maxrss {maxrss_before:.1f} -> {maxrss_after:.1f} MiB"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per constellation")
    parser.add_argument("--hours", type=float, default=24.0, help="prediction window (h)")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the Hypatia-style baseline")
    args = parser.parse_args(argv)

    gs = ground_points()
    print(
        f"One step, {gs.n_terminals} terminals + {gs.n_gateways} gateways, +grid, shortest-path (median ms):"
    )
    shell1, shell1_runs = bench_steps("starlink-shell1", args.steps, gs)
    bench_steps("starlink-gen1", args.steps, gs)

    ours_ms = statistics.median(run["total"] for run in shell1_runs) * 1e3
    if args.skip_baseline:
        print("Hypatia-style baseline: skipped (--skip-baseline)")
    else:
        try:
            import networkx
        except ImportError:
            networkx = None
            print("Hypatia-style baseline: skipped, networkx is not installed (pip install networkx)")
        if networkx is not None:
            t = EPOCH + 60.0
            start = time.perf_counter()
            theirs = hypatia_step(shell1, t)
            base_s = time.perf_counter() - start
            mine = timed_step(shell1, t)["_delay"]
            both = np.isfinite(theirs) & np.isfinite(mine)
            agree = np.array_equal(np.isfinite(theirs), np.isfinite(mine))
            diff_ns = float(np.max(np.abs(theirs[both] - mine[both]))) * 1e9 if both.any() else float("nan")
            print(
                f"Hypatia-style step (networkx {networkx.__version__}, floyd_warshall_numpy, starlink-shell1): "
                f"{base_s:.2f} s; ours {ours_ms:.2f} ms -> {base_s * 1e3 / ours_ms:.0f}x faster "
                f"(same reachability: {agree}; max delay difference {diff_ns:.3f} ns incl. tie-break epsilon)"
            )

    print("PredictRoutes-equivalent, starlink-shell1, slotted scheduler, one route:")
    bench_prediction(args.hours)
    return 0


if __name__ == "__main__":
    sys.exit(main())
