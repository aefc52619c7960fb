"""The packet engine: moves every IP packet between a data center's TUN and the host's TUN through
the emulated link, per direction, with the link's delay, rate, queue, loss, handovers and outages.

One dedicated thread waits on both TUN fds with ``select`` (µs timeouts, unlike epoll's ms),
reads each in batches, decides each packet's fate on arrival and writes it out of the other TUN
when its time comes. Per direction (uplink = namespace → host, downlink = host → namespace):

1. **Down** at the moment the packet would go on the air → dropped (not held): cause ``handover``
   while inside a handover stall of the route (``LinkProfile.stalls``: the links service only
   sends one at a slot boundary where the satellite changes; :func:`handover_stalls` builds them
   from boundaries and satellites), cause ``outage`` otherwise (no route, route unavailable or
   expired, forced outage).
2. **Serialisation** at the direction's rate through a GCRA clock (``shaping.TokenBucket``); the
   backlog it represents is a **drop-tail queue** bounded in bytes (``queue_bytes``) or, by default,
   in time at the current rate (``queue_ms``, :data:`DEFAULT_QUEUE_MS`). A packet that does not fit
   is dropped (cause ``queue``) without using capacity.
3. **Random loss** (per direction, seeded): the packet used its air time and is lost (cause
   ``random``). Default :data:`DEFAULT_LOSS_PERCENT`.
4. **Delay**: it leaves at (end of serialisation) + one-way delay of the route at that instant
   (``LinkProfile.delay_at``: samples interpolated, the same model the relay uses) + any extra
   delay override; leave times never decrease, so order is preserved.

The engine reuses ``terminal.shaping.EmulatedLink`` for the route, the overrides (extra delay,
rate cap, forced outage) and the token buckets, so relay and packet mode read one model. What the
relay does not have lives here: a pinned delay, a loss override, the queue and the drop causes.

All public methods are thread-safe: the terminal service calls them from its event loop while the
engine thread runs.
"""

from __future__ import annotations

import collections
import math
import os
import random
import select
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument
from skyhaul.terminal.shaping import (
    Direction,
    DownReason,
    EmulatedLink,
    LinkProfile,
    Overrides,
)

DEFAULT_LOSS_PERCENT = 1.0
"""Random loss per direction, in %. G. Huston, "A transport protocol's view of Starlink" (APNIC
Blog, May 2024): a steady ~1 % packet loss on an unloaded Starlink service, not caused by
congestion. Handover-window drops are modelled separately and come on top."""

DEFAULT_QUEUE_MS = 100.0
"""Bottleneck queue depth in ms at the current rate. Loaded-latency measurements of Starlink show
queueing delay rising by tens to ~100+ ms under load (bufferbloat; e.g. Michel et al., "A first look
at Starlink performance", IMC 2022); 100 ms is also about one bandwidth-delay product at the
typical ~50 ms RTT, enough for one loss-based TCP flow to fill the link."""

MIN_QUEUE_BYTES = 3000
"""A queue always holds at least two full-size packets, however low the rate."""

READ_BATCH = 256
"""Packets read from one TUN per wake-up before due packets are written again."""

MAX_PACKET = 65535 + 4
QUEUE_DELAY_SAMPLES = 65536
DROP_LOG = 20000

CAUSES = ("queue", "random", "handover", "outage")


def _percent(name: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name}: {value!r} is not a number") from None
    if not 0.0 <= number <= 100.0:
        raise InvalidArgument(f"{name}: {value!r} must be a percentage in 0..100")
    return number


@dataclass(frozen=True)
class PacketConfig:
    """Per-engine settings. ``queue_bytes`` (if set) wins over ``queue_ms``."""

    queue_ms: float = DEFAULT_QUEUE_MS
    queue_bytes: int | None = None
    uplink_loss_percent: float = DEFAULT_LOSS_PERCENT
    downlink_loss_percent: float = DEFAULT_LOSS_PERCENT
    seed: int = 0
    realtime_priority: int | None = None
    """SCHED_FIFO priority (1..99) for the engine thread, or None (normal scheduling). A real-time
    engine wakes on time even when the CPUs are busy (the delay tail under load comes from waiting
    for a CPU); needs root or CAP_SYS_NICE, and the kernel's RT throttling still bounds it."""

    def __post_init__(self) -> None:
        queue_ms = float(self.queue_ms)
        if not math.isfinite(queue_ms) or queue_ms <= 0:
            raise InvalidArgument(f"queue_ms: {self.queue_ms!r} must be > 0 ms")
        if self.queue_bytes is not None and (
            not isinstance(self.queue_bytes, int) or self.queue_bytes < 1500
        ):
            raise InvalidArgument(f"queue_bytes: {self.queue_bytes!r} must be an integer >= 1500 (or None)")
        if self.realtime_priority is not None and (
            not isinstance(self.realtime_priority, int) or not 1 <= self.realtime_priority <= 99
        ):
            raise InvalidArgument(f"realtime_priority: {self.realtime_priority!r} must be 1..99 (or None)")
        object.__setattr__(self, "queue_ms", queue_ms)
        object.__setattr__(
            self, "uplink_loss_percent", _percent("uplink_loss_percent", self.uplink_loss_percent)
        )
        object.__setattr__(
            self, "downlink_loss_percent", _percent("downlink_loss_percent", self.downlink_loss_percent)
        )

    def loss_percent(self, direction: Direction) -> float:
        return self.uplink_loss_percent if direction is Direction.UPLINK else self.downlink_loss_percent


