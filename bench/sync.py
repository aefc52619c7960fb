"""Benchmark of store-and-forward sync (issue 6): goodput through the emulated link, and how long
a backlog takes to drain after an outage.

Actors, as in a deployment: the region (`skyhaul serve region`) and the terminal relay (one-way
delay 30 ms, 100 Mbit/s each way, on the relay's precise loop) run as child processes; the data
center (`MdcApp`, the real service with its sync worker) runs in this process and is driven over
gRPC. Redis is a real redis-server.

1. Goodput: the link is announced down (a link event), objects are put, the link is announced up
   and the clock runs until the last object is committed and verified. Compared with the
   configured rate and with a raw TCP bulk transfer through the same relay (the baseline, measured
   in the same run). Shown for large (16 MiB) and small (1 MiB) objects with the defaults (4
   StageBlock calls in flight, up to 16 objects at once), and with 1 call in flight: what the
   bandwidth-delay product (100 Mbit/s x 60 ms = 750 kB) costs without pipelining.
   Goal: >= 90 % of the configured rate for large objects.
2. Backlog drain: the synthetic workload offers a steady load; the relay holds all traffic for an
   outage (forced, and announced by a link event as the links service would), then the link
   returns. Reports the backlog built up and the time to drain it, against the fluid-model
   estimate  drain = outage x offered / (goodput - offered)  with the goodput measured in part 1
   for objects of the workload's size (1 MiB).
   The default outage is 20 s (`--outage-s 60` runs the full 60 s of the issue; the model line
   extrapolates the 20 s run to 60 s).

Run: ``make bench-sync`` or ``PYTHONPATH=services .venv/bin/python bench/sync.py [--outage-s 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from skyhaul.mdc.service import MdcApp  # noqa: E402
from skyhaul.mdc.sync import SyncConfig  # noqa: E402
from skyhaul.runtime.bus import EventPublisher  # noqa: E402
from skyhaul.runtime.clock import EmulationClock  # noqa: E402
from skyhaul.runtime.eventloop import new_event_loop  # noqa: E402
from skyhaul.runtime.redis_server import free_port, start_redis_server  # noqa: E402
from skyhaul.runtime.server import start_server  # noqa: E402
from skyhaul.runtime.settings import Settings  # noqa: E402
from skyhaul.terminal import EmulatedLink, LinkProfile, TerminalRelay  # noqa: E402
from skyhaul.v1 import events_pb2, mdc_pb2, mdc_pb2_grpc  # noqa: E402

RATE_MBPS = 100.0
ONE_WAY_S = 0.030
BLOCK = 1 << 20
DC = "mdc-bench"
REGION = "westus2"
SERVICES_DIR = Path(__file__).resolve().parents[1] / "services"


# --- child processes ---------------------------------------------------------------------------


def relay_process(control, target_port: int) -> None:
    """The terminal relay; obeys ("outage", seconds), ("clear",) and ("stop",) from the pipe."""

    async def main() -> None:
        link = EmulatedLink(
            LinkProfile.constant(ONE_WAY_S, uplink_bps=RATE_MBPS * 1e6, downlink_bps=RATE_MBPS * 1e6)
        )
        relay = TerminalRelay(link)
        await relay.add_forward("127.0.0.1", 0, "127.0.0.1", target_port)
        await relay.start()
        control.send(relay.forwards[0].listen_port)
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, control.recv)
            if command[0] == "outage":
                link.force_outage(command[1])
            elif command[0] == "clear":
                link.force_outage(0)
            elif command[0] == "stats":
                control.send(relay.stats().uplink.bytes_out)
            else:
                break
        await relay.stop(drain_timeout_s=0)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


def sink_process(control) -> None:
    """Accept one connection, read until EOF, report (bytes, time of the last byte)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        control.send(server.getsockname()[1])
        conn, _ = server.accept()
        buffer = bytearray(1 << 20)
        total = 0
        with conn:
            while n := conn.recv_into(buffer):
                total += n
            last = time.monotonic()
        control.send((total, last))


class Child:
    def __init__(self, target, *args) -> None:
        self.control, child_end = mp.Pipe()
        self.process = mp.get_context("spawn").Process(target=target, args=(child_end, *args), daemon=True)
        self.process.start()
        self.port = self.control.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            self.control.send(("stop",))
            self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()


# --- helpers -----------------------------------------------------------------------------------


def write_scenario(path: Path) -> Path:
    scenario = {
        "name": "bench-sync",
        "epoch": "2020-10-30T00:00:00Z",
        "speed": 1,
        "constellation": {"preset": "starlink-shell1"},
        "regions": [{"id": REGION}],
        "data_centers": [
            {
                "id": DC,
                "home_region": REGION,
                "location": {"lat": 70.255, "lon": -148.337},
                "terminal": {"uplink_mbps": RATE_MBPS, "downlink_mbps": RATE_MBPS},
                "sync": {"block_size_bytes": BLOCK},
            }
        ],
    }
    path.write_text(yaml.safe_dump(scenario))
    return path


