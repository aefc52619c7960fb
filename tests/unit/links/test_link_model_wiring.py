"""Issue 15 wiring: one link model for the scenario, predictions, route samples and the terminal.

- The scenario's ``link_model:`` section, per-data-center ``pop:`` / ``replay:``, and ``+grid`` on a
  catalogue whose planes cannot be inferred (an error naming the constellation at validation).
- ``link_model: propagation`` is exactly today's floor.
- What the terminal applies (``terminal.route_model`` from a route message) is, at any instant, the
  RTT the prediction gives for that instant; a replayed trace comes through within 1 ms.
- Determinism: the same scenario and seed give bit-identical predictions in two processes.
- A Victoria terminal through the links service's model (Starlink ground preset, homed to Seattle)
  matches the 2024 Victoria traces as the calibration tests require.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import jsonschema
import numpy as np
import pytest
import yaml
from support.link_checks import check_against_trace
from support.shared_data import shared_data

from skyhaul.core.calibrate import compare, link_floor_ms, model_at_trace_times
from skyhaul.core.constellations import build_preset
from skyhaul.core.ground import great_circle_km
from skyhaul.core.latency import PROPAGATION, STARLINK
from skyhaul.links import codec, route_view
from skyhaul.links.ground_from_scenario import data_center_pop, ground_segment, model_options
from skyhaul.runtime.clock import EmulationClock
from skyhaul.runtime.linkdata import load_trace, starlink_ground
from skyhaul.runtime.scenario import ScenarioError, load_scenario, parse_scenario
from skyhaul.terminal.route_model import model_rtt_ms
from skyhaul.terminal.service import profile_from_route

EPOCH = "2024-09-10T18:00:00Z"
VICTORIA = {"lat": 48.43, "lon": -123.37}
SEATTLE_POP = {"lat": 47.61445, "lon": -122.33868}


def victoria_scenario(**link_model) -> dict:
    return {
        "name": "victoria",
        "epoch": EPOCH,
        "constellation": {"preset": "starlink-gen1"},
        "scheduler": {"isl": "none", "policy": "highest-elevation"},
        # The traces ping the first IP hop, at the PoP: the region sits at the Seattle PoP.
        "regions": [{"id": "sea-pop", "location": SEATTLE_POP}],
        "data_centers": [{"id": "mdc-victoria", "home_region": "sea-pop", "location": VICTORIA}],
        "link_model": {"ground": "starlink-2023", **link_model},
    }


def build(scenario):
    elements = build_preset(scenario.constellation.preset, scenario.epoch_unix)
    ground = ground_segment(scenario)
    return route_view.new_model(elements, ground, scenario.scheduler, model_options(scenario))


# ---------------------------------------------------------------------------------------- scenario


def test_link_model_defaults_follow_the_constellation():
    starlink = parse_scenario(victoria_scenario())
    assert starlink.link_model.params.mode == "calibrated"
    assert starlink.link_model.params.bent_pipe == STARLINK.bent_pipe
    o3b = victoria_scenario()
    o3b["constellation"] = {"preset": "o3b-meo"}
    o3b["link_model"] = {}
    assert parse_scenario(o3b).link_model.params.mode == "propagation"


def test_link_model_overrides_and_errors_name_the_field():
    spec = parse_scenario(
        victoria_scenario(
            seed=42, bent_pipe={"access_ms": 5.0}, gsl_rule="slant-range", max_gsl_range_km=1301.0
        )
    ).link_model
    assert spec.seed == 42 and spec.params.bent_pipe.access_ms == 5.0
    assert spec.params.bent_pipe.jitter_shape == STARLINK.bent_pipe.jitter_shape  # the rest kept
    assert spec.gsl(25.0).kind == "slant-range" and spec.gsl(25.0).max_range_km == 1301.0
    for bad, match in (
        ({"mode": "fancy"}, r"link_model\.mode: 'fancy' is not one of"),
        ({"gsl_rule": "slant-range"}, r"link_model\.max_gsl_range_km: required"),
        ({"bent_pipe": {"offset_high_prob": 2.0}}, r"link_model\.bent_pipe: .*offset_high_prob"),
        ({"bent_pipe": {"acess_ms": 1.0}}, r"link_model\.bent_pipe\.acess_ms: unknown key"),
        ({"ground": "starlink-1999"}, r"link_model\.ground: 'starlink-1999' is not one of"),
    ):
        with pytest.raises(ScenarioError, match=match):
            parse_scenario(victoria_scenario(**bad))


def test_data_center_pop_and_replay_are_checked():
    data = victoria_scenario()
    data["data_centers"][0]["pop"] = "XYZ"
    with pytest.raises(ScenarioError, match=r"data_centers\[0\]\.pop: unknown PoP 'XYZ'"):
        parse_scenario(data)
    data["data_centers"][0]["pop"] = "DEN"
    scenario = parse_scenario(data)
    assert data_center_pop(scenario.data_centers[0], starlink_ground()).name == "DEN"
    data["data_centers"][0].pop("pop")
    data["data_centers"][0]["replay"] = {"file": "/nonexistent/trace.csv"}
    with pytest.raises(ScenarioError, match=r"data_centers\[0\]\.replay\.file: no such file"):
        parse_scenario(data)


def test_victoria_is_homed_to_seattle_through_the_preset_gateways():
    scenario = parse_scenario(victoria_scenario())
    ground = ground_segment(scenario)
    names = {g.id for g in ground.gateways}
    assert "gw-bellingham-wa-sea-pop" in names
    # Every gateway is wired to SEA: gateway -> SEA fibre x 1.5 (the region is at the PoP).
    assert all(g.region_id == "sea-pop" for g in ground.gateways)
    bellingham = ground.gateways[ground.gateway("gw-bellingham-wa-sea-pop")]
    pop = starlink_ground().pop("SEA")
    expected_km = 1.5 * great_circle_km(bellingham.lat_deg, bellingham.lon_deg, pop.lat_deg, pop.lon_deg)
    assert ground.fibre_km[ground.gateway("gw-bellingham-wa-sea-pop")] == pytest.approx(expected_km)
    # GetGroundSegment shows the gateways the service routes over.
    message = codec.ground_segment_to_proto(scenario, scenario.scheduler, "starlink-gen1", ground)
    assert {g.id for g in message.gateways} == names == set(message.regions[0].gateway_ids)


def test_grid_on_a_catalogue_without_planes_fails_at_validation(tmp_path):
    # O3b's equatorial catalogue has no RAAN to cluster planes by.
    tle = shared_data("tle/o3b_2026-08-22.tle")
    data = victoria_scenario()
    data["constellation"] = {"tle_file": str(tle)}
    data["scheduler"]["isl"] = "+grid"
    with pytest.raises(ScenarioError, match=r"scheduler\.isl: .*o3b_2026-08-22"):
        parse_scenario(data)
    data["scheduler"]["isl"] = "nearest"
    assert parse_scenario(data).scheduler.isl == "nearest"


# ------------------------------------------------------------------------------- one model everywhere


def test_propagation_mode_is_exactly_the_floor():
    scenario = parse_scenario(victoria_scenario(mode="propagation"))
    assert scenario.link_model.params.mode == PROPAGATION.mode
    model = build(scenario)
    plain = route_view.new_model(
        build_preset("starlink-gen1", scenario.epoch_unix), ground_segment(scenario), scenario.scheduler
    )
    t0 = scenario.epoch_unix + 30.0
    got = next(model.predict_route("mdc-victoria", "sea-pop", t0, t0 + 120.0, 0.5))
    floor = next(plain.predict_route("mdc-victoria", "sea-pop", t0, t0 + 120.0, 0.5))
    np.testing.assert_array_equal(got.rtt_ms, floor.rtt_ms)
    assert np.all(got.loss_probability == 0.0)
    route = route_view.route_message(model, "mdc-victoria", "sea-pop", t0)
    np.testing.assert_array_equal(route.rtt_samples_ms, 2.0 * np.asarray(route.delay_samples_ms))


def test_terminal_applies_what_the_prediction_says():
    scenario = parse_scenario(victoria_scenario(seed=3))
    model = build(scenario)
    clock = EmulationClock(epoch_unix=scenario.epoch_unix, speed=1.0, start_wall=scenario.epoch_unix)
    t0 = float(scenario.scheduler.slot_start(scenario.epoch_unix + 100.0))
    route = route_view.route_message(model, "mdc-victoria", "sea-pop", t0)
    assert route.available and route.HasField("terminal_model") and not route.terminal_model.laser
    times = t0 + np.sort(np.random.default_rng(1).uniform(0.0, 15.0, 400))
    # Inside the spike (off the 10 ms tick edges: within a float's resolution of an edge at Unix
    # times of 1.7e9 s, about 0.2 us, either side may draw the tick).
    times = np.concatenate([[t0 + 0.005, t0 + 0.055, t0 + 0.105], times])
    chunk = next(model.predict_route("mdc-victoria", "sea-pop", t0, t0 + 15.0, 0.001, chunk_samples=20000))
    index = np.floor((times - t0) / 0.001 + 1e-6).astype(int)
    predicted = model.terminal_rtt(0, times, chunk.floor_rtt_ms[index], False)[0]
    applied = model_rtt_ms(route, clock, times)
    # Same access, offset, jitter and spike; the floor is interpolated between the route's 1 s samples
    # (and held after the last): hundredths of a ms.
    np.testing.assert_allclose(applied, predicted, atol=0.05)
    assert np.ptp(applied) > 10.0  # jitter and spike are really there


def test_replayed_trace_drives_route_samples_and_the_terminal(tmp_path):
    # A synthetic trace: 20 Hz probes over 40 s, RTT a saw from 30 to 90 ms, every 37th lost.
    start = 1725991212.0  # a slot start (:12)
    t = start + 0.05 * np.arange(800)
    rtt = 30.0 + (np.arange(800) % 60)
    lines = ["unix_time_s,rtt_ms"] + [
        f"{a:.3f}," if k % 37 == 5 else f"{a:.3f},{b:.1f}"
        for k, (a, b) in enumerate(zip(t, rtt, strict=True))
    ]
    trace_file = tmp_path / "trace.csv"
    trace_file.write_text("\n".join(lines) + "\n")
    data = victoria_scenario()
    data["data_centers"][0]["replay"] = {"file": "trace.csv", "format": "csv", "loop": True}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    scenario = load_scenario(path)
    model = build(scenario)
    clock = EmulationClock(epoch_unix=scenario.epoch_unix, speed=1.0, start_wall=scenario.epoch_unix)
    replay = model.replays["mdc-victoria"]
    for t_slot in (scenario.epoch_unix + 15.0, scenario.epoch_unix + 75.0):  # the second one loops
        t0 = float(scenario.scheduler.slot_start(t_slot))
        route = route_view.route_message(model, "mdc-victoria", "sea-pop", t0)
        assert route.HasField("replay") and not route.HasField("terminal_model")
        probes = t0 + 0.05 * np.arange(1, 299) + 0.01
        expected, lost = replay.at(probes)
        np.testing.assert_allclose(model_rtt_ms(route, clock, probes), expected, atol=1.0)
        assert lost.any() and np.all(np.isin(expected, rtt))
        # Packet mode: a lost probe is 100 % loss (each way) while it holds, a reply none.
        profile = profile_from_route(route, clock)
        loss = np.array([profile.loss_at(clock.to_wall(t)) for t in probes])
        np.testing.assert_array_equal(loss, np.where(lost, 1.0, 0.0))
    with pytest.raises(ScenarioError, match="format dish was given"):
        data["data_centers"][0]["replay"]["format"] = "dish"
        path.write_text(yaml.safe_dump(data))
        load_scenario(path)


def test_replay_of_a_real_trace_within_a_millisecond(tmp_path):
    source = shared_data("traces/vic_20250415_ping.txt")
    data = victoria_scenario()
    data["epoch"] = "2025-04-15T00:00:00Z"
    data["data_centers"][0]["replay"] = {"file": str(source), "format": "ping"}
    scenario = parse_scenario(data)
    model = build(scenario)
    clock = EmulationClock(epoch_unix=scenario.epoch_unix, speed=1.0, start_wall=scenario.epoch_unix)
    trace = load_trace(source)
    replay = model.replays["mdc-victoria"]
    t0 = float(scenario.scheduler.slot_start(scenario.epoch_unix + 20.0))
    route = route_view.route_message(model, "mdc-victoria", "sea-pop", t0)
    probes = trace.t_unix[trace.received] + replay.shift_s
    probes = probes[(probes >= t0) & (probes < t0 + 15.0)]
    assert probes.size > 500
    want = trace.rtt_ms[trace.received][np.isin(trace.t_unix[trace.received] + replay.shift_s, probes)]
    np.testing.assert_allclose(model_rtt_ms(route, clock, probes), want, atol=1.0)


PREDICT_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, yaml
    from skyhaul.runtime.scenario import parse_scenario
    from skyhaul.core.constellations import build_preset
    from skyhaul.links import route_view
    from skyhaul.links.ground_from_scenario import ground_segment, model_options
    s = parse_scenario(yaml.safe_load(open(sys.argv[1])))
    m = route_view.new_model(build_preset(s.constellation.preset, s.epoch_unix), ground_segment(s),
                             s.scheduler, model_options(s))
    t0 = s.epoch_unix + float(sys.argv[2])
    out = []
    for c in m.predict_route("mdc-victoria", "sea-pop", t0, t0 + 90.0, 0.01, chunk_samples=4000):
        out += [c.rtt_ms, c.loss_probability, c.floor_rtt_ms]
    sys.stdout.buffer.write(np.concatenate(out).tobytes())
    """
)


