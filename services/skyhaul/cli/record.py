"""What a run recorded, and the summary a person reads: shared by `skyhaul demo` and `skyhaul report`.

A run directory holds `record.jsonl`: one JSON object a line, written as things happen, so a
report can be rebuilt after the run (or after a crash) without the services.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RECORD_FILE = "record.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.png"


class RunRecorder:
    """Appends rows to record.jsonl (flushed per row: a run killed midway still has its record)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RECORD_FILE
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, kind: str, **values: Any) -> None:
        self._file.write(json.dumps({"kind": kind, **values}, default=float) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class RunData:
    """The record of one run, parsed into arrays."""

    meta: dict[str, Any] = field(default_factory=dict)
    link: list[tuple[float, bool]] = field(default_factory=list)  # (emulated t, up), snapshots included
    link_events: list[tuple[float, bool]] = field(default_factory=list)  # LinkStatusChanged events only
    handovers: list[tuple[float, int, int]] = field(default_factory=list)  # (t, from, to)
    delay: list[tuple[float, float]] = field(default_factory=list)  # (t, one-way ms; NaN = down)
    rtt: list[tuple[float, float]] = field(default_factory=list)  # (t, the link model's RTT ms; NaN = down)
    status: list[dict[str, Any]] = field(default_factory=list)  # polled mdc/terminal status
    objects: list[dict[str, Any]] = field(default_factory=list)  # final object list
    sequences: list[int] = field(default_factory=list)  # of every link event seen, any data center

    @classmethod
    def load(cls, run_dir: Path) -> RunData:
        data = cls()
        path = run_dir / RECORD_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory of `skyhaul demo`?")
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            kind = row.pop("kind")
            if kind == "meta":
                data.meta.update(row)
            elif kind == "link":
                data.link.append((row["t"], row["up"]))
                if not row.get("snapshot"):
                    data.link_events.append((row["t"], row["up"]))
            elif kind == "handover":
                data.handovers.append((row["t"], row["from_satellite"], row["to_satellite"]))
            elif kind == "route":
                start, step = row["samples_start"], row["samples_step"]
                data.delay.extend((start + k * step, ms) for k, ms in enumerate(row["delay_samples_ms"]))
                # Records before the link model carry no RTT: the floor, twice the one-way delay.
                rtt = row.get("rtt_samples_ms") or [2.0 * ms for ms in row["delay_samples_ms"]]
                data.rtt.extend((start + k * step, ms) for k, ms in enumerate(rtt))
            elif kind == "seq":
                data.sequences.append(row["sequence"])
            elif kind == "status":
                data.status.append(row)
            elif kind == "objects":
                data.objects = row["objects"]
        return data


def count_handovers(handovers: list[tuple[float, int, int]], start: float, end: float) -> int:
    """Satellite changes within [start, end] (not a gain or loss of a satellite: that is an outage)."""
    return sum(1 for t, a, b in handovers if start <= t <= end and a >= 0 and b >= 0 and a != b)


def outage_intervals(link: list[tuple[float, bool]], start: float, end: float) -> list[tuple[float, float]]:
    """Down intervals within [start, end] from the ordered link up/down transitions."""
    intervals, down_since = [], None
    for t, up in link:
        if not up and down_since is None:
            down_since = max(t, start)
        elif up and down_since is not None:
            if t > start:
                intervals.append((down_since, min(t, end)))
            down_since = None
    if down_since is not None and down_since < end:
        intervals.append((down_since, end))
    return [(a, b) for a, b in intervals if b > a]


@dataclass
class Summary:
    scenario: str
    data_center: str
    emulated_seconds: float
    availability: float
    rtt_p50_ms: float | None
    rtt_p95_ms: float | None
    handovers: int
    outages: int
    link_down_events: int
    started_in_outage: bool
    longest_outage_s: float
    objects_put: int
    objects_synced: int
    bytes_synced: int
    bytes_synced_by_objects: int
    max_backlog_bytes: int
    max_backlog_objects: int
    data_age_p50_s: float | None
    data_age_max_s: float | None
    events_seen: int
    sequence_gaps: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(data: RunData) -> Summary:
    start, end = data.meta["start"], data.meta["end"]
    span = max(end - start, 1e-9)
    outages = outage_intervals(data.link, start, end)
    down_time = sum(b - a for a, b in outages)
    rtts = np.array([ms for t, ms in data.rtt if start <= t <= end], dtype=float)
    rtt = rtts[np.isfinite(rtts)]
    synced = [o for o in data.objects if o["state"] == "synced"]
    ages = np.array([o["synced_at"] - o["created_at"] for o in synced], dtype=float)
    last = data.status[-1] if data.status else {}
    seqs = sorted(set(data.sequences))
    gaps = sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1) if seqs else 0
    return Summary(
        scenario=data.meta.get("scenario", ""),
        data_center=data.meta.get("data_center", ""),
        emulated_seconds=end - start,
        availability=1.0 - down_time / span,
        rtt_p50_ms=float(np.percentile(rtt, 50)) if rtt.size else None,
        rtt_p95_ms=float(np.percentile(rtt, 95)) if rtt.size else None,
        handovers=count_handovers(data.handovers, start, end),
        outages=len(outages),
        link_down_events=sum(1 for t, up in data.link_events if not up and start <= t <= end),
        started_in_outage=bool(outages) and outages[0][0] <= start,
        longest_outage_s=max((b - a for a, b in outages), default=0.0),
        objects_put=int(last.get("objects_put", 0)),
        objects_synced=len(synced),
        bytes_synced=int(last.get("bytes_synced", 0)),
        bytes_synced_by_objects=sum(int(o["size"]) for o in synced),
        max_backlog_bytes=max((int(s["backlog_bytes"]) for s in data.status), default=0),
        max_backlog_objects=max((int(s["backlog_objects"]) for s in data.status), default=0),
        data_age_p50_s=float(np.percentile(ages, 50)) if ages.size else None,
        data_age_max_s=float(ages.max()) if ages.size else None,
        events_seen=len(seqs),
        sequence_gaps=gaps,
    )


def summary_rows(s: Summary) -> list[tuple[str, str]]:
    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f} ms"

    def secs(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.0f} s"

    return [
        ("scenario / data center", f"{s.scenario} / {s.data_center}"),
        ("emulated time", f"{s.emulated_seconds / 60:.1f} min"),
        ("availability", f"{100 * s.availability:.1f} %"),
        ("RTT p50 / p95", f"{ms(s.rtt_p50_ms)} / {ms(s.rtt_p95_ms)}"),
        ("handovers", str(s.handovers)),
        ("outages (longest)", f"{s.outages} ({s.longest_outage_s:.0f} s)"),
        ("objects synced / put", f"{s.objects_synced} / {s.objects_put}"),
        ("bytes synced", f"{s.bytes_synced / 2**20:.1f} MiB"),
        ("max backlog", f"{s.max_backlog_bytes / 2**20:.1f} MiB in {s.max_backlog_objects} objects"),
        ("data age p50 / max (emulated)", f"{secs(s.data_age_p50_s)} / {secs(s.data_age_max_s)}"),
        ("link events seen (gaps)", f"{s.events_seen} ({s.sequence_gaps})"),
    ]
