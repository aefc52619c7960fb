"""Recorded latency traces: parsers (from text, no I/O) and the statistics the link model is judged by.

Formats (all give a ``Trace``: probe times, RTT in ms with NaN for a lost probe):

- ``ping -D`` logs (``[unix] 64 bytes from ...: icmp_seq=N ... time=X ms``). ``-D`` stamps the line
  when the reply arrives; the probe was sent ``time`` earlier, and that send time is what we keep.
  Lost probes are the gaps in ``icmp_seq`` (wrapping at 65 536); their send times are interpolated
  from the received probes' sequence numbers.
- CSV ``unix_time_s,rtt_ms`` with a header; an empty ``rtt_ms`` is a lost probe.
- Raw CSV ``unix_time_ns,rtt_ms`` without a header (the LEOLiveStreaming shaper files): replies
  only, so loss cannot be measured from them (``loss_known`` is False).
- Dish ``get_history``/status exports (CSV with ``pop_ping_latency_ms`` and, when present,
  ``pop_ping_drop_rate``; time in ``unix_time_s`` or a naive ``timestamp`` string read as UTC).

Statistics (slots start at ``offset_s`` past a multiple of ``interval_s``: :12/:27/:42/:57):

- ``rtt_quantiles``; ``per_slot_stat``: the minimum or median RTT of each well-covered slot;
  ``boundary_steps``: the absolute change of that per-slot statistic across each boundary between
  two consecutive covered slots; ``loss_by_position``: loss rate by position in the slot;
  ``spike_profile``: median RTT above the slot's own median by time since the slot start.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np


class TraceFormatError(ValueError):
    """The text is not a trace of a known format; the message names the line."""


@dataclass(frozen=True, eq=False)
class Trace:
    """Probe send times (unix s, increasing) and RTTs (ms, NaN = lost)."""

    t_unix: np.ndarray
    rtt_ms: np.ndarray
    kind: str  # "ping", "csv", "raw-ns", "dish"
    loss_known: bool = True
    # Dish exports report a drop rate per sample (fraction of its pings lost in that second).
    drop_rate: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = np.asarray(self.t_unix, dtype=float)
        r = np.asarray(self.rtt_ms, dtype=float)
        if t.shape != r.shape or t.ndim != 1:
            raise TraceFormatError(f"trace times ({t.shape}) and RTTs ({r.shape}) must be 1-D and equal")
        if t.size == 0:
            raise TraceFormatError("the trace has no samples")
        order = np.argsort(t, kind="stable")
        object.__setattr__(self, "t_unix", t[order])
        object.__setattr__(self, "rtt_ms", r[order])
        if self.drop_rate is not None:
            object.__setattr__(self, "drop_rate", np.asarray(self.drop_rate, dtype=float)[order])

    @property
    def received(self) -> np.ndarray:
        return np.isfinite(self.rtt_ms)

    @property
    def loss_rate(self) -> float:
        """Fraction of probes lost (dish exports: mean drop rate); NaN when the format cannot tell."""
        if self.drop_rate is not None:
            return float(np.nanmean(self.drop_rate))
        if not self.loss_known:
            return float("nan")
        return float(1.0 - self.received.mean())

    @property
    def duration_s(self) -> float:
        return float(self.t_unix[-1] - self.t_unix[0])

    def window(self, t0: float, t1: float) -> Trace:
        """The samples with t0 <= t < t1."""
        keep = (self.t_unix >= t0) & (self.t_unix < t1)
        drop = None if self.drop_rate is None else self.drop_rate[keep]
        return Trace(self.t_unix[keep], self.rtt_ms[keep], self.kind, self.loss_known, drop)


# ---------------------------------------------------------------------------------------- parsers

_PING_REPLY = re.compile(r"^\[(?P<t>\d+(?:\.\d+)?)\].*?icmp_seq=(?P<seq>\d+).*?time=(?P<rtt>[\d.]+)\s*ms")


def parse_ping_d(text: str) -> Trace:
    """A ``ping -D`` log. Duplicate replies (DUP!) count once; other lines (headers, errors) are skipped."""
    seqs: list[int] = []
    recv: list[float] = []
    rtts: list[float] = []
    for line in text.splitlines():
        match = _PING_REPLY.match(line.strip())
        if match is None or "DUP!" in line:
            continue
        seqs.append(int(match["seq"]))
        recv.append(float(match["t"]))
        rtts.append(float(match["rtt"]))
    if len(seqs) < 2:
        raise TraceFormatError("no ping -D reply lines ('[unix time] ... icmp_seq=N ... time=X ms') found")
    seq = np.array(seqs, dtype=np.int64)
    # Unwrap the 16-bit sequence counter, then keep the first reply of each sequence number.
    steps = np.diff(seq)
    seq = seq[0] + np.concatenate([[0], np.cumsum(np.where(steps < -32768, steps + 65536, steps))])
    seq, first = np.unique(seq, return_index=True)
    rtt = np.array(rtts)[first]
    sent = np.array(recv)[first] - rtt / 1e3
    every = np.arange(seq[0], seq[-1] + 1)
    t_all = np.interp(every, seq, sent)
    rtt_all = np.full(every.size, np.nan)
    rtt_all[seq - seq[0]] = rtt
    return Trace(t_all, rtt_all, "ping")


def _rows(text: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]


def _float(cell: str, line: int, what: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise TraceFormatError(f"line {line}: {what} {cell!r} is not a number") from None
    if not np.isfinite(value):
        raise TraceFormatError(f"line {line}: {what} {cell!r} is not finite")
    return value


def parse_rtt_csv(text: str) -> Trace:
    """CSV with header ``unix_time_s,rtt_ms``; an empty RTT is a lost probe."""
    rows = _rows(text)
    if not rows or [c.strip() for c in rows[0][:2]] != ["unix_time_s", "rtt_ms"]:
        raise TraceFormatError("line 1: expected the header 'unix_time_s,rtt_ms'")
    t, r = [], []
    for k, row in enumerate(rows[1:], start=2):
        if len(row) < 2:
            raise TraceFormatError(f"line {k}: expected 2 columns, got {len(row)}")
        t.append(_float(row[0], k, "unix_time_s"))
        r.append(np.nan if not row[1].strip() else _float(row[1], k, "rtt_ms"))
    return Trace(np.array(t), np.array(r), "csv")


def parse_raw_ns_csv(text: str) -> Trace:
    """Header-less ``unix_time_ns,rtt_ms`` (replies only: loss unknown)."""
    rows = _rows(text)
    if not rows:
        raise TraceFormatError("the file is empty")
    try:
        data = np.array([[float(a), float(b)] for a, b, *_ in rows])
    except ValueError:
        raise TraceFormatError("expected header-less rows 'unix_time_ns,rtt_ms'") from None
    if data[0, 0] < 1e17:
        raise TraceFormatError(f"line 1: time {rows[0][0]} does not look like unix nanoseconds")
    # Integer nanoseconds exceed float precision by a few hundred ns; irrelevant at ms scale.
    return Trace(data[:, 0] / 1e9, data[:, 1], "raw-ns", loss_known=False)


def _timestamp(cell: str, line: int) -> float:
    try:
        return float(cell)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(cell.strip())
    except ValueError:
        raise TraceFormatError(
            f"line {line}: timestamp {cell!r} is neither unix seconds nor ISO 8601"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def parse_dish_export(text: str) -> Trace:
    """Dish get_history/status CSV: ``pop_ping_latency_ms`` (empty = no reply that second), optional
    ``pop_ping_drop_rate``, and a ``unix_time_s`` or ``timestamp`` column (naive times read as UTC:
    a whole-hour zone offset does not move the :12/:27/:42/:57 phase)."""
    rows = _rows(text)
    if not rows:
        raise TraceFormatError("the file is empty")
    header = [c.strip() for c in rows[0]]
    if "pop_ping_latency_ms" not in header:
        raise TraceFormatError("line 1: no 'pop_ping_latency_ms' column in the header")
    time_col = next((c for c in ("unix_time_s", "timestamp", "time") if c in header), None)
    if time_col is None:
        raise TraceFormatError("line 1: no time column (unix_time_s or timestamp)")
    ti, li = header.index(time_col), header.index("pop_ping_latency_ms")
    di = header.index("pop_ping_drop_rate") if "pop_ping_drop_rate" in header else None
    t, r, d = [], [], []
    for k, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise TraceFormatError(f"line {k}: expected {len(header)} columns, got {len(row)}")
        t.append(_timestamp(row[ti], k))
        r.append(np.nan if not row[li].strip() else _float(row[li], k, "pop_ping_latency_ms"))
        if di is not None:
            d.append(np.nan if not row[di].strip() else _float(row[di], k, "pop_ping_drop_rate"))
    drop = np.array(d) if di is not None else None
    return Trace(np.array(t), np.array(r), "dish", loss_known=di is not None, drop_rate=drop)


def parse_trace(text: str) -> Trace:
    """Any of the formats above, recognised from the content."""
    head = text.lstrip()[:4096]
    first_line = head.splitlines()[0] if head else ""
    if _PING_REPLY.search(head.replace("\n", "\n")) or head.startswith("PING") or "icmp_seq=" in head:
        return parse_ping_d(text)
    if "pop_ping_latency_ms" in first_line:
        return parse_dish_export(text)
    if first_line.replace(" ", "").startswith("unix_time_s,rtt_ms"):
        return parse_rtt_csv(text)
    if re.match(r"^\d{15,}(\.\d*)?,", first_line):
        return parse_raw_ns_csv(text)
    raise TraceFormatError(
        "unrecognised trace: expected a ping -D log, CSV 'unix_time_s,rtt_ms', raw 'unix_time_ns,rtt_ms' "
        "or a dish export with pop_ping_latency_ms"
    )


# ------------------------------------------------------------------------------------ statistics

SLOT_INTERVAL_S = 15.0
SLOT_OFFSET_S = 12.0


def slot_position(t_unix, interval_s: float = SLOT_INTERVAL_S, offset_s: float = SLOT_OFFSET_S):
    """(slot index, seconds since the slot start) of times t; slots start at offset + k·interval."""
    shifted = np.asarray(t_unix, dtype=float) - offset_s
    index = np.floor(shifted / interval_s).astype(np.int64)
    return index, shifted - index * interval_s


def rtt_quantiles(rtt_ms, quantiles=(0.05, 0.25, 0.5, 0.75, 0.95, 0.99)) -> np.ndarray:
    """Quantiles of the received RTTs."""
    rtt = np.asarray(rtt_ms, dtype=float)
    rtt = rtt[np.isfinite(rtt)]
    if rtt.size == 0:
        return np.full(len(quantiles), np.nan)
    return np.quantile(rtt, quantiles)


def per_slot_stat(
    t_unix,
    rtt_ms,
    stat: str = "min",
    min_coverage: float = 0.8,
    interval_s: float = SLOT_INTERVAL_S,
    offset_s: float = SLOT_OFFSET_S,
) -> tuple[np.ndarray, np.ndarray]:
    """(slot indices, per-slot minimum or median RTT) for slots whose received samples span at least
    ``min_coverage`` of the slot (a slot cut by the trace's start or end would bias its minimum)."""
    if stat not in ("min", "median"):
        raise ValueError(f"stat must be 'min' or 'median', got {stat!r}")
    t = np.asarray(t_unix, dtype=float)
    rtt = np.asarray(rtt_ms, dtype=float)
    ok = np.isfinite(rtt)
    index, pos = slot_position(t[ok], interval_s, offset_s)
    rtt = rtt[ok]
    slots, start = np.unique(index, return_index=True)
    bounds = np.append(start, index.size)
    values = np.full(slots.size, np.nan)
    for k in range(slots.size):
        chunk_pos = pos[bounds[k] : bounds[k + 1]]
        if chunk_pos.max() - chunk_pos.min() < min_coverage * interval_s:
            continue
        chunk = rtt[bounds[k] : bounds[k + 1]]
        values[k] = chunk.min() if stat == "min" else np.median(chunk)
    keep = np.isfinite(values)
    return slots[keep], values[keep]


def boundary_steps(t_unix, rtt_ms, stat: str = "min", **slots) -> np.ndarray:
    """|change| of the per-slot statistic across each boundary between two consecutive covered slots."""
    index, values = per_slot_stat(t_unix, rtt_ms, stat, **slots)
    adjacent = np.diff(index) == 1
    return np.abs(np.diff(values))[adjacent]


def loss_by_position(
    t_unix,
    rtt_ms,
    bin_s: float = 0.5,
    interval_s: float = SLOT_INTERVAL_S,
    offset_s: float = SLOT_OFFSET_S,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin starts in s since the slot start, loss rate per bin, probes per bin)."""
    _, pos = slot_position(t_unix, interval_s, offset_s)
    lost = ~np.isfinite(np.asarray(rtt_ms, dtype=float))
    n_bins = int(np.ceil(interval_s / bin_s - 1e-9))
    which = np.minimum((pos / bin_s).astype(np.int64), n_bins - 1)
    probes = np.bincount(which, minlength=n_bins)
    losses = np.bincount(which, weights=lost.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(probes > 0, losses / np.maximum(probes, 1), np.nan)
    return np.arange(n_bins) * bin_s, rate, probes


def boundary_loss_share(t_unix, rtt_ms, half_width_s: float = 0.5, **slots) -> float:
    """Fraction of lost probes within ±half_width of a slot boundary (NaN without losses)."""
    interval = slots.get("interval_s", SLOT_INTERVAL_S)
    _, pos = slot_position(t_unix, interval, slots.get("offset_s", SLOT_OFFSET_S))
    lost = ~np.isfinite(np.asarray(rtt_ms, dtype=float))
    if not lost.any():
        return float("nan")
    near = (pos < half_width_s) | (pos >= interval - half_width_s)
    return float((near & lost).sum() / lost.sum())


def spike_profile(
    t_unix,
    rtt_ms,
    bin_s: float = 0.05,
    horizon_s: float = 1.0,
    interval_s: float = SLOT_INTERVAL_S,
    offset_s: float = SLOT_OFFSET_S,
) -> tuple[np.ndarray, np.ndarray]:
    """(bin starts, median over slots of RTT minus that slot's median) for the first ``horizon_s``
    seconds after each slot start: the reconfiguration spike and its decay."""
    t = np.asarray(t_unix, dtype=float)
    rtt = np.asarray(rtt_ms, dtype=float)
    ok = np.isfinite(rtt)
    index, pos = slot_position(t[ok], interval_s, offset_s)
    rtt = rtt[ok]
    slots, inverse = np.unique(index, return_inverse=True)
    slot_median = np.array([np.median(rtt[inverse == k]) for k in range(slots.size)])
    excess = rtt - slot_median[inverse]
    n_bins = int(np.ceil(horizon_s / bin_s - 1e-9))
    which = (pos / bin_s).astype(np.int64)
    profile = np.full(n_bins, np.nan)
    for b in range(n_bins):
        sel = excess[which == b]
        if sel.size:
            profile[b] = np.median(sel)
    return np.arange(n_bins) * bin_s, profile


def ks_distance(a, b) -> float:
    """Two-sample Kolmogorov–Smirnov distance (sup of the CDF difference)."""
    from scipy.stats import ks_2samp

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(ks_2samp(a, b).statistic)
