"""The terminal's data plane: a userspace TCP relay that puts an ``EmulatedLink`` between each
client and its target. No root, no tc/netem: it runs the same on a laptop, in CI and in a pod.

Per connection and direction, bytes read from one socket are queued, go on the air when the link
is up and the direction's shared token bucket has room (connections take turns), and are written
to the other socket at their leave time (serialised + one-way delay), in FIFO order. While the
link is down nothing leaves; held bytes go out when it returns and the connection stays open.
Each direction's queue is bounded: when it is full the relay stops reading from the source
socket, so TCP backpressure reaches the sender and memory stays bounded however fast it sends.
EOF from one side is passed on once everything before it has left (half-close); the connection
closes when both directions are done.

Timers are scheduled per leave time with ``loop.call_at`` (no fixed tick). The default asyncio
loop sleeps in ``epoll_wait``, which only counts whole milliseconds, so a timer can fire up to
1 ms late: run the relay on ``skyhaul.runtime.eventloop.new_event_loop()`` (microsecond selector
timeouts), e.g. with ``asyncio.Runner(loop_factory=new_event_loop)``. Delivery timers are also
aimed early by the loop's measured wake-up lateness (at most 0.5 ms), so bytes leave on time on
average instead of always a little late.

On a machine whose CPUs are busy, a timer's real lateness is the wait for a CPU: with other
runnable processes that is several ms, now and then tens of ms (issue 11 measured the relay's
planned leave times exact to the ns while its writes, and the bench's own client and echo
server, woke that late). ``TerminalRelay(realtime_priority=N)`` runs the relay's loop thread
under SCHED_FIFO, which wakes it within about 0.1 ms however busy the machine is; it needs root
or CAP_SYS_NICE, and the kernel's RT throttling (95 % of a CPU by default) still bounds it.

Use (the servicer and the Redis subscriber drive the link; times are wall Unix seconds, see
``shaping`` for converting the links service's emulation times)::

    link = EmulatedLink()                      # no route yet: traffic is held until one comes
    relay = TerminalRelay(link)
    forward = await relay.add_forward("0.0.0.0", 7001, "region-westus2", 50053)
    await relay.start()
    link.set_profile(LinkProfile(delays_s=..., start_unix=..., step_s=..., uplink_bps=40e6, ...))
    link.force_outage(5.0); link.override_delay(0.050, duration_s=60); link.cap_rate(10e6)
    relay.stats()                              # TerminalStats
    await relay.stop()

Everything here runs on one event loop and is not thread-safe: change the link (profiles,
overrides) from that loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument
from skyhaul.runtime.settings import Forward
from skyhaul.terminal.shaping import Direction, DirectionShaper, EmulatedLink

log = logging.getLogger(__name__)

READ_SIZE = 1024 * 1024
"""Largest single read from a socket: large reads keep per-byte work low at Gbit/s (1 MiB
measured clearly faster than 256 KiB on loopback)."""

DEFAULT_QUEUE_LIMIT = 4 * 1024 * 1024
"""Bytes one direction of one connection may hold before the relay stops reading its source."""

DEFAULT_DRAIN_TIMEOUT_S = 1.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0

_WRITE_HIGH_WATER = 1024 * 1024
_COALESCE_S = 20e-6  # pieces due within this much of each other go out in one wake-up
_MAX_LEAD_S = 0.0005  # never aim a delivery timer earlier than this
_LATENESS_GAIN = 1 / 32  # weight of one wake-up in the running lateness estimate


# --- stats -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectionStats:
    bytes_in: int  # read from the source sockets
    bytes_out: int  # written to the destination sockets
    queued_bytes: int  # held in the relay now, over all connections
    peak_queued_bytes: int  # largest queue one connection has held in this direction
    delay_s: float | None  # one-way delay applied now (None: no route to take it from)
    rate_bps: float | None  # serialisation rate now (None: uncapped)


@dataclass(frozen=True)
class TerminalStats:
    at_unix: float
    link_up: bool
    down_reason: str | None
    uplink: DirectionStats  # client -> target
    downlink: DirectionStats  # target -> client
    outage_s: float  # time the link has been down since it was created
    active_connections: int
    total_connections: int
    failed_connections: int  # clients closed because their target could not be reached
    queue_limit_bytes: int


class _Counters:
    __slots__ = ("bytes_in", "bytes_out", "queued", "peak_queued")

    def __init__(self) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
        self.queued = 0
        self.peak_queued = 0


# --- one direction of one connection -----------------------------------------------------------


class _Pipe:
    """Bytes from ``src`` to ``dst``: a queue waiting to go on the air (``pending``) and one
    on its way out with leave times (``in_flight``), one timer for the next thing to do."""

    __slots__ = (
        "relay",
        "conn",
        "link",
        "shaper",
        "counters",
        "src",
        "dst",
        "pending",
        "in_flight",
        "queued",
        "src_eof",
        "src_paused",
        "dst_paused",
        "done",
        "timer",
        "timer_when",
        "timer_target",
        "transmitter",
        "in_ring",
    )

    def __init__(self, relay: TerminalRelay, conn: _Connection, direction: Direction) -> None:
        self.relay = relay
        self.conn = conn
        self.link = relay.link
        self.shaper = DirectionShaper(relay.link, direction)
        self.counters = relay._counters[direction]
        self.src: _Endpoint | None = None
        self.dst: _Endpoint | None = None
        self.pending: deque[bytes | memoryview] = deque()
        self.in_flight: deque[tuple[float, bytes | memoryview]] = deque()
        self.queued = 0
        self.src_eof = False
        self.src_paused = False
        self.dst_paused = False
        self.done = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = 0.0
        self.timer_target = -math.inf  # the leave time an early-aimed delivery timer stands for
        self.transmitter = relay._transmitters[direction]
        self.in_ring = False  # waiting its turn at the direction's rate-limited transmitter

    # input side

    def room(self) -> int:
        return self.relay.queue_limit - self.queued

    def received(self, chunk: bytes | memoryview) -> None:
        size = len(chunk)
        self.queued += size
        counters = self.counters
        counters.bytes_in += size
        counters.queued += size
        if self.queued > counters.peak_queued:
            counters.peak_queued = self.queued
        self.pending.append(chunk)
        if self.queued >= self.relay.queue_limit:
            self._pause_source()
        self.run()

    def source_eof(self) -> None:
        self.src_eof = True
        self.run()

    def source_lost(self) -> None:
        self.src_eof = True
        self.src = None
        self.run()

    def destination_lost(self) -> None:
        """The destination is gone: what is queued for it can never be delivered."""
        self._drop()
        self.done = True

    # the engine

    def run(self, target: float = -math.inf) -> None:
        """Transmit and deliver what is due; ``target`` is the leave time the timer that woke
        us was aimed early for: it goes out now, however the lateness estimate moved since."""
        if self.done:
            return
        loop = self.relay._loop
        now = loop.time()
        retry = self._transmit(now) if self.pending else None
        due = self._deliver(now, target)
        if due is not None:
            aimed = due - self.relay._lead  # aimed early by the loop's usual wake-up lateness
            if retry is None or aimed < retry:
                self._arm(aimed, due)
                return
        if retry is not None and retry != math.inf:
            self._arm(retry, -math.inf)

    def _transmit(self, now: float) -> float | None:
        """Put queued bytes on the air while the link allows; return when to retry. With a rate
        limit the pipe queues at the direction's transmitter instead, which takes turns."""
        if self.in_ring:
            return None
        wall = self.link.clock()
        if self.link.rate_bps(self.shaper.direction, wall) is not None:
            self.transmitter.want(self)
            return None
        while self.pending:
            nbytes, when = self.book(now, wall)
            if nbytes == 0:
                return when
        return None

    def book(self, now: float, wall: float) -> tuple[int, float]:
        """Put (part of) the head chunk on the air: ``DirectionShaper.plan`` decides."""
        pending = self.pending
        head = pending[0]
        nbytes, when = self.shaper.plan(len(head), now, wall)
        if nbytes == 0:
            return 0, when
        if nbytes >= len(head):
            pending.popleft()
            self.in_flight.append((when, head))
        else:
            view = head if isinstance(head, memoryview) else memoryview(head)
            self.in_flight.append((when, view[:nbytes]))
            pending[0] = view[nbytes:]
        return nbytes, when

    def _deliver(self, now: float, target: float = -math.inf) -> float | None:
        """Write every piece whose leave time has come (or is ``target``, the time the waking
        timer was aimed early for); return the next leave time to wait for."""
        in_flight = self.in_flight
        if in_flight:
            dst = self.dst
            if dst is None or dst.transport is None or self.dst_paused:
                return None  # the target is still connecting, or resume_writing will call back
            horizon = now + self.relay._horizon
            if horizon < target:
                # The timer was aimed earlier than the lead is now (this wake-up was punctual and
                # lowered the estimate): sleeping again for the difference would hand the CPU
                # away right before the deadline, and a busy machine may not give it back in time.
                horizon = target
            if in_flight[0][0] > horizon:
                return in_flight[0][0]
            link = self.link
            wall = link.clock()
            if not link.is_up(wall):
                change = link.next_change(wall)
                return None if change is None else now + (change - wall)
            write = dst.transport.write
            counters = self.counters
            sent = 0
            while in_flight and in_flight[0][0] <= horizon:
                piece = in_flight.popleft()[1]
                sent += len(piece)
                write(piece)
                if self.dst_paused:
                    break
            self.queued -= sent
            counters.queued -= sent
            counters.bytes_out += sent
            if self.relay._drained is not None:
                self.relay._check_drained()
            if self.src_paused and self.queued <= self.relay.queue_limit // 2:
                self._resume_source()
            if in_flight:
                return None if self.dst_paused else in_flight[0][0]
        if self.src_eof and not self.pending and not self.done and self.dst is not None:
            self._finish()
        return None

    def _arm(self, when: float, target: float) -> None:
        timer = self.timer
        if timer is not None:
            if self.timer_when <= when:
                return  # an earlier wake-up is armed; it re-plans then
            timer.cancel()
        self.timer_when = when
        self.timer_target = target
        self.timer = self.relay._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.relay._woke(self.timer_when)
        self.run(self.timer_target)

    def _finish(self) -> None:
        """Everything the source sent has left: pass its EOF on."""
        self.done = True
        dst = self.dst
        if dst is not None and dst.transport is not None and not dst.transport.is_closing():
            if dst.transport.can_write_eof():
                try:
                    dst.transport.write_eof()
                except OSError:
                    # The peer vanished first (ENOTCONN): there is nobody left to half-close to.
                    dst.transport.close()
            else:  # pragma: no cover - TCP transports can always half-close
                dst.transport.close()
        self.conn.pipe_done()

    def _pause_source(self) -> None:
        src = self.src
        if not self.src_paused and src is not None and src.transport is not None:
            self.src_paused = True
            src.transport.pause_reading()

    def _resume_source(self) -> None:
        src = self.src
        self.src_paused = False
        # After EOF the transport has stopped reading; resuming would report the EOF twice.
        if (
            not self.src_eof
            and src is not None
            and src.transport is not None
            and not src.transport.is_closing()
        ):
            src.transport.resume_reading()

    def _drop(self) -> None:
        self.counters.queued -= self.queued
        self.queued = 0
        self.pending.clear()
        self.in_flight.clear()
        self.cancel_timer()
        if self.in_ring:
            self.transmitter.forget(self)
        if self.relay._drained is not None:
            self.relay._check_drained()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Transmitter:
    """The dish's transmitter for one direction while it is rate limited: connections with
    bytes to send take turns, one piece (a burst's worth) each, so they share the rate fairly
    instead of the first to wake taking it all."""

    __slots__ = ("relay", "ring", "timer", "timer_when")

    def __init__(self, relay: TerminalRelay) -> None:
        self.relay = relay
        self.ring: deque[_Pipe] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = 0.0

    def want(self, pipe: _Pipe) -> None:
        pipe.in_ring = True
        self.ring.append(pipe)
        self.serve()

    def forget(self, pipe: _Pipe) -> None:
        pipe.in_ring = False
        self.ring.remove(pipe)

    def serve(self) -> None:
        ring = self.ring
        if not ring:
            return
        now = self.relay._loop.time()
        wall = self.relay.link.clock()
        while ring:
            pipe = ring[0]
            if not pipe.pending:  # emptied elsewhere (the link lost its rate limit meanwhile)
                ring.popleft()
                pipe.in_ring = False
                continue
            nbytes, when = pipe.book(now, wall)
            if nbytes == 0:  # the bucket is booked a burst ahead, or the link is down
                if when != math.inf:
                    self._arm(when)
                return
            ring.rotate(-1)
            if not pipe.pending:
                ring.pop()
                pipe.in_ring = False
            pipe.run()

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            if self.timer_when <= when:
                return
            self.timer.cancel()
        self.timer_when = when
        self.timer = self.relay._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.serve()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for pipe in self.ring:
            pipe.in_ring = False
        self.ring.clear()


