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
    assert {p.stem for p in SCENARIOS} >= {
        "azure-mdc-2020",
        "starlink-gen1-isl",
        "o3b-meo",
        "fleet",
        "kuiper-aws",
    }


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
        # orbit, links, a region process per region, and an mdc + terminal pair per data center or
        # per shard (a fleet's layout): every data center hosted by exactly one of each.
        placed = endpoints.data_centers
        assert set(placed) == {dc.id for dc in scenario.data_centers}
        hosting = {label for where in placed.values() for label in (where["mdc"], where["terminal"])}
        assert hosting <= set(endpoints.services)
        assert len(endpoints.services) == 2 + len(scenario.regions) + len(hosting)
        assert {check_health(addr) for addr in endpoints.services.values()} == {"SERVING"}
    finally:
        launcher.stop()
    assert not [
        p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]


def _tle_pair() -> str:
    import sgp4

    from skyhaul.core.tle import tle_checksum

    lines = (Path(sgp4.__file__).resolve().parent / "SGP4-VER.TLE").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("1 ") and tle_checksum(line.rstrip()) == int(line.rstrip()[68]):
            return f"SAT-A\n{line.rstrip()}\n{lines[i + 1][:69]}\n"
    raise AssertionError("no valid TLE in the sgp4 wheel")


def _seed() -> dict:
    return yaml.safe_load(SCENARIOS[[p.stem for p in SCENARIOS].index("azure-mdc-2020")].read_text())


def _broken_files(directory: Path) -> dict[str, tuple[Path, str]]:
    """name -> (scenario file, regex the error must match): each names the field at fault."""
    cases: dict[str, tuple[dict | bytes | str, str]] = {}
    d = _seed()
    d["constellation"]["preset"] = "starlink-gen9"
    cases["unknown-preset"] = (d, r"constellation\.preset: 'starlink-gen9' is not one of")
    d = _seed()
    d["constellation"]["constelation"] = d["constellation"].pop("preset")
    cases["misspelled-key-depth-2"] = (
        d,
        r"constellation\.constelation: unknown key \(did you mean constellation",
    )
    d = _seed()
    d["data_centers"][0]["terminal"]["uplink_mbps"] = "fast"
    cases["wrong-type"] = (d, r"data_centers\[0\]\.terminal\.uplink_mbps: expected a number, got 'fast'")
    text = yaml.safe_dump(_seed(), sort_keys=False)
    cases["duplicate-key"] = (text + "speed: 60\n", r"line \d+: duplicate key 'speed'")
    cases["binary-file"] = (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), r"not a text file")
    bad_tle = _tle_pair().replace("SAT-A\n1 ", "SAT-A\n1 X", 1)
    (directory / "bad.tle").write_text(bad_tle)
    d = _seed()
    d["constellation"] = {"tle_file": "bad.tle"}
    cases["bad-tle"] = (d, r"constellation\.tle_file: .*bad\.tle, line 2: ")
    d = _seed()
    d["data_centers"][0]["sync"]["container"] = "Sync_Box"
    cases["bad-container"] = (d, r"data_centers\[0\]\.sync\.container: container name 'Sync_Box'")
    d = _seed()
    d["scheduler"]["sample_step_s"] = 1e-6
    cases["tiny-step"] = (d, r"scheduler\.sample_step_s: 1e-06 is outside \[0\.1, 60\]")
    files = {}
    for name, (content, pattern) in cases.items():
        path = directory / f"{name}.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(yaml.safe_dump(content, sort_keys=False))
        files[name] = (path, pattern)
    return files


BROKEN = (
    "unknown-preset",
    "misspelled-key-depth-2",
    "wrong-type",
    "duplicate-key",
    "binary-file",
    "bad-tle",
    "bad-container",
    "tiny-step",
)


@pytest.mark.parametrize("command", ["up", "demo"])
@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_scenario_stops_the_cli_with_rc_2_before_anything_starts(case, command, tmp_path):
    import os
    import re
    import subprocess
    import sys

    path, pattern = _broken_files(tmp_path)[case]
    run_dir = tmp_path / "run"
    env = {**os.environ, "SKYHAUL_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "skyhaul.cli.main",
            command,
            "--scenario",
            str(path),
            "--run-dir",
            str(run_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert re.search(pattern, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr) < 1000, proc.stderr
    # Nothing started: no run directory (no logs, no pids, no Redis data), no child process left.
    assert not run_dir.exists() or not any(run_dir.rglob("*")), list(run_dir.rglob("*"))
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if str(run_dir) in " ".join(p.info["cmdline"] or [])
    ]
