"""Scenario validation: a malformed scenario fails with a message that names the field."""

import copy

import pytest
import yaml

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
    ],
)
def test_a_bad_field_is_named(mutate, field):
    data = scenario()
    mutate(data)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data)
    assert str(err.value).startswith(field), str(err.value)


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
