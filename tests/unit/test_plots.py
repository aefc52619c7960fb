"""Plots: the RTT axis follows the data, outage shading stays readable over a day, and the daily
availability strip says the same as the outages."""

import numpy as np
import pytest
from PIL import Image

from skyhaul.cli.plots import (
    MAX_OUTAGE_BANDS,
    OUTAGE_COLOUR,
    daily_availability,
    down_fraction,
    plot_rtt,
    rtt_limits,
)

DAY0 = 1_604_016_000.0  # 2020-10-30T00:00:00Z


def test_the_rtt_axis_is_scaled_to_the_data():
    lo, hi = rtt_limits(np.array([51.1, 51.4, np.nan, 52.3]))
    assert 50.5 < lo < 51.1 and 52.3 < hi < 53.0  # a 1 ms swing fills the axis, not 0-80 ms
    assert rtt_limits(np.array([np.nan])) == (0.0, 1.0)


def test_down_fraction_and_daily_availability_agree_with_the_outages():
    outages = [(DAY0 + 100, DAY0 + 400), (DAY0 + 86_000, DAY0 + 86_800)]  # the second spans midnight
    edges = np.array([DAY0, DAY0 + 300, DAY0 + 600])
    assert down_fraction(outages, edges) == pytest.approx([200 / 300, 100 / 300])
    days = daily_availability(outages, DAY0, DAY0 + 2 * 86_400)
    assert [(a, b) for a, b, _ in days] == [(DAY0, DAY0 + 86_400), (DAY0 + 86_400, DAY0 + 172_800)]
    assert days[0][2] == pytest.approx(1 - 700 / 86_400) and days[1][2] == pytest.approx(1 - 400 / 86_400)


def _reds(path) -> int:
    """Pixels of the outage colour as the density bars draw it (alpha 0.75 on white), not the faint
    tint of a band."""
    red = np.array([int(OUTAGE_COLOUR[1][i : i + 2], 16) for i in (1, 3, 5)])
    bar = 0.75 * red + 0.25 * 255
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(float)
    return int((np.abs(rgb - bar).sum(axis=2) < 30).sum())


def test_a_day_of_outages_is_drawn_as_a_density_not_a_wash(tmp_path):
    t = DAY0 + np.arange(0, 86_400, 5.0)
    rtt = 51 + np.sin(t / 300)
    period = 86_400 / (3 * MAX_OUTAGE_BANDS)  # three times more outages than bands stay readable
    down = (t % period) < period * 0.6
    rtt[down] = np.nan
    outages = [(a, a + period * 0.6) for a in np.arange(DAY0, DAY0 + 86_400, period)]
    dense = plot_rtt(t, rtt, outages, 15.0, 12.0, tmp_path / "day.png", "a day")
    few = plot_rtt(t[:720], rtt[:720], outages[:5], 15.0, 12.0, tmp_path / "hour.png", "an hour")
    with Image.open(dense) as image:
        assert image.size == (1800, 750)
    # The density bars are a block of solid colour under the curve (the bands of the short plot are a tint).
    assert _reds(dense) > 20_000 and _reds(few) < _reds(dense) / 4
