"""Summary statistics of a predicted route timeline: availability, RTT percentiles, handovers, outages.

Folds the single-route chunks ``LinkModel.predict_route`` streams, in constant memory, so a 24 h
prediction at 1 s is summarised without keeping its 86 400 samples; ``FleetAccumulator`` does the
same for the multi-route chunks of ``LinkModel.predict`` (one accumulator per route).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from skyhaul.core.timeline import TimelineChunk


@dataclass
class TimelineSummary:
    """One route's timeline over [t_start, t_end): RTT in ms, outages as [start, end) intervals."""

    t_start_unix: float
    t_end_unix: float
    samples: int
    available_samples: int
    availability: float
    rtt_ms_min: float
    rtt_ms_p50: float
    rtt_ms_p95: float
    rtt_ms_max: float
    handovers: int
    stall_s: float
    outages: list[tuple[float, float]] = field(default_factory=list)

    @property
    def longest_outage_s(self) -> float:
        return max((b - a for a, b in self.outages), default=0.0)

    @property
    def outage_s(self) -> float:
        return sum(b - a for a, b in self.outages)


class TimelineAccumulator:
    """Folds 1-D timeline chunks into a summary in constant memory.

    Percentiles come from a fixed histogram (``bin_ms`` wide, up to ``max_ms``; beyond lands in the
    last bin), so p50/p95 are exact to half a bin. Only the bins between the lowest and highest RTT
    seen are stored (a route's RTT spans tens of ms: kilobytes, where all bins would take 1.6 MB),
    so a fleet of accumulators stays small.
    """

    def __init__(
        self, step_s: float, handover_stall_ms: float = 0.0, bin_ms: float = 0.01, max_ms: float = 2000.0
    ):
        self.step_s = float(step_s)
        self.stall_s = handover_stall_ms / 1e3
        self.bin_ms = bin_ms
        self._bins = int(np.ceil(max_ms / bin_ms)) + 1
        self._hist = np.zeros(0, dtype=np.int64)  # counts of bins _hist_lo, _hist_lo + 1, ...
        self._hist_lo = 0
        self.samples = 0
        self.available = 0
        self.rtt_min = np.inf
        self.rtt_max = -np.inf
        self.handovers = 0
        self.outages: list[tuple[float, float]] = []
        self._open_outage: float | None = None
        self.t_start: float | None = None
        self.t_end: float | None = None

    def add(self, chunk: TimelineChunk) -> TimelineChunk:
        t, rtt = chunk.t_unix, chunk.rtt_ms
        if rtt.ndim != 1:
            raise ValueError("TimelineAccumulator takes single-route chunks (use chunk.route(p))")
        if t.size == 0:
            return chunk
        if self.t_start is None:
            self.t_start = float(t[0])
        self.t_end = float(t[-1]) + self.step_s
        ok = np.isfinite(rtt)
        self.samples += t.size
        self.available += int(ok.sum())
        if ok.any():
            v = rtt[ok]
            self.rtt_min = min(self.rtt_min, float(v.min()))
            self.rtt_max = max(self.rtt_max, float(v.max()))
            bins = np.minimum((v / self.bin_ms).astype(np.int64), self._bins - 1)
            self._count(bins)
        self.handovers += int(np.count_nonzero(chunk.handover))
        # Outage intervals: [first sample without a route, first sample with one again).
        change = np.flatnonzero(np.diff(np.concatenate([[not self._is_open], ok]).astype(np.int8)))
        for i in change:
            if ok[i]:  # came back
                self.outages.append((self._open_outage, float(t[i])))
                self._open_outage = None
            else:
                self._open_outage = float(t[i])
        return chunk

    def _count(self, bins: np.ndarray) -> None:
        low, high = int(bins.min()), int(bins.max())
        if self._hist.size == 0:
            self._hist_lo = low
            self._hist = np.zeros(high - low + 1, dtype=np.int64)
        elif low < self._hist_lo or high >= self._hist_lo + self._hist.size:
            new_lo = min(low, self._hist_lo)
            grown = np.zeros(max(high, self._hist_lo + self._hist.size - 1) - new_lo + 1, dtype=np.int64)
            grown[self._hist_lo - new_lo : self._hist_lo - new_lo + self._hist.size] = self._hist
            self._hist, self._hist_lo = grown, new_lo
        self._hist += np.bincount(bins - self._hist_lo, minlength=self._hist.size)

    @property
    def _is_open(self) -> bool:
        return self._open_outage is not None

    def _percentile(self, q: float) -> float:
        total = self._hist.sum()
        if total == 0:
            return float("nan")
        k = self._hist_lo + int(np.searchsorted(np.cumsum(self._hist), q * total, side="left"))
        return (k + 0.5) * self.bin_ms

    def summary(self) -> TimelineSummary:
        outages = list(self.outages)
        if self._open_outage is not None:
            outages.append((self._open_outage, self.t_end))
        any_rtt = self.available > 0
        return TimelineSummary(
            t_start_unix=self.t_start if self.t_start is not None else float("nan"),
            t_end_unix=self.t_end if self.t_end is not None else float("nan"),
            samples=self.samples,
            available_samples=self.available,
            availability=self.available / self.samples if self.samples else float("nan"),
            rtt_ms_min=self.rtt_min if any_rtt else float("nan"),
            rtt_ms_p50=self._percentile(0.5),
            rtt_ms_p95=self._percentile(0.95),
            rtt_ms_max=self.rtt_max if any_rtt else float("nan"),
            handovers=self.handovers,
            stall_s=self.handovers * self.stall_s,
            outages=outages,
        )


class FleetAccumulator:
    """Folds multi-route chunks (``LinkModel.predict`` over P routes) into P summaries, in memory
    that does not grow with the window: one ``TimelineAccumulator`` per route."""

    def __init__(self, routes: int, step_s: float, handover_stall_ms: float = 0.0) -> None:
        if routes < 1:
            raise ValueError(f"a fleet needs at least one route, got {routes}")
        self.routes = [TimelineAccumulator(step_s, handover_stall_ms) for _ in range(routes)]

    def add(self, chunk: TimelineChunk) -> TimelineChunk:
        if chunk.rtt_ms.ndim != 2 or chunk.rtt_ms.shape[1] != len(self.routes):
            raise ValueError(
                f"FleetAccumulator of {len(self.routes)} routes got a chunk shaped {chunk.rtt_ms.shape}"
            )
        for p, accumulator in enumerate(self.routes):
            accumulator.add(chunk.route(p))
        return chunk

    @property
    def samples(self) -> int:
        """Samples folded per route."""
        return self.routes[0].samples

    def summaries(self) -> list[TimelineSummary]:
        return [accumulator.summary() for accumulator in self.routes]


def summarize(
    chunks: Iterable[TimelineChunk], step_s: float, handover_stall_ms: float = 0.0
) -> TimelineSummary:
    """Consume single-route chunks and return their summary."""
    acc = TimelineAccumulator(step_s, handover_stall_ms)
    for chunk in chunks:
        acc.add(chunk)
    return acc.summary()
