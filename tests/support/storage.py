"""Helpers for the region / data center tests: scenarios on disk, real servers, puts, waits.

Servers are real: `start_region` / `start_mdc` run the service apps on 127.0.0.1:0 in this
process; `ServiceProcess` runs `skyhaul serve <service>` as a child process (to kill -9 it).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

import skyhaul
from skyhaul.mdc.service import MdcApp
from skyhaul.mdc.sync import SyncConfig
from skyhaul.region.service import RegionApp
from skyhaul.runtime.clock import EmulationClock
from skyhaul.runtime.redis_server import free_port
from skyhaul.runtime.server import RunningServer, start_server
from skyhaul.runtime.settings import Settings
from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc, region_pb2, region_pb2_grpc

SERVICES_DIR = Path(skyhaul.__file__).resolve().parents[1]
DATA_CENTER = "mdc-test"
REGION = "westus2"
SAFETY_TIMEOUT = 60.0  # only so that a broken sync fails instead of hanging; never a measurement


def write_scenario(path: Path, *, speed: float = 1.0, data_center: Mapping[str, Any] | None = None) -> Path:
    """A one-region, one-data-center scenario; `data_center` overrides fields of the data center."""
    dc: dict[str, Any] = {
        "id": DATA_CENTER,
        "home_region": REGION,
        "location": {"lat": 70.255, "lon": -148.337},
        "sync": {"block_size_bytes": 65536},
    }
    dc.update(data_center or {})
    if "track" in dc:
        dc.pop("location", None)
    scenario = {
        "name": "sync-test",
        "epoch": "2020-10-30T00:00:00Z",
        "speed": speed,
        "constellation": {"preset": "starlink-shell1"},
        "regions": [{"id": REGION}],
        "data_centers": [dc],
    }
    path.write_text(yaml.safe_dump(scenario))
    return path


def make_settings(service: str, scenario: Path, data_dir: Path, **env: str) -> Settings:
    values = {
        "SKYHAUL_SCENARIO": str(scenario),
        "SKYHAUL_DATA_DIR": str(data_dir),
        "SKYHAUL_LISTEN": "127.0.0.1:0",
        **env,
    }
    return Settings.from_env(service, values)


def clock_for(settings: Settings) -> EmulationClock:
    return EmulationClock(settings.scenario.epoch_unix, settings.scenario.speed, time.time())


async def start_region(
    scenario: Path, data_dir: Path, listen: str = "127.0.0.1:0"
) -> tuple[RegionApp, RunningServer]:
    settings = make_settings("region", scenario, data_dir, SKYHAUL_LISTEN=listen)
    app = RegionApp(settings, clock_for(settings))
    return app, await start_server(app, listen)


async def start_mdc(
    scenario: Path,
    data_dir: Path,
    region_address: str,
    redis_url: str,
    sync_config: SyncConfig | None = None,
) -> tuple[MdcApp, RunningServer]:
    settings = make_settings(
        "mdc", scenario, data_dir, SKYHAUL_REGION_ADDR=region_address, SKYHAUL_REDIS_URL=redis_url
    )
    app = MdcApp(settings, clock_for(settings), sync_config=sync_config)
    return app, await start_server(app, "127.0.0.1:0")


def payload(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(size)


async def put_object(
    stub: mdc_pb2_grpc.ModularDataCenterServiceStub,
    key: str,
    data: bytes,
    priority: int = mdc_pb2.PRIORITY_CLASS_BULK,
    chunk: int = 256 * 1024,
    **header: Any,
) -> mdc_pb2.ObjectInfo:
    async def messages():
        yield mdc_pb2.PutObjectRequest(header=mdc_pb2.ObjectHeader(key=key, priority=priority, **header))
        for start in range(0, len(data), chunk):
            yield mdc_pb2.PutObjectRequest(data=data[start : start + chunk])

    reply = await stub.PutObject(messages(), timeout=30)
    return reply.object


async def list_objects(
    stub: mdc_pb2_grpc.ModularDataCenterServiceStub, **request: Any
) -> list[mdc_pb2.ObjectInfo]:
    found: list[mdc_pb2.ObjectInfo] = []
    token = ""
    while True:
        reply = await stub.ListObjects(mdc_pb2.ListObjectsRequest(page_token=token, **request), timeout=10)
        found += reply.objects
        token = reply.next_page_token
        if not token:
            return found


async def list_blobs(
    stub: region_pb2_grpc.CloudRegionServiceStub, container: str, prefix: str = ""
) -> list[region_pb2.BlobProperties]:
    found: list[region_pb2.BlobProperties] = []
    token = ""
    while True:
        reply = await stub.ListBlobs(
            region_pb2.ListBlobsRequest(container=container, prefix=prefix, page_token=token), timeout=10
        )
        found += reply.blobs
        token = reply.next_page_token
        if not token:
            return found


async def read_blob(stub: region_pb2_grpc.CloudRegionServiceStub, container: str, blob: str) -> bytes:
    parts = []
    async for message in stub.GetBlob(region_pb2.GetBlobRequest(container=container, blob=blob), timeout=30):
        parts.append(message.data)
    return b"".join(parts)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = SAFETY_TIMEOUT, every: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def all_synced(stub: mdc_pb2_grpc.ModularDataCenterServiceStub, count: int) -> bool:
    objects = await list_objects(stub)
    assert not [o for o in objects if o.state == mdc_pb2.SYNC_STATE_FAILED], "an object failed"
    return len(objects) == count and all(o.state == mdc_pb2.SYNC_STATE_SYNCED for o in objects)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ServiceProcess:
    """`skyhaul serve <service>` as a child process, on a port chosen here."""

    def __init__(self, service: str, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        child_env = {
            **os.environ,
            "PYTHONPATH": str(SERVICES_DIR),
            "SKYHAUL_LISTEN": self.address,
            "SKYHAUL_CLOCK_START": repr(time.time()),
            **env,
        }
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "skyhaul.cli.main", "serve", service],
            env=child_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"the child exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"the child never became SERVING:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9: no drain, no cleanup."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
