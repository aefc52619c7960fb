"""Predictions over time: high-latitude outages by constellation, a moving terminal leaving coverage."""

import numpy as np

from skyhaul.core.constellations import build_preset
from skyhaul.core.elements import walker_shell
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.summary import summarize
from skyhaul.core.timeline import LinkModel

EPOCH = 1604016000.0  # 2020-10-30T00:00:00Z
WESTUS2 = Region("westus2", 47.233, -119.852)


def _predict(preset, ground, isl, policy, terminal, hours, step):
    model = LinkModel.from_elements(
        build_preset(preset, EPOCH), ground, SchedulerConfig(isl=isl, policy=policy)
    )
    chunks = list(
        model.predict_route(terminal, "westus2", EPOCH, EPOCH + 3600 * hours, step, chunk_samples=97)
    )
    return summarize(chunks, step), chunks


def test_prudhoe_bay_has_no_service_from_the_2020_shell_and_full_service_from_gen1():
    """At 70.2°N a 53° shell never rises 25° above the horizon (its ground track stays ~17° of
    latitude away, the 25° footprint reaches ~8°); gen1's 70° and 97.6° shells cover it, and +grid
    carries the traffic to a gateway in Fairbanks."""
    ground = GroundSegment(
        [Terminal("mdc-prudhoe", 70.2, -148.5, home_region_id="westus2")],
        [Gateway("gw-fairbanks", "westus2", 64.84, -147.72, fibre_route_factor=1.5)],
        [WESTUS2],
    )
    old, _ = _predict("starlink-2020-10", ground, "none", "highest-elevation", "mdc-prudhoe", 2.0, 15.0)
    new, _ = _predict("starlink-gen1", ground, "+grid", "shortest-path", "mdc-prudhoe", 1.0, 15.0)
    assert old.availability == 0.0
    assert old.outages == [(EPOCH, EPOCH + 7200.0)]
    assert new.availability >= 0.99
    assert new.longest_outage_s <= 60.0
    assert new.rtt_ms_min > 0


def test_anchorage_sees_intermittent_outages_on_the_2020_shell_that_gen1_closes():
    """At 61.2°N the thinned-out 2020 shell is at the edge of its coverage: real, repeated outages
    in bent-pipe mode. Outages start anywhere (a held satellite sets) but end only at slot starts
    (the scheduler acts only at slot boundaries)."""
    ground = GroundSegment(
        [Terminal("mdc-anchorage", 61.2, -149.9, home_region_id="westus2")],
        [Gateway("gw-kenai", "westus2", 60.55, -151.26, fibre_route_factor=1.5)],
        [WESTUS2],
    )
    old, chunks = _predict("starlink-2020-10", ground, "none", "highest-elevation", "mdc-anchorage", 2.0, 1.0)
    assert 0.1 < old.availability < 0.95
    assert len(old.outages) >= 5
    ends = np.array([b for _, b in old.outages if b < EPOCH + 7200.0])
    assert np.all(np.isin(np.round(ends % 60).astype(int), [12, 27, 42, 57]))
    # Intervals are ordered, disjoint and agree with the samples.
    t = np.concatenate([c.t_unix for c in chunks])
    ok = np.isfinite(np.concatenate([c.rtt_ms for c in chunks]))
    flat = np.array(old.outages).ravel()
    assert np.all(np.diff(flat) > 0)
    inside = np.zeros(t.size, bool)
    for a, b in old.outages:
        inside |= (t >= a) & (t < b)
    assert np.array_equal(inside, ~ok)
    new, _ = _predict("starlink-gen1", ground, "+grid", "shortest-path", "mdc-anchorage", 1.0, 15.0)
    assert new.availability >= 0.99
    assert new.availability > old.availability + 0.05


def test_a_ship_sailing_out_of_coverage_loses_its_route():
    """A terminal on a track from 45°N to 66°N over 3 hours: served at first, then not (the
    53° shell's coverage ends a few degrees past 53°)."""
    shell = walker_shell("s1", 72, 22, 550, 53, 65, EPOCH)
    ground = GroundSegment(
        [Terminal.moving("mdc-ship", [(0, 45.0, -150.0), (10800, 66.0, -150.0)], epoch_unix=EPOCH)],
        [Gateway("gw-a", "westus2", 47.0, -150.0), Gateway("gw-b", "westus2", 65.0, -150.0)],
        [WESTUS2],
    )
    lm = LinkModel.from_elements(shell, ground, SchedulerConfig(isl="+grid", policy="shortest-path"))
    chunks = list(lm.predict_route("mdc-ship", "westus2", EPOCH, EPOCH + 10800, 60.0))
    ok = np.isfinite(np.concatenate([c.rtt_ms for c in chunks]))
    assert ok[:30].all()  # first half hour, near 45-48°N
    assert not ok[-30:].any()  # last half hour, beyond 63°N
