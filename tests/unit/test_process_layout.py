"""Which process hosts which data centers: the shard rule, the settings that choose a set, and the
layout `skyhaul up` plans (no process is started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyhaul.core.fleet import fleet_scenario
from skyhaul.runtime.launcher import Layout, choose_layout, data_center_map, plan
from skyhaul.runtime.scenario import default_scenario, parse_scenario
from skyhaul.runtime.services import hosting_arguments
from skyhaul.runtime.settings import (
    Settings,
    SettingsError,
    hosted_data_centers,
    parse_dc_forwards,
    parse_shard,
    shard_members,
)

IDS = [f"dc-{n:02d}" for n in range(11)]
FLEET = str(Path(__file__).resolve().parents[2] / "scenarios" / "fleet-1000.yaml")


@pytest.mark.parametrize("count", [1, 2, 3, 4, 11])
def test_shards_partition_the_fleet_by_position(count):
    shards = [shard_members(IDS, k, count) for k in range(count)]
    assert sorted(dc for shard in shards for dc in shard) == sorted(IDS)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for k, shard in enumerate(shards):
        assert all(IDS.index(dc) % count == k for dc in shard)


def test_appending_a_data_center_moves_no_other():
    before = {dc: k for k in range(4) for dc in shard_members(IDS, k, 4)}
    after = {dc: k for k in range(4) for dc in shard_members([*IDS, "dc-new"], k, 4)}
    assert all(after[dc] == shard for dc, shard in before.items())


@pytest.mark.parametrize("text", ["", "1", "2/2", "-1/3", "a/b", "0/0", "1/2/3"])
def test_bad_shards_are_refused_with_the_variable_named(text):
    with pytest.raises(SettingsError, match="SKYHAUL_SHARD"):
        parse_shard(text)


def test_hosted_data_centers_from_shard_list_star_or_default():
    assert hosted_data_centers({"SKYHAUL_SHARD": "1/4"}, IDS, "s") == ("dc-01", "dc-05", "dc-09")
    assert hosted_data_centers({"SKYHAUL_DATA_CENTER_ID": "*"}, IDS, "s") == tuple(IDS)
    assert hosted_data_centers({"SKYHAUL_DATA_CENTER_ID": "dc-03, dc-00"}, IDS, "s") == ("dc-03", "dc-00")
    assert hosted_data_centers({}, IDS, "s") == ("dc-00",)  # today's default: the first one
    with pytest.raises(SettingsError, match="'dc-99'"):
        hosted_data_centers({"SKYHAUL_DATA_CENTER_ID": "dc-01,dc-99"}, IDS, "s")
    with pytest.raises(SettingsError, match="twice"):
        hosted_data_centers({"SKYHAUL_DATA_CENTER_ID": "dc-01,dc-01"}, IDS, "s")
    with pytest.raises(SettingsError, match="both"):
        hosted_data_centers({"SKYHAUL_SHARD": "0/2", "SKYHAUL_DATA_CENTER_ID": "dc-01"}, IDS, "s")
    with pytest.raises(SettingsError, match="holds no data center"):
        hosted_data_centers({"SKYHAUL_SHARD": "11/12"}, IDS, "s")


def test_forwards_of_a_set_name_their_data_center():
    forwards = parse_dc_forwards("dc-01:9000=10.0.0.1:80,dc-02:9001=10.0.0.2:80", ("dc-01", "dc-02"))
    assert [f.listen_port for f in forwards["dc-01"]] == [9000] and forwards["dc-02"][
        0
    ].target == "10.0.0.2:80"
    with pytest.raises(SettingsError, match="names no data center"):
        parse_dc_forwards("9000=10.0.0.1:80", ("dc-01", "dc-02"))
    with pytest.raises(SettingsError, match="not a data center this process hosts"):
        parse_dc_forwards("dc-07:9000=10.0.0.1:80", ("dc-01", "dc-02"))


def test_flags_choose_the_hosted_set():
    assert hosting_arguments("mdc", ["--shard", "0/4"]) == {"SKYHAUL_SHARD": "0/4"}
    assert hosting_arguments("terminal", ["--data-centers", "*"]) == {"SKYHAUL_DATA_CENTER_ID": "*"}
    with pytest.raises(SystemExit):
        hosting_arguments("links", ["--shard", "0/4"])  # only mdc and terminal host data centers


def test_a_terminal_set_needs_its_relay_base_port():
    env = {"SKYHAUL_SHARD": "0/1"}
    with pytest.raises(SettingsError, match="SKYHAUL_RELAY_BASE_PORT"):
        Settings.from_env("terminal", {**env, "SKYHAUL_DATA_CENTER_ID": "", "SKYHAUL_SCENARIO": FLEET})
    settings = Settings.from_env(
        "terminal", {**env, "SKYHAUL_SCENARIO": FLEET, "SKYHAUL_RELAY_BASE_PORT": "21000"}
    )
    assert settings.multi and settings.relay_base_port == 21000


def test_single_data_center_settings_are_unchanged():
    settings = Settings.from_env("mdc", {"SKYHAUL_DATA_CENTER_ID": "mdc-kodiak"})
    assert settings.data_center_ids == ("mdc-kodiak",) and not settings.multi
    assert settings.data_center_id == "mdc-kodiak"


@pytest.mark.parametrize(
    ("count", "cores", "expected"),
    [
        (1, 2, Layout("per-dc")),
        (16, 2, Layout("per-dc")),
        (17, 2, Layout("shards", 1)),
        (1000, 2, Layout("shards", 4)),
        (1000, 8, Layout("shards", 16)),
        (100, 8, Layout("shards", 2)),
    ],
)
def test_auto_layout_follows_the_fleet_and_the_cores(count, cores, expected):
    assert choose_layout(count, cores=cores) == expected


def test_forced_layouts_and_their_refusals():
    assert choose_layout(3, "shards", 3) == Layout("shards", 3)
    assert choose_layout(3, shards=2) == Layout("shards", 2)
    assert choose_layout(1000, "per-dc") == Layout("per-dc")
    assert choose_layout(1000, packet=True) == Layout("per-dc")  # each mdc in its own namespace
    with pytest.raises(SettingsError, match="only 3"):
        choose_layout(3, "shards", 4)
    with pytest.raises(SettingsError, match="per-dc"):
        choose_layout(30, "shards", packet=True)
    with pytest.raises(SettingsError, match="--shards"):
        choose_layout(30, "per-dc", 2)


def test_a_shard_plan_gives_each_data_center_its_own_consecutive_relay(tmp_path):
    scenario = parse_scenario(fleet_scenario(9, 3, 1), source="fleet")
    specs = plan(scenario, None, tmp_path, "redis://127.0.0.1:1/0", 0.0, layout=Layout("shards", 2))
    shards = {s.name: s for s in specs if s.service in ("mdc", "terminal")}
    assert set(shards) == {"mdc-shard-0", "terminal-shard-0", "mdc-shard-1", "terminal-shard-1"}
    ids = [dc.id for dc in scenario.data_centers]
    homes = {dc.id: dc.home_region for dc in scenario.data_centers}
    regions = {s.env["SKYHAUL_REGION_ID"]: s.address for s in specs if s.service == "region"}
    all_ports = []
    for k in range(2):
        terminal, mdc = shards[f"terminal-shard-{k}"], shards[f"mdc-shard-{k}"]
        assert terminal.hosts == mdc.hosts == list(shard_members(ids, k, 2))
        assert terminal.env["SKYHAUL_SHARD"] == mdc.env["SKYHAUL_SHARD"] == f"{k}/2"
        base = int(terminal.env["SKYHAUL_RELAY_BASE_PORT"])
        assert mdc.env["SKYHAUL_REGION_RELAY"] == f"127.0.0.1:{base}"
        assert mdc.env["SKYHAUL_TERMINAL_ADDR"] == terminal.address
        # the j-th hosted data center's relay is base + j and leads to its own home region
        assert terminal.relay_ports == {base + j: regions[homes[dc]] for j, dc in enumerate(terminal.hosts)}
        all_ports += list(terminal.relay_ports)
    assert len(set(all_ports)) == len(ids)
    placed = data_center_map(specs)
    assert set(placed) == set(ids)
    assert all(set(p) == {"mdc", "terminal"} for p in placed.values())


def test_the_per_dc_plan_is_todays(tmp_path):
    specs = plan(default_scenario(), None, tmp_path, "redis://127.0.0.1:1/0", 0.0)
    names = {s.name for s in specs}
    assert {"terminal-mdc-kodiak", "mdc-kodiak"} <= names
    mdc = next(s for s in specs if s.name == "mdc-kodiak")
    assert mdc.env["SKYHAUL_DATA_CENTER_ID"] == "mdc-kodiak" and "SKYHAUL_SHARD" not in mdc.env
    assert mdc.hosts == ["mdc-kodiak"]