def test_predictions_are_bit_identical_in_two_processes(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(victoria_scenario(seed=11)))
    script = tmp_path / "predict.py"
    script.write_text(PREDICT_SCRIPT)
    runs = [
        subprocess.run(
            [sys.executable, str(script), str(path), offset], check=True, capture_output=True
        ).stdout
        for offset in ("5", "5", "20")
    ]
    assert len(runs[0]) == 3 * 9000 * 8
    assert hashlib.sha256(runs[0]).digest() == hashlib.sha256(runs[1]).digest()
    assert runs[0] != runs[2]  # another window is another draw (the test can fail)


# ----------------------------------------------------------------------------------- against traces


@pytest.mark.parametrize("name", ("vic_20240910_ping.csv", "vic_20241218_ping.csv"))
def test_victoria_through_the_links_model_matches_the_trace(name):
    trace = load_trace(shared_data(f"traces/{name}"))
    data = victoria_scenario(seed=7)
    data["epoch"] = datetime.fromtimestamp(float(trace.t_unix[0]), UTC).isoformat()
    scenario = parse_scenario(data)
    model = build(scenario)
    floor = link_floor_ms(model, "mdc-victoria", "sea-pop", trace.t_unix)
    assert np.all(np.isfinite(floor)) and 8.0 < np.median(floor) < 14.0
    samples = model_at_trace_times(
        trace, floor, model.latency, seed=model.latency_seed, terminal_id="mdc-victoria"
    )
    check_against_trace(compare(trace, samples), name)


