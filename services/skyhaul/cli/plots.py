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


def plot_rtt(
    times: Sequence[float] | np.ndarray,
    rtt_ms: Sequence[float] | np.ndarray,
    outages: Sequence[tuple[float, float]],
    slot_interval_s: float,
    slot_offset_s: float,
    path: str | Path,
    title: str,
) -> Path:
    """Write a PNG of RTT (ms) against UTC time: outages shaded, slot boundaries drawn as lines
    (short windows) or a tick rug along the bottom (longer ones). Returns the path."""
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.asarray(times, dtype=float)
    rtt = np.asarray(rtt_ms, dtype=float)
    if t.shape != rtt.shape or t.ndim != 1 or t.size == 0:
        raise ValueError("times and rtt_ms must be 1-D arrays of the same, non-zero length")
    fig = Figure(figsize=(12, 5), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = _dates(t)
    ax.plot(x, rtt, color="#1f5fa8", linewidth=1.2, label="RTT")
    finite = rtt[np.isfinite(rtt)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = max(0.5, 0.08 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), hi + pad)
    for k, (a, b) in enumerate(outages):
        ax.axvspan(*_dates(np.array([a, b])), color="#d62728", alpha=0.22, linewidth=0,
                   label="outage" if k == 0 else None)  # fmt: skip
    t0, t1 = float(t[0]), float(t[-1])
    first = slot_offset_s + np.ceil((t0 - slot_offset_s) / slot_interval_s) * slot_interval_s
    starts = np.arange(first, t1 + 1e-9, slot_interval_s)
    if 0 < starts.size <= MAX_SLOT_LINES:
        for k, s in enumerate(_dates(starts)):
            ax.axvline(s, color="0.55", linewidth=0.6, linestyle=":",
                       label=f"slot start (every {slot_interval_s:g} s)" if k == 0 else None)  # fmt: skip
    elif starts.size <= MAX_SLOT_RUG:
        ax.plot(_dates(starts), np.zeros(starts.size), linestyle="none", marker="|", markersize=6,
                color="0.45", transform=ax.get_xaxis_transform(),
                label=f"slot starts (every {slot_interval_s:g} s)")  # fmt: skip
    else:
        ax.text(0.99, 0.02, f"{starts.size} slots of {slot_interval_s:g} s (too dense to draw)",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=9, color="0.4")  # fmt: skip
    ax.set_title(title, fontsize=14)
    ax.set_ylabel("RTT (ms)", fontsize=12)
    span = t1 - t0
    ax.set_xlabel(
        f"time (UTC), {dt.datetime.fromtimestamp(t0, dt.UTC):%Y-%m-%d %H:%M:%S} + {span / 3600:.2f} h",
        fontsize=12,
    )
    locator, fmt = _time_ticks(span)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt))
    ax.tick_params(labelsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0)
    ax.legend(loc="upper right", fontsize=10, framealpha=0.9)
    out = Path(path)
    fig.savefig(out, format="png")
    return out


__all__ = ["plot_rtt"]
