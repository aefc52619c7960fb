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
from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from skyhaul.runtime.eventloop import new_event_loop
from skyhaul.runtime.link_follower import LinkFollower, LinkUpdate, route_valid_until
from skyhaul.runtime.link_group import LinkFollowerGroup
from skyhaul.runtime.server import ServiceApp, service_full_name
from skyhaul.runtime.settings import Settings, SettingsError, parse_hostport
from skyhaul.runtime.telemetry import trace_verbose
from skyhaul.terminal.packet import PacketEngine
from skyhaul.terminal.packet_plane import PacketPlane, PacketPlaneSettings, data_plane_from_env
from skyhaul.terminal.relay import TerminalRelay
from skyhaul.terminal.route_model import link_model_fields
from skyhaul.terminal.shaping import Direction, EmulatedLink, LinkProfile
from skyhaul.v1 import route_pb2, terminal_pb2, terminal_pb2_grpc

log = logging.getLogger(__name__)

# A data center's mdc reaches its sync relay on the same host (or in the same pod): loopback only,
# whatever address the terminal's gRPC listens on (docs/security.md).
SYNC_RELAY_HOST = "127.0.0.1"
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
        *,
        follower: LinkFollower | None = None,
        group: LinkFollowerGroup | None = None,
    ) -> None:
        """`follower`/`group`: a data center of a multi-data-center terminal, fed by the group's one
        subscription; alone, the feed subscribes for its data center itself."""
        self.dc_id = settings.data_center_id if follower is None else follower.data_center_id
        self.clock = clock
        self.link = link
        # The packet engine takes its profile through its own lock (it runs on another thread).
        self.apply_profile = apply_profile or link.set_profile
        if follower is None:
            home_region = settings.scenario.data_center(self.dc_id).home_region
            follower = LinkFollower(self.dc_id, home_region, clock, redis_url=settings.redis_url)
        self.follower = follower
        self.group = group
        self.follower.on_update(self._updated)
        self.span_per_route = trace_verbose()  # a span per received route only when asked
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.group is None:  # a group's one subscription feeds every hosted data center
            self._task = asyncio.create_task(self.follower.run(), name="terminal-route-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def last_sequence(self) -> int:
        if self.group is not None:
            return max(self.group.last_sequence, self.follower.last_sequence)
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


class HostingServicer(terminal_pb2_grpc.TerminalServiceServicer):
    """TerminalService of a process hosting one or many dishes: each request goes to the dish of the
    data center it names (an empty id: the only one hosted)."""

    def __init__(self, dishes: dict[str, TerminalServicer]) -> None:
        self.dishes = dishes

    def dish(self, data_center_id: str) -> TerminalServicer:
        bounds.check_name(data_center_id, "data_center_id")
        if not data_center_id:
            if len(self.dishes) == 1:
                return next(iter(self.dishes.values()))
            raise InvalidArgument(
                f"this terminal process hosts {len(self.dishes)} data centers ({_some(self.dishes)}): "
                "name one in data_center_id (the CLI: --dc ID)"
            )
        dish = self.dishes.get(data_center_id)
        if dish is None:
            raise NotFound(
                f"data center {bounds.shown(data_center_id, 60)} is not hosted by this terminal process "
                f"(it hosts {_some(self.dishes)}); `skyhaul status` lists which process hosts which"
            )
        return dish

    async def GetStats(self, request, context):
        return await self.dish(request.data_center_id).GetStats(request, context)

    async def SetOverrides(self, request, context):
        return await self.dish(request.data_center_id).SetOverrides(request, context)

    async def ClearOverrides(self, request, context):
        return await self.dish(request.data_center_id).ClearOverrides(request, context)


def _some(hosted: dict, shown: int = 5) -> str:
    names = list(hosted)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


MULTI_READ_SIZE = 256 * 1024
"""Read size of each relay in a multi-data-center terminal: a fleet's dishes run at tens of
Mbit/s, and a thousand 1 MiB scratch buffers would be a gigabyte."""


class Dish:
    """One hosted data center's data plane in a multi-data-center terminal: its own emulated link,
    relay (its sync relay plus its user forwards) and route feed; stats and overrides are its own."""

    def __init__(
        self, settings: Settings, clock: EmulationClock, follower: LinkFollower, group: LinkFollowerGroup
    ) -> None:
        self.link = EmulatedLink(clock=time.time)
        self.relay = TerminalRelay(self.link, read_size=MULTI_READ_SIZE)
        self.feed = RouteFeed(settings, clock, self.link, follower=follower, group=group)
        self.servicer = TerminalServicer(follower.data_center_id, self.relay, self.link, self.feed)


class TerminalApp(ServiceApp):
    """The terminal process: one data center's dish (today's layout; relay or packet data plane) or
    the dishes of a set of data centers (a shard, or all of a scenario; relay data plane), each with
    its own link, relays, route feed, stats and overrides, fed by one Redis subscription.

    In a set, the j-th hosted data center's sync relay listens on `SKYHAUL_RELAY_BASE_PORT` + j and
    leads to its home region (`SKYHAUL_REGION_ADDRS`, else `SKYHAUL_REGION_ADDR`); the user's
    forwards come from `SKYHAUL_TERMINAL_FORWARDS` as `DC_ID:LOCALPORT=HOST:PORT`.
    """

    name = "terminal"
    service_names = (service_full_name(terminal_pb2, "TerminalService"),)

    def __init__(
        self, settings: Settings, clock: EmulationClock, packet: PacketPlaneSettings | None = None
    ) -> None:
        self.settings = settings
        self.group: LinkFollowerGroup | None = None
        self.dishes: dict[str, Dish] = {}
        self._group_task: asyncio.Task | None = None
        self._stale_logged = False
        ids = settings.data_center_ids or (settings.data_center_id,)
        if len(ids) > 1:
            if packet is not None:
                raise SettingsError(
                    "the packet data plane holds one data center's namespace per terminal process; "
                    f"this one was asked to host {len(ids)} (use one per data center: --layout per-dc)"
                )
            if not settings.relay_base_port:
                raise SettingsError(
                    f"SKYHAUL_RELAY_BASE_PORT is needed to host {len(ids)} data centers: the sync relay "
                    "of the j-th hosted data center listens on that port + j"
                )
            homes = {dc: settings.scenario.data_center(dc).home_region for dc in ids}
            self.group = LinkFollowerGroup(homes, clock, redis_url=settings.redis_url)
            self.dishes = {dc: Dish(settings, clock, self.group.followers[dc], self.group) for dc in ids}
            self.servicer = HostingServicer({dc: dish.servicer for dc, dish in self.dishes.items()})
            self.packet = None
            return
        self.link = EmulatedLink(clock=time.time)
        self.relay = TerminalRelay(self.link, realtime_priority=settings.realtime_priority)
        self.packet = None if packet is None else PacketPlane(packet, self.link, settings.data_center_id)
        self.feed = RouteFeed(settings, clock, self.link, apply_profile=self._apply_profile)
        self.dish_servicer = TerminalServicer(settings.data_center_id, self.relay, self.link, self.feed)
        self.servicer = HostingServicer({settings.data_center_id: self.dish_servicer})

    def _apply_profile(self, profile: LinkProfile | None) -> None:
        engine = self.dish_servicer.engine
        if engine is not None:
            engine.set_route(profile)
        else:
            self.link.set_profile(profile)

    def register(self, server: grpc.aio.Server) -> None:
        terminal_pb2_grpc.add_TerminalServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        if self.group is not None:
            await self._start_dishes()
            return
        if self.packet is not None:
            # Opening the TUNs touches the namespace from a short-lived thread: off the loop.
            engine = await asyncio.to_thread(self.packet.start)
            self.dish_servicer.engine = self.dish_servicer.controls = engine
            log.info(
                "packet data plane",
                extra={
                    "skyhaul.namespace": self.packet.settings.namespace,
                    "skyhaul.queue_ms": engine.config.queue_ms,
                },
            )
            self.feed.start()
            return
        if self.settings.relay_base_port:  # a shard of one: its sync relay by the shards' rule
            await self.relay.add_forward(SYNC_RELAY_HOST, *self._sync_relay(self.settings.data_center_id, 0))
        for forward in self.settings.terminal_forwards:
            await self.relay.add_forward(
                forward.listen_host, forward.listen_port, forward.target_host, forward.target_port
            )
        await self.relay.start()
        self.feed.start()

    def _sync_relay(self, dc: str, position: int) -> tuple[int, str, int]:
        """(listen port, region host, region port) of the sync relay of the position-th hosted data center."""
        settings = self.settings
        home = settings.scenario.data_center(dc).home_region
        region_host, region_port = parse_hostport(
            settings.region_addrs.get(home, settings.peers["region"]), "SKYHAUL_REGION_ADDRS"
        )
        return settings.relay_base_port + position, region_host, region_port

    async def _start_dishes(self) -> None:
        settings = self.settings
        for position, (dc, dish) in enumerate(self.dishes.items()):
            # The data center's own sync first, then the user's applications.
            await dish.relay.add_forward(SYNC_RELAY_HOST, *self._sync_relay(dc, position))
            for forward in settings.dc_forwards.get(dc, ()):
                await dish.relay.add_forward(
                    forward.listen_host, forward.listen_port, forward.target_host, forward.target_port
                )
            await dish.relay.start()
        assert self.group is not None
        self._group_task = asyncio.create_task(self.group.run(), name="terminal-route-feed (group)")
        log.info(
            "dishes started",
            extra={
                "skyhaul.data_centers": len(self.dishes),
                "skyhaul.relay_base_port": settings.relay_base_port,
            },
        )

    async def stop(self) -> None:
        if self.group is not None:
            if self._group_task is not None:
                self._group_task.cancel()
                await asyncio.gather(self._group_task, return_exceptions=True)
            await asyncio.gather(
                *(dish.relay.stop() for dish in self.dishes.values()), return_exceptions=True
            )
            return
        await self.feed.stop()
        if self.packet is not None:
            await asyncio.to_thread(self.packet.stop)
            return
        await self.relay.stop()

    async def ready(self) -> bool:
        if self.group is not None:
            # A shard serves once its feed is up and every hosted data center has had a first
            # route; a route gone stale later is that data center's condition (GetStats.route_stale),
            # and only all of them stale (links gone) makes the shard NOT_SERVING.
            stale = sum(1 for dish in self.dishes.values() if dish.feed.stale)
            waiting = sum(1 for dish in self.dishes.values() if dish.feed.follower.route is None)
            self._log_stale(bool(stale), f"{stale} of {len(self.dishes)} data centers" if stale else "")
            return self.group.subscribed and not waiting and stale < len(self.dishes)
        stale = self.feed.stale
        self._log_stale(stale, "")
        engine_ok = self.packet is None or (
            self.dish_servicer.engine is not None and self.dish_servicer.engine.running
        )
        return self.feed.follower.subscribed and not stale and engine_ok

    def _log_stale(self, stale: bool, which: str) -> None:
        if stale != self._stale_logged:
            self._stale_logged = stale
            if stale:
                log.warning(
                    "no current route from the links service%s: applying the last known one until it expires",
                    f" for {which}" if which else "",
                )
            else:
                log.info("route feed current again")


def build(settings: Settings, clock: EmulationClock) -> TerminalApp:
    packet = None
    if data_plane_from_env(os.environ, settings.scenario) == "packet":
        if settings.multi:
            raise SettingsError(
                "the packet data plane holds one data center's namespace per terminal process; this one "
                f"was asked to host {len(settings.data_center_ids)} (use one per data center: --layout per-dc)"
            )
        packet = PacketPlaneSettings.from_env(os.environ, settings.data_center_id)
    return TerminalApp(settings, clock, packet)
