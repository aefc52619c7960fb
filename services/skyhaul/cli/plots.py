"""Figures for the CLI and reports: RTT over time with outages and slot boundaries.

Drawn on a bare Agg canvas (no pyplot, no display needed, no global backend state).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Beyond this many slots in the window the boundaries are too dense to draw one by one.
MAX_SLOT_LINES = 80
MAX_SLOT_RUG = 400


def _dates(t_unix: np.ndarray) -> np.ndarray:
    from matplotlib import dates as mdates

    return mdates.date2num(np.asarray(t_unix, dtype=float).astype("datetime64[s]").astype("datetime64[us]"))


def _time_ticks(span_s: float):
    """A tick every round number of minutes or hours, 4 to 12 ticks over the window."""
    from matplotlib import dates as mdates

    for minutes in (1, 2, 5, 10, 15, 30):
        if span_s / (60 * minutes) <= 12:
            return mdates.MinuteLocator(byminute=range(0, 60, minutes)), "%H:%M"
    for hours in (1, 2, 3, 6, 12):
        if span_s / (3600 * hours) <= 12:
            return mdates.HourLocator(
                byhour=range(0, 24, hours)
            ), "%H:%M" if span_s <= 86_400 else "%m-%d %H:%M"
    return mdates.DayLocator(interval=max(1, int(span_s / 86_400 / 10))), "%m-%d"


# One place for the colours, so every caption names the colour actually drawn.
RTT_COLOUR = ("blue", "#1f5fa8")
OUTAGE_COLOUR = ("red", "#d62728")
SLOT_COLOUR = ("grey", "0.55")
# Beyond this many outages single bands turn into a smear (a day of the seed has 325): shade the
# share of each time bin spent down instead.
MAX_OUTAGE_BANDS = 60
DENSITY_BINS = 144  # about 10 minutes a bin over a day


def rtt_limits(rtt_ms: np.ndarray) -> tuple[float, float]:
    """The y range for an RTT curve: the data's own range plus a margin, so a 1 ms swing inside a
    pass is visible (a 0-based axis flattens it)."""
    finite = np.asarray(rtt_ms, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = max(0.25, 0.1 * (hi - lo))
    return max(0.0, lo - pad), hi + pad


def down_fraction(outages: Sequence[tuple[float, float]], edges: np.ndarray) -> np.ndarray:
    """Share of each bin [edges[i], edges[i+1]) covered by the outages."""
    edges = np.asarray(edges, dtype=float)
    if not len(outages):
        return np.zeros(edges.size - 1)
    spans = np.asarray(outages, dtype=float)
    overlap = np.minimum(spans[:, 1:2], edges[None, 1:]) - np.maximum(spans[:, 0:1], edges[None, :-1])
    return np.clip(overlap, 0.0, None).sum(axis=0) / np.diff(edges)


def _nice_bin(span_s: float) -> float:
    for minutes in (1, 2, 5, 10, 15, 20, 30, 60, 120, 240):
        if span_s / (60 * minutes) <= DENSITY_BINS * 1.5:
            return 60.0 * minutes
    return span_s / DENSITY_BINS


def daily_availability(
    outages: Sequence[tuple[float, float]], t0: float, t1: float
) -> list[tuple[float, float, float]]:
    """(start, end, availability) for each UTC day the window touches (clipped to the window)."""
    day = 86_400.0
    rows = []
    a = t0
    while a < t1:
        b = min(t1, (np.floor(a / day) + 1) * day)
        rows.append((a, b, 1.0 - float(down_fraction(outages, np.array([a, b]))[0])))
        a = b
    return rows


def plot_rtt(
    times: Sequence[float] | np.ndarray,
    rtt_ms: Sequence[float] | np.ndarray,
    outages: Sequence[tuple[float, float]],
    slot_interval_s: float,
    slot_offset_s: float,
    path: str | Path,
    title: str,
) -> Path:
    """Write a PNG of RTT (ms) against UTC time, the axis scaled to the data. Outages are shaded
    one band each, or, when there are too many to read, as the share of each time bin spent down
    (darker = more); a strip below gives the availability of each UTC day. Slot boundaries are
    lines (short windows) or a tick rug along the bottom (longer ones). Returns the path."""
    from matplotlib import colormaps
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    t = np.asarray(times, dtype=float)
    rtt = np.asarray(rtt_ms, dtype=float)
    if t.shape != rtt.shape or t.ndim != 1 or t.size == 0:
        raise ValueError("times and rtt_ms must be 1-D arrays of the same, non-zero length")
    fig = Figure(figsize=(12, 5), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    dense = len(outages) > MAX_OUTAGE_BANDS
    if dense:
        ax, density, strip = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [6, 2.2, 1]})
    else:
        ax, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [9, 1]})
    x = _dates(t)
    ax.plot(x, rtt, color=RTT_COLOUR[1], linewidth=1.0, label=f"RTT ({RTT_COLOUR[0]})")
    ax.set_ylim(*rtt_limits(rtt))
    t0, t1 = float(t[0]), float(t[-1])
    outage_handle = None
    if not dense:
        for a, b in outages:
            ax.axvspan(*_dates(np.array([a, b])), color=OUTAGE_COLOUR[1], alpha=0.25, linewidth=0)
        if len(outages):
            outage_handle = Patch(
                color=OUTAGE_COLOUR[1], alpha=0.25, label=f"outage ({OUTAGE_COLOUR[0]} band)"
            )
    else:
        # One band per outage would paint the whole day; the share of each bin spent down, as bars
        # under the RTT, keeps both readable.
        width = _nice_bin(t1 - t0)
        edges = np.append(np.arange(t0, t1, width), t1)
        share = down_fraction(outages, edges)
        left = _dates(edges[:-1])
        density.bar(left, 100 * share, width=_dates(edges[1:]) - left, align="edge",
                    color=OUTAGE_COLOUR[1], alpha=0.75, linewidth=0,
                    label=f"time down per {width / 60:g} min ({OUTAGE_COLOUR[0]} bars)")  # fmt: skip
        density.set_ylim(0, 100)
        density.set_yticks([0, 50, 100])
        density.set_ylabel("down %", fontsize=10)
        density.grid(True, axis="y", alpha=0.3)
        density.legend(loc="upper right", fontsize=8, framealpha=0.9)
        density.text(
            0.005, 0.92, f"{len(outages)} outages", transform=density.transAxes, fontsize=8, va="top"
        )
    first = slot_offset_s + np.ceil((t0 - slot_offset_s) / slot_interval_s) * slot_interval_s
    starts = np.arange(first, t1 + 1e-9, slot_interval_s)
    if 0 < starts.size <= MAX_SLOT_LINES:
        for k, s in enumerate(_dates(starts)):
            ax.axvline(s, color=SLOT_COLOUR[1], linewidth=0.6, linestyle=":",
                       label=f"slot start, every {slot_interval_s:g} s ({SLOT_COLOUR[0]} dotted)" if k == 0 else None)  # fmt: skip
    elif starts.size <= MAX_SLOT_RUG:
        ax.plot(_dates(starts), np.zeros(starts.size), linestyle="none", marker="|", markersize=6,
                color=SLOT_COLOUR[1], transform=ax.get_xaxis_transform(),
                label=f"slot starts, every {slot_interval_s:g} s ({SLOT_COLOUR[0]} ticks)")  # fmt: skip
    else:
        ax.text(0.99, 0.02, f"{starts.size} slots of {slot_interval_s:g} s (too dense to draw)",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=9, color="0.4")  # fmt: skip
    ax.set_title(title, fontsize=14)
    ax.set_ylabel("RTT (ms)", fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0)
    handles, labels = ax.get_legend_handles_labels()
    if outage_handle is not None:
        handles.append(outage_handle)
    ax.legend(handles=handles, loc="upper right", fontsize=9, framealpha=0.9)

    # The availability strip: one segment per UTC day, green (all up) to red (all down).
    colours = colormaps["RdYlGn"]
    for a, b, availability in daily_availability(outages, t0, t1):
        da, db = _dates(np.array([a, b]))
        strip.axvspan(da, db, color=colours(availability), linewidth=0)
        if a > t0:
            strip.axvline(da, color="white", linewidth=2)  # between days
        label = f"{dt.datetime.fromtimestamp(a, dt.UTC):%Y-%m-%d}: {100 * availability:.1f} % up"
        strip.text((da + db) / 2, 0.5, label, ha="center", va="center", fontsize=9,
                   transform=strip.get_xaxis_transform(), clip_on=True)  # fmt: skip
    strip.set_yticks([])
    strip.set_ylabel("UTC day", fontsize=9, rotation=0, ha="right", va="center")
    span = t1 - t0
    strip.set_xlabel(
        f"time (UTC), {dt.datetime.fromtimestamp(t0, dt.UTC):%Y-%m-%d %H:%M:%S} + {span / 3600:.2f} h",
        fontsize=12,
    )
    locator, fmt = _time_ticks(span)
    strip.xaxis.set_major_locator(locator)
    strip.xaxis.set_major_formatter(mdates.DateFormatter(fmt))
    strip.tick_params(labelsize=10)
    strip.margins(x=0)
    out = Path(path)
    fig.savefig(out, format="png")
    return out


__all__ = [
    "plot_rtt",
    "rtt_limits",
    "down_fraction",
    "daily_availability",
    "RTT_COLOUR",
    "OUTAGE_COLOUR",
    "SLOT_COLOUR",
]