@dataclass(frozen=True)
class DirectionStats:
    """Counters of one direction since the engine started."""

    direction: Direction
    packets: int
    bytes: int  # delivered out of the link
    drops: dict[str, int]
    queue_delay_p50_s: float | None
    queue_delay_p99_s: float | None
    in_flight: int
    bytes_in: int = 0  # read from the sending side's TUN (delivered + dropped + in flight)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())


@dataclass(frozen=True)
class DropEvent:
    wall: float  # wall time the packet would have gone on the air
    direction: Direction
    cause: str
    size: int


def handover_stalls(
    boundaries: Sequence[float], satellites: Sequence[int | str | None], stall_s: float
) -> tuple[tuple[float, float], ...]:
    """Stall windows ``(start, stall_s)`` at the slot ``boundaries`` where the serving satellite
    changes. ``satellites[i]`` serves the slot before ``boundaries[i]``, ``satellites[i + 1]`` the
    one after (so ``len(satellites) == len(boundaries) + 1``). None / -1 means no satellite: going
    to or from no satellite is an outage, not a handover, so it gets no stall."""
    if len(satellites) != len(boundaries) + 1:
        raise InvalidArgument(
            f"satellites: {len(satellites)} given for {len(boundaries)} boundaries (needs one more)"
        )
    stall = float(stall_s)
    if not math.isfinite(stall) or stall < 0:
        raise InvalidArgument(f"stall_s: {stall_s!r} must be >= 0 s")

    def serving(satellite: int | str | None) -> bool:
        return satellite is not None and satellite != -1

    return tuple(
        (float(boundary), stall)
        for boundary, before, after in zip(boundaries, satellites[:-1], satellites[1:], strict=True)
        if stall > 0 and serving(before) and serving(after) and before != after
    )


def _tight_timer_slack() -> None:
    """Ask the kernel to wake this thread on time (default slack 50 µs; per thread, Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_PR_SET_TIMERSLACK = 29


@dataclass
class _Line:
    """One direction's state: the delay line (FIFO of leave time + packet) and its counters."""

    direction: Direction
    out_fd: int
    rng: random.Random
    line: collections.deque = field(default_factory=collections.deque)
    last_leave: float = -math.inf
    packets: int = 0
    nbytes: int = 0
    bytes_in: int = 0
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CAUSES, 0))
    queue_delays: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=QUEUE_DELAY_SAMPLES)
    )


