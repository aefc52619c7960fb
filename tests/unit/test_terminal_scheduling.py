"""The relay's delivery scheduling on a fake loop: no piece ever waits an extra delay.

Issue 11 measured a relay RTT tail far above plain loopback (a probe "now and then waits an extra
delay"). These tests drive the relay's pipes with a fake loop and clock, so the decisions (leave
times, timers armed, writes) are checked exactly, without wall-clock timing: every piece is
written at its leave time (arrival + one-way delay) plus only the loop's own lateness, one timer
per pipe, however the arrivals of many connections interleave and however late the loop wakes.
"""

from __future__ import annotations

import heapq
import itertools
import random

import pytest

from skyhaul.runtime.settings import Forward
from skyhaul.terminal.relay import TerminalRelay, _Connection, _Listener
from skyhaul.terminal.shaping import EmulatedLink, LinkProfile

PROBE = b"p" * 12


class FakeHandle:
    def __init__(self, loop: FakeLoop, when: float, callback) -> None:
        self.loop, self.when, self.callback, self.cancelled = loop, when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just what the relay's pipes use: ``time()`` and ``call_at``. ``run_until`` fires due
    timers in order, each ``lateness()`` late, as a real loop would."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, int, FakeHandle]] = []
        self.order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback) -> FakeHandle:
        handle = FakeHandle(self, when, callback)
        heapq.heappush(self.timers, (when, next(self.order), handle))
        return handle

    def pending(self) -> list[FakeHandle]:
        return [h for _, _, h in self.timers if not h.cancelled]

    def run_until(self, until: float, lateness=lambda: 0.0) -> None:
        while self.timers and self.timers[0][0] <= until:
            when, _, handle = heapq.heappop(self.timers)
            if handle.cancelled:
                continue
            self.now = max(self.now, when + lateness())
            handle.callback()
        self.now = max(self.now, until)


class FakeTransport:
    def __init__(self, loop: FakeLoop, log: list) -> None:
        self.loop, self.log = loop, log

    def write(self, data) -> None:
        self.log.append((self.loop.now, bytes(data)))

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        raise AssertionError("a few probes must never fill the queue")


class FakeEndpoint:
    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport


def make_relay(delay_s: float, count: int) -> tuple[FakeLoop, TerminalRelay, list, list[list]]:
    loop = FakeLoop()
    link = EmulatedLink(LinkProfile.constant(delay_s), clock=lambda: loop.now)
    relay = TerminalRelay(link)
    relay._loop = loop  # what start() does, without sockets
    listener = _Listener("127.0.0.1", Forward(7001, "127.0.0.1", 50053))
    pipes, writes = [], []
    for _ in range(count):
        conn = _Connection(relay, listener)
        log: list = []
        conn.uplink.dst = FakeEndpoint(FakeTransport(loop, log))
        conn.uplink.src = FakeEndpoint(FakeTransport(loop, []))
        pipes.append(conn.uplink)
        writes.append(log)
    return loop, relay, pipes, writes


@pytest.mark.parametrize("delay_s", [0.020, 0.100])
def test_each_probe_leaves_at_arrival_plus_delay_on_a_punctual_loop(delay_s: float) -> None:
    """50 connections, one probe each per period, spread over the period (as bench/terminal)."""
    loop, relay, pipes, writes = make_relay(delay_s, 50)
    period = 2 * delay_s + 0.005
    sent: list[list[float]] = [[] for _ in pipes]
    for round_ in range(20):
        for index, pipe in enumerate(pipes):
            at = 1000.0 + period * (round_ + index / len(pipes))
            loop.run_until(at)
            sent[index].append(loop.now)
            pipe.received(PROBE)
            # One timer per pipe at most: a pending earlier wake-up is never doubled.
            assert sum(1 for h in loop.pending() if h.callback.__self__ is pipe) <= 1
    loop.run_until(loop.now + 10 * delay_s)
    for index, log in enumerate(writes):
        assert [data for _, data in log] == [PROBE] * 20
        for (written, _), arrived in zip(log, sent[index], strict=True):
            assert written == pytest.approx(arrived + delay_s, abs=1e-9)
    assert relay.stats().uplink.queued_bytes == 0


@pytest.mark.parametrize("delay_s", [0.020, 0.100])
def test_a_late_loop_adds_only_its_own_lateness_never_an_extra_delay(delay_s: float) -> None:
    """Wake-ups 0-5 ms late, now and then 30 ms (a stalled process): each piece still leaves at
    its leave time plus at most that wake-up's lateness, and never early by more than the lead
    the relay aims its timers with (0.5 ms at most)."""
    rng = random.Random(11)

    def lateness() -> float:
        return 0.030 if rng.random() < 0.02 else rng.uniform(0.0, 0.005)

    loop, relay, pipes, writes = make_relay(delay_s, 50)
    period = 2 * delay_s + 0.005
    sent: list[list[float]] = [[] for _ in pipes]
    for round_ in range(20):
        for index, pipe in enumerate(pipes):
            at = 1000.0 + period * (round_ + index / len(pipes))
            loop.run_until(at, lateness)
            sent[index].append(loop.now)
            pipe.received(PROBE)
    loop.run_until(loop.now + 10 * delay_s, lateness)
    for index, log in enumerate(writes):
        assert len(log) == 20
        for (written, _), arrived in zip(log, sent[index], strict=True):
            error = written - (arrived + delay_s)
            assert -0.0005 - 1e-9 <= error <= 0.030 + 1e-9, (index, error)