# --- the two sockets of a relayed connection ---------------------------------------------------


class _Endpoint(asyncio.BufferedProtocol):
    """One socket of a relayed connection. Reads go into ``outbound``, writes come from ``inbound``."""

    def __init__(self, conn: _Connection, outbound: _Pipe, inbound: _Pipe) -> None:
        self.conn = conn
        self.outbound = outbound
        self.inbound = inbound
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self.conn.endpoint_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.relay._read_buffer(self.outbound.room())

    def buffer_updated(self, nbytes: int) -> None:
        self.outbound.received(self.conn.relay._take_read(nbytes))

    def eof_received(self) -> bool:
        self.outbound.source_eof()
        return True  # keep the socket open: the other direction may still be talking

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.endpoint_lost(self, exc)

    def pause_writing(self) -> None:
        self.inbound.dst_paused = True

    def resume_writing(self) -> None:
        self.inbound.dst_paused = False
        self.inbound.run()


class _Connection:
    def __init__(self, relay: TerminalRelay, listener: _Listener) -> None:
        self.relay = relay
        self.forward = listener.forward
        self.uplink = _Pipe(relay, self, Direction.UPLINK)
        self.downlink = _Pipe(relay, self, Direction.DOWNLINK)
        self.client = _Endpoint(self, outbound=self.uplink, inbound=self.downlink)
        self.target: _Endpoint | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.closed = False
        self.uplink.src = self.client
        self.downlink.dst = self.client

    def endpoint_made(self, endpoint: _Endpoint) -> None:
        if endpoint is self.client:
            self.relay._opened(self)
            self.connecting = self.relay._loop.create_task(self._connect_target())
            return
        if self.closed:  # the client left while the target was connecting
            assert endpoint.transport is not None
            endpoint.transport.close()
            return
        self.target = endpoint
        self.uplink.dst = endpoint
        self.downlink.src = endpoint
        self.uplink.run()  # bytes the client sent meanwhile wait for this
        self.downlink.run()

    async def _connect_target(self) -> None:
        forward = self.forward
        loop = self.relay._loop
        target = _Endpoint(self, outbound=self.downlink, inbound=self.uplink)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: target, forward.target_host, forward.target_port),
                self.relay.connect_timeout_s,
            )
        except Exception as exc:  # refused, unresolvable, timed out: the client must not hang
            log.warning(
                "terminal: cannot reach target %s:%d for a client on port %d (%s); closing the client",
                forward.target_host,
                forward.target_port,
                forward.listen_port,
                str(exc) or type(exc).__name__,
            )
            self.relay._failed_connections += 1
            self.close(abort=False)

    def endpoint_lost(self, endpoint: _Endpoint, exc: Exception | None) -> None:
        if self.closed:
            return
        endpoint.outbound.source_lost()
        endpoint.inbound.destination_lost()
        self.pipe_done()

    def pipe_done(self) -> None:
        if self.uplink.done and self.downlink.done:
            self.close(abort=False)

    def close(self, *, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        for pipe in (self.uplink, self.downlink):
            pipe._drop()
            pipe.done = True
        connecting = self.connecting
        if connecting is not None and not connecting.done() and connecting is not asyncio.current_task():
            connecting.cancel()
        for endpoint in (self.client, self.target):
            if endpoint is not None and endpoint.transport is not None:
                if abort:
                    endpoint.transport.abort()
                else:
                    endpoint.transport.close()
        self.relay._closed(self)


# --- the relay ---------------------------------------------------------------------------------


@dataclass
class _Listener:
    """One forward's listening socket: clients connecting to ``host:forward.listen_port`` are
    relayed to ``forward.target``."""

    host: str
    forward: Forward
    server: asyncio.Server | None = None

    def bound(self) -> Forward:
        """The forward with the port actually bound (the ephemeral one when asked for 0)."""
        if self.server is not None and self.server.sockets:
            port = int(self.server.sockets[0].getsockname()[1])
            return Forward(port, self.forward.target_host, self.forward.target_port)
        return self.forward


def _enter_realtime(priority: int) -> tuple[int, Any]:
    """Put the calling thread (the loop's: pid 0 means this thread on Linux) under SCHED_FIFO at
    ``priority``; return its policy and parameters before, for ``stop()`` to restore."""
    if not hasattr(os, "SCHED_FIFO"):
        raise FailedPrecondition("terminal relay: realtime_priority needs Linux (SCHED_FIFO)")
    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        raise FailedPrecondition(
            f"terminal relay: cannot run at realtime_priority {priority} ({exc.strerror or exc}); "
            "it needs root or CAP_SYS_NICE; leave realtime_priority unset for normal scheduling"
        ) from None
    return before


def _check_port(name: str, port: object, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        raise InvalidArgument(f"{name}: {port!r} is not a port number in [{low}, 65535]")


class TerminalRelay:
    """The terminal's TCP relay over one ``EmulatedLink`` (shared by all its forwards).

    ``queue_limit_bytes`` bounds each direction of each connection; ``drain_timeout_s`` is how
    long ``stop()`` lets queued bytes leave before closing; ``connect_timeout_s`` bounds the
    connection to a target (a failure closes the client and counts in ``failed_connections``).
    ``realtime_priority`` (1..99, default None: normal scheduling) puts the thread running the
    relay's loop under SCHED_FIFO from ``start()`` until ``stop()``, so deliveries wake on time
    on a busy machine (see the module's notes); ``start()`` fails with FailedPrecondition when
    the process may not do that.
    """

    def __init__(
        self,
        link: EmulatedLink,
        *,
        queue_limit_bytes: int = DEFAULT_QUEUE_LIMIT,
        read_size: int = READ_SIZE,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        realtime_priority: int | None = None,
    ) -> None:
        if not isinstance(link, EmulatedLink):
            raise InvalidArgument(f"link: expected an EmulatedLink, got {type(link).__name__}")
        if isinstance(read_size, bool) or not isinstance(read_size, int) or read_size < 1024:
            raise InvalidArgument(f"read_size: {read_size!r} must be an int >= 1024 bytes")
        if (
            isinstance(queue_limit_bytes, bool)
            or not isinstance(queue_limit_bytes, int)
            or queue_limit_bytes < 1
        ):
            raise InvalidArgument(f"queue_limit_bytes: {queue_limit_bytes!r} must be an int >= 1 byte")
        for name, value in (("drain_timeout_s", drain_timeout_s), ("connect_timeout_s", connect_timeout_s)):
            if not isinstance(value, int | float) or not value >= 0:
                raise InvalidArgument(f"{name}: {value!r} must be a number >= 0 s")
        if realtime_priority is not None and (
            isinstance(realtime_priority, bool)
            or not isinstance(realtime_priority, int)
            or not 1 <= realtime_priority <= 99
        ):
            raise InvalidArgument(
                f"realtime_priority: {realtime_priority!r} must be a SCHED_FIFO priority 1..99 (or None)"
            )
        self.link = link
        self.queue_limit = queue_limit_bytes
        self.read_size = read_size
        self.drain_timeout_s = float(drain_timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.realtime_priority = realtime_priority
        self._scheduling_before: tuple[int, Any] | None = None  # restored by stop()
        self._listeners: list[_Listener] = []
        self._connections: set[_Connection] = set()
        self._counters = {direction: _Counters() for direction in Direction}
        self._transmitters = {direction: _Transmitter(self) for direction in Direction}
        self._total_connections = 0
        self._failed_connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # type: ignore[assignment]
        self._running = False
        self._unsubscribe: Any = None
        self._scratch: bytearray | None = None
        self._scratch_view: memoryview | None = None
        self._drained: asyncio.Event | None = None  # set while stop() waits for queues to empty
        # Timers fire late by the loop's wake-up latency (a few hundred µs on a VM). Delivery
        # timers are aimed that much early, so pieces leave on time on average, not always late.
        self._lateness = 0.0
        self._lead = 0.0
        self._horizon = _COALESCE_S

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def forwards(self) -> list[Forward]:
        """The forwards, each with its bound port once listening (see ``add_forward``)."""
        return [listener.bound() for listener in self._listeners]

    async def add_forward(
        self, listen_host: str, listen_port: int, target_host: str, target_port: int
    ) -> Forward:
        """Relay ``listen_host:listen_port`` to the target. Listens at once if the relay is
        running (the returned forward then has the bound port), else at ``start()``; with port 0
        an ephemeral port is bound, which ``forwards`` shows once listening."""
        if not isinstance(listen_host, str) or not isinstance(target_host, str) or not target_host:
            raise InvalidArgument(
                f"forward: listen_host {listen_host!r} and target_host {target_host!r} must be host names"
            )
        _check_port("listen_port", listen_port, allow_zero=True)
        _check_port("target_port", target_port, allow_zero=False)
        listener = _Listener(listen_host, Forward(listen_port, target_host, target_port))
        if self._running:
            await self._listen(listener)
        self._listeners.append(listener)
        return listener.bound()

    async def start(self) -> None:
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        if self.realtime_priority is not None:
            self._scheduling_before = _enter_realtime(self.realtime_priority)
        self._unsubscribe = self.link.subscribe(self._link_changed)
        self._running = True
        try:
            for listener in self._listeners:
                await self._listen(listener)
        except BaseException:
            await self.stop(drain_timeout_s=0)
            raise

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Stop listening, give queued bytes up to ``drain_timeout_s`` to leave, then close."""
        if not self._running:
            return
        self._running = False
        servers = [listener.server for listener in self._listeners if listener.server is not None]
        for server in servers:
            server.close()
        timeout = self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        if self._queued_total() > 0 and timeout > 0:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                log.warning(
                    "terminal: %d queued bytes did not leave within %.1f s", self._queued_total(), timeout
                )
            self._drained = None
        for conn in list(self._connections):
            conn.close(abort=False)
        await asyncio.sleep(0)
        for server in servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except TimeoutError:
                log.warning("terminal: a listener did not close within 1 s")
        for listener in self._listeners:
            listener.server = None
        for transmitter in self._transmitters.values():
            transmitter.close()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._scheduling_before is not None:
            policy, param = self._scheduling_before
            self._scheduling_before = None
            os.sched_setscheduler(0, policy, param)  # giving up a priority is always allowed

    async def __aenter__(self) -> TerminalRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- stats -------------------------------------------------------------------------------

    def stats(self) -> TerminalStats:
        link = self.link
        wall = link.clock()
        reason = link.down_reason(wall)
        delay = link.delay_s(wall)

        def direction_stats(direction: Direction) -> DirectionStats:
            counters = self._counters[direction]
            return DirectionStats(
                bytes_in=counters.bytes_in,
                bytes_out=counters.bytes_out,
                queued_bytes=counters.queued,
                peak_queued_bytes=counters.peak_queued,
                delay_s=delay,
                rate_bps=link.rate_bps(direction, wall),
            )

        return TerminalStats(
            at_unix=wall,
            link_up=reason is None,
            down_reason=None if reason is None else reason.value,
            uplink=direction_stats(Direction.UPLINK),
            downlink=direction_stats(Direction.DOWNLINK),
            outage_s=link.outage_seconds(wall),
            active_connections=len(self._connections),
            total_connections=self._total_connections,
            failed_connections=self._failed_connections,
            queue_limit_bytes=self.queue_limit,
        )

    # --- internals ---------------------------------------------------------------------------

    async def _listen(self, listener: _Listener) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise FailedPrecondition(
                "terminal relay: add_forward must run on the loop that started the relay"
            )
        try:
            listener.server = await loop.create_server(
                lambda: _Connection(self, listener).client, listener.host, listener.forward.listen_port
            )
        except OSError as exc:
            raise FailedPrecondition(
                f"forward {listener.host}:{listener.forward.listen_port} -> {listener.forward.target}: "
                f"cannot listen ({exc.strerror or exc}); pick a free port or 0 for an ephemeral one"
            ) from exc

    def _woke(self, asked: float) -> None:
        late = self._loop.time() - asked
        late = 0.0 if late < 0.0 else _MAX_LEAD_S if late > _MAX_LEAD_S else late
        self._lateness += (late - self._lateness) * _LATENESS_GAIN
        self._lead = self._lateness
        self._horizon = self._lead if self._lead > _COALESCE_S else _COALESCE_S

    def _queued_total(self) -> int:
        return sum(counters.queued for counters in self._counters.values())

    def _check_drained(self) -> None:
        if self._drained is not None and self._queued_total() == 0:
            self._drained.set()

    def _opened(self, conn: _Connection) -> None:
        self._connections.add(conn)
        self._total_connections += 1

    def _closed(self, conn: _Connection) -> None:
        self._connections.discard(conn)

    def _link_changed(self) -> None:
        for conn in list(self._connections):
            conn.uplink.run()
            conn.downlink.run()
        for transmitter in self._transmitters.values():
            transmitter.serve()

    def _read_buffer(self, room: int) -> memoryview:
        # One scratch buffer for every socket: reads are synchronous (get_buffer, recv_into,
        # buffer_updated), and a large read takes the buffer with it instead of copying.
        view = self._scratch_view
        if view is None:
            self._scratch = bytearray(self.read_size)
            view = self._scratch_view = memoryview(self._scratch)
        if room >= self.read_size:
            return view
        return view[: max(room, 1)]

    def _take_read(self, nbytes: int) -> bytes | memoryview:
        view = self._scratch_view
        assert view is not None
        if nbytes >= self.read_size // 2:
            self._scratch = None
            self._scratch_view = None
            return view[:nbytes]
        return bytes(view[:nbytes])
