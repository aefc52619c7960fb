"""The packet data plane with real tools and real packets: ping and iperf3 inside a data center's
network namespace, a server on the host's region address, the packet engine in between driven
directly with a fixed route (no links service). Needs root (namespaces, TUN devices), iperf3 and
ping: without them this module fails under CI=true and skips otherwise.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from skyhaul.runtime.netns import DataCenterNetns, PacketNetwork, missing_privileges
from skyhaul.terminal.packet import PacketConfig, PacketEngine, handover_stalls
from skyhaul.terminal.shaping import Direction, LinkProfile


def _unavailable() -> str | None:
    if os.geteuid() != 0 and missing_privileges():
        return "needs root or CAP_NET_ADMIN+CAP_SYS_ADMIN (network namespaces, TUN devices)"
    missing = [tool for tool in ("ip", "ping", "iperf3") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} on PATH (apt-get install iproute2 iputils-ping iperf3)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


_REASON = _unavailable()
if _REASON is not None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"packet plane tests cannot run under CI: {_REASON}", pytrace=False)
    pytest.skip(_REASON, allow_module_level=True)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PacketNetwork]:
    net = PacketNetwork(state_dir=tmp_path_factory.mktemp("netns-state"))
    try:
        yield net
    finally:
        net.close()


_indices = iter(random.Random(os.getpid()).sample(range(1, 256), 255))


@contextmanager
def shaped_link(
    network: PacketNetwork, profile: LinkProfile | None, **config: object
) -> Iterator[tuple[DataCenterNetns, PacketEngine]]:
    """A fresh data center namespace with an engine between its TUN and the host's; both removed
    on the way out, whatever happened."""
    config.setdefault("uplink_loss_percent", 0.0)
    config.setdefault("downlink_loss_percent", 0.0)
    dc = network.create(f"dc{next(_indices)}", next(_indices))
    host_fd = namespace_fd = -1
    engine = None
    try:
        host_fd, namespace_fd = dc.open_tuns()
        engine = PacketEngine(namespace_fd, host_fd, config=PacketConfig(**config))
        engine.set_route(profile)
        engine.start()
        yield dc, engine
    finally:
        if engine is not None:
            engine.stop()
        for fd in (host_fd, namespace_fd):
            if fd >= 0:
                os.close(fd)
        network.destroy(dc.data_center)


def ping(dc: DataCenterNetns, count: int, interval: float, *extra: str) -> str:
    argv = dc.exec_args("ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", *extra)
    result = subprocess.run(
        [*argv, dc.addressing.region_address], capture_output=True, text=True, timeout=count * interval + 30
    )
    return result.stdout


def rtts_ms(output: str) -> list[float]:
    return [float(v) for v in re.findall(r"time=([\d.]+) ms", output)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def iperf3_server(dc: DataCenterNetns) -> Iterator[int]:
    """``iperf3 -s`` on the host, bound to the region address (reached only through the link)."""
    port = free_port()
    server = subprocess.Popen(
        ["iperf3", "-s", "--forceflush", "-B", dc.addressing.region_address, "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:  # iperf3 says so once it listens
            if "listening" in line:
                break
        yield port
    finally:
        server.kill()
        server.wait()


def iperf3(dc: DataCenterNetns, port: int, *args: str, timeout: float = 60) -> dict:
    argv = dc.exec_args("iperf3", "-c", dc.addressing.region_address, "-p", str(port), "-J", *args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    report = json.loads(result.stdout)
    assert "error" not in report, report.get("error")
    return report


MBIT = 1e6


# --- ping --------------------------------------------------------------------------------------


def test_ping_rtt_is_twice_the_one_way_delay_and_follows_a_route_change(network):
    with shaped_link(network, LinkProfile.constant(0.010, uplink_bps=50 * MBIT, downlink_bps=50 * MBIT)) as (
        dc,
        engine,
    ):
        before = rtts_ms(ping(dc, 20, 0.05))
        assert len(before) == 20
        assert abs(statistics.median(before) - 20.0) <= 1.0, before
        engine.set_route(LinkProfile.constant(0.030, uplink_bps=50 * MBIT, downlink_bps=50 * MBIT))
        after = rtts_ms(ping(dc, 20, 0.05))
        assert len(after) == 20
        assert abs(statistics.median(after) - 60.0) <= 1.0, after
        # A route whose samples change within a slot: the delay follows the interpolation.
        now = time.time()
        engine.set_route(LinkProfile(delays_s=(0.005, 0.005, 0.025, 0.025), start_unix=now + 1.0, step_s=1.0))
        early = rtts_ms(ping(dc, 5, 0.05))
        time.sleep(max(0.0, now + 3.2 - time.time()))
        late = rtts_ms(ping(dc, 5, 0.05))
        assert abs(statistics.median(early) - 10.0) <= 1.0, early
        assert abs(statistics.median(late) - 50.0) <= 1.0, late


def test_forced_outage_loses_pings_only_while_it_lasts(network):
    with shaped_link(network, LinkProfile.constant(0.010)) as (dc, engine):
        outage = {}

        def cut() -> None:
            outage["start"] = time.time()
            engine.force_outage(5.0)

        timer = threading.Timer(2.5, cut)
        timer.start()
        try:
            output = ping(dc, 50, 0.2)
        finally:
            timer.cancel()
        received = {int(s) for s in re.findall(r"icmp_seq=(\d+)", output)}
        lost = sorted(set(range(1, 51)) - received)
        assert lost, output
        assert lost == list(range(lost[0], lost[-1] + 1)), f"lost pings not one block: {lost}"
        assert 22 <= len(lost) <= 28, lost  # 5 s / 0.2 s
        assert 10 <= lost[0] <= 16, lost  # the outage starts 2.5 s in
        drops = [event for event in engine.drop_events() if event.cause == "outage"]
        assert drops
        assert all(outage["start"] - 0.01 <= event.wall <= outage["start"] + 5.01 for event in drops)
        stats = engine.stats()[Direction.UPLINK]
        assert len(lost) <= stats.drops["outage"] <= len(lost) + 2  # + a stray IPv6 solicitation


def test_handover_drops_only_inside_the_stall_at_boundaries_where_the_satellite_changed(network):
    start = time.time() + 0.5
    boundaries = [start + 1.0, start + 2.0, start + 3.0, start + 4.0]
    stalls = handover_stalls(boundaries, [101, 101, 202, 202, 303], 0.3)
    assert [s[0] for s in stalls] == [boundaries[1], boundaries[3]]
    profile = LinkProfile(delays_s=(0.005,), stalls=stalls)
    with shaped_link(network, profile) as (dc, engine):
        output = ping(dc, 500, 0.01)
        drops = engine.drop_events()
    windows = [(begin, begin + duration) for begin, duration in stalls]
    assert drops, output[-300:]
    assert {event.cause for event in drops} == {"handover"}
    for event in drops:
        assert any(begin <= event.wall < end for begin, end in windows), (event, windows)
    for begin, end in windows:  # every changed boundary lost something, and only then
        assert any(begin <= event.wall < end for event in drops)
    lost = 500 - len(rtts_ms(output))
    assert 0 < lost <= len(drops)


# --- iperf3 ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tcp_fills_a_50_mbit_25_ms_link(network):
    profile = LinkProfile.constant(0.025, uplink_bps=50 * MBIT, downlink_bps=50 * MBIT)
    with shaped_link(network, profile) as (dc, engine), iperf3_server(dc) as port:
        report = iperf3(dc, port, "-t", "8", "-O", "2", "-C", "cubic")
        stats = engine.stats()[Direction.UPLINK]
    rate = report["end"]["sum_received"]["bits_per_second"]
    assert abs(rate - 50 * MBIT) <= 5 * MBIT, rate / MBIT
    assert stats.queue_delay_p99_s is not None and stats.queue_delay_p99_s > 0.005  # it queued


@pytest.mark.slow
def test_random_loss_hurts_cubic_as_mathis_says_and_bbr_much_less(network):
    profile = LinkProfile.constant(0.025, uplink_bps=50 * MBIT, downlink_bps=50 * MBIT)
    rates = {}
    with shaped_link(network, profile, uplink_loss_percent=1.0, seed=7) as (dc, engine):
        for algorithm in ("cubic", "bbr"):
            with iperf3_server(dc) as port:
                report = iperf3(dc, port, "-t", "8", "-O", "1", "-C", algorithm)
            rates[algorithm] = report["end"]["sum_received"]["bits_per_second"]
            assert report["end"]["sender_tcp_congestion"] == algorithm
            mss = report["start"].get("tcp_mss_default") or 1448
        random_drops = engine.stats()[Direction.UPLINK].drops["random"]
    assert random_drops > 0
    mathis = mss * 8 / 0.050 * 1.22 / (0.01**0.5)
    assert rates["cubic"] < 0.5 * 50 * MBIT, rates
    assert mathis / 3 <= rates["cubic"] <= mathis * 3, (rates, mathis)
    assert rates["bbr"] >= 3 * rates["cubic"], rates


@pytest.mark.slow
def test_udp_at_twice_the_cap_delivers_the_cap_and_loses_the_excess(network):
    profile = LinkProfile.constant(0.010, uplink_bps=50 * MBIT, downlink_bps=50 * MBIT)
    payload = 1400
    with shaped_link(network, profile) as (dc, engine), iperf3_server(dc) as port:
        report = iperf3(dc, port, "-u", "-b", "100M", "-l", str(payload), "-t", "6")
        stats = engine.stats()[Direction.UPLINK]
    total = report["end"]["sum"]
    seconds = total["seconds"]
    delivered_bps = (total["packets"] - total["lost_packets"]) * (payload + 28) * 8 / seconds
    offered_bps = total["packets"] * (payload + 28) * 8 / seconds
    assert abs(delivered_bps - 50 * MBIT) <= 5 * MBIT, delivered_bps / MBIT
    expected_loss = 100.0 * (1.0 - 50 * MBIT / offered_bps)
    assert abs(total["lost_percent"] - expected_loss) <= 5.0, (total["lost_percent"], expected_loss)
    assert stats.drops["queue"] > 0 and stats.drops["random"] == 0


@pytest.mark.slow
def test_configured_random_loss_is_measured_on_20000_packets(network):
    with (
        shaped_link(network, LinkProfile.constant(0.002), uplink_loss_percent=2.0, seed=11) as (
            dc,
            engine,
        ),
        iperf3_server(dc) as port,
    ):
        report = iperf3(dc, port, "-u", "-b", "16M", "-l", "1000", "-k", "20000")
        stats = engine.stats()[Direction.UPLINK]
    total = report["end"]["sum"]
    assert total["packets"] >= 20000
    assert abs(total["lost_percent"] - 2.0) <= 0.5, total
    assert stats.drops["random"] > 0 and stats.drops["queue"] == 0


@pytest.mark.slow
def test_tcp_connection_survives_a_5_s_outage_and_resumes(network):
    profile = LinkProfile.constant(0.010, uplink_bps=20 * MBIT, downlink_bps=20 * MBIT)
    with shaped_link(network, profile) as (dc, engine), iperf3_server(dc) as port:
        timer = threading.Timer(3.0, engine.force_outage, args=(5.0,))
        timer.start()
        try:
            report = iperf3(dc, port, "-t", "15", "-i", "1", "-C", "cubic")
        finally:
            timer.cancel()
        drops = engine.stats()[Direction.UPLINK].drops["outage"]
    intervals = [interval["sum"]["bits_per_second"] for interval in report["intervals"]]
    assert drops > 0
    assert min(intervals[4:7]) < 1 * MBIT, intervals  # nothing got through in the outage
    assert max(intervals[-3:]) > 10 * MBIT, intervals  # the same connection runs again


# --- the namespaces themselves -----------------------------------------------------------------


def test_control_path_reaches_host_services_during_an_outage(network):
    with shaped_link(network, LinkProfile.constant(0.010)) as (dc, engine):
        engine.force_outage(30.0)
        with socket.socket() as listener:
            listener.bind((dc.addressing.control_host, 0))
            listener.listen()
            port = listener.getsockname()[1]
            connect = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()"
            result = subprocess.run(
                dc.exec_args(sys.executable, "-c", connect, dc.addressing.control_host, str(port)),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
        assert rtts_ms(ping(dc, 3, 0.2)) == []  # the region side is cut off meanwhile
        assert engine.stats()[Direction.UPLINK].drops["outage"] >= 3


def _netns_and_links(prefix: str = "") -> tuple[str, str]:
    """Names of the namespaces and links (only those starting with ``prefix``)."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    namespace_names = sorted(line.split()[0] for line in namespaces.splitlines() if line.strip())
    link_names = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    keep = [name for name in namespace_names if name.startswith(prefix)]
    return "\n".join(keep), "\n".join(name for name in link_names if name.startswith(prefix))


