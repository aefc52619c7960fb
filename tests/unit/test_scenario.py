"""Scenario validation: a malformed scenario fails with a message that names the field."""

import copy

import pytest
import yaml

from skyhaul.core.constellations import ShellSpec, build_shells
from skyhaul.core.ground import Gateway, Terminal
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.runtime.scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario, parse_scenario
from skyhaul.runtime.settings import Settings, SettingsError, parse_forwards


def scenario(**changes):
    data = copy.deepcopy(DEFAULT_SCENARIO)
    data.update(changes)
    return data


def test_default_scenario_parses_with_region_preset_and_default_gateway():
    s = parse_scenario(scenario())
    assert s.regions[0].location.lat == pytest.approx(47.233)
    assert [g.id for g in s.regions[0].gateways] == ["gw-westus2"]
    assert s.scheduler.slot_interval_s == 15 and s.scheduler.slot_offset_s == 12
    assert s.data_centers[0].home_region == "westus2"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(colour="blue"), "colour"),
        (lambda d: d["data_centers"][0]["location"].update(lat=91), "data_centers[0].location.lat"),
        (lambda d: d.update(speed=-2), "speed"),
        (lambda d: d.update(speed=0), "speed"),
        (lambda d: d["scheduler"].update(policy="random"), "scheduler.policy"),
        (lambda d: d["scheduler"].update(slot_interval_s=0), "scheduler.slot_interval_s"),
        (lambda d: d["scheduler"].update(isl="mesh"), "scheduler.isl"),
        (lambda d: d["data_centers"][0].update(home_region="mars"), "data_centers[0].home_region"),
        (lambda d: d["data_centers"][0]["location"].update(height=3), "data_centers[0].location.height"),
        (lambda d: d.update(epoch="yesterday"), "epoch"),
        (lambda d: d["constellation"].update(shells=[{"planes": 2}]), "constellation"),
        (lambda d: d["data_centers"].append(copy.deepcopy(d["data_centers"][0])), "data_centers[1].id"),
        (lambda d: d["data_centers"][0].update(id="Bad_ID"), "data_centers[0].id"),
        # Ranges only core's SchedulerConfig checks are named too (the field, not a traceback).
        (lambda d: d["scheduler"].update(sample_step_s=20), "scheduler.sample_step_s"),
    ],
)
def test_a_bad_field_is_named(mutate, field):
    data = scenario()
    mutate(data)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data)
    assert str(err.value).startswith(field), str(err.value)


def test_shells_and_scheduler_parse_into_the_core_dataclasses_with_their_defaults():
    data = scenario(
        constellation={
            "shells": [
                {"name": "a", "planes": 4, "sats_per_plane": 5, "altitude_km": 550, "inclination_deg": 53},
                {
                    "name": "b",
                    "planes": 3,
                    "sats_per_plane": 2,
                    "altitude_km": 600,
                    "inclination_deg": 70,
                    "phasing": 2,
                },
            ]
        }
    )
    data["scheduler"] = {"isl": "+grid", "handover_stall_ms": 30}
    s = parse_scenario(data)
    first, second = s.constellation.shells
    # Walker F = 1 unless given: what the running system has always built from a scenario's shells.
    assert first == ShellSpec("a", 4, 5, 550.0, 53.0, phasing=1)
    assert second.phasing == 2 and second.raan_spread_deg == 360.0
    assert build_shells(s.constellation.shells, s.epoch_unix).size == 26
    assert s.scheduler == SchedulerConfig(isl="+grid", handover_stall_ms=30.0)
    dc = s.data_centers[0]
    assert (dc.terminal.min_elevation_deg, dc.terminal.uplink_mbps, dc.terminal.downlink_mbps) == (
        Terminal.min_elevation_deg,
        Terminal.uplink_mbps,
        Terminal.downlink_mbps,
    )
    gateway = s.regions[0].gateways[0]
    assert (gateway.min_elevation_deg, gateway.capacity_mbps, gateway.fibre_route_factor) == (
        Gateway.min_elevation_deg,
        Gateway.capacity_mbps,
        Gateway.fibre_route_factor,
    )


def test_a_one_plane_shell_must_give_its_phasing():
    # F must be below the number of planes, and the default F = 1 is not (as before the move).
    shell = {"name": "meo", "planes": 1, "sats_per_plane": 20, "altitude_km": 8062, "inclination_deg": 0}
    s = parse_scenario(scenario(constellation={"shells": [shell]}))
    with pytest.raises(ValueError, match="phasing"):
        build_shells(s.constellation.shells, s.epoch_unix)
    s = parse_scenario(scenario(constellation={"shells": [{**shell, "phasing": 0}]}))
    assert build_shells(s.constellation.shells, s.epoch_unix).size == 20


def test_load_names_the_file_and_field(tmp_path):
    data = scenario()
    data["data_centers"][0]["location"]["lat"] = 91
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=r"bad\.yaml: data_centers\[0\]\.location\.lat: 91"):
        load_scenario(path)


def test_tle_file_is_relative_to_the_scenario(tmp_path):
    (tmp_path / "sats.tle").write_text("")
    data = scenario(constellation={"tle_file": "sats.tle", "name_filter": "STARLINK-*"})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_scenario(path).constellation.tle_file == str(tmp_path / "sats.tle")
    data["constellation"]["tle_file"] = "missing.tle"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match="constellation.tle_file: no such file"):
        load_scenario(path)


def test_settings_name_the_bad_variable():
    with pytest.raises(SettingsError, match="SKYHAUL_LISTEN"):
        Settings.from_env("orbit", {"SKYHAUL_LISTEN": "nowhere"})
    with pytest.raises(SettingsError, match="SKYHAUL_DATA_CENTER_ID"):
        Settings.from_env("mdc", {"SKYHAUL_DATA_CENTER_ID": "nope"})
    with pytest.raises(SettingsError, match="SKYHAUL_TERMINAL_FORWARDS"):
        parse_forwards("7001:region:50053")
    fw = parse_forwards("7001=region-westus2:50053, 7002=[::1]:9")
    assert [(f.listen_port, f.target_host, f.target_port) for f in fw] == [
        (7001, "region-westus2", 50053),
        (7002, "::1", 9),
    ]


def test_realtime_priority_setting_is_opt_in_and_bounded():
    from skyhaul.runtime.settings import Settings, SettingsError

    assert Settings.from_env("terminal", {}).realtime_priority is None
    assert Settings.from_env("terminal", {"SKYHAUL_REALTIME_PRIORITY": "10"}).realtime_priority == 10
    for bad in ("0", "100", "-1", "fast"):
        with pytest.raises(SettingsError, match="SKYHAUL_REALTIME_PRIORITY"):
            Settings.from_env("terminal", {"SKYHAUL_REALTIME_PRIORITY": bad})
