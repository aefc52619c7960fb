"""`skyhaul demo`: run a scenario end to end and show what the satellite backhaul does to the site.

Starts everything locally, lets the data center's synthetic workload run for a stretch of
emulated time while a live view follows the link and the backlog, then drains, summarises and
writes a PNG report. Works without a TTY (plain log lines).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import yaml

from skyhaul.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, JSON_HELP, add_formatter, fail, print_json
from skyhaul.cli.record import (
    REPORT_FILE,
    SUMMARY_FILE,
    RunData,
    RunRecorder,
    Summary,
    count_handovers,
    outage_intervals,
    summarize,
)
from skyhaul.runtime.clients import channel
from skyhaul.runtime.clock import to_unix

DEFAULT_SCENARIO = Path(__file__).resolve().parents[3] / "scenarios" / "azure-mdc-2020.yaml"
POLL_S = 0.5
HEADLESS_EVERY_S = 5.0
DRAIN_TIMEOUT_S = 60.0


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="run a scenario end to end: live view, summary, PNG report")
    add_formatter(
        demo,
        """Runs the whole system locally (Redis and every service), lets the data center's workload run
for --minutes of emulated time at the scenario's speed, drains the backlog, then prints a summary
and writes RUN_DIR/report.png and RUN_DIR/summary.json. Exit code 0 when every object put was
synced intact; 1 otherwise.

examples:
  skyhaul demo                                          the seed story: azure-mdc-2020, 30 min
  skyhaul demo --minutes 10 --speed 30                  shorter and faster
  skyhaul demo --scenario scenarios/starlink-gen1-isl.yaml --json
""",
    )
    demo.add_argument(
        "--scenario", default=str(DEFAULT_SCENARIO), help="scenario YAML (default: azure-mdc-2020)"
    )
    demo.add_argument("--minutes", type=float, default=30.0, help="emulated minutes to run (default 30)")
    demo.add_argument("--speed", type=float, help="override the scenario's speed (emulated s per wall s)")
    demo.add_argument("--run-dir", help="where the record, logs and report go (default runs/demo-<time>)")
    demo.add_argument("--no-live", action="store_true", help="plain log lines even on a TTY")
    demo.add_argument("--json", action="store_true", help=JSON_HELP)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from skyhaul.runtime.launcher import LaunchError
    from skyhaul.runtime.scenario import ScenarioError

    if args.minutes <= 0:
        return fail("--minutes must be > 0", EXIT_USAGE)
    if args.speed is not None and args.speed <= 0:
        return fail("--speed must be > 0", EXIT_USAGE)
    run_dir = Path(args.run_dir or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S"))
    try:
        scenario_path = prepare_scenario(Path(args.scenario), run_dir, args.speed)
    except (ScenarioError, OSError, yaml.YAMLError) as exc:
        return fail(f"{exc} (nothing was started)", EXIT_USAGE)
    live = sys.stdout.isatty() and not args.no_live and not args.json
    try:
        summary = asyncio.run(
            run_demo(scenario_path, run_dir, args.minutes * 60.0, live=live, quiet=args.json)
        )
    except LaunchError as exc:
        return fail(f"start failed: {exc}")
    if args.json:
        print_json({**summary.as_dict(), "run_dir": str(run_dir), "report": str(run_dir / REPORT_FILE)})
    else:
        from skyhaul.cli.report import print_summary

        print_summary(summary)
        print(f"report: {run_dir / REPORT_FILE}")
        print(f"summary: {run_dir / SUMMARY_FILE}  (logs: {run_dir / 'logs'})")
    intact = (
        summary.objects_synced == summary.objects_put
        and summary.bytes_synced == summary.bytes_synced_by_objects
    )
    return EXIT_OK if intact else EXIT_FAILURE


def prepare_scenario(source: Path, run_dir: Path, speed: float | None) -> Path:
    """Validate the scenario and copy it into the run directory (with the speed override)."""
    from skyhaul.runtime.scenario import load_scenario, read_scenario_file

    load_scenario(source)  # validate before anything starts
    data = read_scenario_file(source)
    if speed is not None:
        data["speed"] = speed
    constellation = data.get("constellation", {})
    if constellation.get("tle_file") and not Path(constellation["tle_file"]).is_absolute():
        constellation["tle_file"] = str((source.resolve().parent / constellation["tle_file"]).resolve())
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / "scenario.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    load_scenario(target)
    return target


class DemoState:
    """The latest values the live view shows. The running outage and handover counts are computed
    from the same rows, by the same functions, as the summary's (record.py), so the two agree."""

    def __init__(self) -> None:
        self.start = 0.0  # the measured window, emulated seconds (the summary's meta start/end)
        self.end = 0.0
        self.t = 0.0
        self.link_up: bool | None = None
        self.satellite = -1
        self.rtt_ms = float("nan")
        self.capacity_up = 0.0
        self.backlog_bytes = 0
        self.backlog_objects = 0
        self.synced_objects = 0
        self.synced_bytes = 0
        self.put_objects = 0
        self.link: list[tuple[float, bool]] = []  # as RunData.link
        self.handover_rows: list[tuple[float, int, int]] = []  # as RunData.handovers
        self.events = 0

    @property
    def outages(self) -> int:
        return len(outage_intervals(self.link, self.start, min(max(self.t, self.start), self.end)))

    @property
    def handovers(self) -> int:
        return count_handovers(self.handover_rows, self.start, self.end)

    def on_link(
        self, recorder: RunRecorder, t: float, up: bool, sequence: int, *, snapshot: bool = False
    ) -> None:
        if snapshot:
            recorder.write("link", t=t, up=up, sequence=sequence, snapshot=True)
        else:
            recorder.write("link", t=t, up=up, sequence=sequence)
        self.link.append((t, up))
        self.link_up = up
        if not up:  # no satellite and no RTT while the link is down
            self.satellite, self.rtt_ms = -1, float("nan")

    def on_handover(
        self, recorder: RunRecorder, t: float, from_satellite: int, to_satellite: int, sequence: int
    ):
        recorder.write(
            "handover", t=t, from_satellite=from_satellite, to_satellite=to_satellite, sequence=sequence
        )
        self.handover_rows.append((t, from_satellite, to_satellite))


