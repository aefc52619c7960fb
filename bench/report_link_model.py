"""Link model report: the model beside each calibration trace, plots, and the cost of the model.

    PYTHONPATH=services .venv/bin/python bench/report_link_model.py [--plots DIR] [--data DIR]

For each trace in ../shared/data/traces (Victoria BC -> Seattle PoP over starlink-gen1 through the
Bellingham WA gateway; Seychelles -> Frankfurt PoP over starlink-gen1 +grid through the Frankfurt
gateway) it prints trace, Starlink defaults and the trace's own fit side by side: RTT quantiles,
slot-boundary steps of the per-slot minimum (and their KS distance to the trace's), loss and its
share within 0.5 s of a boundary. With --plots it writes, per trace: RTT over 2 minutes, CDF of
RTT, CDF of slot-boundary steps, loss by position in the slot (PNG). Last, the cost of a one-hour
1 s prediction with the full model against propagation only (the ratio; goal <= 1.5).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from skyhaul.core import traces as trace_stats
from skyhaul.core.calibrate import calibrate, compare, link_floor_ms, model_at_trace_times
from skyhaul.core.constellations import build_preset
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.latency import STARLINK, terrestrial_rtt_ms
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.starlink_ground import home_pop
from skyhaul.core.timeline import LinkModel
from skyhaul.runtime.linkdata import load_trace, starlink_ground

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "traces"
# (file, terminal location, gateway on the community map, ISLs)
TRACES = (
    ("vic_20240910_ping.csv", (48.43, -123.37), "Bellingham, WA", "none"),
    ("vic_20241218_ping.csv", (48.43, -123.37), "Bellingham, WA", "none"),
    ("vic_20250415_ping.txt", (48.43, -123.37), "Bellingham, WA", "none"),
    ("sey_20240812_ping.txt", (-4.68, 55.49), "Frankfurt, DE", "+grid"),
)


def link_model(t0: float, site, gateway, isl: str) -> LinkModel:
    segment = GroundSegment(
        (Terminal("dish", *site),),
        (Gateway("gw", "at-gw", gateway.lat_deg, gateway.lon_deg, fibre_route_factor=1.0),),
        (Region("at-gw", gateway.lat_deg, gateway.lon_deg),),
    )
    policy = "shortest-path" if isl != "none" else "highest-elevation"
    return LinkModel.from_elements(
        build_preset("starlink-gen1", t0), segment, SchedulerConfig(isl=isl, policy=policy)
    )


def floor_ms(trace, site, gateway_name: str, isl: str) -> np.ndarray:
    ground = starlink_ground()
    pop = home_pop(*site, ground)
    gateway = next(g for g in ground.gateways if g.name == gateway_name)
    model = link_model(float(trace.t_unix[0]), site, gateway, isl)
    space = link_floor_ms(model, "dish", "at-gw", trace.t_unix)
    return space + terrestrial_rtt_ms(gateway.lat_deg, gateway.lon_deg, pop.lat_deg, pop.lon_deg)


def print_table(name: str, default_cmp, fit_cmp) -> None:
    print(f"\n{name}")
    print(f"  {'figure':<36}{'trace':>10}{'defaults':>10}{'own fit':>10}")
    for (label, trace_value, default_value), (_, _, fit_value) in zip(
        default_cmp.rows(), fit_cmp.rows(), strict=True
    ):
        print(f"  {label:<36}{trace_value:>10.2f}{default_value:>10.2f}{fit_value:>10.2f}")


def plot(name: str, trace, floor, default_model, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = Path(name).stem
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    # RTT over 2 minutes from the first slot start.
    t0 = trace.t_unix[0]
    first_slot = np.ceil((t0 - 12.0) / 15.0) * 15.0 + 12.0
    ax = axes[0, 0]
    sel = (trace.t_unix >= first_slot) & (trace.t_unix < first_slot + 120.0)
    msel = (default_model.t_unix >= first_slot) & (default_model.t_unix < first_slot + 120.0)
    ax.plot(trace.t_unix[sel] - first_slot, trace.rtt_ms[sel], ".", ms=1, label="trace")
    ax.plot(default_model.t_unix[msel] - first_slot, default_model.rtt_ms[msel], ".", ms=1, label="model")
    ax.plot(trace.t_unix[sel] - first_slot, floor[sel], "-", lw=1, label="propagation floor")
    for b in range(0, 121, 15):
        ax.axvline(b, color="grey", lw=0.5)
    ax.set(xlabel="s since a slot start", ylabel="RTT ms", title=f"{stem}: 2 minutes")
    ax.legend(markerscale=8)
    ax = axes[0, 1]
    for label, values in (("trace", trace.rtt_ms), ("model", default_model.rtt_ms)):
        v = np.sort(values[np.isfinite(values)])
        ax.plot(v, np.arange(1, v.size + 1) / v.size, label=label)
    ax.set(xlabel="RTT ms", ylabel="CDF", title="RTT")
    ax.legend()
    ax = axes[1, 0]
    for label, t, values in (
        ("trace", trace.t_unix, trace.rtt_ms),
        ("model", default_model.t_unix, default_model.rtt_ms),
    ):
        v = np.sort(trace_stats.boundary_steps(t, values))
        if v.size:
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=label)
    ax.set(xlabel="|change of the per-slot minimum RTT| ms", ylabel="CDF", title="slot-boundary steps")
    ax.legend()
    ax = axes[1, 1]
    if trace.loss_known and trace.drop_rate is None:
        starts, rate, _ = trace_stats.loss_by_position(trace.t_unix, trace.rtt_ms, 0.5)
        ax.bar(starts, 100 * rate, width=0.22, align="edge", label="trace")
    starts, rate, _ = trace_stats.loss_by_position(default_model.t_unix, default_model.rtt_ms, 0.5)
    ax.bar(starts + 0.25, 100 * rate, width=0.22, align="edge", label="model")
    ax.set(xlabel="s since the slot start", ylabel="loss %", title="loss by position in the slot")
    ax.legend()
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"link-model-{stem}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return [path]


def prediction_cost(hours: float = 1.0, repeats: int = 3) -> tuple[float, float]:
    """Seconds for a 1 s prediction over ``hours`` through ``LinkModel.predict_route`` (what
    PredictRoutes runs): propagation only, and with the terminal model (the scenario's default for
    Starlink). Fresh models each time (no cached decisions); the best of ``repeats`` each, alternated."""
    ground = starlink_ground()
    gateway = next(g for g in ground.gateways if g.name == "Bellingham, WA")
    t0 = 1_725_927_972.0
    best = {"floor": float("inf"), "model": float("inf")}
    for _ in range(repeats):
        for kind in best:
            model = link_model(t0, (48.43, -123.37), gateway, "none")
            if kind == "model":
                model.latency, model.latency_seed = STARLINK, 1
            start = time.perf_counter()
            for _chunk in model.predict_route("dish", "at-gw", t0, t0 + 3600 * hours, 1.0):
                pass
            best[kind] = min(best[kind], time.perf_counter() - start)
    return best["floor"], best["model"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of the traces")
    parser.add_argument("--plots", type=Path, default=None, help="write PNG plots into this directory")
    args = parser.parse_args(argv)
    missing = [name for name, *_ in TRACES if not (args.data / name).is_file()]
    if missing:
        print(f"traces not found in {args.data}: {', '.join(missing)}", file=sys.stderr)
        return 2
    for name, site, gateway, isl in TRACES:
        trace = load_trace(args.data / name)
        floor = floor_ms(trace, site, gateway, isl)
        laser = isl != "none"
        defaults = model_at_trace_times(trace, floor, STARLINK, laser=laser, seed=7, terminal_id="report")
        fit = calibrate(trace, floor, laser=laser)
        print_table(
            f"{name} ({'laser' if laser else 'bent pipe'}, floor median {np.median(floor):.1f} ms)",
            compare(trace, defaults),
            fit.comparison,
        )
        if args.plots is not None:
            for path in plot(name, trace, floor, defaults, args.plots):
                print(f"  plot: {path}")
    propagation, full = prediction_cost()
    print(
        f"\n1 h prediction at 1 s: propagation only {propagation * 1e3:.0f} ms, with the terminal model "
        f"{full * 1e3:.0f} ms, ratio {full / propagation:.2f} (goal <= 1.5)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
