"""The packet engine's decisions, without root: a SOCK_SEQPACKET pair stands in for each TUN (one
packet per read, like a TUN queue), so the tests see exactly which packets come out, in which order."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from skyhaul.runtime.errors import InvalidArgument
from skyhaul.terminal.packet import PacketConfig, PacketEngine, handover_stalls
from skyhaul.terminal.shaping import Direction, LinkProfile


@contextmanager
def engine(
    profile: LinkProfile | None, **config: object
) -> Iterator[tuple[PacketEngine, socket.socket, socket.socket]]:
    """(engine, namespace side, host side): write to one side, read what the engine delivers on the other."""
    config.setdefault("uplink_loss_percent", 0.0)
    config.setdefault("downlink_loss_percent", 0.0)
    namespace_side, namespace_tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    host_side, host_tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (namespace_tun, host_tun):
        end.setblocking(False)
    for end in (namespace_side, host_side):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    shaper = PacketEngine(namespace_tun.fileno(), host_tun.fileno(), config=PacketConfig(**config))
    shaper.set_route(profile)
    try:
        with shaper:
            yield shaper, namespace_side, host_side
    finally:
        for end in (namespace_side, namespace_tun, host_side, host_tun):
            end.close()


def receive(side: socket.socket, expected: int, wait_s: float = 5.0) -> list[bytes]:
    """Packets arriving on ``side`` until ``expected`` came or nothing more came for ``wait_s``."""
    packets: list[bytes] = []
    while len(packets) < expected:
        ready, _, _ = select.select([side], [], [], wait_s)
        if not ready:
            break
        packets.append(side.recv(70000))
    return packets


def wait_for(predicate, wait_s: float = 5.0) -> None:
    deadline = time.monotonic() + wait_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_order_is_kept_when_the_delay_shrinks():
    with engine(LinkProfile.constant(0.3)) as (shaper, namespace_side, host_side):
        for number in range(50):
            namespace_side.send(b"a%03d" % number)
        wait_for(lambda: shaper.stats()[Direction.UPLINK].in_flight == 50)
        shaper.set_route(LinkProfile.constant(0.0))
        for number in range(50, 100):
            namespace_side.send(b"a%03d" % number)
        packets = receive(host_side, 100)
    assert packets == [b"a%03d" % number for number in range(100)]


def test_the_queue_is_bounded_and_drops_the_tail():
    # 1 Mbit/s, 10 kB queue: of 100 back-to-back 1000-byte packets about a dozen fit.
    with engine(LinkProfile.constant(0.0, uplink_bps=1e6), queue_bytes=10_000) as (
        shaper,
        namespace_side,
        host_side,
    ):
        for number in range(100):
            namespace_side.send(b"%04d" % number + bytes(996))
        wait_for(lambda: sum(shaper.stats()[Direction.UPLINK].drops.values()) > 0)
        packets = receive(host_side, 100, wait_s=1.0)
        stats = shaper.stats()[Direction.UPLINK]
    assert 5 <= len(packets) <= 20
    assert stats.drops["queue"] == 100 - len(packets)
    assert [p[:4] for p in packets] == [b"%04d" % n for n in range(len(packets))]  # the tail is dropped
    assert stats.packets == len(packets) and stats.bytes == 1000 * len(packets)


def test_no_route_drops_as_outage_and_a_route_lets_packets_through():
    with engine(None) as (shaper, namespace_side, host_side):
        for _ in range(10):
            host_side.send(b"down")
        wait_for(lambda: shaper.stats()[Direction.DOWNLINK].drops["outage"] == 10)
        assert shaper.stats()[Direction.DOWNLINK].drops["outage"] == 10
        shaper.set_route(LinkProfile.constant(0.001))
        host_side.send(b"up")
        assert receive(namespace_side, 1) == [b"up"]


def test_random_loss_is_seeded_and_per_direction():
    def run(seed: int) -> tuple[int, int]:
        with engine(LinkProfile.constant(0.0), uplink_loss_percent=10.0, seed=seed) as (
            shaper,
            namespace_side,
            host_side,
        ):
            for _ in range(2000):
                namespace_side.send(b"x" * 100)
                host_side.send(b"y" * 100)
            wait_for(lambda: sum(s.packets + s.dropped for s in shaper.stats().values()) == 4000)
            stats = shaper.stats()
            return stats[Direction.UPLINK].drops["random"], stats[Direction.DOWNLINK].drops["random"]

    first, again = run(5), run(5)
    assert first == again
    assert 140 <= first[0] <= 260 and first[1] == 0


def test_pinned_delay_and_loss_override():
    with engine(LinkProfile.constant(30.0)) as (shaper, namespace_side, host_side):
        shaper.pin_delay(0.0)
        shaper.override_loss(100.0, Direction.DOWNLINK)
        namespace_side.send(b"pinned")
        host_side.send(b"lost")
        assert receive(host_side, 1) == [b"pinned"]
        wait_for(lambda: shaper.stats()[Direction.DOWNLINK].drops["random"] == 1)
        assert shaper.stats()[Direction.DOWNLINK].drops["random"] == 1
        shaper.clear_overrides()
        assert shaper.loss_percent(Direction.DOWNLINK) == 0.0


def test_handover_stalls_only_where_the_satellite_changes():
    stalls = handover_stalls([10.0, 20.0, 30.0, 40.0], [1, 1, 2, -1, 3], 0.05)
    assert stalls == ((20.0, 0.05),)  # 1→1 no change; 2→none and none→3 are outages, not handovers
    with pytest.raises(InvalidArgument):
        handover_stalls([10.0], [1], 0.05)
    with pytest.raises(InvalidArgument):
        handover_stalls([10.0], [1, 2], -1)


@pytest.mark.parametrize(
    "bad",
    [{"queue_ms": 0}, {"queue_bytes": 100}, {"uplink_loss_percent": 101}, {"downlink_loss_percent": "x"}],
)
def test_bad_config_is_refused(bad):
    with pytest.raises(InvalidArgument):
        PacketConfig(**bad)


def test_bad_overrides_change_nothing():
    with engine(LinkProfile.constant(0.0)) as (shaper, namespace_side, host_side):
        for call in (
            lambda: shaper.pin_delay(-1),
            lambda: shaper.override_loss(150),
            lambda: shaper.pin_delay(0.1, 0),
        ):
            with pytest.raises(InvalidArgument):
                call()
        assert shaper.loss_percent(Direction.UPLINK) == 0.0
        namespace_side.send(b"still shaped as before")
        assert receive(host_side, 1) == [b"still shaped as before"]


def test_the_route_link_model_loss_replaces_the_default_and_follows_the_replay():
    # A replayed trace's lost probe: 100 % loss while it holds (shaping.LinkProfile.loss), none after.
    now = time.time()
    profile = LinkProfile(
        available=True,
        delays_s=(0.0,),
        extra_times=(now - 10.0, now + 1.0),
        uplink_extra_s=(0.0, 0.0),
        loss=(1.0, 0.0),
    )
    with engine(profile, uplink_loss_percent=50.0) as (shaper, namespace_side, host_side):
        assert shaper.loss_percent(Direction.UPLINK, now) == 100.0
        assert shaper.loss_percent(Direction.UPLINK, now + 2.0) == 0.0
        for _ in range(20):
            namespace_side.send(b"lost")
        wait_for(lambda: shaper.stats()[Direction.UPLINK].drops["random"] == 20)
        assert shaper.stats()[Direction.UPLINK].drops["random"] == 20
        wait_for(lambda: time.time() > now + 1.05, wait_s=3.0)
        for _ in range(20):
            namespace_side.send(b"kept")
        assert receive(host_side, 20) == [b"kept"] * 20  # not the configured 50 %
