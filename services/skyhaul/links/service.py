"""LinkService: the ground segment, link state, routes, predictions, contacts and live events.

A thin adapter over the links core. The constellation's elements come from the orbit service
once (and again only when their version changes); everything else is propagated locally. Queries
share one ``LinkModel`` behind a lock, run in a worker thread; each prediction builds its own
model, so a 24 h prediction neither blocks the event loop nor races the queries or the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from opentelemetry import trace
from redis.exceptions import RedisError

from skyhaul.contract import bounds
from skyhaul.contract.orbit_codec import elements_from_proto, pass_to_proto
from skyhaul.core.elements import ElementSet
from skyhaul.core.ground import UnknownId
from skyhaul.core.passes import MAX_WINDOW_S as MAX_CONTACT_WINDOW_S
from skyhaul.core.passes import find_passes
from skyhaul.core.propagate import Propagator
from skyhaul.core.summary import FleetAccumulator, TimelineAccumulator
from skyhaul.core.timeline import LinkModel
from skyhaul.links import codec, route_view
from skyhaul.links.engine import LinkEngine
from skyhaul.links.ground_from_scenario import gateway_regions, ground_segment, model_options
from skyhaul.runtime import bus, clients, limits
from skyhaul.runtime.bus import LINK_EVENTS_CHANNEL, EventSubscriber, redis_ping
from skyhaul.runtime.clock import EmulationClock, to_timestamp
from skyhaul.runtime.errors import InvalidArgument, NotFound, Unavailable, as_invalid_argument
from skyhaul.runtime.server import ServiceApp, service_full_name
from skyhaul.runtime.settings import Settings
from skyhaul.v1 import events_pb2, links_pb2, links_pb2_grpc, orbit_pb2, orbit_pb2_grpc, route_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer("skyhaul.links")

ELEMENTS_REFRESH_S = 60.0  # how often the elements' version is re-checked (a cheap not-modified call)
CHUNK_SAMPLES = 3600
FLEET_CHUNK_VALUES = 1_000_000  # samples x data centers per chunk of a fleet prediction (~40 MB)
CHUNKS_IN_FLIGHT = 4  # bounded queue between a prediction's worker thread and its stream
PREDICTION_WORKERS = 2  # predictions computed at once; more wait for a worker
MAX_PREDICTION_SAMPLES = 7 * 86_400  # 7 days at 1 s
DEFAULT_PREDICTION_S = 3600.0
DEFAULT_CONTACT_WINDOW_S = 86_400.0
MAX_CONTACTS = 10_000
MAX_WATCH_FILTER_IDS = 1000
_DONE = object()


def _seconds(d) -> float:
    return d.seconds + d.nanos * 1e-9


class LinksApp(ServiceApp):
    name = "links"
    service_names = (service_full_name(links_pb2, "LinkService"),)

    def __init__(
        self,
        settings: Settings,
        clock: EmulationClock,
        *,
        refresh_interval_s: float = ELEMENTS_REFRESH_S,
        channel: str = LINK_EVENTS_CHANNEL,
    ) -> None:
        self.settings = settings
        self.scenario = settings.scenario
        self.clock = clock
        self.channel = channel
        self.redis_url = settings.redis_url
        self.orbit_address = settings.peer("orbit")
        self.constellation = self.scenario.constellation.label
        self.ground = ground_segment(self.scenario)
        self.config = self.scenario.scheduler
        self.gateway_region = gateway_regions(self.ground)
        # The scenario's link_model (terminal model, replays, GSL rule), one for queries, predictions
        # and the engine: everything the service says comes from the same model.
        self.model_options = model_options(self.scenario)
        self.refresh_interval_s = refresh_interval_s
        self.engine = LinkEngine(
            self.ground, self.config, clock, self.redis_url, channel, model_options=self.model_options
        )
        self.elements: ElementSet | None = None
        self._query_model: LinkModel | None = None
        self._query_lock = threading.Lock()
        self.contacts_propagator: Propagator | None = None
        self.contacts_lock = threading.Lock()
        self._stopping = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._follow_task: asyncio.Task | None = None
        # Predictions get their own threads: however many run, queries and the engine still get theirs.
        self.prediction_pool = ThreadPoolExecutor(
            max_workers=PREDICTION_WORKERS, thread_name_prefix="links-predict"
        )
        self.servicer = LinkServicer(self)

    # --- lifecycle ------------------------------------------------------------------------------

    def register(self, server: grpc.aio.Server) -> None:
        links_pb2_grpc.add_LinkServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        self._channel = clients.channel(self.orbit_address)
        self._follow_task = asyncio.create_task(self._follow_elements(), name="links-elements")

    async def stop(self) -> None:
        self._stopping.set()
        if self._follow_task is not None:
            self._follow_task.cancel()
            try:
                await self._follow_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
        await self.engine.stop()
        if self._channel is not None:
            await self._channel.close()
        self.prediction_pool.shutdown(wait=False, cancel_futures=True)

    async def ready(self) -> bool:
        if self.elements is None or not self.engine.healthy:
            return False
        return await redis_ping(self.redis_url)

    # --- elements from orbit --------------------------------------------------------------------

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def fetch_elements(self) -> orbit_pb2.GetElementsResponse:
        known = self.elements.version if self.elements is not None else ""
        stub = orbit_pb2_grpc.OrbitServiceStub(self._channel)
        attributes = {"skyhaul.constellation": self.constellation, "skyhaul.known_version": known}
        with tracer.start_as_current_span("links.load_elements", attributes=attributes) as span:
            response = await stub.GetElements(
                orbit_pb2.GetElementsRequest(constellation=self.constellation, known_version=known),
                timeout=clients.DEFAULT_DEADLINE_S,
            )
            span.set_attribute("skyhaul.not_modified", response.not_modified)
            return response

    async def _follow_elements(self) -> None:
        """Load the elements (retrying until orbit answers), then re-check their version now and then."""
        backoff, failing = 0.2, False
        while not self._stopping.is_set():
            try:
                response = await self.fetch_elements()
            except grpc.RpcError as exc:
                if not failing:
                    log.warning(
                        "cannot get the elements of %s from orbit at %s (%s); retrying",
                        self.constellation,
                        self.orbit_address,
                        exc.code().name if hasattr(exc, "code") else exc,
                    )
                    failing = True
                await self._wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if failing:
                log.info("orbit at %s answers", self.orbit_address)
            backoff, failing = 0.2, False
            if not response.not_modified:
                try:
                    await self.install(await asyncio.to_thread(elements_from_proto, response))
                except Exception:  # noqa: BLE001 - keep the previous elements; try again later
                    log.exception("cannot use the elements orbit sent")
            await self._wait(self.refresh_interval_s)

    async def install(self, elements: ElementSet) -> None:
        """Use new elements for queries and (from its next slot) the engine; start the engine."""
        model = await asyncio.to_thread(
            route_view.new_model, elements, self.ground, self.config, self.model_options
        )
        contacts = await asyncio.to_thread(lambda: Propagator(dataclasses.replace(elements)))
        with self._query_lock:
            self._query_model = model
        with self.contacts_lock:
            self.contacts_propagator = contacts
        self.elements = elements
        self.engine.set_elements(elements)
        log.info(
            "elements loaded",
            extra={"skyhaul.constellation": self.constellation, "elements_version": elements.version},
        )
        if not self.engine.started:
            await self.engine.start()

    # --- helpers for the servicer ---------------------------------------------------------------

    def require_elements(self) -> ElementSet:
        if self.elements is None:
            raise Unavailable(
                f"the links service has not loaded the elements of {self.constellation} from orbit at "
                f"{self.orbit_address} yet; retry in a moment"
            )
        return self.elements

    async def query(self, fn: Callable[..., Any], *args) -> Any:
        """Run fn(shared model, *args) in a worker thread, one query at a time."""
        self.require_elements()

        def run():
            with self._query_lock:
                try:
                    return fn(self._query_model, *args)
                except UnknownId as exc:
                    raise NotFound(str(exc)) from None

        return await asyncio.to_thread(run)

    def data_center(self, data_center_id: str) -> int:
        bounds.check_name(data_center_id, "data_center_id")
        known = ", ".join(self.ground.terminal_index) or "none"
        if not data_center_id:
            raise InvalidArgument(f"data_center_id is required (one of: {known})")
        if data_center_id not in self.ground.terminal_index:
            raise NotFound(f"unknown data center {data_center_id!r}; known: {known}")
        return self.ground.terminal_index[data_center_id]

    def region_for(self, terminal: int, region_id: str) -> str:
        bounds.check_name(region_id, "region_id")
        if not region_id:
            return self.ground.terminals[terminal].home_region_id or self.ground.regions[0].id
        if region_id not in self.ground.region_index:
            known = ", ".join(self.ground.region_index)
            raise NotFound(f"unknown region {region_id!r}; known: {known}")
        return region_id

    def link_model_name(self, data_center_id: str) -> str:
        if data_center_id in self.model_options["replays"]:
            return "replay"
        return self.model_options["latency"].mode

    def time_of(self, request, field: str = "at") -> float:
        return bounds.resolve_time(request, field, self.clock.now)


class ModelSummary:
    """What a prediction's summary adds for the link model: mean loss probability over the samples
    with a route, and the floor's median beside the model's."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.count = 0
        self.floors: list[np.ndarray] = []

    def add(self, chunk) -> None:
        ok = np.isfinite(chunk.rtt_ms)
        self.count += int(ok.sum())
        if chunk.loss_probability is not None:
            self.loss_sum += float(np.sum(chunk.loss_probability[ok]))
        floor = chunk.rtt_ms if chunk.floor_rtt_ms is None else chunk.floor_rtt_ms
        self.floors.append(np.asarray(floor[ok], dtype=np.float32))

    @property
    def expected_loss(self) -> float:
        return self.loss_sum / self.count if self.count else 0.0

    @property
    def floor_p50_ms(self) -> float:
        values = np.concatenate(self.floors) if self.floors else np.zeros(0)
        return float(np.median(values)) if values.size else float("nan")


