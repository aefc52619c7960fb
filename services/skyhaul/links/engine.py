"""The live link-state engine: walks emulated slots and publishes what changes, on time.

For each slot (continuous mode: each sample step) the engine computes, in a worker thread with
its own ``LinkModel``, every data center's route to its home region with the delay samples
across the slot, the assignments, and the times within the slot at which a route breaks or
comes back. At the wall time of the slot start (``clock.to_wall``) it publishes, in order:

1. ``SlotStarted`` (slot, ISL count);
2. ``Handover`` for every terminal whose satellite differs from the one subscribers were last
   told (from → to, -1 = none), with the configured stall when both are satellites;
3. ``RouteChanged`` for every data center (the route with its delay samples; ``path_changed``
   when the hops differ from the last route published);
4. ``LinkStatusChanged`` for every data center whose availability differs from the last one
   published (the first slot announces every data center's status).

Within the slot, when a held path breaks (the held satellite sets before the slot ends: NaN
samples) or comes back, a ``LinkStatusChanged`` is published at the wall time of the first
sample that shows it. Each event carries the part of the latest state it changes (the fleet-wide
slot and gateway assignments with ``SlotStarted``, one data center's route and terminal assignment
with its ``Handover``, ``RouteChanged`` or mid-slot ``LinkStatusChanged``), which the bus stores per
data center: a slot writes state in proportion to the fleet, not to its square.

"Last told" is what was actually published: when Redis refuses, the engine retries with backoff
until the slot ends, drops what it could not publish (logged), keeps computing, and compares
the next slot with what subscribers really saw — so link-down/up events always alternate.
The next slot is computed while the current one waits; the engine sleeps exactly until the next
publish time and stops promptly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace
from redis.exceptions import RedisError

from skyhaul.core.elements import ElementSet
from skyhaul.core.ground import GroundSegment
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.timeline import Decision, LinkModel
from skyhaul.links import codec, route_view
from skyhaul.runtime.bus import LINK_EVENTS_CHANNEL, EventPublisher
from skyhaul.runtime.clock import EmulationClock, to_timestamp
from skyhaul.v1 import events_pb2, route_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer("skyhaul.links.engine")

_PUBLISH_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
PUBLISH_BATCH = 500  # events per transaction (a fleet's slot: about 0.5 MB each)


@dataclass
class DataCenterSlot:
    """One data center's home route through a slot."""

    id: str
    region_id: str
    route: route_pb2.Route  # at the slot start, with the slot's samples; updated by changes
    path: tuple[str, ...]
    satellite: int  # held through the slot (-1 none)
    previous_satellite: int  # held in the slot before (for the first slot the engine publishes)
    up: bool  # route available at the slot start
    reason: str
    capacity_up_mbps: float
    capacity_down_mbps: float


@dataclass
class Change:
    """A route breaking (or coming back) inside a slot."""

    t_unix: float
    data_center: int
    up: bool
    reason: str
    delay_ms: float
    assignment: route_pb2.Assignment | None  # the data center's terminal at the change


@dataclass
class SlotPlan:
    index: int
    start: float
    end: float
    isl_count: int
    data_centers: list[DataCenterSlot]
    assignments: list[route_pb2.Assignment]
    changes: list[Change] = field(default_factory=list)
    _terminal_assignments: dict[str, route_pb2.Assignment] | None = field(default=None, repr=False)

    @property
    def slot(self) -> route_pb2.Slot:
        return codec.slot_to_proto(self.index, self.start, self.end)

    def snapshot(self, t_unix: float) -> events_pb2.LinkStateSnapshot:
        return events_pb2.LinkStateSnapshot(
            emulated_time=to_timestamp(t_unix),
            slot=self.slot,
            routes=[dc.route for dc in self.data_centers],
            assignments=self.assignments,
        )

    def fleet_state(self) -> events_pb2.LinkStateSnapshot:
        """The fleet-wide part of the state at the slot start: slot and gateway assignments."""
        return events_pb2.LinkStateSnapshot(
            emulated_time=to_timestamp(self.start),
            slot=self.slot,
            assignments=[a for a in self.assignments if a.kind != route_pb2.GROUND_KIND_TERMINAL],
        )

    def data_center_state(self, index: int) -> events_pb2.LinkStateSnapshot:
        """One data center's part of the state: its route and its terminal's assignment."""
        dc = self.data_centers[index]
        if self._terminal_assignments is None:
            self._terminal_assignments = {
                a.ground_id: a for a in self.assignments if a.kind == route_pb2.GROUND_KIND_TERMINAL
            }
        own = self._terminal_assignments.get(dc.id)
        return events_pb2.LinkStateSnapshot(routes=[dc.route], assignments=[own] if own is not None else [])

    def apply(self, change: Change) -> None:
        """Fold a mid-slot change into the routes and assignments the snapshot shows."""
        dc = self.data_centers[change.data_center]
        route = dc.route
        route.at.CopyFrom(to_timestamp(change.t_unix))
        route.available = change.up
        route.one_way_delay_ms = change.delay_ms
        route.first_satellite_index = dc.satellite if change.up else -1
        route.capacity_up_mbps = dc.capacity_up_mbps if change.up else 0.0
        route.capacity_down_mbps = dc.capacity_down_mbps if change.up else 0.0
        if change.assignment is not None:
            self.assignments = [
                change.assignment if a.kind == route_pb2.GROUND_KIND_TERMINAL and a.ground_id == dc.id else a
                for a in self.assignments
            ]
            if self._terminal_assignments is not None:
                self._terminal_assignments[dc.id] = change.assignment


