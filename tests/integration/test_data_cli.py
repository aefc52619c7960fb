"""`skyhaul put / objects / mdc-status / blobs` against real region and data center servers."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import grpc
import pytest
from support.storage import (
    DATA_CENTER,
    all_synced,
    payload,
    sha256_hex,
    start_mdc,
    start_region,
    write_scenario,
)

from skyhaul.cli import data
from skyhaul.cli.common import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from skyhaul.mdc.sync import SyncConfig
from skyhaul.runtime.redis_server import free_port
from skyhaul.v1 import mdc_pb2_grpc


def main(argv: list[str]) -> int:
    """`skyhaul <argv>` for the data commands (the same parser setup as skyhaul.cli.main)."""
    parser = argparse.ArgumentParser(prog="skyhaul")
    data.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


async def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """The real command line in a thread (each command runs its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_put_objects_status_and_blobs(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture
) -> None:
    scenario = write_scenario(tmp_path / "scenario.yaml")
    region_app, region_server = await start_region(scenario, tmp_path / "region")
    region = f"127.0.0.1:{region_server.port}"
    mdc_app, mdc_server = await start_mdc(
        scenario, tmp_path / "mdc", region, redis_url, SyncConfig(block_size_bytes=64 * 1024)
    )
    mdc = f"127.0.0.1:{mdc_server.port}"
    try:
        data = payload(300_000, 3)
        source = tmp_path / "scan.bin"
        source.write_bytes(data)
        code, out, _ = await run_cli(
            capsys,
            "put", str(source), "--key", "scans/scan.bin", "--priority", "telemetry",
            "--metadata", "camera=north", "--content-type", "application/x-scan", "--mdc-addr", mdc, "--json",
        )  # fmt: skip
        assert code == EXIT_OK
        stored = json.loads(out)
        assert stored["key"] == "scans/scan.bin" and stored["sha256"] == sha256_hex(data)
        assert stored["priority"] == "telemetry" and stored["metadata"] == {"camera": "north"}

        code, out, _ = await run_cli(capsys, "put", str(source), "--mdc-addr", mdc)
        assert code == EXIT_OK and "stored scan.bin" in out

        async with grpc.aio.insecure_channel(mdc) as channel:
            stub = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
            deadline = asyncio.get_running_loop().time() + 30
            while not await all_synced(stub, 2):
                assert asyncio.get_running_loop().time() < deadline, "the objects never synced"
                await asyncio.sleep(0.05)

        code, out, _ = await run_cli(capsys, "objects", "--mdc-addr", mdc, "--state", "synced", "--json")
        assert code == EXIT_OK
        assert sorted(o["key"] for o in json.loads(out)) == ["scan.bin", "scans/scan.bin"]
        code, out, _ = await run_cli(capsys, "objects", "--mdc-addr", mdc, "--state", "pending")
        assert code == EXIT_OK and out.strip() == "no objects"
        code, out, _ = await run_cli(capsys, "objects", "--mdc-addr", mdc)
        assert "scans/scan.bin" in out and "synced" in out and "100%" in out

        code, out, _ = await run_cli(capsys, "blobs", "--region-addr", region, "--json")
        assert code == EXIT_OK
        blobs = {b["name"]: b for b in json.loads(out)}
        assert blobs["scans/scan.bin"]["sha256"] == sha256_hex(data)
        assert blobs["scans/scan.bin"]["content_type"] == "application/x-scan"
        assert blobs["scans/scan.bin"]["metadata"] == {"camera": "north"}
        code, out, _ = await run_cli(
            capsys, "blobs", "--region-addr", region, "--container", "mdc-sync", "--prefix", "scans/"
        )
        assert (
            code == EXIT_OK
            and "scans/scan.bin" in out
            and "scan.bin " not in out.replace("scans/scan.bin", "")
        )

        code, out, _ = await run_cli(capsys, "mdc-status", "--mdc-addr", mdc, "--json")
        status = json.loads(out)
        assert status["data_center_id"] == DATA_CENTER and status["totals"]["objects_synced"] == 2
        code, out, _ = await run_cli(capsys, "mdc-status", "--mdc-addr", mdc)
        assert code == EXIT_OK and "UP" in out and "synced 2" in out and "assumed up" in out

        # Bad input: a clear line on stderr and the usage exit code; nothing is stored.
        code, _, err = await run_cli(capsys, "put", str(tmp_path / "missing.bin"), "--mdc-addr", mdc)
        assert code == EXIT_USAGE and "no such file" in err
        code, _, err = await run_cli(capsys, "put", str(source), "--metadata", "novalue", "--mdc-addr", mdc)
        assert code == EXIT_USAGE and "KEY=VALUE" in err
        code, _, err = await run_cli(capsys, "put", str(source), "--key", "../up", "--mdc-addr", mdc)
        assert code == EXIT_USAGE and "'..'" in err
        code, out, _ = await run_cli(capsys, "objects", "--mdc-addr", mdc, "--json")
        assert len(json.loads(out)) == 2
        code, _, err = await run_cli(capsys, "mdc-status", "--mdc-addr", f"127.0.0.1:{free_port()}")
        assert code == EXIT_UNAVAILABLE and "cannot reach" in err
    finally:
        await mdc_server.stop(grace=0.1)
        await region_server.stop(grace=0.1)


def test_help_has_examples(capsys: pytest.CaptureFixture) -> None:
    for command in ("put", "objects", "mdc-status", "blobs"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "examples:" in capsys.readouterr().out
