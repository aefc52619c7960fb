"""The terminal service: the relay, fed live by the links service's route events, plus TerminalService.

Route events carry emulated times; the relay works in wall time. Slot times and sample spacing are
converted through the emulation clock, while delays, rates and stall durations stay physical.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import grpc
from opentelemetry import trace

from skyhaul.runtime.clock import EmulationClock, to_timestamp, to_unix
from skyhaul.runtime.errors import InvalidArgument
from skyhaul.runtime.eventloop import new_event_loop
from skyhaul.runtime.link_follower import LinkFollower, LinkUpdate, route_valid_until
from skyhaul.runtime.server import ServiceApp, service_full_name
from skyhaul.runtime.settings import Settings, parse_hostport
from skyhaul.terminal.relay import TerminalRelay
from skyhaul.terminal.route_model import link_model_fields
from skyhaul.terminal.shaping import EmulatedLink, LinkProfile
from skyhaul.v1 import route_pb2, terminal_pb2, terminal_pb2_grpc

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# The relay needs timers more precise than the default loop's; `skyhaul serve terminal` uses this.
LOOP_FACTORY = new_event_loop


def _seconds(d) -> float:
    return d.seconds + d.nanos * 1e-9


def profile_from_route(route: route_pb2.Route, clock: EmulationClock) -> LinkProfile:
    """The relay's wall-time profile for one slot's route (NaN samples end the route early).

    The profile is valid exactly as long as the link follower holds the route valid, so the dish
    and the data center's view of the link expire together."""
    valid_until = route_valid_until(route, clock)
    if not route.available:
        return LinkProfile.unavailable(valid_until=valid_until)
    samples = list(route.delay_samples_ms) or [route.one_way_delay_ms]
    step = _seconds(route.samples_step) or 1.0
    start = to_unix(route.samples_start) if route.HasField("samples_start") else to_unix(route.at)
    cut = next((k for k, ms in enumerate(samples) if not math.isfinite(ms)), None)
    if cut is not None:
        samples = samples[:cut] or [route.one_way_delay_ms]
    stall = _seconds(route.handover_stall)
    stalls = (
        ((clock.to_wall(to_unix(route.slot.start)), stall),) if stall > 0 and route.HasField("slot") else ()
    )
    return LinkProfile(
        available=True,
        delays_s=[ms / 1000.0 for ms in samples],
        start_unix=clock.to_wall(start),
        step_s=clock.wall_delay(step),
        uplink_bps=route.capacity_up_mbps * 1e6 if route.capacity_up_mbps > 0 else None,
        downlink_bps=route.capacity_down_mbps * 1e6 if route.capacity_down_mbps > 0 else None,
        valid_until=valid_until,
        stalls=stalls,
        # The route's link model (terminal model or replayed trace), as the links service computed it.
        **link_model_fields(route, clock),
    )


class RouteFeed:
    """Keeps the emulated link's profile on this data center's current route (from the follower)."""

    def __init__(self, settings: Settings, clock: EmulationClock, link: EmulatedLink) -> None:
        self.dc_id = settings.data_center_id
        self.clock = clock
        self.link = link
        home_region = settings.scenario.data_center(self.dc_id).home_region
        self.follower = LinkFollower(self.dc_id, home_region, clock, redis_url=settings.redis_url)
        self.follower.on_update(self._updated)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.follower.run(), name="terminal-route-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def last_sequence(self) -> int:
        return self.follower.last_sequence

    @property
    def satellite(self) -> int:
        route = self.follower.route
        return -1 if route is None else route.first_satellite_index

    @property
    def stale(self) -> bool:
        """No current route: never received one, or the last one expired (links is gone)."""
        return self.follower.stale()

    def apply(self, route: route_pb2.Route) -> None:
        self.link.set_profile(profile_from_route(route, self.clock))

    def _updated(self, update: LinkUpdate) -> None:
        if update.route is None:
            return  # a status alone changes no profile: the route says what the dish does
        if update.kind != "route_changed":
            self.apply(update.route)
            return
        with tracer.start_as_current_span("terminal.apply_route", context=update.context) as span:
            span.set_attribute("skyhaul.data_center", self.dc_id)
            span.set_attribute("skyhaul.sequence", update.event.sequence)
            span.set_attribute("skyhaul.available", update.route.available)
            self.apply(update.route)


