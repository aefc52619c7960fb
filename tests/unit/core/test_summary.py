"""Summary statistics of a route timeline: outages joined across chunks, percentiles, handover stall."""

import numpy as np
import pytest

from skyhaul.core.summary import TimelineAccumulator, summarize
from skyhaul.core.timeline import TimelineChunk


def _chunk(t, rtt, handover=None):
    t = np.asarray(t, float)
    rtt = np.asarray(rtt, float)
    return TimelineChunk(
        t, rtt, np.zeros_like(rtt), np.zeros_like(rtt), np.zeros(rtt.shape, int),
        np.zeros(rtt.shape, bool) if handover is None else np.asarray(handover),
    )  # fmt: skip


def test_summary_joins_an_outage_across_chunks_and_keeps_one_that_is_still_open():
    nan = np.nan
    acc = TimelineAccumulator(step_s=1.0, handover_stall_ms=40.0)
    acc.add(_chunk([0, 1, 2, 3], [10.0, nan, nan, 12.0], [False, False, False, True]))
    acc.add(_chunk([4, 5, 6], [11.0, 13.0, nan]))
    acc.add(_chunk([7, 8], [nan, 20.0]))
    acc.add(_chunk([9, 10], [nan, nan]))
    s = acc.summary()
    assert s.outages == [(1.0, 3.0), (6.0, 8.0), (9.0, 11.0)]
    assert s.longest_outage_s == 2.0
    assert s.samples == 11 and s.available_samples == 5
    assert s.availability == pytest.approx(5 / 11)
    assert s.rtt_ms_min == 10.0 and s.rtt_ms_max == 20.0
    assert s.rtt_ms_p50 == pytest.approx(12.0, abs=0.01)
    assert s.handovers == 1 and s.stall_s == pytest.approx(0.04)


def test_summary_of_a_window_without_any_route():
    s = summarize([_chunk([0, 5, 10], [np.nan] * 3)], step_s=5.0)
    assert s.availability == 0.0
    assert s.outages == [(0.0, 15.0)]
    assert np.isnan(s.rtt_ms_p50) and np.isnan(s.rtt_ms_min)
