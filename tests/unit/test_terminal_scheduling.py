"""The relay's delivery scheduling on a fake loop: no piece ever waits an extra delay.

Issue 11 measured a relay RTT tail far above plain loopback (a probe "now and then waits an extra
delay"). These tests drive the relay's pipes with a fake loop and clock, so the decisions (leave
times, timers armed, writes) are checked exactly, without wall-clock timing: every piece is
written at its leave time (arrival + one-way delay) plus only the loop's own lateness, one timer
per pipe, however the arrivals of many connections interleave and however late the loop wakes.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import os
import random
import subprocess
import sys
import threading

import pytest

from skyhaul.runtime.errors import InvalidArgument
from skyhaul.runtime.eventloop import PRECISE_TIMER_SLACK_NS, new_event_loop, run
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


def test_a_punctual_wake_up_delivers_the_piece_its_timer_was_aimed_early_for() -> None:
    """Timers are aimed early by the loop's running lateness estimate, and every wake-up updates
    that estimate. A wake-up exactly on time lowers it; the piece must still go out in that
    wake-up. (Before, the lowered estimate left the piece "not yet due" and the pipe slept again
    for a few µs right before its deadline: on a busy machine a sleep hands the CPU to another
    process, which may keep it for a whole time slice.)"""
    delay_s = 0.100
    loop, relay, pipes, writes = make_relay(delay_s, 1)
    pipe, log = pipes[0], writes[0]
    for _ in range(40):  # wake-ups 0.3 ms late teach the relay to aim early
        pipe.received(PROBE)
        loop.run_until(loop.now + 2 * delay_s, lambda: 0.0003)
    lead = relay._lead
    assert 0.0002 < lead <= 0.0005
    arrived = loop.now
    pipe.received(PROBE)
    (timer,) = loop.pending()
    assert timer.when == pytest.approx(arrived + delay_s - lead, abs=1e-12)
    writes_before = len(log)
    loop.run_until(timer.when)  # this wake-up is exactly on time
    assert len(log) == writes_before + 1, "the piece waited for another wake-up"
    assert log[-1][0] == timer.when
    assert loop.pending() == [], "a second timer was armed for the same piece"


@pytest.mark.parametrize("delay_s", [0.020, 0.100])
def test_every_delivery_wake_up_writes_something(delay_s: float) -> None:
    """Whatever the mix of punctual and late wake-ups, a delivery timer never fires for nothing."""
    rng = random.Random(5)

    def lateness() -> float:
        return 0.0 if rng.random() < 0.3 else rng.uniform(0.0, 0.001)

    loop, relay, pipes, writes = make_relay(delay_s, 50)
    fired = 0
    call_at = loop.call_at

    def counted_call_at(when: float, callback) -> FakeHandle:
        def counting() -> None:
            nonlocal fired
            fired += 1
            callback()

        return call_at(when, counting)

    loop.call_at = counted_call_at  # type: ignore[method-assign]
    period = 2 * delay_s + 0.005
    for round_ in range(20):
        for index, pipe in enumerate(pipes):
            loop.run_until(1000.0 + period * (round_ + index / len(pipes)), lateness)
            pipe.received(PROBE)
    loop.run_until(loop.now + 10 * delay_s, lateness)
    assert sum(len(log) for log in writes) == 20 * len(pipes)
    assert fired == 20 * len(pipes)  # one wake-up per probe: each probe is alone in its pipe


# --- the relay's loop thread: timer slack and real-time scheduling ----------------------------


def _in_fresh_thread(function):
    """Run ``function`` on a new thread (scheduling settings are per thread: the test runner's own
    thread stays untouched) and return its result or raise its exception."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = function()
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]


@pytest.mark.skipif(sys.platform != "linux", reason="timer slack is a Linux per-thread setting")
def test_the_precise_loop_sets_its_threads_timer_slack_to_one_microsecond() -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    def slack_after_new_loop() -> tuple[int, int]:
        assert libc.prctl(29, 50_000, 0, 0, 0) == 0  # PR_SET_TIMERSLACK: the kernel's default
        before = libc.prctl(30, 0, 0, 0, 0)  # PR_GET_TIMERSLACK
        loop = new_event_loop()
        loop.close()
        return before, libc.prctl(30, 0, 0, 0, 0)

    assert _in_fresh_thread(slack_after_new_loop) == (50_000, PRECISE_TIMER_SLACK_NS)
    assert PRECISE_TIMER_SLACK_NS == 1000


@pytest.mark.parametrize("priority", [0, 100, -1, True, 1.5, "10"])
def test_realtime_priority_must_be_a_sched_fifo_priority(priority: object) -> None:
    with pytest.raises(InvalidArgument, match="realtime_priority"):
        TerminalRelay(EmulatedLink(), realtime_priority=priority)  # type: ignore[arg-type]


def _require_root() -> None:
    if os.geteuid() != 0:
        reason = "setting SCHED_FIFO and dropping privileges need root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot run under CI: {reason}", pytrace=False)
        pytest.skip(reason)


def test_realtime_priority_runs_the_relays_loop_thread_under_sched_fifo_until_stop() -> None:
    _require_root()

    async def start_and_stop() -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        def policy() -> tuple[int, int]:
            return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority

        relay = TerminalRelay(EmulatedLink(LinkProfile.constant(0.0)), realtime_priority=7)
        before = policy()
        await relay.start()
        running = policy()
        await relay.stop()
        return before, running, policy()

    before, running, after = _in_fresh_thread(lambda: run(start_and_stop()))
    assert before == (os.SCHED_OTHER, 0)
    assert running == (os.SCHED_FIFO, 7)
    assert after == before


def test_realtime_priority_without_the_privilege_is_a_clear_error_that_changes_nothing() -> None:
    _require_root()  # to drop to an unprivileged user in a child process
    script = """
import asyncio, os, sys
from skyhaul.runtime.errors import FailedPrecondition
from skyhaul.terminal import EmulatedLink, TerminalRelay
os.setgid(65534); os.setuid(65534)  # nobody, after the imports (it may not read the venv)
async def main():
    relay = TerminalRelay(EmulatedLink(), realtime_priority=7)
    await relay.add_forward("127.0.0.1", 0, "127.0.0.1", 9)
    try:
        await relay.start()
    except FailedPrecondition as exc:
        print(exc)
        print(relay.running, relay.forwards[0].listen_port, os.sched_getscheduler(0) == os.SCHED_OTHER)
        return
    sys.exit("start() succeeded without the privilege")
asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    message, state = result.stdout.strip().splitlines()
    assert "realtime_priority 7" in message and "CAP_SYS_NICE" in message
    assert state == "False 0 True"  # not running, nothing listening, scheduling unchanged
