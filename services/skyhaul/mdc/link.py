"""What the data center knows about its satellite link, from the link-state events on Redis.

The links service publishes `LinkEvent`s (route changes, link up/down, snapshots). The runtime's
`LinkFollower` follows them (gap-free, resynchronising from the latest snapshot, filtered to this
data center and its home region) exactly as the terminal does; `LinkWatcher` turns what it hears
into this data center's `LinkView`: up or down, satellite, one-way delay, capacity. The sync worker
waits on it: no RPC while the link is down, and it resumes the moment the link comes back.

Until an event names this data center (links not running, or not publishing yet) the link is
*assumed up*: the sync worker then learns about outages only from failing RPCs (timeouts through
the terminal), and its capped backoff paces the retries. Once a route has come, the view expires
with it exactly as the terminal's does: when the links service goes quiet past the route's
validity, the link counts as down ("stale") until a new route arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from skyhaul.runtime.clock import to_unix
from skyhaul.runtime.link_follower import LinkFollower, LinkUpdate
from skyhaul.v1 import route_pb2

log = logging.getLogger(__name__)

STALE_REASON = "route stale: no news from the links service"
SET_REASON = "the satellite sets before the next slot"


@dataclasses.dataclass(frozen=True)
class LinkView:
    """The data center's view of its link (what GetStatus reports and the sync worker obeys)."""

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
    """This data center's `LinkView`, fed by its `LinkFollower` (`apply(event)` or `run()`).

    `wait_up()` / `wait_down()` return at once when the link already is so; listeners added with
    `on_change` are called after every change of up/down, the route's expiry included.
    """

    def __init__(self, follower: LinkFollower, *, assume_up: bool = True) -> None:
        """`assume_up=False`: the link counts as down until an event names this data center (a
        fleet's data centers wait for their first route instead of all dialling a relay that holds
        their bytes until links has published one)."""
        self.follower = follower
        self.data_center_id = follower.data_center_id
        self.region_id = follower.region_id
        self._clock = follower.clock
        initial = LinkView() if assume_up else LinkView(up=False, reason="no route heard yet")
        self._told = initial  # what the events said
        self._state = initial  # what holds now (the told view, unless the route expired)
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        (self._up if assume_up else self._down).set()
        self._listeners: list[Callable[[LinkView], None]] = []
        self._expiry: asyncio.TimerHandle | None = None
        follower.on_update(self._updated)

    @property
    def view(self) -> LinkView:
        self._refresh()
        return self._state

    @property
    def up(self) -> bool:
        return self.view.up

    @property
    def subscribed(self) -> bool:
        """Whether the watcher currently follows Redis."""
        return self.follower.subscribed

    def on_change(self, listener: Callable[[LinkView], None]) -> None:
        self._listeners.append(listener)

    async def wait_up(self) -> None:
        self._refresh()
        await self._up.wait()

    async def wait_down(self) -> None:
        self._refresh()
        await self._down.wait()

    # ----------------------------------------------------------------- events

    def apply(self, event) -> None:
        """Fold one event into the view (through the follower); others' events are ignored."""
        self.follower.apply(event)

    def _updated(self, update: LinkUpdate) -> None:
        event = update.event
        state = self._told
        if update.status is not None:
            status = update.status
            state = dataclasses.replace(
                state,
                up=status.up,
                known=True,
                reason="" if status.up else self.follower.reason,
                satellite_index=state.satellite_index if status.up else -1,
            )
        elif update.route is not None:
            state = self._with_route(state, update.route, self.follower.reason)
        self._told = dataclasses.replace(state, last_event_sequence=event.sequence)
        at = to_unix(event.emulated_time) if event.HasField("emulated_time") else self._clock.now()
        self._refresh(at)
        self._arm_expiry()

    @staticmethod
    def _with_route(state: LinkView, route: route_pb2.Route, reason: str) -> LinkView:
        if not route.available:
            return dataclasses.replace(state, up=False, known=True, satellite_index=-1, reason=reason)
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

    def _arm_expiry(self) -> None:
        """Wake when the route ends (its satellite sets) or turns stale, so listeners hear of it
        without another event."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        wall = self._clock.wall()
        ends = self.follower.ends_at
        expires = self.follower.expires_at
        if ends is not None and ends > wall and (expires is None or ends < expires):
            expires = ends  # the route's own end comes first
        if expires is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # applied by hand outside a loop: `view` still checks the expiry when read
        delay = max(expires - wall, 0.0)
        # Just past the instant, so the follower agrees it has expired when the timer runs.
        self._expiry = loop.call_later(delay + 0.001, self._refresh)

    def _refresh(self, at: float | None = None) -> None:
        state = self._told
        if state.up and self.follower.expired():
            state = dataclasses.replace(state, up=False, satellite_index=-1, reason=STALE_REASON)
        elif state.up and self.follower.ended():
            state = dataclasses.replace(state, up=False, satellite_index=-1, reason=SET_REASON)
        self._set(state, self._clock.now() if at is None else at)

    def _set(self, state: LinkView, at: float) -> None:
        changed = state.up != self._state.up
        since = self._state.since_unix
        if changed or since is None and state.known:
            since = at
        state = dataclasses.replace(state, since_unix=since)
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
        try:
            await self.follower.run()
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None
