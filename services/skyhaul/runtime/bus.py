"""The Redis event bus: protobuf `LinkEvent`s on versioned channels, with no gap and no duplicate.

Keys for a channel C (default `skyhaul.v1.link-events`):

- `C`         pub/sub channel; each message is a serialized `skyhaul.v1.LinkEvent`;
- `C:log`     capped stream of the same events, entry id `<sequence>-0`, field `e`;
- `C:state`   the latest state, a hash with one field per data center (so what a slot writes grows
              with the fleet, never with its square), each a `LinkStateSnapshot` holding that data
              center's route and terminal assignment; field `@fleet` holds the fleet-wide part
              (emulated time, slot, gateway assignments) and `@head` the sequence and run of the
              last event published with a snapshot (the state is current as of that event).

The publisher writes the event, the state it changes and `@head` in one MULTI/EXEC, so an event is
in the log before any subscriber can hear of it, and a state read in one command is consistent
with one sequence. Only what an event changes is written (`publish(event, snapshot)` with the
changed routes), never the whole fleet's state. Sequences continue from what Redis holds (a
restarted publisher never reuses a number; `run_id` tells runs apart).

A snapshot (what a subscriber starts from or resynchronises with) is assembled from the hash:
every data center's entry, or only those a subscriber follows (`data_centers=`), in one HMGET.

The subscriber subscribes first, then replays the log after the last sequence it has seen, then
follows pub/sub: duplicates are dropped and a gap is filled from the log. When the log has been
trimmed past the gap, the subscriber yields one `LinkEvent` whose body is the latest snapshot
(sequence = the snapshot's; only the followed data centers' routes when it follows a few), so
the consumer replaces its state instead of patching it; events after it follow as usual. If
Redis itself lost its state (restart without persistence) and a new publisher run starts again
at 1, the subscriber notices and starts over from the log.

Each event carries the W3C trace context of its `publish` span; the subscriber records a
`receive` span as its child, so one trace spans publisher and subscriber.
With an event key (runtime/event_signing.py: SKYHAUL_EVENT_KEY, set by `skyhaul up` and the
chart) the publisher seals every event and state entry it writes, and the subscriber drops (with a
warning, counted in `rejected_events`) any message, log entry or state entry whose seal does not
check, or whose log entry id is not its own sequence: a client of Redis without the key cannot
change what a subscriber does. Without a key nothing is sealed or checked (said once in the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from skyhaul.runtime import event_signing
from skyhaul.runtime.event_signing import EventSigner
from skyhaul.runtime.telemetry import trace_verbose
from skyhaul.v1 import events_pb2, route_pb2

log = logging.getLogger(__name__)

LINK_EVENTS_CHANNEL = "skyhaul.v1.link-events"
EVENT_FIELD = b"e"
DEFAULT_LOG_MAXLEN = 10_000

_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
_REPLAY_BATCH = 500
_TRACER_NAME = "skyhaul.runtime.bus"
_FROM_ENV = object()  # signer default: the run's key from the environment


def log_key(channel: str) -> str:
    return f"{channel}:log"


def state_key(channel: str) -> str:
    return f"{channel}:state"


HEAD_FIELD = b"@head"  # sequence and run of the last event published with a snapshot
FLEET_FIELD = b"@fleet"  # emulated time, slot, gateway assignments (written when they change)
_DATA_CENTER_PREFIX = b"dc:"


def data_center_field(data_center_id: str) -> bytes:
    return _DATA_CENTER_PREFIX + data_center_id.encode()


def _entry_sequence(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def _tracer(tracer_provider: trace.TracerProvider | None) -> trace.Tracer:
    if tracer_provider is not None:
        return tracer_provider.get_tracer(_TRACER_NAME)
    return trace.get_tracer(_TRACER_NAME)


def _signer(signer) -> EventSigner | None:
    return event_signing.signer_from_env() if signer is _FROM_ENV else signer


# Set while reading state: the run's signer and what to call for an entry whose seal fails.
class _Check:
    def __init__(self, signer: EventSigner | None = None, on_forged: Callable[[str], None] | None = None):
        self.signer = signer
        self.on_forged = on_forged


_NO_CHECK = _Check()


def _parse_snapshot(
    raw: bytes | None, where: str, check: _Check = _NO_CHECK
) -> events_pb2.LinkStateSnapshot | None:
    if raw is None:
        return None
    if check.signer is not None and not check.signer.verify(raw, event_signing.SNAPSHOT):
        if check.on_forged is not None:
            check.on_forged(f"state entry {where}")
        return None
    snapshot = events_pb2.LinkStateSnapshot()
    try:
        snapshot.ParseFromString(raw)
    except DecodeError:
        log.warning("ignoring an undecodable state entry %s", where)
        return None
    return snapshot


def split_state(
    snapshot: events_pb2.LinkStateSnapshot, sequence: int, run_id: str, emulated_time=None
) -> dict[bytes, bytes]:
    """The hash fields a (partial) snapshot writes: one per data center whose route it holds (with
    that data center's terminal assignments), and `@fleet` when it holds fleet-wide state (an
    emulated time, a slot, or assignments of no data center it names)."""
    fields: dict[bytes, bytes] = {}
    named = {route.data_center_id for route in snapshot.routes}
    terminal = route_pb2.GROUND_KIND_TERMINAL
    for route in snapshot.routes:
        entry = events_pb2.LinkStateSnapshot(sequence=sequence, run_id=run_id, routes=[route])
        if snapshot.HasField("emulated_time"):
            entry.emulated_time.CopyFrom(snapshot.emulated_time)
        elif emulated_time is not None:
            entry.emulated_time.CopyFrom(emulated_time)
        if route.HasField("slot"):
            entry.slot.CopyFrom(route.slot)
        entry.assignments.extend(
            a for a in snapshot.assignments if a.kind == terminal and a.ground_id == route.data_center_id
        )
        fields[data_center_field(route.data_center_id)] = entry.SerializeToString()
    others = [a for a in snapshot.assignments if not (a.kind == terminal and a.ground_id in named)]
    if snapshot.HasField("emulated_time") or snapshot.HasField("slot") or others:
        fleet = events_pb2.LinkStateSnapshot(sequence=sequence, run_id=run_id, assignments=others)
        if snapshot.HasField("emulated_time"):
            fleet.emulated_time.CopyFrom(snapshot.emulated_time)
        if snapshot.HasField("slot"):
            fleet.slot.CopyFrom(snapshot.slot)
        fields[FLEET_FIELD] = fleet.SerializeToString()
    return fields


def _assemble(
    head: bytes | None,
    fleet: bytes | None,
    entries: list[bytes | None],
    channel: str,
    check: _Check = _NO_CHECK,
):
    """One snapshot from the hash fields read in one command (None when nothing was ever published)."""
    head_state = _parse_snapshot(head, f"{HEAD_FIELD.decode()} of {state_key(channel)}", check)
    if head_state is None:
        return None
    snapshot = events_pb2.LinkStateSnapshot(sequence=head_state.sequence, run_id=head_state.run_id)
    fleet_state = _parse_snapshot(fleet, f"{FLEET_FIELD.decode()} of {state_key(channel)}", check)
    latest = 0
    if fleet_state is not None:
        if fleet_state.HasField("slot"):
            snapshot.slot.CopyFrom(fleet_state.slot)
        if fleet_state.HasField("emulated_time"):
            snapshot.emulated_time.CopyFrom(fleet_state.emulated_time)
            latest = fleet_state.emulated_time.ToNanoseconds()
    parts = [_parse_snapshot(raw, f"in {state_key(channel)}", check) for raw in entries]
    parts = sorted((p for p in parts if p is not None and p.routes), key=lambda p: p.routes[0].data_center_id)
    for part in parts:
        snapshot.routes.extend(part.routes)
        snapshot.assignments.extend(part.assignments)
        if part.HasField("emulated_time") and part.emulated_time.ToNanoseconds() > latest:
            snapshot.emulated_time.CopyFrom(part.emulated_time)
            latest = part.emulated_time.ToNanoseconds()
    if fleet_state is not None:
        snapshot.assignments.extend(fleet_state.assignments)
    return snapshot


async def _read_snapshot(
    client: aioredis.Redis,
    channel: str,
    data_centers: Collection[str] | None = None,
    check: _Check = _NO_CHECK,
) -> events_pb2.LinkStateSnapshot | None:
    """The latest state, every data center's or only `data_centers`' (one command: consistent)."""
    key = state_key(channel)
    if data_centers is None:
        fields = await client.hgetall(key)
        entries = [raw for name, raw in fields.items() if name.startswith(_DATA_CENTER_PREFIX)]
        return _assemble(fields.get(HEAD_FIELD), fields.get(FLEET_FIELD), entries, channel, check)
    names = [HEAD_FIELD, FLEET_FIELD, *(data_center_field(dc) for dc in sorted(set(data_centers)))]
    values = await client.hmget(key, names)
    return _assemble(values[0], values[1], values[2:], channel, check)


async def _stored_sequence(client: aioredis.Redis, channel: str, check: _Check = _NO_CHECK) -> int:
    head = _parse_snapshot(await client.hget(state_key(channel), HEAD_FIELD), state_key(channel), check)
    return head.sequence if head is not None else 0


async def _newest_logged_sequence(client: aioredis.Redis, channel: str) -> int:
    newest = await client.xrevrange(log_key(channel), count=1)
    return _entry_sequence(newest[0][0]) if newest else 0


async def newest_sequence(redis_url: str, channel: str, timeout: float = 2.0) -> int:  # noqa: ASYNC109
    """The newest sequence on the channel: its log's last entry, or the state's head (the log may
    have been trimmed or deleted). Raises redis errors when Redis cannot be read."""
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return max(await _newest_logged_sequence(client, channel), await _stored_sequence(client, channel))
    finally:
        await client.aclose()


async def redis_ping(url: str, timeout: float = 1.0) -> bool:  # noqa: ASYNC109 - also the socket timeouts
    """True when the Redis at `url` answers PING within `timeout` seconds (for health checks)."""
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout))
    except Exception:  # any failure means "not healthy"; the caller only needs a yes or no
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


class EventPublisher:
    """Publishes `LinkEvent`s (and the latest state they change) on one channel.

    Raises redis.exceptions.ConnectionError when Redis is unreachable. A connection lost while
    EXEC is in flight may or may not have published; publishing again then delivers the event
    twice under two sequences (at least once, never silently lost).
    """

    def __init__(
        self,
        redis_url: str,
        channel: str = LINK_EVENTS_CHANNEL,
        run_id: str | None = None,
        log_maxlen: int = DEFAULT_LOG_MAXLEN,
        *,
        approximate_trim: bool = True,
        tracer_provider: trace.TracerProvider | None = None,
        timeout: float = 5.0,
        signer: EventSigner | None | object = _FROM_ENV,
    ) -> None:
        if log_maxlen < 1:
            raise ValueError(f"log_maxlen: {log_maxlen} must be at least 1")
        self.channel = channel
        self.run_id = run_id or uuid.uuid4().hex
        self.log_maxlen = log_maxlen
        self.approximate_trim = approximate_trim  # exact trimming costs more; tests want it exact
        self._client = aioredis.Redis.from_url(
            redis_url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        self._tracer = _tracer(tracer_provider)
        self._lock = asyncio.Lock()  # one publish at a time keeps sequence order = publish order
        # Kept in memory too: if Redis restarts empty under a running publisher, numbering goes on.
        self._last_sequence = 0
        self._signer = _signer(signer)
        self._check = _Check(self._signer)

    async def publish(
        self, event: events_pb2.LinkEvent, snapshot: events_pb2.LinkStateSnapshot | None = None
    ) -> int:
        """Assign the next sequence and publish; returns it.

        Sets `event.sequence`, `run_id`, `published_at` and `trace_context` in place, and
        `snapshot.sequence` / `run_id` when a snapshot is given. `snapshot` is the part of the
        latest state this event changes (an empty one: nothing, but the state is current as of
        it): each route it holds (with that data center's terminal assignments) replaces that data
        center's entry, and its emulated time, slot and other assignments, when it has any, replace
        the fleet-wide entry. Data centers it does not name keep their entries, so pass only what
        changed (a whole snapshot also works).
        """
        return (await self.publish_batch([(event, snapshot)]))[0]

    async def publish_batch(
        self, items: Sequence[tuple[events_pb2.LinkEvent, events_pb2.LinkStateSnapshot | None]]
    ) -> list[int]:
        """Publish several events as `publish` does each, in order, in one transaction (one round
        trip instead of one per event: a slot of a large fleet goes out at once); returns their
        consecutive sequences. All are published, or none (an exception)."""
        if not items:
            return []
        attributes = {"messaging.system": "redis", "messaging.destination.name": self.channel}
        with self._tracer.start_as_current_span(
            f"publish {self.channel}", kind=trace.SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            published_at = time.time_ns()
            for event, _ in items:
                event.run_id = self.run_id
                event.published_at.FromNanoseconds(published_at)
                event.trace_context.clear()
                event.trace_context.update(carrier)
            async with self._lock:
                first = await self._commit(items)
            span.set_attribute("skyhaul.sequence", first)
            if len(items) > 1:
                span.set_attribute("skyhaul.events", len(items))
        return list(range(first, first + len(items)))

    async def _commit(
        self, items: Sequence[tuple[events_pb2.LinkEvent, events_pb2.LinkStateSnapshot | None]]
    ) -> int:
        """Number and write `items` in one MULTI/EXEC; returns the first sequence."""
        stream = log_key(self.channel)
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    # WATCH makes EXEC fail if another publisher appended meanwhile: then renumber.
                    await pipe.watch(stream)
                    stored = await _newest_logged_sequence(pipe, self.channel)
                    if stored == 0:
                        # An empty log (new, or deleted): the state still remembers the numbering.
                        stored = await _stored_sequence(pipe, self.channel, self._check)
                    first = max(stored, self._last_sequence) + 1
                    payloads = []
                    fields: dict[bytes, bytes] = {}  # later events overwrite earlier ones' entries
                    for offset, (event, snapshot) in enumerate(items):
                        sequence = first + offset
                        event.sequence = sequence
                        event.ClearField("signature")
                        payloads.append(self._seal(event.SerializeToString(), event_signing.EVENT))
                        if snapshot is not None:
                            snapshot.sequence = sequence
                            snapshot.run_id = self.run_id
                            emulated = event.emulated_time if event.HasField("emulated_time") else None
                            for name, value in split_state(snapshot, sequence, self.run_id, emulated).items():
                                fields[name] = self._seal(value, event_signing.SNAPSHOT)
                            head = events_pb2.LinkStateSnapshot(sequence=sequence, run_id=self.run_id)
                            fields[HEAD_FIELD] = self._seal(head.SerializeToString(), event_signing.SNAPSHOT)
                    pipe.multi()
                    for offset, payload in enumerate(payloads):
                        pipe.xadd(
                            stream,
                            {EVENT_FIELD: payload},
                            id=f"{first + offset}-0",
                            maxlen=self.log_maxlen,
                            approximate=self.approximate_trim,
                        )
                    if fields:
                        pipe.hset(state_key(self.channel), mapping=fields)
                    # Heard only after EXEC, when every event of the batch is in the log.
                    for payload in payloads:
                        pipe.publish(self.channel, payload)
                    await pipe.execute()
                except WatchError:
                    continue
                self._last_sequence = first + len(items) - 1
                return first

    def _seal(self, payload: bytes, domain: bytes) -> bytes:
        return payload if self._signer is None else self._signer.seal(payload, domain)

    async def latest_snapshot(
        self, data_centers: Collection[str] | None = None
    ) -> events_pb2.LinkStateSnapshot | None:
        """The latest state assembled from the per-data-center entries (all, or `data_centers`')."""
        return await _read_snapshot(self._client, self.channel, data_centers, self._check)

    async def retain_data_centers(self, data_center_ids: Collection[str]) -> int:
        """Drop the state entries of data centers not in `data_center_ids` (left by an earlier run
        of another fleet); returns how many were dropped."""
        keep = {data_center_field(dc) for dc in data_center_ids}
        key = state_key(self.channel)
        names = await self._client.hkeys(key)
        stale = [name for name in names if name.startswith(_DATA_CENTER_PREFIX) and name not in keep]
        for start in range(0, len(stale), 1000):
            await self._client.hdel(key, *stale[start : start + 1000])
        return len(stale)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except _CONNECTION_ERRORS:
            return False

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> EventPublisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class EventSubscriber:
    """Follows a channel: `async for event in subscriber.events()`, gap-free by sequence.

    `after_sequence`: yield events with a greater sequence (0 = everything the log holds; a
    restarted consumer passes the last sequence it processed). `None` = start from the latest
    snapshot (yielded first as a snapshot event), or from the log's start when there is none.
    `data_centers`: the snapshots this subscriber starts from or resynchronises with hold only
    these data centers' routes (and the fleet-wide part), read from their own entries; events are
    yielded for every data center all the same (filter them as you consume).

    Reconnects by itself with capped exponential backoff; `connected` (and the
    `on_connection_change(bool)` callback) says whether it currently follows Redis, for health.
    Stop it by cancelling the task that iterates, or break out of the loop and call `aclose()`.
    """

    def __init__(
        self,
        redis_url: str,
        channel: str = LINK_EVENTS_CHANNEL,
        after_sequence: int | None = 0,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        on_connection_change: Callable[[bool], None] | None = None,
        initial_backoff: float = 0.05,
        max_backoff: float = 5.0,
        timeout: float = 5.0,
        liveness_interval: float = 5.0,
        data_centers: Collection[str] | None = None,
        signer: EventSigner | None | object = _FROM_ENV,
    ) -> None:
        if after_sequence is not None and after_sequence < 0:
            raise ValueError(f"after_sequence: {after_sequence} must be >= 0 (or None)")
        if isinstance(data_centers, str):
            raise TypeError("data_centers: a collection of data center ids, not one string")
        self.redis_url = redis_url
        self.channel = channel
        self.data_centers = None if data_centers is None else frozenset(data_centers)
        self._from_snapshot = after_sequence is None
        self._last = after_sequence or 0
        self._tracer = _tracer(tracer_provider)
        self._on_connection_change = on_connection_change
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._timeout = timeout
        # With no traffic, PING after this long; no answer for 3x as long means a dead link.
        self._liveness_interval = liveness_interval
        self._connected = False
        self._ever_connected = False
        self._closed = False
        self._iterating = False
        self._client: aioredis.Redis | None = None  # the follow loop's, replaced on every reconnect
        self._pubsub = None
        self._query_client: aioredis.Redis | None = None
        self._recent_runs: deque[str] = deque(maxlen=16)
        self._iterators: weakref.WeakSet = weakref.WeakSet()  # a weak hold: abandoned ones still close
        self._span_per_event = trace_verbose()  # a receive span per event only when asked
        self._signer = _signer(signer)
        self._rejected = 0
        self._check = _Check(self._signer, self._reject)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def rejected_events(self) -> int:
        """Messages, log entries and state entries dropped because their seal did not check."""
        return self._rejected

    @property
    def last_sequence(self) -> int:
        """Sequence of the last event yielded (or `after_sequence` before the first)."""
        return self._last

    def __aiter__(self) -> AsyncIterator[events_pb2.LinkEvent]:
        return self.events()

    async def events(self) -> AsyncIterator[events_pb2.LinkEvent]:
        inner = self.events_with_context()
        try:
            async for event, _ in inner:
                yield event
        finally:
            await inner.aclose()

    def events_with_context(self) -> AsyncIterator[tuple[events_pb2.LinkEvent, Context]]:
        """(event, context) pairs; the context holds the `receive` span, so a consumer that wants its
        own processing in the same trace starts its span with `context=` it (or attaches it)."""
        iterator = self._follow()
        self._iterators.add(iterator)
        return iterator

    async def latest_snapshot(self) -> events_pb2.LinkStateSnapshot | None:
        """The latest state now, of the followed data centers (its own connection, independent of the
        follow loop)."""
        if self._query_client is None:
            self._query_client = aioredis.Redis.from_url(
                self.redis_url, socket_connect_timeout=self._timeout, socket_timeout=self._timeout
            )
        return await _read_snapshot(self._query_client, self.channel, self.data_centers, self._check)

    async def aclose(self) -> None:
        self._closed = True
        for iterator in list(self._iterators):
            with contextlib.suppress(RuntimeError):  # running in another task: cancel that task instead
                await iterator.aclose()
        self._iterators.clear()
        await self._teardown()
        self._set_connected(False)
        if self._query_client is not None:
            await self._query_client.aclose()
            self._query_client = None

    async def __aenter__(self) -> EventSubscriber:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- the loop -------------------------------------------------------------------------------

    async def _follow(self) -> AsyncIterator[tuple[events_pb2.LinkEvent, Context]]:
        if self._iterating:
            raise RuntimeError("an EventSubscriber can be iterated only once at a time")
        self._iterating = True
        backoff = self._initial_backoff
        try:
            while not self._closed:
                try:
                    await self._connect()
                    backoff = self._initial_backoff
                    async for event in self._resume():
                        yield self._received(event)
                    async for event in self._listen():
                        yield self._received(event)
                except _CONNECTION_ERRORS as exc:
                    if self._closed:
                        break
                    self._lost(exc)
                    await self._teardown()
                    # Jitter keeps many subscribers from reconnecting in lockstep.
                    await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, self._max_backoff)
        finally:
            self._iterating = False
            await self._teardown()
            self._set_connected(False)

    async def _connect(self) -> None:
        await self._teardown()
        # No retries inside redis-py: a silent reconnect would hide the gap we must replay.
        self._client = aioredis.Redis.from_url(
            self.redis_url,
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
        )
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(self.channel)
        # The SUBSCRIBE must be in effect before the log is read, or an event published in between
        # would be neither replayed nor heard.
        deadline = time.monotonic() + self._timeout
        while True:
            message = await self._pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] == "subscribe":
                break
            if time.monotonic() >= deadline:
                raise RedisTimeoutError(f"no SUBSCRIBE confirmation from {self.redis_url}")
        self._set_connected(True)

    async def _resume(self) -> AsyncIterator[events_pb2.LinkEvent]:
        """After (re)connecting: detect lost Redis state, start from the snapshot if asked, replay."""
        if self._last > 0 and await _newest_logged_sequence(self._client, self.channel) < self._last:
            self._restart_numbering()
        if self._from_snapshot:
            self._from_snapshot = False
            snapshot_event = await self._snapshot_event()
            if snapshot_event is not None:
                self._advance(snapshot_event)
                yield snapshot_event
        async for event in self._replay():
            yield event

    async def _listen(self) -> AsyncIterator[events_pb2.LinkEvent]:
        last_heard = time.monotonic()
        ping_sent = False
        while True:
            message = await self._pubsub.get_message(timeout=min(1.0, self._liveness_interval))
            now = time.monotonic()
            if message is None:
                silent = now - last_heard
                if silent > 3 * self._liveness_interval:
                    raise RedisTimeoutError(f"no answer from {self.redis_url} for {silent:.0f} s")
                if silent > self._liveness_interval and not ping_sent:
                    await self._pubsub.ping()
                    ping_sent = True
                continue
            last_heard, ping_sent = now, False
            if message["type"] != "message":
                continue
            if self._signer is not None and not self._signer.verify(message["data"], event_signing.EVENT):
                self._reject(f"message on {self.channel}")
                continue
            event = events_pb2.LinkEvent()
            try:
                event.ParseFromString(message["data"])
            except DecodeError:
                log.warning("ignoring an undecodable message on %s", self.channel)
                continue
            async for accepted in self._accept(event):
                yield accepted

    async def _accept(self, event: events_pb2.LinkEvent) -> AsyncIterator[events_pb2.LinkEvent]:
        sequence = event.sequence
        if sequence <= self._last:
            # A duplicate, unless a new publisher run restarted the numbering on an emptied Redis.
            if event.run_id in self._recent_runs or not event.run_id:
                return
            if await _newest_logged_sequence(self._client, self.channel) >= self._last:
                return
            self._restart_numbering()
            async for replayed in self._replay():
                yield replayed
            return
        if sequence == self._last + 1:
            self._advance(event)
            yield event
            return
        async for replayed in self._replay():
            yield replayed
        if sequence > self._last:
            # The log did not even hold this event (deleted under us): bridge with the snapshot.
            snapshot_event = await self._snapshot_event()
            if snapshot_event is not None and self._last < snapshot_event.sequence < sequence:
                self._advance(snapshot_event)
                yield snapshot_event
            self._warn_if_gap(sequence)
            self._advance(event)
            yield event

    async def _replay(self) -> AsyncIterator[events_pb2.LinkEvent]:
        """Yield what the log holds after the last sequence; bridge a trimmed gap with the snapshot."""
        stream = log_key(self.channel)
        while True:
            entries = await self._client.xrange(
                stream, min=f"{self._last + 1}-0", max="+", count=_REPLAY_BATCH
            )
            for entry_id, fields in entries:
                sequence = _entry_sequence(entry_id)
                if sequence <= self._last:
                    continue
                if sequence > self._last + 1:
                    snapshot_event = await self._snapshot_event()
                    if snapshot_event is not None and snapshot_event.sequence > self._last:
                        self._warn_if_gap(snapshot_event.sequence, resync=True)
                        self._advance(snapshot_event)
                        yield snapshot_event
                        if sequence <= self._last:
                            continue
                    self._warn_if_gap(sequence)
                raw = fields.get(EVENT_FIELD)
                if self._signer is not None and (
                    raw is None or not self._signer.verify(raw, event_signing.EVENT)
                ):
                    self._reject(f"log entry {entry_id!r} in {stream}")
                    continue
                event = events_pb2.LinkEvent()
                try:
                    event.ParseFromString(fields[EVENT_FIELD])
                except (DecodeError, KeyError):
                    log.warning("ignoring undecodable log entry %s in %s", entry_id, stream)
                    continue
                if self._signer is not None and event.sequence != sequence:
                    # A genuine event copied under another entry id must not move us back or ahead.
                    self._reject(f"log entry {entry_id!r} in {stream} (holds sequence {event.sequence})")
                    continue
                self._advance(event)
                yield event
            if len(entries) < _REPLAY_BATCH:
                return

    async def _snapshot_event(self) -> events_pb2.LinkEvent | None:
        snapshot = await _read_snapshot(self._client, self.channel, self.data_centers, self._check)
        if snapshot is None:
            return None
        event = events_pb2.LinkEvent(sequence=snapshot.sequence, run_id=snapshot.run_id)
        event.emulated_time.CopyFrom(snapshot.emulated_time)
        event.snapshot.CopyFrom(snapshot)
        return event

    # --- bookkeeping ----------------------------------------------------------------------------

    def _advance(self, event: events_pb2.LinkEvent) -> None:
        self._last = event.sequence
        if event.run_id and event.run_id not in self._recent_runs:
            self._recent_runs.append(event.run_id)

    def _warn_if_gap(self, next_sequence: int, resync: bool = False) -> None:
        if next_sequence <= self._last + 1:
            return
        if resync:
            log.info(
                "events %d..%d left the log; resynchronising from the snapshot at %d",
                self._last + 1,
                next_sequence,
                next_sequence,
            )
        else:
            log.warning("events %d..%d are lost (not in log or snapshot)", self._last + 1, next_sequence - 1)

    def _restart_numbering(self) -> None:
        log.warning(
            "Redis no longer holds sequence %d on %s (restarted empty?); following the new numbering",
            self._last,
            self.channel,
        )
        self._last = 0
        self._recent_runs.clear()

    def _reject(self, what: str) -> None:
        self._rejected += 1
        # Loud at first, then sampled: a flood of forgeries must not flood the log too.
        if self._rejected <= 10 or self._rejected % 100 == 0:
            log.warning(
                "dropped a %s: its signature does not check against the run's event key "
                "(forged, or published by another run); %d dropped so far",
                what,
                self._rejected,
            )

    def _received(self, event: events_pb2.LinkEvent) -> tuple[events_pb2.LinkEvent, Context]:
        parent = propagate.extract(dict(event.trace_context), context=Context())
        if not self._span_per_event:
            return event, parent  # the publisher's context, so work done for the event joins its trace
        span = self._tracer.start_span(
            f"receive {self.channel}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "redis",
                "messaging.destination.name": self.channel,
                "skyhaul.sequence": event.sequence,
                "skyhaul.resync": event.WhichOneof("body") == "snapshot",
            },
        )
        span.end()
        return event, trace.set_span_in_context(span, parent)

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        if connected:
            log.info("%s to %s", "reconnected" if self._ever_connected else "subscribed", self.channel)
            self._ever_connected = True
        if self._on_connection_change is not None:
            try:
                self._on_connection_change(connected)
            except Exception:  # a faulty health hook must not stop the subscription
                log.exception("on_connection_change callback failed")

    def _lost(self, exc: BaseException) -> None:
        if self._connected:
            log.warning(
                "lost Redis subscription to %s: %s; reconnecting",
                self.channel,
                str(exc) or type(exc).__name__,
            )
        else:
            log.debug("still cannot reach Redis for %s: %s", self.channel, exc)
        self._set_connected(False)

    async def _teardown(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
