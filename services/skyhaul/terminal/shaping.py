"""The emulated link's rules, free of sockets and asyncio: what the path is at a given time
(delay, rate, up or down), the shared token buckets, and when each piece of a byte stream goes
on the air and when it leaves the terminal.

Two time bases meet here, on purpose:

- **Wall time** (float Unix seconds, ``EmulatedLink.clock``, ``time.time`` by default) keys the
  schedule: profile samples, expiry, stall windows, overrides. The links service speaks in
  emulation time; its caller converts before handing a profile over
  (``EmulationClock.to_wall`` for ``start_unix``, ``valid_until`` and stall starts,
  ``EmulationClock.wall_delay`` for ``step_s``), because a speed above 1 compresses the schedule
  but never a packet's physics: the delay values, the rates and a stall's duration (a hiccup of
  tens of ms at a slot boundary) stay physical, as given. Override durations are wall seconds.
- **Monotonic time** (the relay passes ``loop.time()``) for token buckets and leave times, so a
  wall clock step never bunches or stalls traffic. ``DirectionShaper.plan`` takes both readings.
"""

from __future__ import annotations

import bisect
import enum
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from skyhaul.runtime.errors import InvalidArgument

DEFAULT_BURST_S = 0.002
"""Token bucket depth in seconds of the current rate: absorbs timer lateness, keeps bursts small."""

MIN_PIECE_BYTES = 1500
"""Smallest piece the rate limiter splits a chunk into (one Ethernet MTU)."""


class Direction(enum.Enum):
    UPLINK = "uplink"  # client (data center side) -> target (region side)
    DOWNLINK = "downlink"  # target -> client


class DownReason(enum.Enum):
    NO_ROUTE = "no-route"  # no profile known yet (or cleared)
    ROUTE_UNAVAILABLE = "route-unavailable"  # the links service says there is no path
    ROUTE_EXPIRED = "route-expired"  # the last known profile ran past valid_until
    HANDOVER_STALL = "handover-stall"
    FORCED_OUTAGE = "forced-outage"