# ------------------------------------------------------------------------ catalogue ISLs, GSL rule


def test_a_catalogue_scenario_gets_inferred_grid_isls_and_routes_across_them():
    tle = shared_data("tle/kuiper_2026-08-22.tle")
    data = {
        "name": "kuiper",
        "epoch": "2026-08-22T12:00:00Z",
        "constellation": {"tle_file": str(tle)},
        "scheduler": {"isl": "+grid", "policy": "shortest-path", "terminal_min_elevation_deg": 30},
        "regions": [{"id": "westeurope"}],
        "data_centers": [
            {"id": "mdc-seattle", "home_region": "westeurope", "location": {"lat": 47.6, "lon": -122.3}}
        ],
    }
    scenario = parse_scenario(data)
    assert scenario.link_model.params.mode == "propagation"  # no published Kuiper terminal trace
    assert scenario.link_model.min_satellite_altitude_km == 300.0
    from skyhaul.core.elements import ElementSet
    from skyhaul.core.tle import load_tle_file

    elements = ElementSet.from_tle(load_tle_file(tle).records)
    model = route_view.new_model(
        elements, ground_segment(scenario), scenario.scheduler, model_options(scenario)
    )
    topology = model.isl_topology()
    assert topology.mode == "+grid" and topology.pairs.shape[0] > 300
    assert np.bincount(topology.pairs.ravel(), minlength=model.n_sats).max() <= 4
    found = 0
    for k in range(12):
        route = model.route("mdc-seattle", "westeurope", scenario.epoch_unix + 300.0 * k)
        found += route.available and sum(h.kind == "isl" for h in route.hops) > 0
    assert found > 0  # Seattle -> West Europe over lasers


