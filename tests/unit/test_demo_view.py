"""The demo's live view and its summary count from the same rows with the same functions, and the
plain lines show no satellite or RTT while the link is down."""

import math

from skyhaul.cli.demo import DemoState, _drain_line, _line
from skyhaul.cli.record import RunData, RunRecorder, summarize

START, END = 1_000.0, 2_000.0


def _run(tmp_path, link_rows, handovers):
    recorder = RunRecorder(tmp_path)
    recorder.write("meta", scenario="s", data_center="mdc-a", start=START, end=END)
    state = DemoState()
    state.start, state.end, state.t = START, END, START
    counts = []
    for i, (t, up) in enumerate(link_rows):
        state.t = max(state.t, t)
        state.on_link(recorder, t, up, i, snapshot=(i == 0))
        counts.append(state.outages)
    for i, (t, a, b) in enumerate(handovers):
        state.on_handover(recorder, t, a, b, 100 + i)
    state.t = END + 300  # the drain runs on after the window
    recorder.close()
    return state, summarize(RunData.load(tmp_path)), counts


def test_running_counts_end_equal_to_the_summary(tmp_path):
    link_rows = [
        (START - 5, False),  # the snapshot: the run starts in an outage (the summary counts it)
        (START + 10, True),
        (START + 50, False),
        (START + 80, True),
        (START + 400, False),
        (START + 460, True),
        (END + 10, False),  # during the drain: outside the window, counted by neither
        (END + 60, True),
    ]
    handovers = [(START + 20, 3, 4), (START + 90, -1, 5), (START + 95, 5, 5), (END + 30, 5, 6)]
    state, summary, counts = _run(tmp_path, link_rows, handovers)
    assert summary.outages == 3 and summary.handovers == 1
    assert state.outages == summary.outages and state.handovers == summary.handovers
    assert counts == sorted(counts)  # it only ever counts up while the run is watched


def test_a_run_that_ends_down_counts_the_open_outage_once(tmp_path):
    state, summary, _ = _run(tmp_path, [(START - 1, True), (START + 100, False)], [])
    assert state.outages == summary.outages == 1


def test_the_plain_line_shows_no_satellite_or_rtt_while_down(tmp_path):
    recorder = RunRecorder(tmp_path)
    state = DemoState()
    state.start, state.end, state.t = START, END, START + 60
    state.on_link(recorder, START, True, 1)
    state.satellite, state.rtt_ms = 351, 51.8
    assert "link=UP sat=351  rtt=51.8ms" in _line(state, START)
    state.on_link(recorder, START + 30, False, 2)
    line = _line(state, START)
    assert "link=DOWN" in line and "sat=" not in line and "rtt=" not in line
    assert state.satellite == -1 and math.isnan(state.rtt_ms)
    recorder.close()


def test_the_drain_line_says_bytes_left_and_rate():
    line = _drain_line(3 * 2**20, 12, 1.5 * 2**20)
    assert "3.0 MiB left in 12 objects" in line and "1.50 MiB/s" in line