async def run_demo(
    scenario_path: Path, run_dir: Path, emulated_seconds: float, *, live: bool, quiet: bool = False
) -> Summary:
    from skyhaul.runtime.launcher import Launcher
    from skyhaul.runtime.scenario import load_scenario

    scenario = load_scenario(scenario_path)
    dc = scenario.data_centers[0]
    launcher = Launcher(str(scenario_path), run_dir)
    endpoints = await asyncio.to_thread(launcher.start)
    recorder = RunRecorder(run_dir)
    try:

        def emulated_now() -> float:
            return endpoints.epoch_unix + (time.time() - endpoints.clock_start) * endpoints.speed

        start = emulated_now()
        end = start + emulated_seconds
        recorder.write(
            "meta",
            scenario=scenario.name,
            data_center=dc.id,
            region=dc.home_region,
            start=start,
            end=end,
            speed=scenario.speed,
            slot_interval_s=scenario.scheduler.slot_interval_s,
            slot_offset_s=scenario.scheduler.slot_offset_s,
        )
        state = DemoState()
        state.start, state.end, state.t = start, end, start
        addresses = {
            "links": endpoints.first("links"),
            "mdc": endpoints.services[next(k for k in endpoints.services if k.startswith("mdc"))],
        }
        from skyhaul.v1 import mdc_pb2_grpc

        watcher = asyncio.create_task(_watch_events(addresses["links"], dc.id, recorder, state))
        async with channel(addresses["mdc"]) as mdc_channel:
            mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(mdc_channel)
            try:
                await _follow(mdc, recorder, state, emulated_now, end, live=live, quiet=quiet)
                await _drain(mdc, recorder, state, emulated_now, quiet=quiet, live=live)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            await _record_objects(mdc, recorder)
    finally:
        recorder.close()
        await asyncio.to_thread(launcher.stop)
    data = RunData.load(run_dir)
    summary = summarize(data)
    from skyhaul.cli.report import write_report

    write_report(data, summary, run_dir / REPORT_FILE)
    import json

    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary.as_dict(), indent=2))
    return summary