class TerminalServicer(terminal_pb2_grpc.TerminalServiceServicer):
    def __init__(self, dc_id: str, relay: TerminalRelay, link: EmulatedLink, feed: RouteFeed) -> None:
        self.dc_id = dc_id
        self.relay = relay
        self.link = link
        self.feed = feed

    def _overrides(self) -> terminal_pb2.Overrides:
        o = self.link.overrides
        now = time.time()
        msg = terminal_pb2.Overrides(
            extra_delay_ms=o.extra_delay_s * 1000.0 if o.extra_delay_at(now) else 0.0,
            rate_cap_mbps=(o.rate_cap_at(now) or 0.0) / 1e6,
            forced_outage=o.outage_at(now),
        )
        for field, until in (
            ("extra_delay_until", o.extra_delay_until),
            ("rate_cap_until", o.rate_cap_until),
            ("forced_outage_until", o.outage_until),
        ):
            if until is not None and math.isfinite(until):
                getattr(msg, field).CopyFrom(to_timestamp(until))
        return msg

    async def GetStats(self, request, context):
        s = self.relay.stats()

        def direction(d) -> terminal_pb2.DirectionStats:
            return terminal_pb2.DirectionStats(
                bytes_in=d.bytes_in,
                bytes_out=d.bytes_out,
                queued_bytes=d.queued_bytes,
                current_delay_ms=(d.delay_s or 0.0) * 1000.0,
                current_rate_mbps=(d.rate_bps or 0.0) / 1e6,
            )

        return terminal_pb2.GetStatsResponse(
            data_center_id=self.dc_id,
            link_up=s.link_up,
            uplink=direction(s.uplink),
            downlink=direction(s.downlink),
            outage_seconds_total=s.outage_s,
            active_connections=s.active_connections,
            total_connections=s.total_connections,
            forwards=[
                terminal_pb2.Forward(listen_port=f.listen_port, target=f.target) for f in self.relay.forwards
            ],
            overrides=self._overrides(),
            last_event_sequence=self.feed.last_sequence,
            route_stale=self.feed.stale,
            satellite_index=self.feed.satellite,
        )

    async def SetOverrides(self, request, context):
        duration = _seconds(request.duration) or None
        if duration is not None and duration < 0:
            raise InvalidArgument("duration must be >= 0 (0 = until cleared)")
        if request.HasField("extra_delay_ms") and not (
            math.isfinite(request.extra_delay_ms) and 0 <= request.extra_delay_ms <= 60_000
        ):
            raise InvalidArgument(f"extra_delay_ms {request.extra_delay_ms} must be within [0, 60000]")
        if request.HasField("rate_cap_mbps") and not (
            math.isfinite(request.rate_cap_mbps) and request.rate_cap_mbps >= 0
        ):
            raise InvalidArgument(f"rate_cap_mbps {request.rate_cap_mbps} must be >= 0 (0 removes the cap)")
        if request.HasField("forced_outage") and request.forced_outage and duration is None:
            raise InvalidArgument("forced_outage needs a duration (how long the outage lasts)")
        span = trace.get_current_span()
        if request.HasField("extra_delay_ms"):
            self.link.override_delay(request.extra_delay_ms / 1000.0, duration)
            span.set_attribute("skyhaul.extra_delay_ms", request.extra_delay_ms)
        if request.HasField("rate_cap_mbps"):
            self.link.cap_rate(request.rate_cap_mbps * 1e6 if request.rate_cap_mbps > 0 else None, duration)
            span.set_attribute("skyhaul.rate_cap_mbps", request.rate_cap_mbps)
        if request.HasField("forced_outage"):
            self.link.force_outage(duration if request.forced_outage else 0.0)
            span.set_attribute("skyhaul.forced_outage_s", duration or 0.0)
        log.info("overrides set", extra={"skyhaul.overrides": str(self.link.overrides)})
        return terminal_pb2.SetOverridesResponse(overrides=self._overrides())

    async def ClearOverrides(self, request, context):
        self.link.clear_overrides()
        return terminal_pb2.ClearOverridesResponse(overrides=self._overrides())


class TerminalApp(ServiceApp):
    name = "terminal"
    service_names = (service_full_name(terminal_pb2, "TerminalService"),)

    def __init__(self, settings: Settings, clock: EmulationClock) -> None:
        self.settings = settings
        self.link = EmulatedLink(clock=time.time)
        self.relay = TerminalRelay(self.link)
        self.feed = RouteFeed(settings, clock, self.link)
        self.servicer = TerminalServicer(settings.data_center_id, self.relay, self.link, self.feed)
        self._stale_logged = False

    def register(self, server: grpc.aio.Server) -> None:
        terminal_pb2_grpc.add_TerminalServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        listen_host, _ = parse_hostport(self.settings.listen, "SKYHAUL_LISTEN")
        for forward in self.settings.terminal_forwards:
            await self.relay.add_forward(
                listen_host, forward.listen_port, forward.target_host, forward.target_port
            )
        await self.relay.start()
        self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()
        await self.relay.stop()

    async def ready(self) -> bool:
        stale = self.feed.stale
        if stale != self._stale_logged:
            self._stale_logged = stale
            if stale:
                log.warning(
                    "no current route from the links service: applying the last known one until it expires"
                )
            else:
                log.info("route feed current again")
        return self.feed.follower.subscribed and not stale


def build(settings: Settings, clock: EmulationClock) -> TerminalApp:
    return TerminalApp(settings, clock)
