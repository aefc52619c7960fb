"""`skyhaul report RUN_DIR`: the summary table and a PNG a person would put on a slide."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from skyhaul.cli.common import EXIT_OK, EXIT_USAGE, JSON_HELP, add_formatter, fail, print_json
from skyhaul.cli.plots import OUTAGE_COLOUR, RTT_COLOUR, SLOT_COLOUR, rtt_limits
from skyhaul.cli.record import (
    REPORT_FILE,
    SUMMARY_FILE,
    RunData,
    Summary,
    outage_intervals,
    summarize,
    summary_rows,
)


def register(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="summary and PNG report of a run directory")
    add_formatter(
        report,
        """examples:
  skyhaul report runs/demo-20261123-231500
  skyhaul report runs/demo-20261123-231500 --json
""",
    )
    report.add_argument("run_dir", help="a directory written by `skyhaul demo`")
    report.add_argument("--output", help=f"PNG path (default RUN_DIR/{REPORT_FILE})")
    report.add_argument("--json", action="store_true", help=JSON_HELP)
    report.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    try:
        data = RunData.load(run_dir)
    except FileNotFoundError as exc:
        return fail(str(exc), EXIT_USAGE)
    summary = summarize(data)
    png = Path(args.output) if args.output else run_dir / REPORT_FILE
    write_report(data, summary, png)
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary.as_dict(), indent=2))
    if args.json:
        print_json({**summary.as_dict(), "report": str(png)})
    else:
        print_summary(summary)
        print(f"report: {png}")
    return EXIT_OK


def print_summary(summary: Summary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Skyhaul run summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for name, value in summary_rows(summary):
        table.add_row(name, value)
    Console().print(table)


def write_report(data: RunData, summary: Summary, path: Path) -> Path:
    """RTT over time with outages shaded and slot boundaries, and backlog over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start, end = data.meta["start"], data.meta["end"]
    minutes = lambda t: (np.asarray(t, dtype=float) - start) / 60.0  # noqa: E731 - local axis transform
    fig, (ax_rtt, ax_backlog) = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True, constrained_layout=True)
    title = f"{summary.scenario}: {summary.data_center} — availability {100 * summary.availability:.0f} %, {summary.outages} outages, {summary.handovers} handovers"
    fig.suptitle(title, fontsize=13)

    if data.rtt:
        t, rtt = np.array(data.rtt, dtype=float).T
        order = np.argsort(t, kind="stable")
        rtt = rtt[order]
        ax_rtt.plot(minutes(t[order]), rtt, lw=1.0, color=RTT_COLOUR[1], label="RTT (the link model)")
        ax_rtt.set_ylim(*rtt_limits(rtt))  # the data's range: a 1 ms swing in a pass stays visible
    for a, b in outage_intervals(data.link, start, end):
        ax_rtt.axvspan(minutes(a), minutes(b), color=OUTAGE_COLOUR[1], alpha=0.18, lw=0)
    interval, offset = data.meta.get("slot_interval_s", 15.0), data.meta.get("slot_offset_s", 12.0)
    caption = f"Round-trip time over the route ({RTT_COLOUR[0]}); {OUTAGE_COLOUR[0]} bands = outages"
    if (end - start) / interval <= 240:  # draw slot boundaries while they stay readable
        first = np.ceil((start - offset) / interval) * interval + offset
        for s in np.arange(first, end, interval):
            ax_rtt.axvline(minutes(s), color=SLOT_COLOUR[1], lw=0.5, linestyle=":", zorder=0)
        caption += f"; {SLOT_COLOUR[0]} dotted lines = {interval:g} s scheduler slots"
    ax_rtt.set_ylabel("RTT (ms)")
    ax_rtt.set_title(caption, fontsize=10)
    ax_rtt.grid(alpha=0.3)

    if data.status:
        ts = np.array([s["t"] for s in data.status], dtype=float)
        backlog = np.array([s["backlog_bytes"] for s in data.status], dtype=float) / 2**20
        synced = np.array([s["bytes_synced"] for s in data.status], dtype=float) / 2**20
        ax_backlog.fill_between(
            minutes(ts),
            backlog,
            step="post",
            color="#ff7f0e",
            alpha=0.5,
            label="backlog at the data center (orange)",
        )
        ax_synced = ax_backlog.twinx()
        ax_synced.plot(
            minutes(ts), synced, color="#2ca02c", lw=1.5, label="synced to the region, cumulative (green)"
        )
        ax_synced.set_ylabel("synced (MiB)")
        lines = ax_backlog.get_legend_handles_labels()[0] + ax_synced.get_legend_handles_labels()[0]
        ax_backlog.legend(lines, [h.get_label() for h in lines], loc="upper left")
    for a, b in outage_intervals(data.link, start, end):
        ax_backlog.axvspan(minutes(a), minutes(b), color=OUTAGE_COLOUR[1], alpha=0.12, lw=0)
    ax_backlog.set_ylabel("backlog (MiB)")
    ax_backlog.set_xlabel("emulated minutes since start")
    ax_backlog.grid(alpha=0.3)
    ax_backlog.set_xlim(0, minutes(end))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
