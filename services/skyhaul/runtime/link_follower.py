"""One data center's satellite link, followed from the links service's events on Redis.

The terminal (which shapes traffic with the current route) and the data center (whose sync waits
for the link) both follow the same events the same way through `LinkFollower`:

- one filter: an event concerns a data center when it names it and its home region (an empty
  region means "any");
- the current route: the last one named in a `route_changed` or a snapshot (the subscriber starts
  from the latest snapshot and resynchronises from one after a gap, both read from this data
  center's own state entry);
- one notion of "up": the last thing said about the link (a route's availability or a
  `link_status`), never past the end the route itself announces (NaN delay samples: the held
  satellite sets before the slot ends, and the link is down from then until the next route — the
  dish holds traffic from that instant, so the data center must not sync into it), and never past
  the current route's expiry. A route stays valid for its slot
  plus `GRACE_SLOTS` slots (a late event must not blink the link), then for `STALE_AFTER_S` wall
  seconds more; after that the route is *stale*: the links service is gone or silent, and the
  link counts as down until a new route comes.

Emulated times on routes are turned into wall time through the emulation clock, so a stale route
expires at the same wall instant for every follower of the same clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.context import Context

from skyhaul.runtime.bus import LINK_EVENTS_CHANNEL, EventSubscriber
from skyhaul.runtime.clock import EmulationClock, to_unix
from skyhaul.v1 import events_pb2, route_pb2

GRACE_SLOTS = 1.0
"""Slots a route stays valid past its own slot's end."""

STALE_AFTER_S = 1.0
"""Wall seconds past a route's validity before it counts as stale (no current route)."""

DEFAULT_SLOT_S = 15.0
"""Slot length assumed for a route that names no slot (emulated seconds)."""


def _seconds(duration) -> float:
    return duration.seconds + duration.nanos * 1e-9


def route_cut_at(route: route_pb2.Route, clock: EmulationClock) -> float | None:
    """Wall time at which an available route's delay samples turn NaN (its satellite sets before
    the slot ends), or None when the route lasts its slot."""
    if not route.available:
        return None
    cut = next((k for k, ms in enumerate(route.delay_samples_ms) if not math.isfinite(ms)), None)
    if cut is None:
        return None
    step = _seconds(route.samples_step) or 1.0
    start = to_unix(route.samples_start) if route.HasField("samples_start") else to_unix(route.at)
    return clock.to_wall(start + cut * step)


def route_valid_until(route: route_pb2.Route, clock: EmulationClock) -> float:
    """Wall time until which `route` describes the link (NaN delay samples end it early)."""
    if route.HasField("slot"):
        slot_end = to_unix(route.slot.end)
        slot_len = max(slot_end - to_unix(route.slot.start), 0.0)
    else:
        slot_end, slot_len = clock.now(), DEFAULT_SLOT_S
    if not route.available:
        return clock.to_wall(slot_end)
    cut_at = route_cut_at(route, clock)
    if cut_at is not None:
        return cut_at  # the held satellite sets before the slot ends: down from there until the next slot
    return clock.to_wall(slot_end + GRACE_SLOTS * slot_len)


@dataclass(frozen=True)
class LinkUpdate:
    """What one event said about the followed data center (passed to listeners)."""

    event: events_pb2.LinkEvent
    kind: str  # "route_changed", "snapshot" or "link_status"
    route: route_pb2.Route | None  # the route the event carried, if any
    status: events_pb2.LinkStatusChanged | None  # the status the event carried, if any
    context: Context | None  # the trace context the event carried (None when applied by hand)


