"""Packet data plane benchmark (needs root, iperf3, ping).

    PYTHONPATH=services .venv/bin/python bench/packet.py [--seconds S] [--mtu BYTES]

1. Unshaped TCP throughput (iperf3, 1 stream, data center → host) through the packet path (the
   namespace's TUN → packet engine → host TUN, MTU ``--mtu``) against the direct path between the
   same two namespaces (the control veth pair), measured in the same run: ratio, packets per
   second through the engine and CPU seconds of this process (the engine) per Gbit moved.
2. Shaped link, 25 ms one-way + 100 Mbit/s, MTU 1500: iperf3 TCP (cubic) throughput against the cap.
3. Delay error at 10 Hz under that load: ping RTT − 2 × 25 ms on a second, idle data center link
   whose engine runs in the same process while the first link carries the iperf3 load (a ping on
   the loaded link itself also waits in the bottleneck queue, which is link behaviour, not error:
   printed apart), next to the same ping over the direct veth meanwhile (the kernel's own share).
2-3 run twice: engine threads normally scheduled, then SCHED_FIFO (``PacketConfig.realtime_priority``).
4. 50 Mbit/s + 25 ms with 1 % random loss on the data direction: cubic against bbr, and cubic
   against the Mathis bound MSS/RTT x 1.22/sqrt(p) (MSS 1448, RTT 50 ms: 2.8 Mbit/s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager

import numpy as np

from skyhaul.runtime.netns import DataCenterNetns, PacketNetwork
from skyhaul.terminal.packet import PacketConfig, PacketEngine
from skyhaul.terminal.shaping import Direction, LinkProfile

MBIT = 1e6


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def engine_for(dc: DataCenterNetns, profile: LinkProfile, realtime: int | None = None):
    host_fd, namespace_fd = dc.open_tuns()
    config = PacketConfig(uplink_loss_percent=0.0, downlink_loss_percent=0.0, realtime_priority=realtime)
    engine = PacketEngine(namespace_fd, host_fd, config=config)
    engine.set_route(profile)
    try:
        with engine:
            yield engine
    finally:
        os.close(host_fd)
        os.close(namespace_fd)


@contextmanager
def iperf3_server(address: str, port: int):
    server = subprocess.Popen(
        ["iperf3", "-s", "--forceflush", "-B", address, "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in server.stdout:
            if "listening" in line:
                break
        yield
    finally:
        server.kill()
        server.wait()


def iperf3(dc: DataCenterNetns, address: str, port: int, seconds: float, *args: str) -> float:
    argv = dc.exec_args("iperf3", "-c", address, "-p", str(port), "-J", "-t", str(seconds), *args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    report = json.loads(result.stdout)
    if "error" in report:
        raise SystemExit(f"iperf3: {report['error']}")
    return report["end"]["sum_received"]["bits_per_second"]


def ping_rtts(dc: DataCenterNetns, count: int, interval: float, address: str | None = None) -> list[float]:
    address = address or dc.addressing.region_address
    argv = dc.exec_args("ping", "-n", "-c", str(count), "-i", str(interval), address)
    output = subprocess.run(argv, capture_output=True, text=True, timeout=count * interval + 30).stdout
    return [float(v) for v in re.findall(r"time=([\d.]+) ms", output)]


def probe(results: dict, name: str, dc: DataCenterNetns, count: int, address: str | None = None) -> None:
    time.sleep(1.0)  # past slow start
    results[name] = ping_rtts(dc, count, 0.1, address=address)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="iperf3 duration per measurement")
    parser.add_argument("--mtu", type=int, default=65000, help="TUN MTU of the unshaped packet path")
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=10,
        help="SCHED_FIFO priority of the engine threads in the second run of 2-3 (the first: normal)",
    )
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/packet.py needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    port = 25201 + os.getpid() % 1000
    with ExitStack() as stack:
        network = stack.enter_context(
            PacketNetwork(state_dir=tempfile.mkdtemp(prefix="skyhaul-bench-netns-"))
        )
        base = 150 + os.getpid() % 20
        fast = network.create("bench-unshaped", base, mtu=options.mtu)

        print(f"1. unshaped TCP, data center -> host, {options.seconds:.0f} s, 1 stream")
        with iperf3_server(fast.addressing.control_host, port):
            direct = iperf3(fast, fast.addressing.control_host, port, options.seconds)
        print(f"   direct veth (MTU 1500, kernel GSO)   {direct / 1e9:7.2f} Gbit/s")
        with (
            engine_for(fast, LinkProfile.constant(0.0)) as engine,
            iperf3_server(fast.addressing.region_address, port),
        ):
            cpu_before, wall_before = cpu_seconds(), time.monotonic()
            through = iperf3(fast, fast.addressing.region_address, port, options.seconds)
            cpu = cpu_seconds() - cpu_before
            elapsed = time.monotonic() - wall_before
            stats = engine.stats()
        packets = sum(s.packets for s in stats.values())
        moved_gbit = sum(s.bytes for s in stats.values()) * 8 / 1e9
        print(f"   packet path (TUN MTU {options.mtu})         {through / 1e9:7.2f} Gbit/s")
        print(f"   ratio packet/direct                  {through / direct:7.3f}")
        print(f"   packets/s through the engine         {packets / elapsed:9.0f} (both directions)")
        print(
            f"   engine CPU per Gbit moved            {cpu / moved_gbit:7.3f} s ({cpu:.1f} CPU s in {elapsed:.1f} s)"
        )

        shaped = LinkProfile.constant(0.025, uplink_bps=100 * MBIT, downlink_bps=100 * MBIT)
        loaded = network.create("bench-loaded", base + 20)
        idle = network.create("bench-idle", base + 40)
        for realtime in (None, options.realtime_priority):
            scheduling = "normal scheduling" if realtime is None else f"engine threads SCHED_FIFO {realtime}"
            print(
                f"2. shaped 25 ms one-way + 100 Mbit/s, MTU 1500, iperf3 TCP cubic, data center -> host ({scheduling})"
            )
            with (
                engine_for(loaded, shaped, realtime) as loaded_engine,
                engine_for(idle, shaped, realtime),
                iperf3_server(loaded.addressing.region_address, port + 1),
            ):
                count = int(options.seconds * 10) - 10
                results: dict[str, list[float]] = {}

                probes = [
                    threading.Thread(target=probe, args=(results, "idle", idle, count)),
                    threading.Thread(target=probe, args=(results, "loaded", loaded, count)),
                    threading.Thread(
                        target=probe, args=(results, "direct", idle, count, idle.addressing.control_host)
                    ),
                ]
                for thread in probes:
                    thread.start()
                rate = iperf3(
                    loaded, loaded.addressing.region_address, port + 1, options.seconds, "-C", "cubic"
                )
                for thread in probes:
                    thread.join()
                queue = loaded_engine.stats()[Direction.UPLINK]
            print(f"   throughput {rate / MBIT:6.1f} Mbit/s = {100 * rate / (100 * MBIT):5.1f} % of the cap")
            errors = np.abs(np.asarray(results["idle"]) - 50.0)
            print(
                f"3. ping at 10 Hz on an idle link while the other carries that load ({len(errors)} replies):"
                f" |RTT - 50 ms| p50 {np.percentile(errors, 50):.2f} ms, p99 {np.percentile(errors, 99):.2f} ms,"
                f" max {errors.max():.2f} ms"
            )
            direct_rtt = np.asarray(results["direct"])
            print(
                f"   baseline, the same ping over the direct veth at the same time: RTT p50"
                f" {np.percentile(direct_rtt, 50):.2f} ms, p99 {np.percentile(direct_rtt, 99):.2f} ms"
            )
            on_loaded = results["loaded"]
            print(
                f"   ping on the loaded link itself: median RTT {statistics.median(on_loaded):.1f} ms"
                f" (bottleneck queue p50 {1e3 * (queue.queue_delay_p50_s or 0):.1f} ms,"
                f" p99 {1e3 * (queue.queue_delay_p99_s or 0):.1f} ms, queue drops {queue.drops['queue']})"
            )

        lossy = LinkProfile.constant(0.025, uplink_bps=50 * MBIT, downlink_bps=50 * MBIT)
        lossy_dc = network.create("bench-lossy", base + 60)
        print("4. 50 Mbit/s, 25 ms one-way, 1 % random loss on the data direction: cubic vs bbr")
        host_fd, namespace_fd = lossy_dc.open_tuns()
        config = PacketConfig(uplink_loss_percent=1.0, downlink_loss_percent=0.0, seed=1)
        try:
            with PacketEngine(namespace_fd, host_fd, config=config) as engine:
                engine.set_route(lossy)
                mathis = 1448 * 8 / 0.050 * 1.22 / 0.1
                for algorithm in ("cubic", "bbr"):
                    with iperf3_server(lossy_dc.addressing.region_address, port + 2):
                        rate = iperf3(
                            lossy_dc,
                            lossy_dc.addressing.region_address,
                            port + 2,
                            options.seconds,
                            "-C",
                            algorithm,
                        )
                    print(
                        f"   {algorithm:5s} {rate / MBIT:6.1f} Mbit/s ({rate / mathis:4.2f} x the Mathis bound)"
                    )
        finally:
            os.close(host_fd)
            os.close(namespace_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
