"""Every read command's --json against a live system: strict JSON (no NaN), RFC 3339 UTC times with
`Z`, null (never "-" or -1) for "no value"."""

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time

import pytest

from skyhaul.runtime.launcher import Launcher
from skyhaul.runtime.settings import ADDR_VARS

RFC3339_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
LOOKS_LIKE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:")
TIME_KEYS = re.compile(r"(^|_)(at|start|end|rise|set|culmination|until|time)$")


def _refuse_constant(name: str):
    raise ValueError(f"non-JSON constant {name} in the output")


def strict_json(text: str):
    return json.loads(text, parse_constant=_refuse_constant)


def check_values(value, path: str = "$") -> int:
    """Assert the output's conventions everywhere in it; returns how many times were checked."""
    times = 0
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and TIME_KEYS.search(key):
                assert RFC3339_Z.fullmatch(item), f"{path}.{key}: {item!r} is not RFC 3339 UTC with Z"
            if "satellite" in key and isinstance(item, int):
                assert item >= 0, f"{path}.{key}: {item} (a -1 sentinel; null means none)"
            times += check_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            times += check_values(item, f"{path}[{i}]")
    elif isinstance(value, str):
        assert value != "-", f"{path}: '-' instead of null"
        if LOOKS_LIKE_TIME.match(value):
            assert RFC3339_Z.fullmatch(value), f"{path}: {value!r} is not RFC 3339 UTC with Z"
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))  # and a real time
            times += 1
    elif isinstance(value, float):
        assert value == value and abs(value) != float("inf"), f"{path}: {value}"
    return times


def test_the_checker_refuses_what_the_old_output_had():
    with pytest.raises(ValueError, match="NaN"):
        strict_json('{"rtt_ms": NaN}')
    for bad in (
        {"at": "2020-10-30 00:10:31"},
        {"created_at": "-"},
        {"satellite": -1},
        {"x": "2020-10-30T00:10:31"},
    ):
        with pytest.raises(AssertionError):
            check_values(bad)
    assert check_values({"at": "2020-10-30T00:10:31Z", "rise": "2020-10-30T00:10:31.250Z", "set": None}) == 2


@pytest.mark.slow
def test_every_read_command_json_is_strict(tmp_path, redis_url):
    launcher = Launcher(None, tmp_path / "run", redis_url=redis_url)  # the built-in default scenario
    endpoints = launcher.start(ready_timeout=240)
    try:
        env = dict(os.environ, SKYHAUL_STATE_DIR=str(tmp_path / "state"))
        for label, address in endpoints.services.items():
            for service, var in ADDR_VARS.items():
                if label == service or label.startswith(service + "-"):
                    env[var] = address
        (tmp_path / "scan.bin").write_bytes(os.urandom(50_000))

        def cli(*args: str, lines: bool = False):
            proc = subprocess.run(
                [sys.executable, "-m", "skyhaul.cli.main", *args],
                capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
            )  # fmt: skip
            assert proc.returncode == 0, (args, proc.stderr)
            if lines:
                return [strict_json(line) for line in proc.stdout.splitlines() if line.strip()]
            return strict_json(proc.stdout)

        put = cli("put", "scan.bin", "--key", "scans/a.bin", "--json")
        assert RFC3339_Z.fullmatch(put["created_at"]) and put["synced_at"] is None
        deadline = time.monotonic() + 90
        while cli("objects", "--state", "synced", "--json") == [] and time.monotonic() < deadline:
            time.sleep(1)

        outputs = {
            "status": cli("status", "--json"),
            "scenarios": cli("scenarios", "--json"),
            "sats": cli("sats", "--json"),
            "sats --list": cli("sats", "--list", "--json"),
            "passes": cli("passes", "--lat", "57.79", "--lon", "-152.4", "--hours", "1", "--json"),
            "route": cli("route", "mdc-kodiak", "--json"),
            "rtt": cli("rtt", "mdc-kodiak", "--hours", "0.5", "--step", "5", "--json"),
            "events": cli("events", "--json", lines=True),
            "contacts": cli("contacts", "mdc-kodiak", "--json"),
            "terminal stats": cli("terminal", "stats", "--json"),
            "mdc-status": cli("mdc-status", "--json"),
            "objects": cli("objects", "--json"),
            "blobs": cli("blobs", "--json"),
        }
        times = {name: check_values(value) for name, value in outputs.items()}
        # The checks saw real times where the commands report them.
        for name in ("sats", "passes", "route", "rtt", "events", "contacts", "objects"):
            assert times[name] > 0, (name, outputs[name])
        assert outputs["route"]["at"].endswith("Z")
        assert outputs["objects"][0]["created_at"].endswith("Z")
    finally:
        launcher.stop()