class LinkFollower:
    """The link of one data center to its home region, from `apply(event)` or `run()` (Redis).

    Listeners added with `on_update` are called with a `LinkUpdate` after every event that
    concerns this data center, once the follower's own state includes it.
    """

    def __init__(
        self,
        data_center_id: str,
        region_id: str,
        clock: EmulationClock,
        *,
        redis_url: str | None = None,
        channel: str = LINK_EVENTS_CHANNEL,
    ) -> None:
        self.data_center_id = data_center_id
        self.region_id = region_id
        self.clock = clock
        self.redis_url = redis_url
        self.channel = channel
        self.route: route_pb2.Route | None = None
        self.valid_until: float | None = None  # wall time; None until a route came
        self.ends_at: float | None = None  # wall time the current route's satellite sets (None: never)
        self.told_up: bool | None = None  # None: nothing said about this data center yet
        self.reason = ""  # why the link was last said to be down
        self.last_sequence = 0  # of any event seen (the feed's progress)
        self._listeners: list[Callable[[LinkUpdate], None]] = []
        self._subscriber: EventSubscriber | None = None

    # ----------------------------------------------------------------- state

    def concerns(self, data_center_id: str, region_id: str) -> bool:
        """The one filter: a route or status to another region is not this data center's backhaul."""
        return data_center_id == self.data_center_id and region_id in ("", self.region_id)

    @property
    def expires_at(self) -> float | None:
        """Wall time at which the current route turns stale (None: no route yet)."""
        return None if self.valid_until is None else self.valid_until + STALE_AFTER_S

    def expired(self, at: float | None = None) -> bool:
        """A route came, and it is past its expiry (the links service went quiet)."""
        expires = self.expires_at
        return expires is not None and (self.clock.wall() if at is None else at) > expires

    def stale(self, at: float | None = None) -> bool:
        """No current route: none came yet, or the last one expired."""
        return self.route is None or self.expired(at)

    def ended(self, at: float | None = None) -> bool:
        """The current route announced its own end (its satellite sets) and that instant is past."""
        return self.ends_at is not None and (self.clock.wall() if at is None else at) >= self.ends_at

    def up(self, at: float | None = None) -> bool | None:
        """Whether the link is up: None while nothing was said, False once the route ended or expired."""
        if self.expired(at) or (self.told_up and self.ended(at)):
            return False
        return self.told_up

    @property
    def subscribed(self) -> bool:
        """Whether the follower currently follows Redis."""
        return self._subscriber is not None and self._subscriber.connected

    def on_update(self, listener: Callable[[LinkUpdate], None]) -> None:
        self._listeners.append(listener)

    # ----------------------------------------------------------------- events

    def apply(self, event: events_pb2.LinkEvent, context: Context | None = None) -> LinkUpdate | None:
        """Fold one event in; returns what it said about this data center (None: nothing)."""
        if event.sequence:
            self.last_sequence = event.sequence
        kind = event.WhichOneof("body")
        route = status = None
        if kind == "link_status":
            status = event.link_status
            if not self.concerns(status.data_center_id, status.region_id):
                return None
            self.told_up = status.up
            if not status.up:
                self.reason = status.reason or "link down"
        elif kind == "route_changed":
            route = event.route_changed.route
            if not self.concerns(route.data_center_id, route.region_id):
                return None
            self._take(route)
        elif kind == "snapshot":
            routes = [r for r in event.snapshot.routes if self.concerns(r.data_center_id, r.region_id)]
            if not routes:
                return None
            route = routes[-1]
            self._take(route)
        else:
            return None
        update = LinkUpdate(event, kind, route, status, context)
        for listener in list(self._listeners):
            listener(update)
        return update

    def _take(self, route: route_pb2.Route) -> None:
        self.route = route
        self.valid_until = route_valid_until(route, self.clock)
        self.ends_at = route_cut_at(route, self.clock)
        if not route.available and self.told_up is not False:
            self.reason = "no route to the region"
        self.told_up = route.available

    # ----------------------------------------------------------------- Redis

    async def run(self) -> None:
        """Follow the link events on Redis until cancelled (reconnects by itself)."""
        if self.redis_url is None:
            return
        # Start from the latest snapshot, then every event after it (or the whole log without one).
        # Its resynchronising snapshots read this data center's own state entry, not the fleet's.
        self._subscriber = EventSubscriber(
            self.redis_url, self.channel, after_sequence=None, data_centers=[self.data_center_id]
        )
        try:
            async for event, context in self._subscriber.events_with_context():
                self.apply(event, context)
        finally:
            subscriber, self._subscriber = self._subscriber, None
            with contextlib.suppress(Exception):
                await asyncio.shield(subscriber.aclose())


__all__ = [
    "GRACE_SLOTS",
    "STALE_AFTER_S",
    "LinkFollower",
    "LinkUpdate",
    "route_cut_at",
    "route_valid_until",
]
