"""The Redis event bus against a real Redis: across processes, through killed connections, a
partition longer than the log, a Redis that lost its state, and one trace from publisher to consumer."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from skyhaul.runtime.bus import (
    HEAD_FIELD,
    EventPublisher,
    EventSubscriber,
    data_center_field,
    log_key,
    redis_ping,
    state_key,
)
from skyhaul.runtime.redis_server import free_port
from skyhaul.v1 import events_pb2, route_pb2

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
SAFETY_TIMEOUT = 20.0  # only so that a broken bus fails instead of hanging; never a measurement

PUBLISHER_SCRIPT = """
import asyncio, sys
from skyhaul.runtime.bus import EventPublisher
from skyhaul.v1 import events_pb2, route_pb2

async def main(url, count):
    async with EventPublisher(url, run_id="other-process") as publisher:
        for i in range(count):
            event = events_pb2.LinkEvent()
            event.link_status.data_center_id = f"dc-{i}"
            event.link_status.up = i % 2 == 0
            await publisher.publish(event)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def status_event(data_center_id: str) -> events_pb2.LinkEvent:
    event = events_pb2.LinkEvent()
    event.link_status.data_center_id = data_center_id
    event.link_status.up = True
    return event


def snapshot_at(emulated_seconds: int) -> events_pb2.LinkStateSnapshot:
    snapshot = events_pb2.LinkStateSnapshot()
    snapshot.emulated_time.seconds = emulated_seconds
    return snapshot


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(SAFETY_TIMEOUT):
        while not condition():  # noqa: ASYNC110 - polls state, as a health check does
            await asyncio.sleep(0.01)


async def collect(
    subscriber: EventSubscriber,
    count: int,
    on_event: Callable[[events_pb2.LinkEvent], Awaitable[None]] | None = None,
) -> list[events_pb2.LinkEvent]:
    received = []
    async for event in subscriber.events():
        received.append(event)
        if on_event is not None:
            await on_event(event)
        if len(received) == count:
            break
    return received