def test_slant_range_rule_decides_visibility_to_the_satellite():
    scenario = parse_scenario(victoria_scenario(gsl_rule="slant-range", max_gsl_range_km=1100.0))
    model = build(scenario)
    t = scenario.epoch_unix + 42.0
    r = model.state_vectors(t)[0]
    g, _ = model.ground_at(t)
    distance = np.linalg.norm(r[None, :, :] - g[:, None, :], axis=-1)
    np.testing.assert_array_equal(model.visible(t), distance <= 1100.0)
    assert model.visible(t).any()


def test_schema_fragments_agree_with_the_parser():
    # For a schema-driven scenario validator: the fragments accept what the section accepts.
    from skyhaul.runtime.scenario import DATA_CENTER_LINK_PROPERTIES, LINK_MODEL_SCHEMA

    good = {
        "mode": "calibrated",
        "seed": 3,
        "bent_pipe": {"access_ms": 4.0},
        "ground": "starlink-2023",
        "gsl_rule": "slant-range",
        "max_gsl_range_km": 1300.0,
        "min_satellite_altitude_km": 300,
    }
    jsonschema.validate(good, LINK_MODEL_SCHEMA)
    parse_scenario(victoria_scenario(**good))
    for bad in ({"bent_pipe": {"acess_ms": 1.0}}, {"mode": "fancy"}, {"ground": "x"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, LINK_MODEL_SCHEMA)
        with pytest.raises(ScenarioError):
            parse_scenario(victoria_scenario(**bad))
    replay_schema = {"type": "object", "properties": DATA_CENTER_LINK_PROPERTIES}
    jsonschema.validate(
        {"pop": "SEA", "replay": {"file": "t.csv", "loop": False, "shift_s": 15}}, replay_schema
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"replay": {"loop": True}}, replay_schema)


