"""Scenario validation: a malformed scenario fails with a message that names the field."""

import copy
from pathlib import Path

import jsonschema
import pytest
import sgp4
import yaml

from skyhaul.core.constellations import ShellSpec, build_shells
from skyhaul.core.ground import Gateway, Terminal
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.tle import tle_checksum
from skyhaul.runtime.scenario import (
    DEFAULT_SCENARIO,
    SCENARIO_SCHEMA,
    ScenarioError,
    load_scenario,
    parse_scenario,
    scenario_schema_json,
)
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
    (tmp_path / "sats.tle").write_text(_valid_tle_lines())
    data = scenario(constellation={"tle_file": "sats.tle", "name_filter": "STARLINK-*"})
    data["scheduler"] = {**data.get("scheduler", {}), "isl": "none"}  # two satellites make no +grid
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


def _valid_tle_lines():
    """Two valid element sets from the sgp4 wheel's verification file (checksums verified)."""
    lines = (Path(sgp4.__file__).resolve().parent / "SGP4-VER.TLE").read_text().splitlines()
    pairs = []
    for i, line in enumerate(lines):
        if line.startswith("1 ") and len(pairs) < 2:
            line1, line2 = line.rstrip(), lines[i + 1][:69]
            if tle_checksum(line1) == int(line1[68]) and tle_checksum(line2) == int(line2[68]):
                pairs.append((line1, line2))
    return "".join(f"STARLINK-{i}\n{l1}\n{l2}\n" for i, (l1, l2) in enumerate(pairs))


def test_the_published_schema_is_the_generated_one_and_a_valid_schema():
    jsonschema.Draft7Validator.check_schema(SCENARIO_SCHEMA)
    published = (Path(__file__).resolve().parents[2] / "docs" / "scenario.schema.json").read_text()
    assert published == scenario_schema_json(), "run `skyhaul scenario schema -o docs/scenario.schema.json`"
    # The schema accepts what the parser accepts: the default scenario is valid against it.
    assert not list(jsonschema.Draft7Validator(SCENARIO_SCHEMA).iter_errors(scenario()))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        # A misspelled key is named at any depth, with the key it probably meant.
        (
            lambda d: d.update(constelation=d.pop("constellation")),
            r"^constelation: unknown key \(did you mean constellation\?",
        ),
        (
            lambda d: d["data_centers"][0].update(terminal={"uplnk_mbps": 5}),
            r"^data_centers\[0\]\.terminal\.uplnk_mbps: unknown key \(did you mean uplink_mbps\?",
        ),
        (
            lambda d: d["scheduler"].update(polcy="x"),
            r"^scheduler\.polcy: unknown key \(did you mean policy\?",
        ),
        # Wrong types say what was expected.
        (lambda d: d.update(speed="fast"), r"^speed: expected a number, got 'fast'"),
        (lambda d: d.update(regions={"id": "westus2"}), r"^regions: expected a list"),
        (
            lambda d: (
                d["data_centers"][0]["workload"].update(objects=1.5)
                if "workload" in d["data_centers"][0]
                else d["data_centers"][0].update(workload={"objects": 1.5})
            ),
            r"^data_centers\[0\]\.workload\.objects: expected a whole number, got 1\.5",
        ),
        (lambda d: d.update(speed=float("nan")), r"^speed: expected a finite number"),
        # An unknown preset stops here, not in a crashed orbit process.
        (
            lambda d: d["constellation"].update(preset="starlink-gen9"),
            r"^constellation\.preset: 'starlink-gen9' is not one of .*kuiper-630",
        ),
        (
            lambda d: d["regions"][0].update(preset="marsnorth"),
            r"^regions\[0\]\.preset: 'marsnorth' is not one of",
        ),
        # A container the region would refuse, refused before the first upload.
        (
            lambda d: d["data_centers"][0].update(sync={"container": "Bad_Container"}),
            r"^data_centers\[0\]\.sync\.container: container name 'Bad_Container' is invalid",
        ),
        (
            lambda d: d["data_centers"][0].update(workload={"key_prefix": "../up/"}),
            r"^data_centers\[0\]\.workload\.key_prefix: ",
        ),
        # A sample step too small to run (it validated, then never got ready).
        (
            lambda d: d["scheduler"].update(sample_step_s=1e-6),
            r"^scheduler\.sample_step_s: 1e-06 is outside \[0\.1, 60\]",
        ),
        (
            lambda d: d["scheduler"].update(terminal_min_elevation_deg=90),
            r"^scheduler\.terminal_min_elevation_deg: 90 is outside \[0, 90\)",
        ),
    ],
)
def test_schema_errors_name_the_field(mutate, message):
    data = scenario()
    mutate(data)
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(data)