async def _watch_events(links_addr: str, dc_id: str, recorder: RunRecorder, state: DemoState) -> None:
    from skyhaul.v1 import links_pb2, links_pb2_grpc

    async with channel(links_addr) as ch:
        stub = links_pb2_grpc.LinkServiceStub(ch)
        request = links_pb2.WatchEventsRequest(include_snapshot=True)
        async for event in stub.WatchEvents(request):
            kind = event.WhichOneof("body")
            t = to_unix(event.emulated_time)
            if kind != "snapshot":
                recorder.write("seq", sequence=event.sequence)
                state.events += 1
            if kind == "snapshot":
                for route in event.snapshot.routes:
                    if route.data_center_id == dc_id:
                        state.on_link(recorder, t, route.available, event.snapshot.sequence, snapshot=True)
                        _route_row(recorder, route, event.snapshot.sequence, state)
            elif kind == "link_status" and event.link_status.data_center_id == dc_id:
                state.on_link(recorder, t, event.link_status.up, event.sequence)
            elif kind == "handover" and event.handover.ground_id == dc_id:
                h = event.handover
                state.on_handover(recorder, t, h.from_satellite, h.to_satellite, event.sequence)
            elif kind == "route_changed" and event.route_changed.route.data_center_id == dc_id:
                _route_row(recorder, event.route_changed.route, event.sequence, state)


def _route_row(recorder: RunRecorder, route, sequence: int, state: DemoState) -> None:
    if not route.delay_samples_ms:
        return
    step = route.samples_step.seconds + route.samples_step.nanos * 1e-9
    # The link model's round trip (floor + access, offset, jitter, spike) where the links service
    # gives it, else the propagation floor: what the terminal applies, not only the space path.
    modelled = len(route.rtt_samples_ms) == len(route.delay_samples_ms)
    rtt = list(route.rtt_samples_ms) if modelled else [2.0 * ms for ms in route.delay_samples_ms]
    recorder.write(
        "route",
        samples_start=to_unix(route.samples_start),
        samples_step=step,
        delay_samples_ms=list(route.delay_samples_ms),
        rtt_samples_ms=rtt,
        sequence=sequence,
    )
    state.satellite = route.first_satellite_index if route.available else -1
    state.rtt_ms = rtt[0] if route.available and rtt else float("nan")
    state.capacity_up = route.capacity_up_mbps


async def _poll_status(mdc, recorder: RunRecorder, state: DemoState, t: float) -> None:
    from skyhaul.v1 import mdc_pb2

    status = await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
    state.t = t
    state.backlog_bytes, state.backlog_objects = status.backlog.bytes, status.backlog.objects
    state.synced_objects, state.synced_bytes = status.totals.objects_synced, status.totals.bytes_synced
    state.put_objects = status.totals.objects_put
    recorder.write(
        "status",
        t=t,
        backlog_bytes=status.backlog.bytes,
        backlog_objects=status.backlog.objects,
        objects_put=status.totals.objects_put,
        objects_synced=status.totals.objects_synced,
        bytes_synced=status.totals.bytes_synced,
        bytes_sent=status.totals.bytes_sent,
        link_up=status.link.up,
    )


def _view(state: DemoState, start: float, end: float):
    from rich.table import Table

    table = Table(
        title=f"Skyhaul demo — emulated minute {(state.t - start) / 60:.1f} of {(end - start) / 60:.0f}"
    )
    for col in ("link", "satellite", "RTT", "uplink", "backlog", "synced", "outages", "handovers"):
        table.add_column(col)
    link = "[green]UP[/green]" if state.link_up else ("[red]DOWN[/red]" if state.link_up is False else "?")
    up = bool(state.link_up)
    rtt = f"{state.rtt_ms:.1f} ms" if up and state.rtt_ms == state.rtt_ms else "—"
    table.add_row(
        link,
        str(state.satellite) if up and state.satellite >= 0 else "—",
        rtt,
        f"{state.capacity_up:.0f} Mbit/s",
        f"{state.backlog_bytes / 2**20:.1f} MiB ({state.backlog_objects})",
        f"{state.synced_bytes / 2**20:.1f} MiB ({state.synced_objects}/{state.put_objects})",
        str(state.outages),
        str(state.handovers),
    )
    return table