def compute_slot(model: LinkModel, start: float) -> SlotPlan:
    """Everything the engine publishes for the slot (or step) starting at ``start``."""
    config, ground = model.config, model.ground
    decision = model.decide(model.decision_time(start))
    previous = model.decide(model.previous_decision_time(decision.t_unix))
    index, slot_start, slot_end = route_view.slot_of(config, start)
    data_centers: list[DataCenterSlot] = []
    changes: list[Change] = []
    for k, term in enumerate(ground.terminals):
        region = term.home_region_id or ground.regions[0].id
        r = ground.region(region)
        route = route_view.route_message(model, term.id, region, start)
        up = route.available
        reason = (
            route_view.up_reason(route) if up else route_view.outage_reason(model, k, region, start, decision)
        )
        data_centers.append(
            DataCenterSlot(
                id=term.id,
                region_id=region,
                route=route,
                path=codec.path_key(route),
                satellite=int(decision.terminal_sat[k]),
                previous_satellite=int(previous.terminal_sat[k]),
                up=up,
                reason=reason,
                capacity_up_mbps=float(decision.routes.capacity_up_mbps[k, r]),
                capacity_down_mbps=float(decision.routes.capacity_down_mbps[k, r]),
            )
        )
        samples = np.asarray(route.delay_samples_ms, dtype=float)
        step = config.sample_step_s
        current = up
        for j in range(1, samples.size):
            now_up = bool(np.isfinite(samples[j]))
            if now_up == current:
                continue
            t = slot_start + j * step
            why = (
                route_view.up_reason(route)
                if now_up
                else route_view.outage_reason(model, k, region, t, decision)
            )
            changes.append(Change(t, k, now_up, why, float(samples[j]), None))
            current = now_up
    changes.sort(key=lambda c: (c.t_unix, c.data_center))
    for change in changes:
        change.assignment = terminal_assignment(model, change.data_center, change.t_unix, decision)
    return SlotPlan(
        index=index,
        start=slot_start,
        end=slot_end,
        isl_count=int(decision.isl_count),
        data_centers=data_centers,
        assignments=route_view.assignments(model, slot_start, decision),
        changes=changes,
    )


def terminal_assignment(
    model: LinkModel, terminal: int, t: float, decision: Decision
) -> route_pb2.Assignment:
    """The satellite terminal row ``terminal`` uses at t (as ``route_view.assignments`` says it, for
    one terminal: its held satellite while visible, else -1), with its look angles."""
    held = int(decision.terminal_sat[terminal])
    sat = held if held >= 0 and model.visible(t)[terminal, held] else -1
    angles = model.look_angles(t, [terminal], [sat])[:, 0]
    return codec.assignment(
        model.ground.terminals[terminal].id,
        route_pb2.GROUND_KIND_TERMINAL,
        sat,
        *(0.0 if np.isnan(v) else float(v) for v in angles),
    )