def test_stale_namespaces_of_a_dead_run_are_removed_at_the_next_start(tmp_path):
    prefix = f"st{os.getpid() % 100000}"
    script = (
        "import os,sys; from skyhaul.runtime.netns import PacketNetwork;"
        "net = PacketNetwork(state_dir=sys.argv[1], prefix=sys.argv[2]); net.create('dc', int(sys.argv[3]));"
        "print('made', flush=True); os._exit(0)"  # exits without cleaning up, as a crash would
    )
    index = next(_indices)
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), prefix, str(index)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert "made" in result.stdout, result.stderr
        namespaces, links = _netns_and_links()
        assert f"{prefix}-dc" in namespaces and f"{prefix}{index}th" in links
        with PacketNetwork(state_dir=tmp_path):
            namespaces, links = _netns_and_links()
            assert f"{prefix}-dc" not in namespaces
            assert f"{prefix}{index}" not in links
        assert list(tmp_path.glob("*.json")) == []
    finally:
        subprocess.run(["ip", "netns", "del", f"{prefix}-dc"], capture_output=True)
        for kind in ("th", "tn", "vh"):
            subprocess.run(["ip", "link", "del", f"{prefix}{index}{kind}"], capture_output=True)


def test_without_privileges_packet_mode_says_what_is_missing_and_makes_nothing(tmp_path, monkeypatch):
    from skyhaul.runtime import netns

    before = _netns_and_links("sk")
    monkeypatch.setattr(netns, "missing_privileges", lambda: ["CAP_NET_ADMIN"])
    with pytest.raises(netns.PrivilegeError) as caught:
        PacketNetwork(state_dir=tmp_path / "state")
    message = str(caught.value)
    assert "CAP_NET_ADMIN" in message and "data_plane: relay" in message and "\n" not in message
    assert not (tmp_path / "state").exists()
    assert _netns_and_links("sk") == before


def test_bad_input_changes_nothing(network):
    from skyhaul.runtime.errors import InvalidArgument

    before = _netns_and_links(network.prefix)
    for bad in ({"index": 0}, {"index": 300}, {"index": 5, "mtu": 100}, {"index": 5, "data_center": ""}):
        arguments = {"data_center": "dc-bad", **bad}
        with pytest.raises(InvalidArgument):
            network.create(arguments.pop("data_center"), **arguments)
    with shaped_link(network, None) as (dc, _engine):
        with pytest.raises(InvalidArgument):
            network.create(dc.data_center, next(_indices))
        with pytest.raises(InvalidArgument):
            network.create("dc-other", dc.addressing.index)
    assert _netns_and_links(network.prefix) == before
