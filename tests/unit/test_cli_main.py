"""The habits every `skyhaul` command shares: --version, exit codes in --help, --json explained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from skyhaul.cli import common
from skyhaul.cli.main import all_parsers, build_parser, main
from skyhaul.runtime.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def _skyhaul(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYHAUL_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run(
        [sys.executable, "-m", "skyhaul.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"skyhaul {version}"


def test_every_help_lists_the_exit_codes_and_explains_json():
    parsers = list(all_parsers(build_parser()))
    assert len(parsers) > 10  # the whole tree, subcommands of subcommands included
    with_json = 0
    for parser in parsers:
        text = parser.format_help()
        for code in (common.EXIT_OK, common.EXIT_FAILURE, common.EXIT_USAGE, common.EXIT_UNAVAILABLE):
            assert f"\n  {code}  " in text, f"{parser.prog} --help does not list exit code {code}"
        for action in parser._actions:
            if "--json" in action.option_strings:
                with_json += 1
                assert action.help, f"{parser.prog} --json has no help text"
    assert with_json >= 5


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == common.EXIT_USAGE
    assert "exit codes:" in capsys.readouterr().out


def test_status_with_nothing_reachable_exits_3(tmp_path):
    targets = [f"--target=svc{i}=127.0.0.1:{free_port()}" for i in range(2)]
    result = _skyhaul("status", *targets, "--json", tmp_path=tmp_path)
    assert result.returncode == common.EXIT_UNAVAILABLE, result.stdout + result.stderr
    states = json.loads(result.stdout)
    assert set(states) == {"svc0", "svc1"}
    assert all(s["status"].startswith("UNREACHABLE") for s in states.values())
    assert "skyhaul up" in result.stderr


def test_status_with_a_bad_target_is_a_usage_error(tmp_path):
    result = _skyhaul("status", "--target", "orbit", tmp_path=tmp_path)
    assert result.returncode == common.EXIT_USAGE
    assert "NAME=HOST:PORT" in result.stderr