class Partition:
    """A TCP proxy in front of Redis that a test can cut (every connection dropped, new ones refused
    at once), freeze (connections stay open, bytes vanish: a silent network) and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self.frozen = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Partition:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.frozen:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)

    def cut(self) -> None:
        self.up = False
        for writer in list(self._writers):
            writer.transport.abort()

    def freeze(self) -> None:
        self.frozen = True

    def restore(self) -> None:
        self.up = True
        self.frozen = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_an_event_published_by_another_process_arrives_in_order(redis_url):
    count = 40
    async with EventSubscriber(redis_url) as subscriber:
        consumer = asyncio.create_task(collect(subscriber, count))
        await wait_until(lambda: subscriber.connected)
        env = {**os.environ, "PYTHONPATH": str(SERVICES_DIR)}
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISHER_SCRIPT, redis_url, str(count), env=env
        )
        async with asyncio.timeout(SAFETY_TIMEOUT):
            assert await publisher.wait() == 0
            received = await consumer

    assert [event.sequence for event in received] == list(range(1, count + 1))
    assert [event.link_status.data_center_id for event in received] == [f"dc-{i}" for i in range(count)]
    assert {event.run_id for event in received} == {"other-process"}


async def test_killed_connections_lose_nothing_and_duplicate_nothing(redis_url, caplog):
    admin = aioredis.Redis.from_url(redis_url)
    published: dict[int, str] = {}
    connection_changes: list[bool] = []
    kills_at = {30, 70, 110}
    background_count, burst = 120, 5

    async with EventPublisher(redis_url) as publisher:

        async def keep_publishing() -> None:
            for i in range(background_count):
                published[await publisher.publish(status_event(f"bg-{i}"))] = f"bg-{i}"
                await asyncio.sleep(0.002)

        async def kill_then_publish(event: events_pb2.LinkEvent) -> None:
            if event.sequence in kills_at:
                killed = await admin.client_kill_filter(_type="pubsub")
                assert killed == 1
                # Published while the subscriber is cut off: pub/sub drops these, the log must not.
                for i in range(burst):
                    name = f"burst-{event.sequence}-{i}"
                    published[await publisher.publish(status_event(name))] = name

        total = background_count + burst * len(kills_at)
        async with EventSubscriber(redis_url, on_connection_change=connection_changes.append) as subscriber:
            consumer = asyncio.create_task(collect(subscriber, total, on_event=kill_then_publish))
            await wait_until(lambda: subscriber.connected)
            async with asyncio.timeout(SAFETY_TIMEOUT):
                await keep_publishing()
                received = await consumer
    await admin.aclose()

    assert [event.sequence for event in received] == list(range(1, total + 1))
    assert {event.sequence: event.link_status.data_center_id for event in received} == published
    # Each kill is one loss and one recovery, reported once; closing the subscriber reports a last loss.
    assert connection_changes == [True] + [False, True] * len(kills_at) + [False]
    losses = [record for record in caplog.records if "lost Redis subscription" in record.getMessage()]
    assert len(losses) == len(kills_at)


async def test_a_partition_longer_than_the_log_resynchronises_from_the_snapshot(redis_server, redis_url):
    partition = await Partition(redis_server.port).start()
    queue: asyncio.Queue[events_pb2.LinkEvent] = asyncio.Queue()

    async def forward(subscriber: EventSubscriber) -> None:
        async for event in subscriber.events():
            await queue.put(event)

    async with (
        EventPublisher(redis_url, log_maxlen=5, approximate_trim=False) as publisher,
        EventSubscriber(partition.url, initial_backoff=0.02, max_backoff=0.1) as subscriber,
    ):
        consumer = asyncio.create_task(forward(subscriber))
        async with asyncio.timeout(SAFETY_TIMEOUT):
            for second in range(1, 4):
                await publisher.publish(status_event(f"dc-{second}"), snapshot_at(second))
            before = [await queue.get() for _ in range(3)]

            partition.cut()
            await wait_until(lambda: not subscriber.connected)
            for second in range(4, 31):
                await publisher.publish(status_event(f"dc-{second}"), snapshot_at(second))
            admin = aioredis.Redis.from_url(redis_url)
            first_logged = (await admin.xrange(log_key(publisher.channel), count=1))[0][0]
            await admin.aclose()
            partition.restore()

            resync = await queue.get()
            for second in range(31, 34):
                await publisher.publish(status_event(f"dc-{second}"), snapshot_at(second))
            after = [await queue.get() for _ in range(3)]
        consumer.cancel()
    await partition.close()

    assert [event.sequence for event in before] == [1, 2, 3]
    assert first_logged == b"26-0"  # events 4..25 are gone from the log: only the snapshot can bridge
    assert resync.WhichOneof("body") == "snapshot"
    assert resync.sequence == resync.snapshot.sequence == 30
    assert resync.snapshot.emulated_time.seconds == 30
    assert resync.run_id == publisher.run_id
    assert [(event.sequence, event.WhichOneof("body")) for event in after] == [
        (31, "link_status"),
        (32, "link_status"),
        (33, "link_status"),
    ]
    assert queue.empty()


async def test_a_silent_network_is_noticed_and_survived(redis_server, redis_url):
    partition = await Partition(redis_server.port).start()
    connection_changes: list[bool] = []
    async with (
        EventPublisher(redis_url) as publisher,
        EventSubscriber(
            partition.url,
            on_connection_change=connection_changes.append,
            liveness_interval=0.1,
            timeout=0.5,
            initial_backoff=0.02,
            max_backoff=0.1,
        ) as subscriber,
    ):
        consumer = asyncio.create_task(collect(subscriber, 6))
        await wait_until(lambda: subscriber.connected)
        for i in range(3):
            await publisher.publish(status_event(f"dc-{i}"))
        await wait_until(lambda: subscriber.last_sequence == 3)

        partition.freeze()
        # Nothing is closed: only the subscriber's own PING going unanswered can reveal the loss.
        await wait_until(lambda: not subscriber.connected)
        for i in range(3, 6):
            await publisher.publish(status_event(f"dc-{i}"))
        partition.restore()
        async with asyncio.timeout(SAFETY_TIMEOUT):
            received = await consumer
    await partition.close()

    assert [event.sequence for event in received] == [1, 2, 3, 4, 5, 6]
    assert connection_changes[:3] == [True, False, True]


async def test_an_event_pubsub_never_delivered_is_filled_from_the_log(redis_url):
    async with EventPublisher(redis_url) as publisher, EventSubscriber(redis_url) as subscriber:
        consumer = asyncio.create_task(collect(subscriber, 3))
        await wait_until(lambda: subscriber.connected)
        await publisher.publish(status_event("dc-heard"))
        await wait_until(lambda: subscriber.last_sequence == 1)

        # Event 2 reaches the log but its pub/sub message is lost on the way.
        unheard = status_event("dc-unheard")
        unheard.sequence, unheard.run_id = 2, publisher.run_id
        admin = aioredis.Redis.from_url(redis_url)
        await admin.xadd(log_key(publisher.channel), {"e": unheard.SerializeToString()}, id="2-0")
        await admin.aclose()
        assert await publisher.publish(status_event("dc-next")) == 3

        async with asyncio.timeout(SAFETY_TIMEOUT):
            received = await consumer
    assert [(event.sequence, event.link_status.data_center_id) for event in received] == [
        (1, "dc-heard"),
        (2, "dc-unheard"),
        (3, "dc-next"),
    ]


async def test_a_redis_that_lost_its_state_and_a_new_publisher_run_are_followed(redis_url):
    async with EventSubscriber(redis_url) as subscriber:
        consumer = asyncio.create_task(collect(subscriber, 6))
        await wait_until(lambda: subscriber.connected)
        async with EventPublisher(redis_url, run_id="run-a") as first_run:
            for i in range(3):
                await first_run.publish(status_event(f"a-{i}"))
        await wait_until(lambda: subscriber.last_sequence == 3)

        admin = aioredis.Redis.from_url(redis_url)
        await admin.flushall()  # what a Redis restarted without persistence looks like
        await admin.aclose()
        async with EventPublisher(redis_url, run_id="run-b") as second_run:
            for i in range(3):
                await second_run.publish(status_event(f"b-{i}"))
        async with asyncio.timeout(SAFETY_TIMEOUT):
            received = await consumer

    assert [(event.run_id, event.sequence) for event in received] == [
        ("run-a", 1),
        ("run-a", 2),
        ("run-a", 3),
        ("run-b", 1),
        ("run-b", 2),
        ("run-b", 3),
    ]


async def test_a_restarted_publisher_continues_the_numbering(redis_url):
    async with EventPublisher(redis_url, run_id="first") as first:
        assert [await first.publish(status_event("x")) for _ in range(3)] == [1, 2, 3]
    async with EventPublisher(redis_url, run_id="second") as second:
        assert await second.publish(status_event("y")) == 4


async def test_a_resuming_subscriber_starts_after_its_last_sequence(redis_url):
    async with EventPublisher(redis_url) as publisher:
        for i in range(10):
            await publisher.publish(status_event(f"dc-{i}"))
        async with EventSubscriber(redis_url, after_sequence=6) as subscriber:
            consumer = asyncio.create_task(collect(subscriber, 5))
            await wait_until(lambda: subscriber.connected)
            await publisher.publish(status_event("dc-10"))
            async with asyncio.timeout(SAFETY_TIMEOUT):
                received = await consumer
    assert [event.sequence for event in received] == [7, 8, 9, 10, 11]
    assert received[-1].link_status.data_center_id == "dc-10"


async def test_a_subscriber_from_the_snapshot_gets_the_state_then_what_follows(redis_url):
    async with EventPublisher(redis_url) as publisher:
        await publisher.publish(status_event("dc-1"), snapshot_at(100))
        await publisher.publish(status_event("dc-2"), snapshot_at(200))
        async with EventSubscriber(redis_url, after_sequence=None) as subscriber:
            consumer = asyncio.create_task(collect(subscriber, 2))
            await wait_until(lambda: subscriber.connected)
            await publisher.publish(status_event("dc-3"))
            async with asyncio.timeout(SAFETY_TIMEOUT):
                first, second = await consumer
            assert (await subscriber.latest_snapshot()).sequence == 2
    assert first.WhichOneof("body") == "snapshot"
    assert (first.sequence, first.snapshot.emulated_time.seconds) == (2, 200)
    assert (second.sequence, second.link_status.data_center_id) == (3, "dc-3")


async def test_one_trace_spans_publisher_and_consumer(redis_url, monkeypatch):
    monkeypatch.setenv("SKYHAUL_TRACE_VERBOSE", "1")  # a receive span per event is asked for
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    async with (
        EventPublisher(redis_url, tracer_provider=provider) as publisher,
        EventSubscriber(redis_url, tracer_provider=provider) as subscriber,
    ):

        async def handle_one() -> None:
            async for _event, context in subscriber.events_with_context():
                with tracer.start_as_current_span("apply route", context=context):
                    pass
                return

        consumer = asyncio.create_task(handle_one())
        await wait_until(lambda: subscriber.connected)
        with tracer.start_as_current_span("slot 12"):
            sequence = await publisher.publish(status_event("dc-1"))
        async with asyncio.timeout(SAFETY_TIMEOUT):
            await consumer
    provider.shutdown()

    spans = {span.name: span for span in exporter.get_finished_spans()}
    slot, publish = spans["slot 12"], spans["publish skyhaul.v1.link-events"]
    receive, apply = spans["receive skyhaul.v1.link-events"], spans["apply route"]
    assert {span.context.trace_id for span in (slot, publish, receive, apply)} == {slot.context.trace_id}
    assert publish.parent.span_id == slot.context.span_id
    assert receive.parent.span_id == publish.context.span_id
    assert apply.parent.span_id == receive.context.span_id
    assert publish.kind == trace.SpanKind.PRODUCER and receive.kind == trace.SpanKind.CONSUMER
    assert publish.attributes["skyhaul.sequence"] == receive.attributes["skyhaul.sequence"] == sequence


async def test_without_verbose_tracing_no_span_per_received_event_but_work_joins_the_trace(
    redis_url, monkeypatch
):
    monkeypatch.delenv("SKYHAUL_TRACE_VERBOSE", raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    async with (
        EventPublisher(redis_url, tracer_provider=provider) as publisher,
        EventSubscriber(redis_url, tracer_provider=provider) as subscriber,
    ):

        async def handle(count: int) -> None:
            async for _event, context in subscriber.events_with_context():
                with tracer.start_as_current_span("apply route", context=context):
                    pass
                count -= 1
                if not count:
                    return

        consumer = asyncio.create_task(handle(3))
        await wait_until(lambda: subscriber.connected)
        with tracer.start_as_current_span("slot 12"):
            for n in range(3):
                await publisher.publish(status_event(f"dc-{n}"))
        async with asyncio.timeout(SAFETY_TIMEOUT):
            await consumer
    provider.shutdown()

    spans = exporter.get_finished_spans()
    assert not [span for span in spans if span.kind == trace.SpanKind.CONSUMER]
    publishes = {span.context.span_id for span in spans if span.name == "publish skyhaul.v1.link-events"}
    applies = [span for span in spans if span.name == "apply route"]
    assert len(publishes) == len(applies) == 3
    assert {span.parent.span_id for span in applies} == publishes


async def test_redis_ping_tells_a_live_server_from_a_closed_port(redis_url):
    assert await redis_ping(redis_url, timeout=2.0)
    assert not await redis_ping(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)


async def test_a_log_without_room_is_refused(redis_url):
    with pytest.raises(ValueError, match="log_maxlen: 0"):
        EventPublisher(redis_url, log_maxlen=0)


def route_of(data_center_id: str, delay_ms: float) -> events_pb2.LinkStateSnapshot:
    snapshot = events_pb2.LinkStateSnapshot()
    snapshot.routes.add(data_center_id=data_center_id, available=True, one_way_delay_ms=delay_ms)
    snapshot.assignments.add(
        ground_id=data_center_id, kind=route_pb2.GROUND_KIND_TERMINAL, satellite_index=int(delay_ms)
    )
    return snapshot


async def test_an_event_writes_only_the_state_of_the_data_center_it_changes(redis_url):
    admin = aioredis.Redis.from_url(redis_url)
    async with EventPublisher(redis_url) as publisher:
        await publisher.publish(status_event("dc-a"), route_of("dc-a", 10))
        await publisher.publish(status_event("dc-b"), route_of("dc-b", 20))
        before = await admin.hgetall(state_key(publisher.channel))
        await publisher.publish(status_event("dc-b"), route_of("dc-b", 21))
        after = await admin.hgetall(state_key(publisher.channel))
        await publisher.publish(status_event("dc-c"))  # no state: nothing stored changes
        assert await admin.hgetall(state_key(publisher.channel)) == after
        whole = await publisher.latest_snapshot()
        only_b = await publisher.latest_snapshot(["dc-b", "dc-unknown"])
        assert await publisher.retain_data_centers(["dc-b"]) == 1
        retained = await publisher.latest_snapshot()
    await admin.aclose()

    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {data_center_field("dc-b"), HEAD_FIELD}
    assert whole.sequence == 3
    assert [(r.data_center_id, r.one_way_delay_ms) for r in whole.routes] == [("dc-a", 10.0), ("dc-b", 21.0)]
    assert [(a.ground_id, a.satellite_index) for a in whole.assignments] == [("dc-a", 10), ("dc-b", 21)]
    assert [r.data_center_id for r in only_b.routes] == ["dc-b"] and only_b.sequence == 3
    assert [r.data_center_id for r in retained.routes] == ["dc-b"]


async def test_a_data_center_subscriber_resynchronises_from_its_own_entry(redis_server, redis_url):
    partition = await Partition(redis_server.port).start()
    queue: asyncio.Queue[events_pb2.LinkEvent] = asyncio.Queue()

    async def forward(subscriber: EventSubscriber) -> None:
        async for event in subscriber.events():
            await queue.put(event)

    async with (
        EventPublisher(redis_url, log_maxlen=5, approximate_trim=False) as publisher,
        EventSubscriber(
            partition.url, initial_backoff=0.02, max_backoff=0.1, data_centers=["dc-1"]
        ) as subscriber,
    ):
        consumer = asyncio.create_task(forward(subscriber))
        await wait_until(lambda: subscriber.connected)
        async with asyncio.timeout(SAFETY_TIMEOUT):
            await publisher.publish(status_event("dc-1"), route_of("dc-1", 1))
            assert (await queue.get()).sequence == 1
            partition.cut()
            await wait_until(lambda: not subscriber.connected)
            for k in range(2, 30):  # far more than the log holds, for dc-1 and others
                await publisher.publish(status_event(f"dc-{k % 3}"), route_of(f"dc-{k % 3}", k))
            partition.restore()
            resync = await queue.get()
            await publisher.publish(status_event("dc-2"), route_of("dc-2", 30))
            following = await queue.get()
        consumer.cancel()
    await partition.close()

    assert resync.WhichOneof("body") == "snapshot" and resync.sequence == 29
    assert [(r.data_center_id, r.one_way_delay_ms) for r in resync.snapshot.routes] == [("dc-1", 28.0)]
    assert [a.ground_id for a in resync.snapshot.assignments] == ["dc-1"]
    assert following.sequence == 30 and queue.empty()
