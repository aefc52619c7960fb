"""The terminal relay with real sockets on 127.0.0.1: a real asyncio server as the target, a
real client, the relay in between, all on the relay's precise event loop.

The RTT and rate checks are the fidelity checks issue 5 requires (RTT = 2 x one-way delay
within 2 ms, 45-52 Mbit/s through a 50 Mbit/s cap): they test the emulation, not the speed of
the machine, and keep the issue's tolerances.
"""

import asyncio
import hashlib
import os
import socket
import statistics
import time

import pytest

from skyhaul.runtime.errors import InvalidArgument
from skyhaul.runtime.eventloop import run
from skyhaul.terminal import EmulatedLink, LinkProfile, TerminalRelay

PROBE = b"p" * 64


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def start_server(handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def start_relay(link: EmulatedLink, target_port: int, **options) -> tuple[TerminalRelay, int]:
    relay = TerminalRelay(link, **options)
    await relay.add_forward("127.0.0.1", 0, "127.0.0.1", target_port)
    await relay.start()
    (forward,) = relay.forwards
    assert forward.listen_port != 0 and forward.target == f"127.0.0.1:{target_port}"
    return relay, forward.listen_port


async def rtt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    start = time.perf_counter()
    writer.write(PROBE)
    assert await reader.readexactly(len(PROBE)) == PROBE
    return time.perf_counter() - start


async def rtts(reader, writer, count: int) -> list[float]:
    return [await rtt(reader, writer) for _ in range(count)]


# Wall-clock fidelity check on a shared 2-vCPU machine: a scheduler hiccup can push one run past
# the tolerance, so it gets two more tries; a real regression fails all three.
@pytest.mark.flaky(reruns=2)
def test_echo_rtt_is_twice_the_one_way_delay():
    async def main():
        server, echo_port = await start_server(echo_handler)
        link = EmulatedLink(LinkProfile.constant(0.020))
        relay, port = await start_relay(link, echo_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await rtt(reader, writer)  # the first one also pays for connecting to the target
        measured = await rtts(reader, writer, 20)
        writer.close()
        await relay.stop()
        server.close()
        return measured, relay.stats()

    measured, stats = run(main())
    assert statistics.median(measured) == pytest.approx(0.040, abs=0.002)
    assert min(measured) > 0.040 - 0.001  # timers may be aimed early by at most 0.5 ms a way
    assert stats.uplink.bytes_in == stats.uplink.bytes_out == 21 * len(PROBE)
    assert stats.downlink.bytes_out == 21 * len(PROBE)
    assert stats.uplink.delay_s == pytest.approx(0.020)
    assert stats.total_connections == 1 and stats.failed_connections == 0


# Wall-clock fidelity check on a shared 2-vCPU machine: a scheduler hiccup can push one run past
# the tolerance, so it gets two more tries; a real regression fails all three.
@pytest.mark.flaky(reruns=2)
def test_a_route_change_is_followed_by_the_next_bytes():
    async def main():
        server, echo_port = await start_server(echo_handler)
        link = EmulatedLink(LinkProfile.constant(0.015))
        relay, port = await start_relay(link, echo_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await rtt(reader, writer)
        before = await rtts(reader, writer, 10)
        # The next slot's route, as the links service would publish it: a delay that moves.
        now = time.time()
        link.set_profile(
            LinkProfile(delays_s=[0.050, 0.052], start_unix=now, step_s=15.0, valid_until=now + 15.0)
        )
        after = await rtts(reader, writer, 10)
        writer.close()
        await relay.stop()
        server.close()
        return before, after

    before, after = run(main())
    assert statistics.median(before) == pytest.approx(0.030, abs=0.002)
    assert statistics.median(after) == pytest.approx(0.100, abs=0.002)
    assert min(after) > 0.099  # already the first probe after the change sees the new route


# Wall-clock fidelity check on a shared 2-vCPU machine: a scheduler hiccup can push one run past
# the tolerance, so it gets two more tries; a real regression fails all three.
@pytest.mark.flaky(reruns=2)
def test_a_bulk_transfer_through_a_50_mbit_cap_runs_at_the_cap_and_arrives_intact():
    rate = 50e6
    payload = os.urandom(int(rate / 8 * 2.5))  # about 2.5 s at the cap
    received = hashlib.sha256()
    arrivals: list[float] = []

    async def main():
        finished = asyncio.Event()

        async def sink(reader, writer):
            while data := await reader.read(1 << 20):
                received.update(data)
                arrivals.append(time.perf_counter())
            writer.close()
            finished.set()

        server, sink_port = await start_server(sink)
        link = EmulatedLink(LinkProfile.constant(0.010, uplink_bps=rate, downlink_bps=200e6))
        relay, port = await start_relay(link, sink_port)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.perf_counter()
        writer.write(payload)
        writer.write_eof()
        await asyncio.wait_for(finished.wait(), 20)
        writer.close()
        stats = relay.stats()
        await relay.stop()
        server.close()
        return start, stats

    start, stats = run(main())
    achieved = len(payload) * 8 / (arrivals[-1] - start - 0.010)
    assert 45e6 <= achieved <= 52e6
    assert received.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert stats.uplink.bytes_out == len(payload)
    assert stats.uplink.rate_bps == rate and stats.downlink.rate_bps == 200e6


# Wall-clock fidelity check on a shared 2-vCPU machine: a scheduler hiccup can push one run past
# the tolerance, so it gets two more tries; a real regression fails all three.
@pytest.mark.flaky(reruns=2)
def test_connections_share_the_direction_rate_fairly():
    rate = 20e6
    payloads = [os.urandom(2_000_000), os.urandom(2_000_000)]  # 1.6 s for both at the cap

    async def main():
        finished: dict[int, float] = {}
        received: dict[int, bytes] = {}
        both = asyncio.Event()

        async def sink(reader, writer):
            data = await reader.read()
            index = data[0]
            finished[index] = time.perf_counter()
            received[index] = data[1:]
            writer.close()
            if len(finished) == len(payloads):
                both.set()

        server, sink_port = await start_server(sink)
        link = EmulatedLink(LinkProfile.constant(0.005, uplink_bps=rate))
        relay, port = await start_relay(link, sink_port)
        writers = [(await asyncio.open_connection("127.0.0.1", port))[1] for _ in payloads]
        start = time.perf_counter()
        for index, (writer, payload) in enumerate(zip(writers, payloads, strict=True)):
            writer.write(bytes([index]) + payload)
            writer.write_eof()
        await asyncio.wait_for(both.wait(), 10)
        for writer in writers:
            writer.close()
        await relay.stop()
        server.close()
        return start, finished, received

    start, finished, received = run(main())
    assert [received[index] for index in range(len(payloads))] == payloads
    took = [finished[index] - start for index in range(len(payloads))]
    total_bits = 8 * sum(len(payload) + 1 for payload in payloads)
    assert 0.9 * rate <= total_bits / max(took) <= 1.04 * rate  # one shared bucket, not one each
    assert min(took) > 0.85 * max(took)  # taking turns: neither waits for the other to finish


def test_during_a_forced_outage_nothing_is_lost_and_the_connection_survives():
    messages = [f"message {index:04d} ".encode() * 20 for index in range(60)]

    async def main():
        server, echo_port = await start_server(echo_handler)
        link = EmulatedLink(LinkProfile.constant(0.010))
        relay, port = await start_relay(link, echo_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await rtt(reader, writer)

        async def send():
            for message in messages:
                writer.write(message)
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(send())
        await asyncio.sleep(0.5)
        link.force_outage(5.0)
        during = []
        for _ in range(4):
            await asyncio.sleep(1.0)
            during.append(relay.stats())
        await sender
        echoed = await asyncio.wait_for(reader.readexactly(sum(map(len, messages))), 10)
        after_outage = await rtts(reader, writer, 10)  # the same connection still works
        stats = relay.stats()
        writer.close()
        await relay.stop()
        server.close()
        return during, echoed, after_outage, stats

    during, echoed, after_outage, stats = run(main())
    assert echoed == b"".join(messages)
    assert all(not sample.link_up and sample.down_reason == "forced-outage" for sample in during)
    # Nothing leaves while the link is down: held bytes pile up in the queue.
    assert during[0].uplink.bytes_out == during[-1].uplink.bytes_out
    assert during[-1].uplink.queued_bytes > during[0].uplink.queued_bytes > 0
    assert statistics.median(after_outage) == pytest.approx(0.020, abs=0.002)
    assert stats.link_up and stats.outage_s == pytest.approx(5.0, abs=0.01)
    assert stats.active_connections == 1 and stats.uplink.queued_bytes == 0


def test_a_fast_sender_into_a_slow_link_meets_backpressure_and_memory_stays_bounded():
    limit = 256 * 1024
    block = os.urandom(64 * 1024)

    async def main():
        received = bytearray()

        async def sink(reader, writer):
            while data := await reader.read(1 << 16):
                received.extend(data)
            writer.close()

        server, sink_port = await start_server(sink)
        link = EmulatedLink(LinkProfile.constant(0.005, uplink_bps=1e6, downlink_bps=1e6))
        relay, port = await start_relay(link, sink_port, queue_limit_bytes=limit, drain_timeout_s=0)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = 0

        async def send_flat_out():
            nonlocal sent
            while True:
                writer.write(block)
                sent += len(block)
                await writer.drain()

        sender = asyncio.create_task(send_flat_out())
        samples = []
        deadline = time.perf_counter() + 1.5
        while time.perf_counter() < deadline:
            samples.append(relay.stats())
            await asyncio.sleep(0.005)
        sender.cancel()
        writer.transport.abort()
        await relay.stop(drain_timeout_s=0)
        server.close()
        return samples, sent, bytes(received)

    samples, sent, received = run(main())
    queued = [sample.uplink.queued_bytes for sample in samples]
    assert max(queued) <= limit
    assert samples[-1].uplink.peak_queued_bytes <= limit
    assert max(queued) >= limit // 2  # the queue really filled: the limit was what held
    last = samples[-1].uplink
    assert last.bytes_in <= last.bytes_out + limit
    # The sender was held back: about 1.5 s at 1 Mbit/s got through, far less than it offered.
    assert last.bytes_out < 0.5e6
    assert received == (block * (len(received) // len(block) + 1))[: len(received)]


def test_held_bytes_wait_for_a_route_and_for_the_end_of_a_handover_stall():
    async def main():
        server, echo_port = await start_server(echo_handler)
        link = EmulatedLink()  # no route yet
        relay, port = await start_relay(link, echo_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PROBE)
        await asyncio.sleep(0.3)
        waiting = relay.stats()
        link.set_profile(LinkProfile.constant(0.005))
        assert await asyncio.wait_for(reader.readexactly(len(PROBE)), 5) == PROBE
        stall_start = time.time() + 0.1
        link.set_profile(LinkProfile(delays_s=[0.005], stalls=[(stall_start, 0.4)]))
        await asyncio.sleep(0.2)
        start = time.time()
        stalled = await rtt(reader, writer)
        writer.close()
        await relay.stop()
        server.close()
        return waiting, start, stalled, stall_start, relay.stats()

    waiting, start, stalled, stall_start, stats = run(main())
    assert waiting.down_reason == "no-route" and waiting.uplink.queued_bytes == len(PROBE)
    assert waiting.uplink.bytes_out == 0
    # Sent 0.1 s into a 0.4 s stall: held until the stall ends (not a moment less), released
    # when it ends (not at some later event), then it takes its delay each way.
    returned = start + stalled
    assert stall_start + 0.4 + 0.010 - 0.001 <= returned <= stall_start + 0.4 + 0.010 + 0.050
    assert stats.outage_s == pytest.approx(0.3 + 0.4, abs=0.05)


def test_half_close_delivers_queued_bytes_before_the_eof_and_the_reply_still_flows():
    request = os.urandom(300_000)

    async def digest_server(reader, writer):
        data = await reader.read()  # until the client's EOF
        writer.write(hashlib.sha256(data).digest())
        await writer.drain()
        writer.close()

    async def main():
        server, target_port = await start_server(digest_server)
        link = EmulatedLink(LinkProfile.constant(0.030, uplink_bps=20e6))
        relay, port = await start_relay(link, target_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        writer.write_eof()
        reply = await asyncio.wait_for(reader.read(), 5)  # the reply, then EOF
        writer.close()
        await asyncio.sleep(0.05)
        stats = relay.stats()
        await relay.stop()
        server.close()
        return reply, stats

    reply, stats = run(main())
    assert reply == hashlib.sha256(request).digest()
    assert stats.active_connections == 0 and stats.uplink.queued_bytes == stats.downlink.queued_bytes == 0


def test_an_unreachable_target_closes_the_client_and_is_counted():
    async def main():
        server, dead_port = await start_server(echo_handler)
        server.close()
        await server.wait_closed()
        relay, port = await start_relay(EmulatedLink(LinkProfile.constant(0.0)), dead_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PROBE)
        eof = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        stats = relay.stats()
        await relay.stop()
        return eof, stats

    eof, stats = run(main())
    assert eof == b""
    assert stats.failed_connections == 1 and stats.total_connections == 1 and stats.active_connections == 0


def test_stop_lets_queued_bytes_leave_then_closes():
    payload = os.urandom(50_000)

    async def main():
        received = bytearray()
        closed = asyncio.Event()

        async def sink(reader, writer):
            while data := await reader.read(1 << 16):
                received.extend(data)
            closed.set()
            writer.close()

        server, sink_port = await start_server(sink)
        relay, port = await start_relay(EmulatedLink(LinkProfile.constant(0.150)), sink_port)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await asyncio.sleep(0.02)
        await relay.stop(drain_timeout_s=1.0)
        await asyncio.wait_for(closed.wait(), 5)
        writer.close()
        server.close()
        return bytes(received), relay.stats()

    received, stats = run(main())
    assert received == payload
    assert stats.active_connections == 0 and not stats.uplink.queued_bytes


def test_bad_forwards_are_refused_with_the_field_named():
    async def main():
        relay = TerminalRelay(EmulatedLink())
        with pytest.raises(InvalidArgument, match="^listen_port"):
            await relay.add_forward("127.0.0.1", 70_000, "127.0.0.1", 80)
        with pytest.raises(InvalidArgument, match="^target_port"):
            await relay.add_forward("127.0.0.1", 0, "127.0.0.1", 0)
        return relay.forwards

    # Parsing LOCALPORT=HOST:PORT lists is settings' job (tests/unit/test_scenario.py).
    assert run(main()) == []


def test_the_relays_sockets_never_hold_a_small_piece_for_nagle():
    """A probe the relay writes must leave at once, not wait for the peer's delayed ACK (40 ms on
    Linux): both sockets of a relayed connection have TCP_NODELAY (issue 11 ruled this out as
    the cause of the delay tail; this keeps it ruled out)."""

    async def main():
        server, echo_port = await start_server(echo_handler)
        relay, port = await start_relay(EmulatedLink(LinkProfile.constant(0.0)), echo_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await rtt(reader, writer)  # the target is connected once the first probe is back
        (conn,) = relay._connections
        options = [
            endpoint.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            for endpoint in (conn.client, conn.target)
        ]
        writer.close()
        await relay.stop()
        server.close()
        return options

    assert all(option != 0 for option in run(main()))