def test_seychelles_over_lasers_to_frankfurt_through_the_links_model_matches_the_trace():
    trace = load_trace(shared_data("traces/sey_20240812_ping.txt"))
    frankfurt = starlink_ground().pop("FRA")
    scenario = parse_scenario(
        {
            "name": "seychelles",
            "epoch": datetime.fromtimestamp(float(trace.t_unix[0]), UTC).isoformat(),
            "constellation": {"preset": "starlink-gen1"},
            "scheduler": {"isl": "+grid", "policy": "shortest-path"},
            "regions": [{"id": "fra-pop", "location": {"lat": frankfurt.lat_deg, "lon": frankfurt.lon_deg}}],
            "data_centers": [
                {"id": "mdc-seychelles", "home_region": "fra-pop", "location": {"lat": -4.68, "lon": 55.49}}
            ],
            "link_model": {"ground": "starlink-2023", "seed": 7},
        }
    )
    model = build(scenario)
    floor = link_floor_ms(model, "mdc-seychelles", "fra-pop", trace.t_unix)
    assert np.all(np.isfinite(floor)) and 55.0 < np.median(floor) < 75.0
    laser = model.path_is_laser(model.decide(model.decision_time(float(trace.t_unix[0]))), 0, 0)
    assert laser  # the route uses ISLs: the laser profile applies
    samples = model_at_trace_times(
        trace, floor, model.latency, laser=laser, seed=model.latency_seed, terminal_id="mdc-seychelles"
    )
    check_against_trace(compare(trace, samples), "seychelles laser")