class PacketEngine:
    """Shapes the packets between ``namespace_fd`` (the data center's TUN) and ``host_fd`` (the
    host's TUN). The engine owns neither fd: the caller closes them after :meth:`stop`.

    ``link`` carries the route and overrides (a fresh ``EmulatedLink`` without a route by default:
    everything is dropped as ``outage`` until :meth:`set_route`).
    """

    def __init__(
        self,
        namespace_fd: int,
        host_fd: int,
        *,
        config: PacketConfig | None = None,
        link: EmulatedLink | None = None,
        name: str = "packet-engine",
    ) -> None:
        self.config = config or PacketConfig()
        self.link = link if link is not None else EmulatedLink(clock=time.time)
        self.name = name
        self._namespace_fd = namespace_fd
        self._host_fd = host_fd
        seeds = random.Random(self.config.seed)
        self._lines = {
            Direction.UPLINK: _Line(Direction.UPLINK, host_fd, random.Random(seeds.getrandbits(64))),
            Direction.DOWNLINK: _Line(Direction.DOWNLINK, namespace_fd, random.Random(seeds.getrandbits(64))),
        }
        self._lock = threading.Lock()
        self._pinned_delay_s: float | None = None
        self._pinned_until: float | None = None
        self._loss_override: dict[Direction, float] = {}
        self._loss_until: float | None = None
        self._drop_log: collections.deque[DropEvent] = collections.deque(maxlen=DROP_LOG)
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PacketEngine:
        if self._thread is not None:
            raise FailedPrecondition("packet engine already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread; packets still in the delay lines are discarded."""
        self._stopping = True
        try:
            os.write(self._wake_write, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._wake_read, self._wake_write):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_read = self._wake_write = -1
        if self._error is not None:
            raise FailedPrecondition(f"packet engine failed: {self._error!r}") from self._error

    def __enter__(self) -> PacketEngine:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- what the terminal service feeds in --------------------------------------------------

    def set_route(self, profile: LinkProfile | None) -> None:
        """Replace the route (None: no route, everything is dropped as ``outage``)."""
        with self._lock:
            self.link.set_profile(profile)

    def set_overrides(self, overrides: Overrides) -> None:
        with self._lock:
            self.link.set_overrides(overrides)

    def override_delay(self, extra_delay_s: float, duration_s: float | None = None) -> None:
        with self._lock:
            self.link.override_delay(extra_delay_s, duration_s)

    def cap_rate(self, rate_bps: float | None, duration_s: float | None = None) -> None:
        with self._lock:
            self.link.cap_rate(rate_bps, duration_s)

    def force_outage(self, duration_s: float) -> None:
        """Drop everything for ``duration_s`` from now (0 ends a forced outage)."""
        with self._lock:
            self.link.force_outage(duration_s)

    def pin_delay(self, delay_s: float | None, duration_s: float | None = None) -> None:
        """Use ``delay_s`` as the one-way delay instead of the route's (None: the route's again)."""
        delay = None if delay_s is None else float(delay_s)
        if delay is not None and (not math.isfinite(delay) or delay < 0):
            raise InvalidArgument(f"delay_s: {delay_s!r} must be a finite delay >= 0 s (None unpins)")
        until = self._until(duration_s)
        with self._lock:
            self._pinned_delay_s, self._pinned_until = delay, until

    def override_loss(
        self, percent: float | None, direction: Direction | None = None, duration_s: float | None = None
    ) -> None:
        """Random loss of ``percent`` for ``direction`` (None: both) instead of the configured one;
        ``percent`` None removes the override."""
        value = None if percent is None else _percent("percent", percent)
        until = self._until(duration_s)
        directions = list(Direction) if direction is None else [direction]
        with self._lock:
            for each in directions:
                if value is None:
                    self._loss_override.pop(each, None)
                else:
                    self._loss_override[each] = value
            self._loss_until = until if self._loss_override else None

    def clear_overrides(self) -> None:
        with self._lock:
            self.link.clear_overrides()
            self._pinned_delay_s = self._pinned_until = None
            self._loss_override.clear()
            self._loss_until = None

    # --- what it reports ---------------------------------------------------------------------

    def stats(self) -> dict[Direction, DirectionStats]:
        with self._lock:
            snapshot = {
                direction: (
                    line.packets,
                    line.nbytes,
                    dict(line.drops),
                    list(line.queue_delays),
                    len(line.line),
                    line.bytes_in,
                )
                for direction, line in self._lines.items()
            }
        result = {}
        for direction, (packets, nbytes, drops, delays, in_flight, bytes_in) in snapshot.items():
            p50 = p99 = None
            if delays:
                p50, p99 = (float(v) for v in np.percentile(np.asarray(delays), [50, 99]))
            result[direction] = DirectionStats(
                direction, packets, nbytes, drops, p50, p99, in_flight, bytes_in
            )
        return result

    def loss_override(self, wall: float | None = None) -> tuple[dict[Direction, float], float | None]:
        """The loss override in force at ``wall`` (default now): ``({direction: percent}, until)``;
        an empty mapping when there is none."""
        wall = time.time() if wall is None else wall
        with self._lock:
            if not self._loss_override or (self._loss_until is not None and wall >= self._loss_until):
                return {}, None
            return dict(self._loss_override), self._loss_until

    def delay_s(self, wall: float | None = None) -> float | None:
        """The one-way delay a packet going on the air at ``wall`` gets (None: link down)."""
        wall = time.time() if wall is None else wall
        with self._lock:
            reason, _rate, delay = self.link.conditions(Direction.UPLINK, wall)
            if reason is not None:
                return None
            if self._pinned_delay_s is not None and (self._pinned_until is None or wall < self._pinned_until):
                return self._pinned_delay_s + self.link.overrides.extra_delay_at(wall)
            return delay

    def drop_events(self) -> list[DropEvent]:
        """The most recent drops (up to :data:`DROP_LOG`), oldest first."""
        with self._lock:
            return list(self._drop_log)

    def loss_percent(self, direction: Direction, wall: float | None = None) -> float:
        wall = time.time() if wall is None else wall
        if self._loss_override and (self._loss_until is None or wall < self._loss_until):
            if direction in self._loss_override:
                return self._loss_override[direction]
        # A route with the link model (a terminal model or a replayed trace) brings its own loss,
        # per direction and by position in the slot: it replaces the configured default.
        profile = self.link.profile
        if profile is not None and profile.loss:
            return 100.0 * profile.loss_at(wall)
        return self.config.loss_percent(direction)

    # --- the thread --------------------------------------------------------------------------

    def _until(self, duration_s: float | None) -> float | None:
        if duration_s is None:
            return None
        duration = float(duration_s)
        if not math.isfinite(duration) or duration <= 0:
            raise InvalidArgument(f"duration_s: {duration_s!r} must be > 0 s (None: until changed)")
        return time.time() + duration

    def _run(self) -> None:
        _tight_timer_slack()
        try:
            if self.config.realtime_priority is not None:
                # Policy of this thread only (pid 0 = the calling thread on Linux).
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.config.realtime_priority))
            self._loop()
        except BaseException as error:  # reported by stop(); the thread must not die silently
            self._error = error

    def _loop(self) -> None:
        sources = {
            self._namespace_fd: self._lines[Direction.UPLINK],
            self._host_fd: self._lines[Direction.DOWNLINK],
        }
        readers = [self._namespace_fd, self._host_fd, self._wake_read]
        lines = list(self._lines.values())
        monotonic = time.monotonic
        read = os.read
        while not self._stopping:
            now = monotonic()
            due = math.inf
            for line in lines:
                if line.line:
                    head = line.line[0][0]
                    if head < due:
                        due = head
            timeout = 0.2 if due is math.inf else max(0.0, due - now)
            if timeout > 0:
                ready, _, _ = select.select(readers, (), (), min(timeout, 0.2))
            else:
                ready, _, _ = select.select(readers, (), (), 0)
            with self._lock:
                now = monotonic()
                wall = time.time()
                for fd in ready:
                    line = sources.get(fd)
                    if line is None:
                        continue
                    for _ in range(READ_BATCH):
                        try:
                            packet = read(fd, MAX_PACKET)
                        except BlockingIOError:
                            break
                        self._admit(line, packet, now, wall)
                now = monotonic()
                for line in lines:
                    self._flush(line, now)

    def _flush(self, line: _Line, now: float) -> None:
        queue = line.line
        write = os.write
        fd = line.out_fd
        while queue and queue[0][0] <= now:
            _, packet = queue.popleft()
            try:
                write(fd, packet)
            except OSError:
                # The receiving side is gone or full (device down): the packet is lost there.
                line.drops["queue"] += 1
                continue
            line.packets += 1
            line.nbytes += len(packet)

    def _admit(self, line: _Line, packet: bytes, now: float, wall: float) -> None:
        link = self.link
        direction = line.direction
        size = len(packet)
        line.bytes_in += size
        reason, rate, delay = link.conditions(direction, wall)
        bucket = link.bucket(direction)
        on_air = now
        if reason is None and rate is not None:
            backlog_s = bucket.free_at - now
            if backlog_s > 0:
                on_air = now + backlog_s
                limit = self.config.queue_bytes
                if limit is None:
                    limit = max(MIN_QUEUE_BYTES, rate * self.config.queue_ms / 8000.0)
                if backlog_s * rate / 8.0 + size > limit:
                    self._drop(line, "queue", wall, size)
                    return
                # The link's state when this packet reaches the air, not when it arrived.
                reason, rate, delay = link.conditions(direction, wall + backlog_s)
        if reason is not None:
            self._drop(
                line,
                "handover" if reason is DownReason.HANDOVER_STALL else "outage",
                wall + on_air - now,
                size,
            )
            return
        if rate is None:
            sent = on_air
        else:
            sent = bucket.reserve(size, now, rate)
            if sent < now:
                sent = now
        line.queue_delays.append(sent - now)
        loss = self.loss_percent(direction, wall)
        if loss > 0 and line.rng.random() * 100.0 < loss:
            self._drop(line, "random", wall + on_air - now, size)
            return
        if self._pinned_delay_s is not None and (self._pinned_until is None or wall < self._pinned_until):
            delay = self._pinned_delay_s + link.overrides.extra_delay_at(wall)
        leave = sent + delay
        if leave < line.last_leave:
            leave = line.last_leave
        line.last_leave = leave
        line.line.append((leave, packet))

    def _drop(self, line: _Line, cause: str, wall: float, size: int) -> None:
        line.drops[cause] += 1
        self._drop_log.append(DropEvent(wall, line.direction, cause, size))
