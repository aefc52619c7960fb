"""Every shipped scenario validates and starts: every process reaches SERVING, then all stop."""

import copy
from pathlib import Path

import psutil
import pytest
import yaml

from skyhaul.runtime.launcher import Launcher, check_health
from skyhaul.runtime.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))


def test_the_shipped_scenarios_are_all_here():
    assert {p.stem for p in SCENARIOS} >= {"azure-mdc-2020", "starlink-gen1-isl", "o3b-meo", "fleet"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_validates(path):
    scenario = load_scenario(path)
    assert scenario.data_centers and scenario.regions
    fleet = scenario.name == "fleet"
    assert not fleet or (len(scenario.data_centers) == 20 and len(scenario.regions) == 3)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_a_mistake_in_a_shipped_scenario_names_the_field(path):
    data = yaml.safe_load(path.read_text())
    broken = copy.deepcopy(data)
    broken["data_centers"][0]["location"]["lat"] = 123
    with pytest.raises(ScenarioError, match=r"^data_centers\[0\]\.location\.lat: 123"):
        parse_scenario(broken)
    broken = copy.deepcopy(data)
    broken["scheduler"]["slot_length"] = 15
    with pytest.raises(ScenarioError, match=r"^scheduler\.slot_length: unknown key"):
        parse_scenario(broken)


@pytest.mark.slow
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_starts(path, tmp_path, redis_url):
    launcher = Launcher(str(path), tmp_path / "run", redis_url=redis_url)
    endpoints = launcher.start(ready_timeout=240)
    pids = list(endpoints.pids.values())
    try:
        scenario = load_scenario(path)
        assert len(endpoints.services) == 2 + len(scenario.regions) + 2 * len(scenario.data_centers)
        assert {check_health(addr) for addr in endpoints.services.values()} == {"SERVING"}
    finally:
        launcher.stop()
    assert not [
        p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