def start_region(workdir: Path, scenario: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(SERVICES_DIR),
        "SKYHAUL_SCENARIO": str(scenario),
        "SKYHAUL_DATA_DIR": str(workdir / "region"),
        "SKYHAUL_LISTEN": f"127.0.0.1:{port}",
        "SKYHAUL_CLOCK_START": repr(time.time()),
        "SKYHAUL_LOG_LEVEL": "WARNING",
    }
    log = open(workdir / "region.log", "wb")  # noqa: SIM115 - lives as long as the child
    process = subprocess.Popen(
        [sys.executable, "-m", "skyhaul.cli.main", "serve", "region"], env=env, stderr=log
    )
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return process, port
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the region did not start; see {workdir / 'region.log'}")
            time.sleep(0.1)


def raw_tcp_mbps(seconds: float = 4.0) -> float:
    """Bulk TCP through the relay to a sink: what the emulated link carries for one plain stream."""
    sink = Child(sink_process)
    relay = Child(relay_process, sink.port)
    try:
        block = memoryview(os.urandom(1 << 20))
        with socket.create_connection(("127.0.0.1", relay.port)) as conn:
            start = time.monotonic()
            while time.monotonic() < start + seconds:
                conn.sendall(block)
            conn.shutdown(socket.SHUT_WR)
            total, last = sink.control.recv()
        return total * 8 / (last - start) / 1e6
    finally:
        relay.stop()
        sink.process.join(5)


def link_event(up: bool) -> events_pb2.LinkEvent:
    event = events_pb2.LinkEvent()
    event.link_status.data_center_id = DC
    event.link_status.region_id = REGION
    event.link_status.up = up
    event.link_status.reason = "" if up else "outage (benchmark)"
    return event


class DataCenter:
    """The mdc service in this process, its stub and the event publisher."""

    def __init__(
        self, workdir: Path, scenario: Path, relay_port: int, redis_url: str, config: SyncConfig
    ) -> None:
        self.settings = Settings.from_env(
            "mdc",
            {
                "SKYHAUL_SCENARIO": str(scenario),
                "SKYHAUL_DATA_DIR": str(workdir),
                "SKYHAUL_REGION_ADDR": f"127.0.0.1:{relay_port}",
                "SKYHAUL_REDIS_URL": redis_url,
            },
        )
        clock = EmulationClock(self.settings.scenario.epoch_unix, 1.0, time.time())
        self.app = MdcApp(self.settings, clock, sync_config=config)
        self.redis_url = redis_url

    async def __aenter__(self) -> DataCenter:
        self.server = await start_server(self.app, "127.0.0.1:0")
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}")
        self.stub = mdc_pb2_grpc.ModularDataCenterServiceStub(self.channel)
        self.publisher = EventPublisher(self.redis_url)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.publisher.aclose()
        await self.channel.close()
        await self.server.stop(grace=0.5)

    async def announce(self, up: bool) -> None:
        await self.publisher.publish(link_event(up))
        while self.app.link.up != up:
            await asyncio.sleep(0.005)

    async def put(self, key: str, data: bytes) -> None:
        async def messages():
            yield mdc_pb2.PutObjectRequest(
                header=mdc_pb2.ObjectHeader(key=key, priority=mdc_pb2.PRIORITY_CLASS_BULK)
            )
            for start in range(0, len(data), 1 << 20):
                yield mdc_pb2.PutObjectRequest(data=data[start : start + (1 << 20)])

        await self.stub.PutObject(messages(), timeout=60)

    async def status(self) -> mdc_pb2.GetStatusResponse:
        return await self.stub.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)


# --- 1. goodput --------------------------------------------------------------------------------


async def goodput_mbps(
    workdir: Path, scenario: Path, relay_port: int, redis_url: str, in_flight: int, objects: int, size: int
) -> float:
    config = SyncConfig(block_size_bytes=BLOCK, max_in_flight=in_flight, fallback_capacity_mbps=RATE_MBPS)
    async with DataCenter(workdir, scenario, relay_port, redis_url, config) as dc:
        await dc.announce(up=False)
        rng = np.random.default_rng(size + in_flight)
        for i in range(objects):
            await dc.put(f"goodput-{size}-{in_flight}/{i:03d}", rng.bytes(size))
        start = time.monotonic()
        await dc.announce(up=True)
        while (status := await dc.status()).totals.objects_synced < objects:
            if status.totals.objects_failed:
                raise RuntimeError(f"{status.totals.objects_failed} objects failed; see the log")
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - start
        status = await dc.status()
    assert status.totals.bytes_synced == objects * size and status.totals.objects_failed == 0
    return objects * size * 8 / elapsed / 1e6


# --- 2. backlog drain --------------------------------------------------------------------------


