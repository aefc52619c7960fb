"""The links of many data centers in one process, from one Redis subscription.

A process that hosts a set of data centers (an mdc or terminal shard) must not run one subscriber
per data center: each would parse every event of the whole fleet (N subscribers × N events per
slot). `LinkFollowerGroup` runs one `EventSubscriber` and hands each event only to the follower of
the data center it names (a snapshot is split per data center once), so the work per slot grows
with N, not N². Each data center keeps its own `LinkFollower`, with the same rules as alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from opentelemetry.context import Context

from skyhaul.runtime.bus import LINK_EVENTS_CHANNEL, EventSubscriber
from skyhaul.runtime.clock import EmulationClock
from skyhaul.runtime.link_follower import LinkFollower
from skyhaul.v1 import events_pb2


class LinkFollowerGroup:
    """One `LinkFollower` per hosted data center, fed by one subscriber (`run()`) or `apply(event)`."""

    def __init__(
        self,
        homes: dict[str, str],
        clock: EmulationClock,
        *,
        redis_url: str | None = None,
        channel: str = LINK_EVENTS_CHANNEL,
    ) -> None:
        """`homes`: data center id -> home region id."""
        self.clock = clock
        self.redis_url = redis_url
        self.channel = channel
        # The followers never subscribe themselves (no redis_url): the group feeds them.
        self.followers = {dc: LinkFollower(dc, region, clock) for dc, region in homes.items()}
        self.last_sequence = 0  # of any event seen (the feed's progress, for every data center)
        self._subscriber: EventSubscriber | None = None

    @property
    def subscribed(self) -> bool:
        return self._subscriber is not None and self._subscriber.connected

    def apply(self, event: events_pb2.LinkEvent, context: Context | None = None) -> None:
        if event.sequence:
            self.last_sequence = event.sequence
        kind = event.WhichOneof("body")
        if kind == "link_status":
            follower = self.followers.get(event.link_status.data_center_id)
            if follower is not None:
                follower.apply(event, context)
        elif kind == "route_changed":
            follower = self.followers.get(event.route_changed.route.data_center_id)
            if follower is not None:
                follower.apply(event, context)
        elif kind == "snapshot":
            by_dc: dict[str, list] = defaultdict(list)
            for route in event.snapshot.routes:
                if route.data_center_id in self.followers:
                    by_dc[route.data_center_id].append(route)
            # Each follower sees a snapshot of its own routes only (the same event otherwise).
            template = events_pb2.LinkEvent()
            template.CopyFrom(event)
            template.snapshot.ClearField("routes")
            for dc, routes in by_dc.items():
                own = events_pb2.LinkEvent()
                own.CopyFrom(template)
                own.snapshot.routes.extend(routes)
                self.followers[dc].apply(own, context)

    async def run(self) -> None:
        """Follow the link events on Redis until cancelled (reconnects by itself)."""
        if self.redis_url is None:
            return
        self._subscriber = EventSubscriber(self.redis_url, self.channel, after_sequence=None)
        try:
            async for event, context in self._subscriber.events_with_context():
                self.apply(event, context)
        finally:
            subscriber, self._subscriber = self._subscriber, None
            with contextlib.suppress(Exception):
                await asyncio.shield(subscriber.aclose())


__all__ = ["LinkFollowerGroup"]