def _finite(name: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidArgument(f"{name}: {value!r} is not a finite number")
    return number


def _optional_rate(name: str, value: object) -> float | None:
    if value is None:
        return None
    rate = _finite(name, value)
    if rate <= 0:
        raise InvalidArgument(
            f"{name}: {value!r} must be > 0 bit/s (None means uncapped; an unavailable link is available=False)"
        )
    return rate


def _optional_instant(name: str, value: object) -> float | None:
    return None if value is None else _finite(name, value)


@dataclass(frozen=True)
class LinkProfile:
    """What the links service says the path is for a span of wall time.

    The one-way delay is sampled at ``start_unix + i * step_s`` and interpolated linearly between
    samples; before the first sample it is the first value, after the last it is the last value.
    A constant delay is the one-sample case. ``uplink_bps`` / ``downlink_bps`` of None mean no
    rate limit. Past ``valid_until`` (if set) the link counts as down until a newer profile comes:
    the terminal keeps applying the last known route only until it expires. During each handover
    stall ``(start_unix, duration_s)`` traffic is held.

    The link model's additions (``core.latency``: access, per-slot offset, jitter; or a replayed
    trace) come as a step function: ``uplink_extra_s[k]`` holds from ``extra_times[k]`` (wall,
    increasing) to the next (the first before, the last after); the reconfiguration ``spike``
    ``(slot start, height s, delay s, decay s)``, all wall, is evaluated exactly on top. They go
    on the uplink only:
    the downlink keeps the smooth propagation delay, so a round trip started at t on either side
    takes the model's RTT at t (to the floor's change during the trip, microseconds), whatever the
    jitter does meanwhile. ``loss`` is, on the same grid, the probability that a packet sent in one
    direction is lost (a round trip is lost with the model's probability).
    """

    available: bool = True
    delays_s: Sequence[float] = (0.0,)
    start_unix: float = 0.0
    step_s: float = 1.0
    uplink_bps: float | None = None
    downlink_bps: float | None = None
    valid_until: float | None = None
    stalls: Sequence[tuple[float, float]] = ()
    extra_times: Sequence[float] = ()
    uplink_extra_s: Sequence[float] = ()
    loss: Sequence[float] = ()
    spike: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.available, bool | np.bool_):
            raise InvalidArgument(f"available: {self.available!r} is not a bool")
        try:
            delays = np.asarray(self.delays_s, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InvalidArgument(f"delays_s: {self.delays_s!r} is not a sequence of numbers") from None
        if delays.size == 0:
            raise InvalidArgument("delays_s: needs at least one sample (one sample = constant delay)")
        bad = ~np.isfinite(delays) | (delays < 0)
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise InvalidArgument(f"delays_s[{index}]: {delays[index]!r} must be a finite delay >= 0 s")
        step = _finite("step_s", self.step_s)
        if step <= 0:
            raise InvalidArgument(f"step_s: {self.step_s!r} must be > 0 s")
        stalls = []
        for index, stall in enumerate(self.stalls):
            try:
                start, duration = stall
            except (TypeError, ValueError):
                raise InvalidArgument(
                    f"stalls[{index}]: {stall!r} is not a (start_unix, duration_s) pair"
                ) from None
            start = _finite(f"stalls[{index}].start_unix", start)
            duration = _finite(f"stalls[{index}].duration_s", duration)
            if duration < 0:
                raise InvalidArgument(f"stalls[{index}].duration_s: {duration!r} must be >= 0 s")
            stalls.append((start, duration))
        times = np.asarray(self.extra_times, dtype=np.float64).reshape(-1)
        extra = np.asarray(self.uplink_extra_s, dtype=np.float64).reshape(-1)
        loss = np.asarray(self.loss, dtype=np.float64).reshape(-1)
        if extra.size != times.size or (loss.size and loss.size != times.size):
            raise InvalidArgument("extra_times, uplink_extra_s and loss must have one value per time")
        if not (np.all(np.isfinite(times)) and np.all(np.diff(times) >= 0) and np.all(np.isfinite(extra))):
            raise InvalidArgument("extra_times must increase and uplink_extra_s be finite")
        if loss.size and not np.all((loss >= 0) & (loss <= 1)):
            raise InvalidArgument("loss: every value must be a probability in [0, 1]")
        if self.spike is not None:
            spike = tuple(_finite("spike", v) for v in self.spike)
            if len(spike) != 4 or spike[3] <= 0:
                raise InvalidArgument("spike: (slot start, height s, delay s, decay s > 0)")
            object.__setattr__(self, "spike", spike)
        object.__setattr__(self, "extra_times", tuple(times.tolist()))
        object.__setattr__(self, "uplink_extra_s", tuple(extra.tolist()))
        object.__setattr__(self, "loss", tuple(loss.tolist()))
        # Normalised copies: a tuple of floats is the fastest thing to index on the hot path.
        object.__setattr__(self, "available", bool(self.available))
        object.__setattr__(self, "delays_s", tuple(delays.tolist()))
        object.__setattr__(self, "start_unix", _finite("start_unix", self.start_unix))
        object.__setattr__(self, "step_s", step)
        object.__setattr__(self, "uplink_bps", _optional_rate("uplink_bps", self.uplink_bps))
        object.__setattr__(self, "downlink_bps", _optional_rate("downlink_bps", self.downlink_bps))
        object.__setattr__(self, "valid_until", _optional_instant("valid_until", self.valid_until))
        object.__setattr__(self, "stalls", tuple(sorted(stalls)))

    @classmethod
    def constant(
        cls,
        delay_s: float = 0.0,
        *,
        uplink_bps: float | None = None,
        downlink_bps: float | None = None,
        valid_until: float | None = None,
    ) -> LinkProfile:
        return cls(
            available=True,
            delays_s=(delay_s,),
            uplink_bps=uplink_bps,
            downlink_bps=downlink_bps,
            valid_until=valid_until,
        )

    @classmethod
    def unavailable(cls, *, valid_until: float | None = None) -> LinkProfile:
        """No route: the data center sees no usable satellite."""
        return cls(available=False, valid_until=valid_until)

    def delay_at(self, at: float) -> float:
        """One-way delay (s) at wall time ``at``, linearly interpolated between samples."""
        delays = self.delays_s
        last = len(delays) - 1
        if last == 0:
            return delays[0]
        position = (at - self.start_unix) / self.step_s
        if position <= 0.0:
            return delays[0]
        if position >= last:
            return delays[last]
        index = int(position)
        fraction = position - index
        return delays[index] + (delays[index + 1] - delays[index]) * fraction

    def _step_index(self, at: float) -> int:
        index = bisect.bisect_right(self.extra_times, at) - 1
        return index if index > 0 else 0

    def direction_delay_at(self, direction: Direction, at: float) -> float:
        """One-way delay of ``direction`` at ``at``: the interpolated delay, plus the link model's
        additions on the uplink."""
        delay = self.delay_at(at)
        if direction is Direction.UPLINK:
            if self.uplink_extra_s:
                delay += self.uplink_extra_s[self._step_index(at)]
            if self.spike is not None:
                start, height, spike_delay, decay = self.spike
                since = at - start - spike_delay
                if since >= 0.0:
                    delay += height * math.exp(-since / decay)
            if delay < 0.0:
                delay = 0.0
        return delay

    def loss_at(self, at: float) -> float:
        """Probability that a packet sent at ``at`` in one direction is lost (the link model's)."""
        return self.loss[self._step_index(at)] if self.loss else 0.0

    def rate_bps(self, direction: Direction) -> float | None:
        return self.uplink_bps if direction is Direction.UPLINK else self.downlink_bps

    def stalled_at(self, at: float) -> bool:
        for start, duration in self.stalls:
            if start <= at < start + duration:
                return True
        return False

    def breakpoints(self) -> list[float]:
        """Wall times at which this profile's up/down state may change."""
        points = [] if self.valid_until is None else [self.valid_until]
        for start, duration in self.stalls:
            points += [start, start + duration]
        return points


@dataclass(frozen=True)
class Overrides:
    """Experiments on top of the route: extra delay, a rate cap (both directions), a forced outage.

    Every ``*_until`` is a wall time after which that override no longer applies (None: until
    replaced). A forced outage lasts from when the overrides are set until ``outage_until``.
    """

    extra_delay_s: float = 0.0
    extra_delay_until: float | None = None
    rate_cap_bps: float | None = None
    rate_cap_until: float | None = None
    outage_until: float | None = None

    def __post_init__(self) -> None:
        extra = _finite("extra_delay_s", self.extra_delay_s)
        if extra < 0:
            raise InvalidArgument(f"extra_delay_s: {self.extra_delay_s!r} must be >= 0 s")
        object.__setattr__(self, "extra_delay_s", extra)
        object.__setattr__(
            self, "extra_delay_until", _optional_instant("extra_delay_until", self.extra_delay_until)
        )
        object.__setattr__(self, "rate_cap_bps", _optional_rate("rate_cap_bps", self.rate_cap_bps))
        object.__setattr__(self, "rate_cap_until", _optional_instant("rate_cap_until", self.rate_cap_until))
        object.__setattr__(self, "outage_until", _optional_instant("outage_until", self.outage_until))

    def extra_delay_at(self, at: float) -> float:
        if self.extra_delay_until is not None and at >= self.extra_delay_until:
            return 0.0
        return self.extra_delay_s

    def rate_cap_at(self, at: float) -> float | None:
        if self.rate_cap_until is not None and at >= self.rate_cap_until:
            return None
        return self.rate_cap_bps

    def outage_at(self, at: float) -> bool:
        return self.outage_until is not None and at < self.outage_until

    def breakpoints(self) -> list[float]:
        return [t for t in (self.extra_delay_until, self.rate_cap_until, self.outage_until) if t is not None]


NO_OVERRIDES = Overrides()


class TokenBucket:
    """Serialisation at a rate, as a virtual "link busy until" clock (GCRA).

    ``reserve`` books ``nbytes`` on the link and returns when their last bit is serialised. The
    link may lag at most ``burst_s`` behind ``now``: that much idle credit lets a late timer catch
    up without losing capacity, and bounds the burst after an idle spell to ``burst_s`` x rate.
    The time base is whatever monotonic clock the caller uses, consistently.
    """

    __slots__ = ("burst_s", "free_at")

    def __init__(self, burst_s: float = DEFAULT_BURST_S) -> None:
        burst_s = _finite("burst_s", burst_s)
        if burst_s < 0:
            raise InvalidArgument(f"burst_s: {burst_s!r} must be >= 0 s")
        self.burst_s = burst_s
        self.free_at = -math.inf

    def reserve(self, nbytes: int, now: float, rate_bps: float) -> float:
        begin = self.free_at
        if begin < now - self.burst_s:
            begin = now - self.burst_s
        end = begin + nbytes * 8.0 / rate_bps
        self.free_at = end
        return end


class EmulatedLink:
    """One terminal's link: the current profile, the overrides, and one token bucket per direction
    shared by every connection of the terminal. Not thread-safe: drive it from the relay's loop.

    Also keeps the cumulative outage time since the link was created, integrated exactly over
    the piecewise-constant up/down state (no sampling).
    """

    def __init__(
        self,
        profile: LinkProfile | None = None,
        *,
        clock: Callable[[], float] = time.time,
        burst_s: float = DEFAULT_BURST_S,
    ) -> None:
        self.clock = clock
        self.burst_s = _finite("burst_s", burst_s)
        self._buckets = {direction: TokenBucket(burst_s) for direction in Direction}
        if profile is not None and not isinstance(profile, LinkProfile):
            raise InvalidArgument(f"profile: expected a LinkProfile or None, got {type(profile).__name__}")
        self._profile = profile
        self._overrides = NO_OVERRIDES
        self._listeners: list[Callable[[], None]] = []
        self._accounted_until = clock()
        self._outage_s = 0.0

    # --- state -------------------------------------------------------------------------------

    @property
    def profile(self) -> LinkProfile | None:
        return self._profile

    @property
    def overrides(self) -> Overrides:
        return self._overrides

    def bucket(self, direction: Direction) -> TokenBucket:
        return self._buckets[direction]

    def set_profile(self, profile: LinkProfile | None) -> None:
        """Replace the route (None forgets it: no route, the link is down)."""
        if profile is not None and not isinstance(profile, LinkProfile):
            raise InvalidArgument(f"profile: expected a LinkProfile or None, got {type(profile).__name__}")
        self._account(self.clock())
        self._profile = profile
        self._notify()

    def set_overrides(self, overrides: Overrides) -> None:
        if not isinstance(overrides, Overrides):
            raise InvalidArgument(f"overrides: expected Overrides, got {type(overrides).__name__}")
        self._account(self.clock())
        self._overrides = overrides
        self._notify()

    def override_delay(self, extra_delay_s: float, duration_s: float | None = None) -> Overrides:
        """Add ``extra_delay_s`` to every byte's delay, for ``duration_s`` (None: until changed)."""
        until = self._until("duration_s", duration_s)
        return self._replace(extra_delay_s=extra_delay_s, extra_delay_until=until)

    def cap_rate(self, rate_bps: float | None, duration_s: float | None = None) -> Overrides:
        """Cap both directions at ``rate_bps`` (None lifts the cap)."""
        until = self._until("duration_s", duration_s)
        return self._replace(rate_cap_bps=rate_bps, rate_cap_until=until)

    def force_outage(self, duration_s: float) -> Overrides:
        """Hold all traffic for ``duration_s`` from now (0 ends a forced outage)."""
        duration = _finite("duration_s", duration_s)
        if duration < 0:
            raise InvalidArgument(f"duration_s: {duration_s!r} must be >= 0 s")
        return self._replace(outage_until=self.clock() + duration if duration > 0 else None)

    def clear_overrides(self) -> None:
        self.set_overrides(NO_OVERRIDES)

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every profile or override change; returns the unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # --- queries -----------------------------------------------------------------------------

    def down_reason(self, at: float | None = None) -> DownReason | None:
        """Why the link is down at wall time ``at`` (default now), or None when it is up."""
        at = self.clock() if at is None else at
        if self._overrides.outage_at(at):
            return DownReason.FORCED_OUTAGE
        profile = self._profile
        if profile is None:
            return DownReason.NO_ROUTE
        if profile.valid_until is not None and at >= profile.valid_until:
            return DownReason.ROUTE_EXPIRED
        if not profile.available:
            return DownReason.ROUTE_UNAVAILABLE
        if profile.stalls and profile.stalled_at(at):
            return DownReason.HANDOVER_STALL
        return None

    def is_up(self, at: float | None = None) -> bool:
        return self.down_reason(at) is None

    def delay_s(self, at: float | None = None) -> float | None:
        """One-way delay (route + extra) at ``at``; None without a route to take it from."""
        at = self.clock() if at is None else at
        profile = self._profile
        if profile is None or not profile.available:
            return None
        return profile.delay_at(at) + self._overrides.extra_delay_at(at)

    def rate_bps(self, direction: Direction, at: float | None = None) -> float | None:
        """Serialisation rate of ``direction`` at ``at``; None means uncapped."""
        at = self.clock() if at is None else at
        profile = self._profile
        rate = None if profile is None else profile.rate_bps(direction)
        cap = self._overrides.rate_cap_at(at)
        if cap is not None and (rate is None or cap < rate):
            return cap
        return rate

    def conditions(self, direction: Direction, at: float) -> tuple[DownReason | None, float | None, float]:
        """(down reason, rate, delay) at ``at`` in one call: the relay's per-chunk question."""
        reason = self.down_reason(at)
        if reason is not None:
            return reason, None, 0.0
        profile = self._profile
        assert profile is not None
        delay = profile.direction_delay_at(direction, at) + self._overrides.extra_delay_at(at)
        return None, self.rate_bps(direction, at), delay

    def loss_probability(self, at: float | None = None) -> float:
        """The route's loss probability per packet and direction at ``at`` (the link model's; the
        packet data plane draws against it)."""
        at = self.clock() if at is None else at
        profile = self._profile
        return 0.0 if profile is None else profile.loss_at(at)

    def next_change(self, at: float | None = None) -> float | None:
        """The first wall time after ``at`` at which the state may change by itself (a stall
        boundary, an expiry), or None if only a new profile or override can change it."""
        at = self.clock() if at is None else at
        later = [t for t in self._breakpoints() if t > at]
        return min(later) if later else None

    def outage_seconds(self, at: float | None = None) -> float:
        """Total time the link has been down since it was created, up to ``at`` (default now)."""
        at = self.clock() if at is None else at
        return self._outage_s + self._down_time(self._accounted_until, at)

    # --- internals ---------------------------------------------------------------------------

    def _breakpoints(self) -> list[float]:
        points = self._overrides.breakpoints()
        if self._profile is not None:
            points += self._profile.breakpoints()
        return points

    def _down_time(self, start: float, end: float) -> float:
        """Down time within [start, end) under the current profile and overrides."""
        if end <= start:
            return 0.0
        inner = sorted(t for t in self._breakpoints() if start < t < end)
        edges = [start, *inner, end]
        total = 0.0
        for left, right in zip(edges, edges[1:], strict=False):
            # The state is constant between breakpoints, so the midpoint speaks for the segment.
            if right > left and self.down_reason(0.5 * (left + right)) is not None:
                total += right - left
        return total

    def _account(self, now: float) -> None:
        if now > self._accounted_until:
            self._outage_s += self._down_time(self._accounted_until, now)
            self._accounted_until = now

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _until(self, name: str, duration_s: float | None) -> float | None:
        if duration_s is None:
            return None
        duration = _finite(name, duration_s)
        if duration <= 0:
            raise InvalidArgument(f"{name}: {duration_s!r} must be > 0 s (None: until changed)")
        return self.clock() + duration

    def _replace(self, **changes: float | None) -> Overrides:
        current = self._overrides
        fields = {
            "extra_delay_s": current.extra_delay_s,
            "extra_delay_until": current.extra_delay_until,
            "rate_cap_bps": current.rate_cap_bps,
            "rate_cap_until": current.rate_cap_until,
            "outage_until": current.outage_until,
        }
        fields.update(changes)
        overrides = Overrides(**fields)  # validates before anything changes
        self.set_overrides(overrides)
        return overrides


@dataclass
class DirectionShaper:
    """Timing of one direction of one connection: FIFO leave times over the shared bucket.

    Bytes go on the air when the link is up and the direction's bucket has room; they leave the
    terminal at (serialised) + delay, where the delay is the one at the time they went on the
    air: the time they entered, unless they had to wait for the link or for earlier bytes. Leave
    times never decrease: when the delay shrinks, later bytes wait behind earlier ones.
    """

    link: EmulatedLink
    direction: Direction
    last_leave: float = field(default=-math.inf)

    def plan(self, available: int, now: float, wall: float) -> tuple[int, float]:
        """Decide for the head of a queue holding ``available`` bytes at monotonic ``now`` / wall
        ``wall``. Returns ``(n, t)``: with n > 0, send the next n bytes, leaving at monotonic t;
        with n == 0, send nothing now and ask again at t (``math.inf``: when the link changes)."""
        link = self.link
        reason, rate, delay = link.conditions(self.direction, wall)
        if reason is not None:
            change = link.next_change(wall)
            return 0, (math.inf if change is None else now + (change - wall))
        if rate is None:
            nbytes = available
            sent = now
        else:
            bucket = link.bucket(self.direction)
            # Book at most one burst ahead, so a later outage or rate change still takes hold.
            if bucket.free_at > now + bucket.burst_s:
                return 0, bucket.free_at - bucket.burst_s
            nbytes = min(available, piece_bytes(rate, bucket.burst_s))
            sent = bucket.reserve(nbytes, now, rate)
            if sent < now:
                sent = now
        leave = sent + delay
        if leave < self.last_leave:
            leave = self.last_leave
        self.last_leave = leave
        return nbytes, leave


def piece_bytes(rate_bps: float, burst_s: float) -> int:
    """Largest piece the limiter books at once: one burst's worth, at least an MTU."""
    return max(MIN_PIECE_BYTES, int(rate_bps * burst_s / 8.0))