async def backlog_drain(
    workdir: Path, scenario: Path, relay: Child, redis_url: str, outage_s: float, offered_mbps: float
) -> tuple[float, int, float]:
    """Returns (backlog bytes at the end of the outage, peak backlog bytes, drain seconds)."""
    config = SyncConfig(block_size_bytes=BLOCK, fallback_capacity_mbps=RATE_MBPS)
    object_bytes = 1 << 20
    interval_s = 1.0
    per_batch = round(offered_mbps * 1e6 / 8 * interval_s / object_bytes)
    async with DataCenter(workdir, scenario, relay.port, redis_url, config) as dc:
        spec = mdc_pb2.WorkloadSpec(
            objects_per_batch=per_batch, object_size_bytes=object_bytes, key_prefix="drain/"
        )
        spec.interval.FromSeconds(int(interval_s))
        await dc.stub.SetWorkload(mdc_pb2.SetWorkloadRequest(workload=spec), timeout=5)
        await asyncio.sleep(5)  # steady state with the link up
        relay.control.send(("outage", outage_s))
        await dc.announce(up=False)
        peak = 0
        outage_end = time.monotonic() + outage_s
        while time.monotonic() < outage_end:
            await asyncio.sleep(0.1)
            peak = max(peak, (await dc.status()).backlog.bytes)
        relay.control.send(("clear",))
        await dc.announce(up=True)
        at_return = (await dc.status()).backlog.bytes
        peak = max(peak, at_return)
        start = time.monotonic()
        # Drained: the backlog is back to what the steady load keeps in flight (under one batch).
        give_up = start + 10 * outage_s + 60
        while (await dc.status()).backlog.bytes > per_batch * object_bytes:
            if time.monotonic() > give_up:
                raise RuntimeError(f"the backlog did not drain within {give_up - start:.0f} s")
            await asyncio.sleep(0.05)
        drain = time.monotonic() - start
        await dc.stub.SetWorkload(mdc_pb2.SetWorkloadRequest(workload=mdc_pb2.WorkloadSpec()), timeout=5)
    return at_return, peak, drain


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        workdir = Path(tmp)
        scenario = write_scenario(workdir / "scenario.yaml")
        redis = start_redis_server(data_dir=workdir / "redis")
        region, region_port = start_region(workdir, scenario)
        relay = Child(relay_process, region_port)
        try:
            baseline = raw_tcp_mbps()
            print(
                f"link: {RATE_MBPS:.0f} Mbit/s each way, {ONE_WAY_S * 1e3:.0f} ms one-way "
                f"(bandwidth-delay product {RATE_MBPS * 1e6 * 2 * ONE_WAY_S / 8 / 1e3:.0f} kB); block {BLOCK >> 20} MiB"
            )
            print(f"  raw TCP bulk transfer through the relay (baseline)  {baseline:7.1f} Mbit/s")
            results = {}
            runs = ((4, args.objects, args.size_mib << 20), (4, 64, 1 << 20), (1, 4, 16 << 20))
            for run, (in_flight, objects, size) in enumerate(runs):
                mbps = await goodput_mbps(
                    workdir / f"mdc-goodput-{run}", scenario, relay.port, redis.url, in_flight, objects, size
                )
                results[run] = mbps
                print(
                    f"  sync goodput, {objects} x {size >> 20} MiB, {in_flight} block(s) in flight  {mbps:7.1f} Mbit/s"
                    f"  = {mbps / RATE_MBPS:6.1%} of configured, {mbps / baseline:6.1%} of raw TCP"
                )
            verdict = "ok" if results[0] >= 0.9 * RATE_MBPS else "BELOW GOAL"
            print(f"  goal: >= 90 % of {RATE_MBPS:.0f} Mbit/s for large objects: {verdict}")

            if args.skip_drain:
                return
            offered = args.offered_mbps
            at_return, peak, drain = await backlog_drain(
                workdir / "mdc-drain", scenario, relay, redis.url, args.outage_s, offered
            )
            goodput = results[1]  # the workload's objects are 1 MiB too
            model = args.outage_s * offered / (goodput - offered)
            print(
                f"\nbacklog drain: synthetic workload offering {offered:.0f} Mbit/s (1 MiB objects), "
                f"{args.outage_s:.0f} s outage"
            )
            print(
                f"  backlog when the link returned  {at_return / 2**20:7.1f} MiB (peak {peak / 2**20:.1f} MiB)"
            )
            print(f"  drain time (measured)           {drain:7.1f} s")
            print(
                f"  drain time (fluid model)        {model:7.1f} s  = outage x offered / (goodput - offered),"
                f" goodput {goodput:.1f} Mbit/s (1 MiB objects, part 1)"
            )
            if args.outage_s != 60:
                scale = drain / args.outage_s
                print(
                    f"  extrapolated to a 60 s outage   {60 * scale:7.1f} s  (drain grows linearly with the outage;"
                    f" model {60 * offered / (goodput - offered):.1f} s)"
                )
        finally:
            relay.stop()
            region.terminate()
            region.wait(10)
            redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--outage-s", type=float, default=20.0, help="outage length for the drain test (default 20)"
    )
    parser.add_argument(
        "--offered-mbps", type=float, default=32.0, help="workload load during the drain test"
    )
    parser.add_argument("--skip-drain", action="store_true", help="measure goodput only")
    parser.add_argument("--objects", type=int, default=8, help="objects for the goodput test (default 8)")
    parser.add_argument(
        "--size-mib", type=int, default=16, help="object size for the goodput test (default 16)"
    )
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the child processes and Redis are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"bench/sync: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    asyncio.run(main(args))