def _line(state: DemoState, start: float) -> str:
    """`link=UP sat=351 rtt=51.8ms`, or just `link=DOWN`: no satellite or RTT is shown while down."""
    if state.link_up:
        rtt = f"{state.rtt_ms:.1f}ms" if state.rtt_ms == state.rtt_ms else "?"
        sat = str(state.satellite) if state.satellite >= 0 else "?"
        link = f"link=UP sat={sat:<4s} rtt={rtt:<8s}"
    else:
        link = f"{'link=DOWN' if state.link_up is False else 'link=?':<30s}"
    return (
        f"[demo] t+{(state.t - start) / 60:5.1f}min {link} "
        f"backlog={state.backlog_bytes / 2**20:6.1f}MiB/{state.backlog_objects} synced={state.synced_objects}/{state.put_objects} "
        f"outages={state.outages} handovers={state.handovers}"
    )


async def _follow(mdc, recorder, state, emulated_now, end, *, live: bool, quiet: bool) -> None:
    start = state.start
    if live:
        from rich.live import Live

        with Live(_view(state, start, end), refresh_per_second=4) as view:
            while (t := emulated_now()) < end:
                await _poll_status(mdc, recorder, state, t)
                view.update(_view(state, start, end))
                await asyncio.sleep(POLL_S)
        return
    last_line = 0.0
    while (t := emulated_now()) < end:
        await _poll_status(mdc, recorder, state, t)
        if not quiet and time.monotonic() - last_line >= HEADLESS_EVERY_S:
            print(_line(state, start), flush=True)
            last_line = time.monotonic()
        await asyncio.sleep(POLL_S)
    if not quiet:  # the last line's counts are the summary's
        state.t = end
        print(_line(state, start), flush=True)


def _drain_line(left_bytes: int, left_objects: int, rate_bytes_s: float | None) -> str:
    rate = f"{rate_bytes_s / 2**20:.2f} MiB/s" if rate_bytes_s is not None else "rate ?"
    return f"[drain] {left_bytes / 2**20:6.1f} MiB left in {left_objects} objects, {rate} (wall clock)"


async def _drain(
    mdc, recorder: RunRecorder, state: DemoState, emulated_now, *, quiet: bool, live: bool = False
) -> None:
    """Stop the workload and let the backlog sync (bounded in wall time), showing bytes left and rate."""
    from skyhaul.v1 import mdc_pb2

    await mdc.SetWorkload(mdc_pb2.SetWorkloadRequest(workload=mdc_pb2.WorkloadSpec()), timeout=5)
    await _poll_status(mdc, recorder, state, emulated_now())
    total = state.backlog_bytes
    if not quiet:
        print(
            f"[demo] workload stopped; draining {total / 2**20:.1f} MiB in {state.backlog_objects} objects",
            flush=True,
        )
    began, synced_at_start = time.monotonic(), state.synced_bytes
    deadline = began + DRAIN_TIMEOUT_S
    progress = task = None
    if live and not quiet and total:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        progress = Progress(
            TextColumn("draining"), BarColumn(), DownloadColumn(binary_units=True), TextColumn("synced,"),
            TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
        )  # fmt: skip
        progress.start()
        task = progress.add_task("drain", total=total)
    last_line = time.monotonic()
    try:
        while time.monotonic() < deadline and state.backlog_objects:
            await asyncio.sleep(POLL_S)
            await _poll_status(mdc, recorder, state, emulated_now())
            elapsed = time.monotonic() - began
            rate = (state.synced_bytes - synced_at_start) / elapsed if elapsed > 0 else None
            if progress is not None:
                progress.update(task, completed=max(0, total - state.backlog_bytes))
            elif not quiet and (
                time.monotonic() - last_line >= HEADLESS_EVERY_S or not state.backlog_objects
            ):
                print(_drain_line(state.backlog_bytes, state.backlog_objects, rate), flush=True)
                last_line = time.monotonic()
    finally:
        if progress is not None:
            progress.stop()


async def _record_objects(mdc, recorder: RunRecorder) -> None:
    from skyhaul.v1 import mdc_pb2

    objects, token = [], ""
    while True:
        page = await mdc.ListObjects(mdc_pb2.ListObjectsRequest(page_token=token), timeout=10)
        for o in page.objects:
            objects.append(
                {
                    "key": o.key,
                    "size": o.size,
                    "state": mdc_pb2.SyncState.Name(o.state).removeprefix("SYNC_STATE_").lower(),
                    "created_at": to_unix(o.created_at),
                    "synced_at": to_unix(o.synced_at) if o.HasField("synced_at") else None,
                }
            )
        token = page.next_page_token
        if not token:
            break
    recorder.write("objects", objects=objects)
