"""Per-destination routing (one Dijkstra per region) gives today's per-source routes exactly.

Compared through ``LinkModel.decide`` (the real call site): every step's ``solve_step`` is run
both ways on the same inputs, on every shipped scenario and on random 200-terminal segments, bent
pipe and +grid, at several times. Paths, first satellites, gateways and capacities must be equal;
delays equal to 1 ns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skyhaul.core import routing, timeline
from skyhaul.core.constellations import build_preset
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.propagate import Propagator
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.timeline import LinkModel
from skyhaul.links.ground_from_scenario import ground_segment
from skyhaul.orbit.catalog import build_constellation
from skyhaul.runtime.scenario import load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[3] / "scenarios").glob("*.yaml"))
EPOCH = 1604016000.0  # 2020-10-30T00:00:00Z
OFFSETS_S = (12.0, 3 * 3600 + 27.0, 11 * 3600 + 42.0)  # three slot starts, hours apart


def assert_same_routes(new: routing.StepRoutes, ref: routing.StepRoutes) -> None:
    assert new.paths.shape == ref.paths.shape
    bad = np.argwhere((new.paths != ref.paths).any(axis=-1))
    assert bad.size == 0, f"{len(bad)} paths differ, first (terminal, region) {bad[:3].tolist()}"
    np.testing.assert_array_equal(new.first_sat, ref.first_sat)
    np.testing.assert_array_equal(new.gateway, ref.gateway)
    np.testing.assert_array_equal(np.isfinite(new.delay_s), np.isfinite(ref.delay_s))
    both = np.isfinite(ref.delay_s)
    assert np.all(np.abs(new.delay_s[both] - ref.delay_s[both]) <= 1e-9)
    np.testing.assert_array_equal(new.capacity_up_mbps, ref.capacity_up_mbps)
    np.testing.assert_array_equal(new.capacity_down_mbps, ref.capacity_down_mbps)


@pytest.fixture
def compared_steps(monkeypatch):
    """Make LinkModel.decide solve every step both ways and compare; returns the steps seen."""
    steps: list[routing.StepRoutes] = []

    def both(*args, method, **kwargs):
        assert method == "auto"  # LinkModel's default; compared here on the per-destination path
        new = routing.solve_step(*args, **kwargs, method="per-destination")
        ref = routing.solve_step(*args, **kwargs, method="per-source")
        assert_same_routes(new, ref)
        steps.append(new)
        return new

    monkeypatch.setattr(timeline, "solve_step", both)
    return steps


def decide_at_offsets(lm: LinkModel, epoch: float) -> None:
    for offset in OFFSETS_S:
        lm.decide(lm.decision_time(epoch + offset))


def test_default_is_per_destination_and_unknown_method_is_refused():
    assert routing.ROUTING_METHODS == ("auto", "per-destination", "per-source")
    lay = routing.NodeLayout(1, 0, 0, 0)
    empty = np.zeros((0, 1), dtype=bool)
    isl = routing.IslLinks(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    none, no_ids = np.zeros(0), np.zeros(0, dtype=int)
    args = (
        0.0,
        lay,
        np.zeros((1, 3)),
        np.zeros((0, 3)),
        empty,
        empty,
        isl,
        none,
        no_ids,
        none,
        none,
        none,
        1.0,
    )
    assert routing.solve_step(*args).paths.shape == (0, 0, 0)
    with pytest.raises(ValueError, match="unknown routing method"):
        routing.solve_step(*args, method="per-terminal")


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_routes_the_same_both_ways(path, compared_steps):
    scenario = load_scenario(path)
    elements, _, _ = build_constellation(scenario.constellation, scenario.epoch_unix)
    lm = LinkModel.from_elements(elements, ground_segment(scenario), scenario.scheduler)
    decide_at_offsets(lm, scenario.epoch_unix)
    assert len(compared_steps) == len(OFFSETS_S)
    # Not vacuous: some data center has a route at one of the times.
    assert any(step.available.any() for step in compared_steps)


def random_segment(seed: int, n_terminals: int = 200, n_gateways: int = 40, n_regions: int = 6):
    """Terminals and gateways over the populated latitudes; each gateway homed to a region."""
    rng = np.random.default_rng(seed)

    def draw(n):
        z = rng.uniform(np.sin(np.radians(-56)), np.sin(np.radians(60)), n)
        return np.degrees(np.arcsin(z)), rng.uniform(-180, 180, n)

    rlat, rlon = draw(n_regions)
    regions = [Region(f"r{k}", float(a), float(b)) for k, (a, b) in enumerate(zip(rlat, rlon, strict=True))]
    glat, glon = draw(n_gateways)
    gateways = [
        Gateway(f"g{k}", regions[k % n_regions].id, float(a), float(b))
        for k, (a, b) in enumerate(zip(glat, glon, strict=True))
    ]
    tlat, tlon = draw(n_terminals)
    terminals = [
        Terminal(f"t{k}", float(a), float(b), home_region_id=regions[k % n_regions].id)
        for k, (a, b) in enumerate(zip(tlat, tlon, strict=True))
    ]
    return GroundSegment(terminals, gateways, regions)


SHELL1 = build_preset("starlink-shell1", EPOCH)
SHELL1_PROPAGATOR = Propagator(SHELL1)


@pytest.mark.parametrize(
    ("isl", "policy", "seed"),
    [
        ("+grid", "shortest-path", 1),
        ("+grid", "shortest-path", 2),
        ("+grid", "highest-elevation", 3),
        ("none", "shortest-path", 4),
        ("none", "highest-elevation", 5),
    ],
)
def test_random_200_terminal_segments_route_the_same_both_ways(isl, policy, seed, compared_steps):
    ground = random_segment(seed)
    cfg = SchedulerConfig(isl=isl, policy=policy)
    lm = LinkModel.from_elements(SHELL1, ground, cfg, propagator=SHELL1_PROPAGATOR)
    decide_at_offsets(lm, EPOCH)
    available = sum(int(step.available.sum()) for step in compared_steps)
    assert available > 0
    hops = max(int((step.paths >= 0).sum(axis=-1).max()) for step in compared_steps)
    if isl == "+grid":
        assert hops > 4  # routes cross ISLs: terminal, several satellites, gateway, region
    else:
        assert hops == 4  # bent pipe: terminal, satellite, gateway, region


def test_continuous_mode_and_a_terminal_without_any_satellite(compared_steps):
    """A terminal at the pole sees no 53° satellite: no route, both ways; the others still route."""
    ground = random_segment(7, n_terminals=30)
    polar = Terminal("t-pole", 89.9, 0.0, home_region_id=ground.regions[0].id)
    ground = GroundSegment((*ground.terminals, polar), ground.gateways, ground.regions)
    cfg = SchedulerConfig(mode="continuous", isl="+grid", policy="shortest-path")
    lm = LinkModel.from_elements(SHELL1, ground, cfg, propagator=SHELL1_PROPAGATOR)
    decide_at_offsets(lm, EPOCH)
    for step in compared_steps:
        assert not step.available[-1].any()
        assert step.available[:-1].any()