def test_errors_echo_at_most_200_characters_of_a_value():
    huge = "x" * 10_000
    for mutate in (
        lambda d: d.update(speed=huge),
        lambda d: d.update({huge: 1}),
        lambda d: d["constellation"].update(preset=huge),
        lambda d: d["data_centers"][0].update(id=huge),
    ):
        data = scenario()
        mutate(data)
        with pytest.raises(ScenarioError) as err:
            parse_scenario(data)
        assert huge[:201] not in str(err.value) and len(str(err.value)) < 1500, str(err.value)[:300]


def test_duplicate_keys_are_refused_with_their_line(tmp_path):
    path = tmp_path / "dup.yaml"
    text = yaml.safe_dump(scenario(), sort_keys=False)
    path.write_text(text + "speed: 30\n")
    with pytest.raises(
        ScenarioError, match=r"^dup\.yaml: line \d+: duplicate key 'speed' \(first given on line \d+\)"
    ):
        load_scenario(path)
    path.write_text(text.replace("lat: 57.79", "lat: 57.79\n    lat: 10"))  # at depth 3
    with pytest.raises(ScenarioError, match="duplicate key 'lat'"):
        load_scenario(path)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        "constellation: {preset: starlink-shell1}\n"
        "regions: [{id: westus2}]\n"
        "data_centers:\n"
        "  - &kodiak {id: mdc-kodiak, home_region: westus2, location: {lat: 57.79, lon: -152.4}}\n"
        "  - <<: *kodiak\n"
        "    id: mdc-two\n"
    )
    assert [d.id for d in load_scenario(path).data_centers] == ["mdc-kodiak", "mdc-two"]


def test_a_binary_or_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ScenarioError, match=r"^scenario\.yaml: not a text file"):
        load_scenario(path)
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ScenarioError, match=r"^scenario\.yaml: line 1: not UTF-8 text"):
        load_scenario(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"^scenario\.yaml: not valid YAML: line \d+, column \d+"):
        load_scenario(path)


def test_an_unquoted_epoch_is_read_as_the_same_time(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(scenario(), sort_keys=False).replace("'2020-10-30T00:00:00Z'", "2020-10-30T00:00:00Z")
    )
    assert load_scenario(path).epoch_unix == parse_scenario(scenario()).epoch_unix


def test_a_bad_tle_file_names_the_file_and_line_and_does_not_echo_it(tmp_path):
    good = _valid_tle_lines()
    tle = tmp_path / "sats.tle"
    lines = good.splitlines()
    lines[4] = lines[4][:30] + "X" + lines[4][31:]  # second set's line 1: bad field and checksum
    tle.write_text("\n".join(lines) + "\n")
    path = tmp_path / "s.yaml"
    data = scenario(constellation={"tle_file": "sats.tle"})
    data["scheduler"] = {**data.get("scheduler", {}), "isl": "none"}  # two satellites make no +grid
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=r"^s\.yaml: constellation\.tle_file: .*sats\.tle, line 5: "):
        load_scenario(path)
    # A file that is not a catalogue at all (a secret, say) is not repeated back.
    secret = "password=" + "s3cr3t" * 100
    tle.write_text(secret + "\nmore\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert "line 1" in str(err.value) and "s3cr3t" * 40 not in str(err.value)
    tle.write_bytes(b"\x00\x01\x02" * 50)
    with pytest.raises(ScenarioError, match=r"constellation\.tle_file: .*line 1"):
        load_scenario(path)
    # skip_invalid keeps the good sets.
    tle.write_text("\n".join(lines) + "\n")
    data["constellation"]["skip_invalid"] = True
    path.write_text(yaml.safe_dump(data))
    assert load_scenario(path).constellation.skip_invalid


def test_an_empty_section_or_value_means_the_defaults():
    s = parse_scenario(scenario(scheduler=None, description=None, speed=None))
    assert s.scheduler == SchedulerConfig() and s.description == "" and s.speed == 1.0
    with pytest.raises(ScenarioError, match=r"^regions: required"):
        parse_scenario(scenario(regions=None))
