"""The terminal service: the data plane, fed live by the links service's route events, plus
TerminalService. The data plane is the TCP relay (``relay``) or, under `skyhaul up --data-plane
packet`, the packet engine between the data center's namespace and the host (``packet_plane``);
both read the same ``EmulatedLink``, fed the same way.

Route events carry emulated times; the relay works in wall time. Slot times and sample spacing are
converted through the emulation clock, while delays, rates and stall durations stay physical.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable

import grpc
from opentelemetry import trace

from skyhaul.contract import bounds
from skyhaul.runtime.clock import EmulationClock, to_timestamp, to_unix
from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument
from skyhaul.runtime.eventloop import new_event_loop
from skyhaul.runtime.link_follower import LinkFollower, LinkUpdate, route_valid_until
from skyhaul.runtime.server import ServiceApp, service_full_name
from skyhaul.runtime.settings import Settings
from skyhaul.runtime.telemetry import trace_verbose
from skyhaul.terminal.packet import PacketEngine
from skyhaul.terminal.packet_plane import PacketPlane, PacketPlaneSettings, data_plane_from_env
from skyhaul.terminal.relay import TerminalRelay
from skyhaul.terminal.route_model import link_model_fields
from skyhaul.terminal.shaping import Direction, EmulatedLink, LinkProfile
from skyhaul.v1 import route_pb2, terminal_pb2, terminal_pb2_grpc

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

MAX_OVERRIDE_S = 30 * 86_400.0  # longer experiments set no duration (until cleared)

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

    def __init__(
        self,
        settings: Settings,
        clock: EmulationClock,
        link: EmulatedLink,
        apply_profile: Callable[[LinkProfile | None], None] | None = None,
    ) -> None:
        self.dc_id = settings.data_center_id
        self.clock = clock
        self.link = link
        # The packet engine takes its profile through its own lock (it runs on another thread).
        self.apply_profile = apply_profile or link.set_profile
        home_region = settings.scenario.data_center(self.dc_id).home_region
        self.follower = LinkFollower(self.dc_id, home_region, clock, redis_url=settings.redis_url)
        self.follower.on_update(self._updated)
        self.span_per_route = trace_verbose()  # a span per received route only when asked
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
        self.apply_profile(profile_from_route(route, self.clock))

    def _updated(self, update: LinkUpdate) -> None:
        if update.route is None:
            return  # a status alone changes no profile: the route says what the dish does
        if update.kind != "route_changed" or not self.span_per_route:
            self.apply(update.route)
            return
        with tracer.start_as_current_span("terminal.apply_route", context=update.context) as span:
            span.set_attribute("skyhaul.data_center", self.dc_id)
            span.set_attribute("skyhaul.sequence", update.event.sequence)
            span.set_attribute("skyhaul.available", update.route.available)
            self.apply(update.route)


class TerminalServicer(terminal_pb2_grpc.TerminalServiceServicer):
    def __init__(
        self,
        dc_id: str,
        relay: TerminalRelay,
        link: EmulatedLink,
        feed: RouteFeed,
        engine: PacketEngine | None = None,
    ) -> None:
        self.dc_id = dc_id
        self.relay = relay
        self.link = link
        self.feed = feed
        self.engine = engine  # packet mode: overrides go through the engine's lock
        self.controls = engine if engine is not None else link

    def _overrides(self) -> terminal_pb2.Overrides:
        o = self.link.overrides
        now = time.time()
        msg = terminal_pb2.Overrides(
            extra_delay_ms=o.extra_delay_s * 1000.0 if o.extra_delay_at(now) else 0.0,
            rate_cap_mbps=(o.rate_cap_at(now) or 0.0) / 1e6,
            forced_outage=o.outage_at(now),
        )
        untils = [
            ("extra_delay_until", o.extra_delay_until),
            ("rate_cap_until", o.rate_cap_until),
            ("forced_outage_until", o.outage_until),
        ]
        if self.engine is not None:
            loss, loss_until = self.engine.loss_override(now)
            if loss:
                msg.loss_percent = max(loss.values())
                untils.append(("loss_until", loss_until))
        for field, until in untils:
            if until is not None and math.isfinite(until):
                getattr(msg, field).CopyFrom(to_timestamp(until))
        return msg

    async def GetStats(self, request, context):
        if self.engine is not None:
            return self._packet_stats(self.engine)
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
            data_plane="relay",
        )

    def _packet_stats(self, engine: PacketEngine) -> terminal_pb2.GetStatsResponse:
        wall = time.time()
        counters = engine.stats()
        delay = engine.delay_s(wall)

        def direction(which: Direction) -> terminal_pb2.DirectionStats:
            c = counters[which]
            return terminal_pb2.DirectionStats(
                bytes_in=c.bytes_in,
                bytes_out=c.bytes,
                current_delay_ms=(delay or 0.0) * 1000.0,
                current_rate_mbps=(self.link.rate_bps(which, wall) or 0.0) / 1e6,
                packets=c.packets,
                bytes_delivered=c.bytes,
                drops_queue=c.drops["queue"],
                drops_random=c.drops["random"],
                drops_handover=c.drops["handover"],
                drops_outage=c.drops["outage"],
                queue_delay_p50_ms=(c.queue_delay_p50_s or 0.0) * 1000.0,
                queue_delay_p99_ms=(c.queue_delay_p99_s or 0.0) * 1000.0,
                loss_percent=engine.loss_percent(which, wall),
            )

        return terminal_pb2.GetStatsResponse(
            data_center_id=self.dc_id,
            link_up=self.link.is_up(wall),
            uplink=direction(Direction.UPLINK),
            downlink=direction(Direction.DOWNLINK),
            outage_seconds_total=self.link.outage_seconds(wall),
            overrides=self._overrides(),
            last_event_sequence=self.feed.last_sequence,
            route_stale=self.feed.stale,
            satellite_index=self.feed.satellite,
            data_plane="packet",
        )

    async def SetOverrides(self, request, context):
        # Bounded (contract.bounds): a well-formed Duration of at most 30 days; 0 = until cleared.
        duration = bounds.check_duration(request.duration, "duration", maximum_s=MAX_OVERRIDE_S) or None
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
        if request.HasField("loss_percent"):
            if self.engine is None:
                raise FailedPrecondition(
                    "loss_percent needs the packet data plane (`skyhaul up --data-plane packet`): "
                    "the relay carries TCP streams and cannot lose packets"
                )
            if not (math.isfinite(request.loss_percent) and request.loss_percent <= 100):
                raise InvalidArgument(
                    f"loss_percent {request.loss_percent} must be within [0, 100] (negative removes it)"
                )
        span = trace.get_current_span()
        controls = self.controls
        if request.HasField("extra_delay_ms"):
            controls.override_delay(request.extra_delay_ms / 1000.0, duration)
            span.set_attribute("skyhaul.extra_delay_ms", request.extra_delay_ms)
        if request.HasField("rate_cap_mbps"):
            controls.cap_rate(request.rate_cap_mbps * 1e6 if request.rate_cap_mbps > 0 else None, duration)
            span.set_attribute("skyhaul.rate_cap_mbps", request.rate_cap_mbps)
        if request.HasField("forced_outage"):
            controls.force_outage(duration if request.forced_outage else 0.0)
            span.set_attribute("skyhaul.forced_outage_s", duration or 0.0)
        if request.HasField("loss_percent") and self.engine is not None:
            loss = request.loss_percent if request.loss_percent >= 0 else None
            self.engine.override_loss(loss, None, duration)
            span.set_attribute("skyhaul.loss_percent", request.loss_percent)
        log.info("overrides set", extra={"skyhaul.overrides": str(self.link.overrides)})
        return terminal_pb2.SetOverridesResponse(overrides=self._overrides())

    async def ClearOverrides(self, request, context):
        self.controls.clear_overrides()
        return terminal_pb2.ClearOverridesResponse(overrides=self._overrides())


class TerminalApp(ServiceApp):
    name = "terminal"
    service_names = (service_full_name(terminal_pb2, "TerminalService"),)

    def __init__(
        self, settings: Settings, clock: EmulationClock, packet: PacketPlaneSettings | None = None
    ) -> None:
        self.settings = settings
        self.link = EmulatedLink(clock=time.time)
        self.relay = TerminalRelay(self.link, realtime_priority=settings.realtime_priority)
        self.packet = None if packet is None else PacketPlane(packet, self.link, settings.data_center_id)
        self.feed = RouteFeed(settings, clock, self.link, apply_profile=self._apply_profile)
        self.servicer = TerminalServicer(settings.data_center_id, self.relay, self.link, self.feed)
        self._stale_logged = False

    def _apply_profile(self, profile: LinkProfile | None) -> None:
        engine = self.servicer.engine
        if engine is not None:
            engine.set_route(profile)
        else:
            self.link.set_profile(profile)

    def register(self, server: grpc.aio.Server) -> None:
        terminal_pb2_grpc.add_TerminalServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        if self.packet is not None:
            # Opening the TUNs touches the namespace from a short-lived thread: off the loop.
            engine = await asyncio.to_thread(self.packet.start)
            self.servicer.engine = self.servicer.controls = engine
            log.info(
                "packet data plane",
                extra={
                    "skyhaul.namespace": self.packet.settings.namespace,
                    "skyhaul.queue_ms": engine.config.queue_ms,
                },
            )
            self.feed.start()
            return
        for forward in self.settings.terminal_forwards:
            await self.relay.add_forward(
                forward.listen_host, forward.listen_port, forward.target_host, forward.target_port
            )
        await self.relay.start()
        self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()
        if self.packet is not None:
            await asyncio.to_thread(self.packet.stop)
            return
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
        engine_ok = self.packet is None or (self.servicer.engine is not None and self.servicer.engine.running)
        return self.feed.follower.subscribed and not stale and engine_ok


def build(settings: Settings, clock: EmulationClock) -> TerminalApp:
    packet = None
    if data_plane_from_env(os.environ, settings.scenario) == "packet":
        packet = PacketPlaneSettings.from_env(os.environ, settings.data_center_id)
    return TerminalApp(settings, clock, packet)