class LinkEngine:
    """Publishes link-state events for every data center as emulated time passes."""

    def __init__(
        self,
        ground: GroundSegment,
        config: SchedulerConfig,
        clock: EmulationClock,
        redis_url: str,
        channel: str = LINK_EVENTS_CHANNEL,
        *,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        model_options: dict | None = None,
    ) -> None:
        self.ground = ground
        self.model_options = dict(model_options or {})
        self.config = config
        self.clock = clock
        self.redis_url = redis_url
        self.channel = channel
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._elements: ElementSet | None = None
        self._model: LinkModel | None = None
        self._model_version = ""
        self._publisher: EventPublisher | None = None
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()
        # What subscribers were last told, per data center.
        self._told_satellite: dict[str, int] = {}
        self._told_path: dict[str, tuple[str, ...]] = {}
        self._told_up: dict[str, bool] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="links-engine")
        self.publishing = True  # False while Redis refuses events
        self.computing = True  # False while slots fail to compute
        self.slots_published = 0
        self.slots_skipped = 0
        self.events_dropped = 0
        self._behind_logged_at = -1e9

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def healthy(self) -> bool:
        """Running, computing its slots and publishing them."""
        running = self._task is not None and not self._task.done()
        return running and self.computing and self.publishing

    def set_elements(self, elements: ElementSet) -> None:
        """New elements: the next slot is computed with them."""
        self._elements = elements

    async def start(self) -> None:
        if self._elements is None:
            raise RuntimeError("the engine needs elements before it starts")
        if self._task is not None:
            return
        self._publisher = EventPublisher(self.redis_url, self.channel)
        self._task = asyncio.create_task(self._run(), name="links-engine")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - already logged by _run
                pass
        if self._publisher is not None:
            await self._publisher.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- computing ------------------------------------------------------------------------------

    def _compute_sync(self, start: float) -> SlotPlan:
        elements = self._elements
        assert elements is not None
        if self._model is None or self._model_version != elements.version:
            self._model = route_view.new_model(elements, self.ground, self.config, self.model_options)
            self._model_version = elements.version
        return compute_slot(self._model, start)

    async def _compute(self, start: float) -> SlotPlan:
        # One worker thread of its own: the engine's model is never used by two threads, and
        # long predictions in the default pool cannot starve it.
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._compute_sync, start)

    # --- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            # Entries of data centers an earlier run of another fleet left would show in snapshots.
            await self._publisher.retain_data_centers([t.id for t in self.ground.terminals])
        except _PUBLISH_ERRORS as exc:
            log.info("could not drop stale data-center state from %s yet: %s", self.channel, exc)
        plan: SlotPlan | None = None
        while not self._stop.is_set():
            try:
                if plan is None:
                    plan = await self._compute(route_view.step_start(self.config, self.clock.now()))
                if not await self._sleep_until(plan.start):
                    return
                ahead = asyncio.ensure_future(self._compute(plan.end))
                try:
                    await self._publish_slot(plan)
                    for change in plan.changes:
                        if not await self._sleep_until(change.t_unix):
                            return
                        await self._publish_change(plan, change)
                    following: SlotPlan | None = await ahead
                finally:
                    if not ahead.done():
                        ahead.cancel()
                now = self.clock.now()
                if following is not None and now >= following.end:
                    # More than a whole slot behind (a stalled host, a very high speed): skip to now.
                    self.slots_skipped += 1
                    if time.monotonic() - self._behind_logged_at > 60.0:
                        self._behind_logged_at = time.monotonic()
                        log.warning(
                            "link engine fell %.1f emulated s behind; skipping to the current slot "
                            "(%d slots skipped so far; is the emulation speed too high for this host?)",
                            now - following.start,
                            self.slots_skipped,
                        )
                    following = None
                plan = following
                if not self.computing:
                    log.info("link engine computing again")
                    self.computing = True
            except asyncio.CancelledError:
                raise
            except Exception:
                # A slot that cannot be computed is a bug; keep the engine alive for the next one.
                if self.computing:
                    log.exception("link engine: slot failed; retrying at the next slot")
                    self.computing = False
                plan = None
                if not await self._sleep_until(self.clock.now() + self.config.slot_interval_s):
                    return

    async def _sleep_until(self, t_unix: float) -> bool:
        """Sleep until the wall time of emulated t; False when stopped meanwhile."""
        delay = self.clock.to_wall(t_unix) - self.clock.wall()
        if delay > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            except TimeoutError:
                pass
        return not self._stop.is_set()

    # --- publishing -----------------------------------------------------------------------------

    def _event(self, t_unix: float, **body) -> events_pb2.LinkEvent:
        event = events_pb2.LinkEvent(**body)
        event.emulated_time.CopyFrom(to_timestamp(t_unix))
        return event

    def _slot_events(self, plan: SlotPlan) -> list[tuple[events_pb2.LinkEvent, events_pb2.LinkStateSnapshot]]:
        """The slot's events, each with the part of the state it changes (empty: none)."""
        slot = plan.slot
        started = events_pb2.SlotStarted(slot=slot, isl_count=plan.isl_count)
        events = [(self._event(plan.start, slot_started=started), plan.fleet_state())]
        stall_s = self.config.handover_stall_ms / 1e3
        for k, dc in enumerate(plan.data_centers):
            before = self._told_satellite.setdefault(dc.id, dc.previous_satellite)
            if dc.satellite != before:
                handover = events_pb2.Handover(
                    ground_id=dc.id,
                    kind=route_pb2.GROUND_KIND_TERMINAL,
                    from_satellite=before,
                    to_satellite=dc.satellite,
                    slot=slot,
                )
                if stall_s > 0 and before >= 0 and dc.satellite >= 0:
                    handover.stall.CopyFrom(codec.duration(stall_s))
                events.append((self._event(plan.start, handover=handover), plan.data_center_state(k)))
        for k, dc in enumerate(plan.data_centers):
            changed = self._told_path.get(dc.id) != dc.path
            route_changed = events_pb2.RouteChanged(route=dc.route, path_changed=changed)
            events.append((self._event(plan.start, route_changed=route_changed), plan.data_center_state(k)))
        for dc in plan.data_centers:
            if self._told_up.get(dc.id) != dc.up:
                status = events_pb2.LinkStatusChanged(
                    data_center_id=dc.id, region_id=dc.region_id, up=dc.up, reason=dc.reason
                )
                # The route just published already says whether it is available.
                events.append((self._event(plan.start, link_status=status), events_pb2.LinkStateSnapshot()))
        return events

    def _fold(self, event: events_pb2.LinkEvent) -> None:
        body = event.WhichOneof("body")
        if body == "handover":
            self._told_satellite[event.handover.ground_id] = event.handover.to_satellite
        elif body == "route_changed":
            route = event.route_changed.route
            self._told_path[route.data_center_id] = codec.path_key(route)
        elif body == "link_status":
            self._told_up[event.link_status.data_center_id] = event.link_status.up

    async def _publish_slot(self, plan: SlotPlan) -> None:
        attributes = {
            "skyhaul.slot": plan.index,
            "skyhaul.data_centers": len(plan.data_centers),
            "skyhaul.emulated_time": plan.start,
        }
        with tracer.start_as_current_span("links.slot", attributes=attributes) as span:
            events = self._slot_events(plan)
            # In batches, one transaction each: a slot of a large fleet goes out in a few round trips.
            for k in range(0, len(events), PUBLISH_BATCH):
                batch = events[k : k + PUBLISH_BATCH]
                if not await self._publish(batch, plan.end):
                    self._drop(len(events) - k, plan)
                    span.set_attribute("skyhaul.events_dropped", len(events) - k)
                    return
                for event, _ in batch:
                    self._fold(event)
            self.slots_published += 1
            span.set_attribute("skyhaul.events", len(events))

    async def _publish_change(self, plan: SlotPlan, change: Change) -> None:
        plan.apply(change)
        dc = plan.data_centers[change.data_center]
        if self._told_up.get(dc.id) == change.up:
            return
        status = events_pb2.LinkStatusChanged(
            data_center_id=dc.id, region_id=dc.region_id, up=change.up, reason=change.reason
        )
        event = self._event(change.t_unix, link_status=status)
        attributes = {"skyhaul.slot": plan.index, "skyhaul.data_center": dc.id, "skyhaul.up": change.up}
        with tracer.start_as_current_span("links.link_status", attributes=attributes):
            if await self._publish([(event, plan.data_center_state(change.data_center))], plan.end):
                self._fold(event)
            else:
                self._drop(1, plan)

    def _drop(self, count: int, plan: SlotPlan) -> None:
        self.events_dropped += count
        if not self._stop.is_set():
            log.warning(
                "dropped %d link events of slot %d (Redis unreachable until the slot ended)",
                count,
                plan.index,
            )

    async def _publish(
        self,
        items: list[tuple[events_pb2.LinkEvent, events_pb2.LinkStateSnapshot]],
        deadline_unix: float,
    ) -> bool:
        """Publish (events, each with the state it changes), retrying with backoff until the
        emulated deadline; False if they never went out."""
        assert self._publisher is not None
        backoff = self._retry_initial_s
        while not self._stop.is_set():
            try:
                await self._publisher.publish_batch(items)
            except _PUBLISH_ERRORS as exc:
                if self.publishing:
                    log.warning(
                        "cannot publish link events to %s (%s); computing on and retrying with backoff",
                        self.channel,
                        exc,
                    )
                    self.publishing = False
            else:
                if not self.publishing:
                    log.info("publishing link events again")
                    self.publishing = True
                return True
            remaining = self.clock.to_wall(deadline_unix) - self.clock.wall()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=min(backoff, remaining))
            except TimeoutError:
                pass
            backoff = min(backoff * 2, self._retry_max_s)
        return False


__all__ = ["Change", "DataCenterSlot", "LinkEngine", "SlotPlan", "compute_slot"]
