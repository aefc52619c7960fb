"""`make demo`'s entry point, headless, on a shortened seed scenario: the summary agrees with the
events and with the physics, every object arrives intact, the PNG is valid, no process is left."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from skyhaul.cli.record import RunData, summarize
from skyhaul.core.constellations import build_preset
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.timeline import LinkModel
from skyhaul.runtime.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "scenarios" / "azure-mdc-2020.yaml"


def _leftovers(run_dir: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        try:
            if proc.info["cwd"] and Path(proc.info["cwd"]).resolve() == run_dir.resolve():
                found.append(proc.info["pid"])
        except (psutil.Error, OSError):
            continue
    return found


def _predicted_outages(start: float, end: float) -> tuple[int, float]:
    """Outages of the seed data center over [start, end] straight from the core model."""
    s = load_scenario(SEED)
    dc, region = s.data_centers[0], s.regions[0]
    ground = GroundSegment(
        [Terminal(dc.id, dc.location.lat, dc.location.lon, min_elevation_deg=dc.terminal.min_elevation_deg)],
        [
            Gateway(g.id, region.id, g.location.lat, g.location.lon, min_elevation_deg=g.min_elevation_deg)
            for g in region.gateways
        ],
        [Region(region.id, region.location.lat, region.location.lon)],
    )
    config = SchedulerConfig(policy=s.scheduler.policy, isl=s.scheduler.isl)
    model = LinkModel.from_elements(build_preset(s.constellation.preset, s.epoch_unix), ground, config)
    rtt = np.concatenate([c.rtt_ms for c in model.predict_route(dc.id, region.id, start, end, 1.0)])
    up = np.isfinite(rtt)
    return int(np.sum(up[:-1] & ~up[1:])), float(up.mean())


# Wall-clock fidelity check on a shared 2-vCPU machine: a scheduler hiccup can push one run past
# the tolerance, so it gets two more tries; a real regression fails all three.
@pytest.mark.flaky(reruns=2)
@pytest.mark.slow
def test_demo_headless_summary_is_consistent(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "SKYHAUL_STATE_DIR": str(tmp_path / "state")}
    env.pop("SKYHAUL_REDIS_URL", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "skyhaul.cli.main",
            "demo",
            "--scenario",
            str(SEED),
            "--minutes",
            "12",
            "--speed",
            "40",
            "--run-dir",
            str(run_dir),
            "--json",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout)

    # Bytes and objects: everything put arrived, once, whole.
    assert summary["objects_put"] > 0
    assert summary["objects_synced"] == summary["objects_put"]
    assert summary["bytes_synced"] == summary["bytes_synced_by_objects"] > 0
    data = RunData.load(run_dir)
    assert all(o["state"] == "synced" for o in data.objects)
    assert sum(o["size"] for o in data.objects) == summary["bytes_synced"]

    # Events: nothing missed, outages = link-down events, and the same outages the physics predicts.
    assert summary["sequence_gaps"] == 0
    assert summary["outages"] == summary["link_down_events"] + summary["started_in_outage"] > 0
    predicted, availability = _predicted_outages(data.meta["start"], data.meta["end"])
    assert abs(summary["outages"] - predicted) <= 2, (summary["outages"], predicted)
    assert abs(summary["availability"] - availability) < 0.1
    assert 0 < summary["availability"] < 1
    assert summary["rtt_p50_ms"] > 4 * 550 / 299_792.458 * 1000  # above the bent-pipe floor
    assert summary["max_backlog_bytes"] > 0

    # The report is a real image and `skyhaul report` rebuilds the same summary from the record.
    png = Path(summary["report"])
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size[0] >= 800 and image.size[1] >= 500
    assert summarize(data).as_dict() == {k: v for k, v in summary.items() if k not in ("run_dir", "report")}
    again = subprocess.run(
        [sys.executable, "-m", "skyhaul.cli.main", "report", str(run_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and json.loads(again.stdout)["outages"] == summary["outages"]

    assert _leftovers(run_dir) == []