class LinkServicer(links_pb2_grpc.LinkServiceServicer):
    def __init__(self, app: LinksApp) -> None:
        self.app = app

    async def GetGroundSegment(self, request, context):
        app = self.app
        return codec.ground_segment_to_proto(app.scenario, app.config, app.constellation, app.ground)

    async def GetLinkState(self, request, context):
        app = self.app
        t = app.time_of(request)
        homes = [app.region_for(k, "") for k in range(app.ground.n_terminals)]

        def compute(model: LinkModel) -> links_pb2.GetLinkStateResponse:
            st = model.state_at(t)
            outage = [
                term.id
                for k, term in enumerate(model.ground.terminals)
                if not np.isfinite(st.delay_s[k, model.ground.region_index[homes[k]]])
            ]
            return links_pb2.GetLinkStateResponse(
                at=to_timestamp(t),
                slot=codec.slot_to_proto(*route_view.slot_of(model.config, t)),
                assignments=route_view.assignments(model, t, st.decision),
                isl_count=st.isl_count,
                data_centers_in_outage=outage,
                satellite_count=model.n_sats,
            )

        return await app.query(compute)

    async def GetRoute(self, request, context):
        app = self.app
        terminal = app.data_center(request.data_center_id)
        region = app.region_for(terminal, request.region_id)
        t = app.time_of(request)
        trace.get_current_span().set_attribute("skyhaul.data_center", request.data_center_id)
        route = await app.query(route_view.route_message, request.data_center_id, region, t)
        return links_pb2.GetRouteResponse(route=route)

    async def PredictRoutes(self, request, context) -> AsyncIterator[links_pb2.PredictRoutesResponse]:
        app = self.app
        elements = app.require_elements()
        fleet = request.all_data_centers or len(request.data_center_ids) > 0
        if fleet:
            if request.data_center_id:
                raise InvalidArgument(
                    "give data_center_id (one route) or data_center_ids / all_data_centers (a fleet), not both"
                )
            if request.all_data_centers and request.data_center_ids:
                raise InvalidArgument("give data_center_ids or all_data_centers, not both")
            ids = (
                [t.id for t in app.ground.terminals]
                if request.all_data_centers
                else list(request.data_center_ids)
            )
            if len(set(ids)) != len(ids):
                raise InvalidArgument("data_center_ids lists a data center more than once")
            pairs = [(dc, app.region_for(app.data_center(dc), request.region_id)) for dc in ids]
        else:
            terminal = app.data_center(request.data_center_id)
            pairs = [(request.data_center_id, app.region_for(terminal, request.region_id))]
        step = (
            bounds.check_duration(request.step, "step", maximum_s=86_400.0, exclusive_minimum=True)
            if request.HasField("step")
            else 1.0
        )
        # The window's length is bounded in samples just below (its message says what to change).
        start, end = bounds.check_window(
            request.window, app.clock.now(), DEFAULT_PREDICTION_S, bounds.MAX_DURATION_S
        )
        samples = math.ceil((end - start) / step - 1e-9)
        if samples > MAX_PREDICTION_SAMPLES:
            raise InvalidArgument(
                f"{samples} samples ({(end - start) / 86400:.1f} days at {step:g} s) is more than the "
                f"{MAX_PREDICTION_SAMPLES} allowed (7 days at 1 s): shorten the window or raise the step"
            )
        # The configurable per-call cap (RESOURCE_EXHAUSTED); the sample bound above is the contract's.
        limits.check_prediction_window(end - start)
        span = trace.get_current_span()
        if fleet:
            span.set_attribute("skyhaul.data_centers", len(pairs))
        else:
            span.set_attribute("skyhaul.data_center", request.data_center_id)
        span.set_attribute("skyhaul.samples", samples)
        stall_ms = app.config.handover_stall_ms

        def predict_one(put: Callable[[Any], bool], cancelled: threading.Event) -> None:
            began = time.perf_counter()
            waited = 0.0  # time blocked on a slow reader is not compute time
            dc_id, region = pairs[0]
            model = route_view.new_model(elements, app.ground, app.config, app.model_options)
            acc = TimelineAccumulator(step, stall_ms)
            extra = ModelSummary()
            with as_invalid_argument():
                chunks = model.predict_route(dc_id, region, start, end, step, CHUNK_SAMPLES)
            for chunk in chunks:
                if cancelled.is_set():
                    return
                acc.add(chunk)
                extra.add(chunk)
                message = links_pb2.PredictRoutesResponse(chunk=codec.chunk_to_proto(chunk, step))
                blocked = time.perf_counter()
                if not put(message):
                    return
                waited += time.perf_counter() - blocked
            summary = codec.summary_to_proto(
                acc.summary(),
                time.perf_counter() - began - waited,
                expected_loss=extra.expected_loss,
                floor_rtt_p50_ms=extra.floor_p50_ms,
                link_model=app.link_model_name(dc_id),
            )
            put(links_pb2.PredictRoutesResponse(summary=summary))

        def predict_fleet(put: Callable[[Any], bool], cancelled: threading.Event) -> None:
            began = time.perf_counter()
            waited = 0.0
            model = route_view.new_model(elements, app.ground, app.config, app.model_options)
            acc = FleetAccumulator(len(pairs), step, stall_ms)
            # Chunks of about FLEET_CHUNK_VALUES values: memory stays flat whatever the fleet and window.
            chunk_samples = max(1, min(CHUNK_SAMPLES, FLEET_CHUNK_VALUES // len(pairs)))
            with as_invalid_argument():
                chunks = model.predict(pairs, start, end, step, chunk_samples)
            for chunk in chunks:
                if cancelled.is_set():
                    return
                acc.add(chunk)
                progress = links_pb2.FleetPredictionProgress(
                    samples_done=acc.samples,
                    samples_total=samples,
                    data_centers=len(pairs),
                    reached=to_timestamp(min(end, float(chunk.t_unix[-1]) + step)),
                    compute_seconds=time.perf_counter() - began - waited,
                )
                blocked = time.perf_counter()
                if not put(links_pb2.PredictRoutesResponse(progress=progress)):
                    return
                waited += time.perf_counter() - blocked
            compute_s = time.perf_counter() - began - waited
            for (dc, region), summary in zip(pairs, acc.summaries(), strict=True):
                one = links_pb2.DataCenterPredictionSummary(
                    data_center_id=dc, region_id=region, summary=codec.summary_to_proto(summary, compute_s)
                )
                if not put(links_pb2.PredictRoutesResponse(data_center_summary=one)):
                    return

        async for item in _stream_from_worker(app.prediction_pool, predict_fleet if fleet else predict_one):
            yield item

    async def ListContacts(self, request, context):
        app = self.app
        app.require_elements()
        gid = bounds.check_name(request.ground_id, "ground_id")
        start, end = bounds.check_window(
            request.window, app.clock.now(), DEFAULT_CONTACT_WINDOW_S, MAX_CONTACT_WINDOW_S
        )
        ground = app.ground
        if gid in ground.terminal_index:
            row = ground.terminal_index[gid]
        elif gid in ground.gateway_index:
            row = ground.n_terminals + ground.gateway_index[gid]
        else:
            known = ", ".join([*ground.terminal_index, *ground.gateway_index])
            if not gid:
                raise InvalidArgument(f"ground_id is required: a data center or gateway id ({known})")
            raise NotFound(f"unknown ground id {gid!r} (not a data center or a gateway); known: {known}")
        min_el = request.min_elevation_deg
        if not (math.isfinite(min_el) and 0.0 <= min_el < 90.0):
            raise InvalidArgument(
                f"min_elevation_deg {min_el:g} is outside [0, 90) (0 = the ground's own mask)"
            )
        if min_el == 0.0:
            min_el = float(ground.min_elevation_deg[row])
        min_duration = bounds.check_duration(
            request.min_duration, "min_duration", maximum_s=MAX_CONTACT_WINDOW_S
        )
        # A moving terminal's contacts are computed from where it is at the window start.
        lat, lon, alt = (float(a[row]) for a in ground.geodetic(start))
        indices = (
            bounds.check_indices(request.satellite_indices, "satellite_indices", app.elements.size) or None
        )

        def compute():
            with app.contacts_lock, as_invalid_argument():
                return find_passes(
                    app.contacts_propagator, lat, lon, alt, start, end, min_el, min_duration, indices
                )

        passes = await asyncio.to_thread(compute)
        names = app.require_elements().names
        return links_pb2.ListContactsResponse(
            ground_id=gid,
            contacts=[pass_to_proto(p, names) for p in passes[:MAX_CONTACTS]],
            truncated=len(passes) > MAX_CONTACTS,
        )

    async def WatchEvents(self, request, context) -> AsyncIterator[events_pb2.LinkEvent]:
        app = self.app
        dcs = set(
            bounds.check_names(request.data_center_ids, "data_center_ids", max_count=MAX_WATCH_FILTER_IDS)
        )
        regions = set(bounds.check_names(request.region_ids, "region_ids", max_count=MAX_WATCH_FILTER_IDS))
        for dc in dcs:
            app.data_center(dc)
        for region in regions:
            if region not in app.ground.region_index:
                raise NotFound(f"unknown region {region!r}; known: {', '.join(app.ground.region_index)}")
        if request.after_sequence > 0:
            newest = await newest_sequence(app.redis_url, app.channel)
            if request.after_sequence > newest:
                raise InvalidArgument(
                    f"after_sequence {request.after_sequence} is ahead of the newest event ({newest}); pass the "
                    "sequence of the last event you received, or 0 to start from now (include_snapshot for the state)"
                )
        event_filter = EventFilter(app, dcs, regions)
        resume = request.after_sequence > 0
        # Snapshots ("snapshot first", resynchronising) are assembled from the asked-for data
        # centers' own state entries (all of them without a data-center filter).
        subscriber = EventSubscriber(
            app.redis_url,
            app.channel,
            request.after_sequence if resume else None,
            data_centers=dcs or None,
        )
        stream = subscriber.events()
        try:
            if resume and request.include_snapshot:
                snapshot = await subscriber.latest_snapshot()
                if snapshot is not None:
                    event = events_pb2.LinkEvent(sequence=snapshot.sequence, run_id=snapshot.run_id)
                    event.emulated_time.CopyFrom(snapshot.emulated_time)
                    event.snapshot.CopyFrom(snapshot)
                    yield event_filter.apply(event)
            first = True
            async for event in stream:
                is_snapshot = event.WhichOneof("body") == "snapshot"
                if first and is_snapshot and not resume and not request.include_snapshot:
                    first = False
                    continue  # the bus starts "from now" at the latest snapshot; not asked for
                first = False
                filtered = event_filter.apply(event)
                if filtered is not None:
                    yield filtered
        finally:
            # Close our iterator before the subscriber, or its finalizer races the subscriber's close.
            with contextlib.suppress(RuntimeError):
                await stream.aclose()
            await subscriber.aclose()


async def newest_sequence(redis_url: str, channel: str) -> int:
    """The newest sequence on the channel (runtime/bus.py), or UNAVAILABLE saying why not."""
    try:
        return await bus.newest_sequence(redis_url, channel)
    except (RedisError, OSError) as exc:
        raise Unavailable(f"cannot read the event log from Redis at {redis_url}: {exc}") from None


async def _stream_from_worker(
    pool: ThreadPoolExecutor, produce: Callable[[Callable[[Any], bool], threading.Event], None]
) -> AsyncIterator[Any]:
    """Run ``produce(put, cancelled)`` in ``pool`` and yield what it puts, in order, with at most
    CHUNKS_IN_FLIGHT items waiting (``put`` blocks the worker meanwhile: memory stays flat). An
    exception in the worker is raised here; a reader that goes away sets ``cancelled``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=CHUNKS_IN_FLIGHT)
    cancelled = threading.Event()

    def put(item) -> bool:
        try:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        except RuntimeError:  # the loop is gone (server shut down)
            return False
        while True:
            try:
                future.result(timeout=0.5)
                return True
            except TimeoutError:
                if cancelled.is_set():
                    future.cancel()
                    return False

    def run() -> None:
        try:
            produce(put, cancelled)
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the stream, which raises it
            put(exc)

    loop.run_in_executor(pool, run)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # The worker sees the flag at its next chunk; draining unblocks a put it may be waiting on.
        cancelled.set()
        while not queue.empty():
            queue.get_nowait()


class EventFilter:
    """Keeps the events about the asked-for data centers and regions (empty = all).

    Events about no particular data center (SlotStarted, a gateway's handover) pass a data-center
    filter; snapshots pass with only the matching routes and assignments.
    """

    def __init__(self, app: LinksApp, data_centers: set[str], regions: set[str]) -> None:
        self.dcs = data_centers
        self.regions = regions
        self.gateway_region = app.gateway_region
        self.home = {t.id: t.home_region_id for t in app.ground.terminals}

    def _keep(self, dc: str | None, region: str | None) -> bool:
        if self.dcs and dc is not None and dc not in self.dcs:
            return False
        return not (self.regions and region is not None and region not in self.regions)

    def _keep_assignment(self, a: route_pb2.Assignment) -> bool:
        if a.kind == route_pb2.GROUND_KIND_TERMINAL:
            return self._keep(a.ground_id, self.home.get(a.ground_id))
        return self._keep(None, self.gateway_region.get(a.ground_id))

    def apply(self, event: events_pb2.LinkEvent) -> events_pb2.LinkEvent | None:
        if not self.dcs and not self.regions:
            return event
        body = event.WhichOneof("body")
        if body == "handover":
            h = event.handover
            if h.kind == route_pb2.GROUND_KIND_TERMINAL:
                keep = self._keep(h.ground_id, self.home.get(h.ground_id))
            else:
                keep = self._keep(None, self.gateway_region.get(h.ground_id))
            return event if keep else None
        if body == "route_changed":
            r = event.route_changed.route
            return event if self._keep(r.data_center_id, r.region_id) else None
        if body == "link_status":
            s = event.link_status
            return event if self._keep(s.data_center_id, s.region_id) else None
        if body == "snapshot":
            out = events_pb2.LinkEvent()
            out.CopyFrom(event)
            snap = out.snapshot
            routes = [r for r in snap.routes if self._keep(r.data_center_id, r.region_id)]
            kept = [a for a in snap.assignments if self._keep_assignment(a)]
            del snap.routes[:]
            snap.routes.extend(routes)
            del snap.assignments[:]
            snap.assignments.extend(kept)
            return out
        return event


def build(settings: Settings, clock: EmulationClock) -> LinksApp:
    return LinksApp(settings, clock)


__all__ = ["EventFilter", "LinkServicer", "LinksApp", "build"]
