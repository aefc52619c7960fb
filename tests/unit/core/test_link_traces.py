"""Trace parsers (ping -D, CSV, raw ns, dish exports) and the statistics the link model is judged by."""

from __future__ import annotations

import numpy as np
import pytest

from skyhaul.core.traces import (
    TraceFormatError,
    boundary_loss_share,
    boundary_steps,
    loss_by_position,
    parse_dish_export,
    parse_ping_d,
    parse_raw_ns_csv,
    parse_rtt_csv,
    parse_trace,
    per_slot_stat,
    spike_profile,
)

PING = """PING 2605::1(2605::1) from 2605::55e enp2s0: 56 data bytes
[1744680687.384735] 64 bytes from 2605::1: icmp_seq=1 ttl=62 time=29.4 ms
[1744680687.400232] 64 bytes from 2605::1: icmp_seq=2 ttl=62 time=33.5 ms
[1744680687.420000] 64 bytes from 2605::1: icmp_seq=2 ttl=62 time=53.5 ms (DUP!)
[1744680687.424848] 64 bytes from 2605::1: icmp_seq=5 ttl=62 time=25.5 ms
ping: sendmsg: Network is unreachable
[1744680687.584413] 64 bytes from 2605::1: icmp_seq=6 ttl=62 time=144 ms
"""


def test_ping_d_gaps_are_losses_and_times_are_send_times():
    trace = parse_ping_d(PING)
    assert trace.rtt_ms.size == 6
    assert np.isnan(trace.rtt_ms[2:4]).all()
    assert trace.rtt_ms[[0, 1, 4, 5]].tolist() == [29.4, 33.5, 25.5, 144.0]
    assert trace.t_unix[0] == pytest.approx(1744680687.384735 - 0.0294)
    assert np.all(np.diff(trace.t_unix) > 0)
    assert trace.loss_rate == pytest.approx(2 / 6)
    assert parse_trace(PING).kind == "ping"


def test_ping_d_sequence_wrap():
    lines = [
        f"[{1000 + k * 0.01:.6f}] 64 bytes from x: icmp_seq={(65530 + k) % 65536} ttl=1 time=10 ms"
        for k in range(12)
    ]
    del lines[8]
    trace = parse_ping_d("\n".join(lines))
    assert trace.rtt_ms.size == 12 and np.isnan(trace.rtt_ms).sum() == 1


def test_rtt_csv_empty_is_lost():
    trace = parse_trace("unix_time_s,rtt_ms\n100.0,20.5\n100.01,\n100.02,22\n")
    assert trace.kind == "csv" and trace.loss_rate == pytest.approx(1 / 3)
    with pytest.raises(TraceFormatError, match="line 3"):
        parse_rtt_csv("unix_time_s,rtt_ms\n100.0,20.5\n100.01,abc\n")


def test_raw_ns_csv_has_unknown_loss():
    trace = parse_trace("1725927977381093120,64.6\n1725927977397135872,65.4\n")
    assert trace.kind == "raw-ns" and np.isnan(trace.loss_rate)
    assert trace.t_unix[0] == pytest.approx(1725927977.381093)
    with pytest.raises(TraceFormatError):
        parse_raw_ns_csv("12,3\n")


def test_dish_exports():
    history = parse_trace(
        "unix_time_s,pop_ping_latency_ms,pop_ping_drop_rate,downlink_throughput_bps\n"
        "1715222770.4,33.5,0,1\n1715222771.4,,1,1\n1715222772.4,30.8,0.5,1\n"
    )
    assert history.kind == "dish" and history.loss_rate == pytest.approx(0.5)
    status = parse_dish_export("timestamp,pop_ping_latency_ms\n2023-07-05 16:32:30.343357,31.75\n")
    assert status.t_unix[0] == pytest.approx(1688574750.343357) and np.isnan(status.loss_rate)


@pytest.mark.parametrize("text", ["", "hello\nworld\n", "a,b\n1,2\n"])
def test_unknown_text_is_refused(text):
    with pytest.raises(TraceFormatError):
        parse_trace(text)


def _synthetic(minima):
    """Probes every 10 ms over len(minima) slots starting at :12, RTT = slot minimum + a ramp."""
    t = 1_725_927_972.0 + np.arange(0, 15.0 * len(minima), 0.01)
    slot = ((t - t[0]) // 15.0).astype(int)
    pos = (t - t[0]) % 15.0
    return t, np.asarray(minima, float)[slot] + pos


def test_slot_minimum_steps():
    t, rtt = _synthetic([15, 16, 36, 36.5, 15])
    _, minima = per_slot_stat(t, rtt)
    assert minima.tolist() == pytest.approx([15, 16, 36, 36.5, 15])
    assert boundary_steps(t, rtt).tolist() == pytest.approx([1, 20, 0.5, 21.5])
    # A slot cut by the trace's end is not used.
    assert boundary_steps(t[:-800], rtt[:-800]).size == 3


def test_loss_by_position_and_boundary_share():
    t, rtt = _synthetic([15] * 4)
    pos = (t - t[0]) % 15.0
    rtt[(pos < 0.2) | (pos > 14.9)] = np.nan
    rtt[np.flatnonzero(pos > 7)[::500]] = np.nan
    starts, rate, probes = loss_by_position(t, rtt, 0.5)
    assert rate[0] == pytest.approx(0.4) and rate[-1] == pytest.approx(0.2)
    assert rate[5] == 0.0 and probes.sum() == t.size
    assert 0.85 < boundary_loss_share(t, rtt) < 1.0


def test_spike_profile_finds_the_spike():
    t, rtt = _synthetic([15] * 6)
    pos = (t - t[0]) % 15.0
    rtt = 20.0 + np.where(pos < 0.1, 50.0, 0.0)
    starts, profile = spike_profile(t, rtt, 0.05, 0.5)
    assert profile[:2].tolist() == [50.0, 50.0] and np.all(profile[2:] == 0.0)


@pytest.mark.parametrize(
    ("name", "probes", "loss"),
    [
        ("traces/sey_20240812_ping.txt", 10_337, 337 / 10_337),
        ("traces/vic_20250415_ping.txt", 5_008, 9 / 5_008),
        ("traces/vic_20240910_ping.csv", 60_000, None),
        ("traces/useast_20240509_history.csv", 900, 0.11),
    ],
)
def test_the_shared_traces_parse_as_their_sources_say(name, probes, loss):
    from support.shared_data import shared_data

    from skyhaul.runtime.linkdata import load_trace

    trace = load_trace(shared_data(name))
    assert trace.t_unix.size == probes
    if loss is None:
        assert np.isnan(trace.loss_rate)
    else:
        assert trace.loss_rate == pytest.approx(loss, abs=0.005)


def test_load_trace_names_the_file(tmp_path):
    from skyhaul.runtime.linkdata import load_trace

    bad = tmp_path / "bad.txt"
    bad.write_text("nothing here\n")
    with pytest.raises(TraceFormatError, match="bad.txt"):
        load_trace(bad)
    with pytest.raises(TraceFormatError, match="cannot read"):
        load_trace(tmp_path / "absent.txt")
