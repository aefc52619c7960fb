"""Benchmark of the token check (issue 16): puts per second and p99 latency with 20 concurrent
clients, without the check (baseline: the data center started with no token, so the auth
interceptor passes every call) and with it (SKYHAUL_TOKEN set, every client sending it), in the
same run, alternating phases so the machine's drift hits both alike.

The data center (`skyhaul serve mdc`) runs as a child process, as deployed; its link is announced
down by a signed link event, so its sync worker sits idle and the figures are the put path alone
(header + 4 KiB, stored durably). The clients are this process: 20 channels (one connection
each), each putting objects back to back.

Run: ``PYTHONPATH=services .venv/bin/python bench/auth.py [--clients 20] [--seconds 8] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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

from skyhaul.runtime import auth, clients, event_signing  # noqa: E402
from skyhaul.runtime.bus import EventPublisher  # noqa: E402
from skyhaul.runtime.event_signing import EventSigner  # noqa: E402
from skyhaul.runtime.redis_server import free_port, generate_password, start_redis_server  # noqa: E402
from skyhaul.v1 import events_pb2, mdc_pb2, mdc_pb2_grpc  # noqa: E402

DATA_CENTER = "mdc-bench"
OBJECT = os.urandom(4096)


def write_scenario(path: Path) -> Path:
    scenario = {
        "name": "auth-bench",
        "epoch": "2020-10-30T00:00:00Z",
        "speed": 1,
        "constellation": {"preset": "starlink-shell1"},
        "regions": [{"id": "westus2"}],
        "data_centers": [
            {"id": DATA_CENTER, "home_region": "westus2", "location": {"lat": 70.2, "lon": -148.3}}
        ],
    }
    path.write_text(yaml.safe_dump(scenario))
    return path


async def wait_serving(address: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the data center exited with {process.returncode}")
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the data center never became SERVING")


async def client(address: str, token: str | None, stop_at: float, latencies: list[float], index: int) -> None:
    # Each client its own connection (a local subchannel pool), as separate processes would have.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with clients.channel(address, options=options, token=token) as channel:
        stub = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
        n = 0
        while time.monotonic() < stop_at:
            key = f"bench/{index}/{n}/{time.monotonic_ns()}"

            def messages(key=key):
                yield mdc_pb2.PutObjectRequest(header=mdc_pb2.ObjectHeader(key=key))
                yield mdc_pb2.PutObjectRequest(data=OBJECT)

            start = time.perf_counter()
            await stub.PutObject(messages(), timeout=30)
            latencies.append(time.perf_counter() - start)
            n += 1


async def phase(
    name: str, token: str | None, args, scenario: Path, redis_url: str, event_key: str, workdir: Path
) -> dict:
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if k not in (auth.TOKEN_ENV, auth.TOKEN_FILE_ENV)},
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "services"),
        "SKYHAUL_SCENARIO": str(scenario),
        "SKYHAUL_LISTEN": address,
        "SKYHAUL_REDIS_URL": redis_url,
        "SKYHAUL_EVENT_KEY": event_key,
        "SKYHAUL_DATA_DIR": str(workdir / f"{name}-{time.monotonic_ns()}"),
        "SKYHAUL_REGION_ADDR": f"127.0.0.1:{free_port()}",
        "SKYHAUL_LOG_LEVEL": "WARNING",
        "OTEL_SDK_DISABLED": "true",
    }
    if token:
        env[auth.TOKEN_ENV] = token
    process = subprocess.Popen(
        [sys.executable, "-m", "skyhaul.cli.main", "serve", "mdc"], env=env, stdout=subprocess.DEVNULL
    )
    try:
        await wait_serving(address, process)
        latencies: list[float] = []
        # Warm-up (connections, first writes), not counted.
        await asyncio.gather(
            *(client(address, token, time.monotonic() + 1.0, [], i) for i in range(args.clients))
        )
        start = time.monotonic()
        stop_at = start + args.seconds
        await asyncio.gather(*(client(address, token, stop_at, latencies, i) for i in range(args.clients)))
        elapsed = time.monotonic() - start
    finally:
        process.terminate()
        process.wait(10)
    values = np.array(latencies) * 1000.0
    return {
        "puts": len(values),
        "puts_per_s": len(values) / elapsed,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
    }


async def check_cost(token: str, calls: int = 50_000) -> tuple[float, float]:
    """Microseconds per call the interceptor adds for a MUTATE call: (no token configured, token checked)."""

    class Details:
        method = "/skyhaul.v1.ModularDataCenterService/PutObject"
        invocation_metadata = (("user-agent", "bench"), (auth.METADATA_KEY, auth.SCHEME + token))

    async def continuation(details):
        return "handler"

    costs = []
    for interceptor in (auth.AuthInterceptor(None), auth.AuthInterceptor(token)):
        start = time.perf_counter()
        for _ in range(calls):
            await interceptor.intercept_service(continuation, Details)
        costs.append((time.perf_counter() - start) / calls * 1e6)
    return costs[0], costs[1]


async def main(args) -> None:
    event_key = event_signing.generate_key()
    token = auth.generate_token()
    unchecked_us, checked_us = await check_cost(token)
    print(
        f"interceptor alone: {unchecked_us:.2f} us/call without a token, {checked_us:.2f} us/call checking one "
        f"(+{checked_us - unchecked_us:.2f} us)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="skyhaul-bench-auth-") as tmp:
        workdir = Path(tmp)
        scenario = write_scenario(workdir / "scenario.yaml")
        with start_redis_server(data_dir=workdir / "redis", password=generate_password()) as redis:
            # Link down: the sync worker idles, the figures are the put path alone.
            async with EventPublisher(redis.url, signer=EventSigner(event_key.encode())) as publisher:
                down = events_pb2.LinkEvent()
                down.link_status.data_center_id = DATA_CENTER
                down.link_status.region_id = "westus2"
                down.link_status.up = False
                down.link_status.reason = "benchmark: sync idle"
                await publisher.publish(down)
            results: dict[str, list[dict]] = {"baseline (no token check)": [], "token check": []}
            for _ in range(args.rounds):
                for name, phase_token in (("baseline (no token check)", None), ("token check", token)):
                    result = await phase(
                        name.split()[0], phase_token, args, scenario, redis.url, event_key, workdir
                    )
                    results[name].append(result)
                    print(
                        f"  {name:26s} {result['puts']:6d} puts  {result['puts_per_s']:8.1f} puts/s  "
                        f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms",
                        flush=True,
                    )
    summary = {
        name: {key: float(np.median([r[key] for r in runs])) for key in ("puts_per_s", "p50_ms", "p99_ms")}
        for name, runs in results.items()
    }
    base, checked = summary["baseline (no token check)"], summary["token check"]
    print(
        f"\n{args.clients} concurrent clients, {args.seconds:g} s per phase, median of {args.rounds} rounds:"
    )
    for name, figures in summary.items():
        print(
            f"  {name:26s} {figures['puts_per_s']:8.1f} puts/s  p50 {figures['p50_ms']:6.2f} ms  "
            f"p99 {figures['p99_ms']:6.2f} ms"
        )
    print(
        f"  ratio token/baseline: throughput {checked['puts_per_s'] / base['puts_per_s']:.3f}, "
        f"p99 {checked['p99_ms'] / base['p99_ms']:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
