"""What the data center knows about its satellite link, from the link-state events on Redis.

The links service publishes `LinkEvent`s (route changes, link up/down, snapshots). `LinkWatcher`
follows them (gap-free, resynchronising from the latest snapshot) and keeps this data center's
state: up or down, satellite, one-way delay, capacity. The sync worker waits on it: no RPC while
the link is down, and it resumes the moment the link comes back.

Until an event names this data center (links not running, or not publishing yet) the link is
*assumed up*: the sync worker then learns about outages only from failing RPCs (timeouts through
the terminal), and its capped backoff paces the retries. The same holds while Redis is
unreachable: the last known state stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable

from skyhaul.runtime.bus import LINK_EVENTS_CHANNEL, EventSubscriber
from skyhaul.runtime.clock import to_unix
from skyhaul.v1 import events_pb2, route_pb2

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LinkState:
    up: bool = True
    known: bool = False  # False: no event has named this data center yet (up is assumed)
    satellite_index: int = -1  # -1: none / unknown
    one_way_delay_ms: float = 0.0  # 0: unknown
    capacity_up_mbps: float = 0.0  # 0: unknown
    capacity_down_mbps: float = 0.0
    since_unix: float | None = None  # emulated time of the last up/down change
    reason: str = ""
    last_event_sequence: int = 0

    @property
    def rtt_ms(self) -> float:
        return 2.0 * self.one_way_delay_ms


class LinkWatcher:
    """This data center's link state, fed by `apply(event)` (or by `run()` from Redis).

    `wait_up()` / `wait_down()` return at once when the link already is so; listeners added with
    `on_change` are called after every change of up/down.
    """

    def __init__(
        self,
        data_center_id: str,
        region_id: str,
        *,
        now: Callable[[], float],
        redis_url: str | None = None,
        channel: str = LINK_EVENTS_CHANNEL,
    ) -> None:
        self.data_center_id = data_center_id
        self.region_id = region_id
        self._now = now
        self._redis_url = redis_url
        self._channel = channel
        self._state = LinkState()
        self._up = asyncio.Event()
        self._up.set()
        self._down = asyncio.Event()
        self._listeners: list[Callable[[LinkState], None]] = []
        self._subscriber: EventSubscriber | None = None

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def up(self) -> bool:
        return self._state.up

    @property
    def subscribed(self) -> bool:
        """Whether the watcher currently follows Redis."""
        return self._subscriber is not None and self._subscriber.connected

    def on_change(self, listener: Callable[[LinkState], None]) -> None:
        self._listeners.append(listener)

    async def wait_up(self) -> None:
        await self._up.wait()

    async def wait_down(self) -> None:
        await self._down.wait()

    # ----------------------------------------------------------------- events

    def apply(self, event: events_pb2.LinkEvent) -> None:
        """Fold one event into the state; events about other data centers are ignored."""
        body = event.WhichOneof("body")
        at = to_unix(event.emulated_time) if event.HasField("emulated_time") else self._now()
        state = self._state
        if body == "link_status":
            status = event.link_status
            if not self._mine(status.data_center_id, status.region_id):
                return
            state = dataclasses.replace(
                state,
                up=status.up,
                known=True,
                reason="" if status.up else status.reason or "link down",
                satellite_index=state.satellite_index if status.up else -1,
            )
        elif body == "route_changed":
            route = event.route_changed.route
            if not self._mine(route.data_center_id, route.region_id):
                return
            state = self._with_route(state, route)
        elif body == "snapshot":
            routes = [r for r in event.snapshot.routes if self._mine(r.data_center_id, r.region_id)]
            if not routes:
                return
            state = self._with_route(state, routes[-1])
        else:
            return
        self._set(dataclasses.replace(state, last_event_sequence=event.sequence), at)

    def _mine(self, data_center_id: str, region_id: str) -> bool:
        # A route to another region is not this data center's backhaul; an empty region means "any".
        return data_center_id == self.data_center_id and region_id in ("", self.region_id)

    @staticmethod
    def _with_route(state: LinkState, route: route_pb2.Route) -> LinkState:
        if not route.available:
            return dataclasses.replace(
                state,
                up=False,
                known=True,
                satellite_index=-1,
                reason=state.reason if not state.up else "no route to the region",
            )
        return dataclasses.replace(
            state,
            up=True,
            known=True,
            satellite_index=route.first_satellite_index,
            one_way_delay_ms=route.one_way_delay_ms,
            capacity_up_mbps=route.capacity_up_mbps,
            capacity_down_mbps=route.capacity_down_mbps,
            reason="",
        )

    def _set(self, state: LinkState, at: float) -> None:
        changed = state.up != self._state.up
        if changed or self._state.since_unix is None and state.known:
            state = dataclasses.replace(state, since_unix=at)
        self._state = state
        if not changed:
            return
        log.info(
            "link %s",
            "up" if state.up else "down",
            extra={
                "skyhaul.data_center": self.data_center_id,
                "reason": state.reason,
                "sequence": state.last_event_sequence,
            },
        )
        if state.up:
            self._down.clear()
            self._up.set()
        else:
            self._up.clear()
            self._down.set()
        for listener in list(self._listeners):
            listener(state)

    # ----------------------------------------------------------------- Redis

    async def run(self) -> None:
        """Follow the link events on Redis until cancelled (reconnects by itself)."""
        if self._redis_url is None:
            return
        # Start from the latest snapshot, then every event after it (or the whole log without one).
        self._subscriber = EventSubscriber(self._redis_url, self._channel, after_sequence=None)
        try:
            async for event in self._subscriber:
                self.apply(event)
        finally:
            subscriber, self._subscriber = self._subscriber, None
            with contextlib.suppress(Exception):
                await asyncio.shield(subscriber.aclose())
