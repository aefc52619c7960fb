"""The bus at fleet scale: state written per slot grows with the fleet (not its square), and a
1 000-data-center feed stays gap-free for many per-data-center subscribers through killed
connections and a Redis restart."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from skyhaul.core.constellations import build_preset
from skyhaul.core.fleet import fleet_scenario
from skyhaul.links import route_view
from skyhaul.links.engine import LinkEngine, compute_slot
from skyhaul.links.ground_from_scenario import ground_segment
from skyhaul.runtime.bus import (
    FLEET_FIELD,
    HEAD_FIELD,
    EventPublisher,
    EventSubscriber,
    data_center_field,
    state_key,
)
from skyhaul.runtime.clock import EmulationClock
from skyhaul.runtime.redis_server import start_redis_server
from skyhaul.runtime.scenario import parse_scenario
from skyhaul.v1 import events_pb2, route_pb2

SAFETY_TIMEOUT = 180.0  # only so that a broken bus fails instead of hanging; never a measurement


async def input_bytes(admin: aioredis.Redis) -> int:
    return int((await admin.info("stats"))["total_net_input_bytes"])


def _by_id(snapshot: events_pb2.LinkStateSnapshot) -> dict[str, bytes]:
    return {r.data_center_id: r.SerializeToString() for r in snapshot.routes}


@pytest.mark.slow
async def test_redis_bytes_per_slot_grow_linearly_with_the_fleet(redis_url):
    """One steady-state slot of the live engine at 10, 100 and 1 000 data centers (gen1, +grid):
    the bytes Redis receives per data center stay within a factor 1.5, and the per-data-center
    entries assemble into the very snapshot the old single key held."""
    admin = aioredis.Redis.from_url(redis_url)
    elements = None
    per_data_center: dict[int, float] = {}
    for size in (10, 100, 1000):
        scenario = parse_scenario(fleet_scenario(size, 3, 7))
        elements = elements or build_preset("starlink-gen1", scenario.epoch_unix)
        ground = ground_segment(scenario)
        model = route_view.new_model(elements, ground, scenario.scheduler)
        first = compute_slot(model, scenario.epoch_unix + 600.0)
        second = compute_slot(model, first.end)
        clock = EmulationClock(scenario.epoch_unix, 1.0, time.time())
        channel = f"fleet-{size}"
        engine = LinkEngine(ground, scenario.scheduler, clock, redis_url, channel)
        engine._publisher = EventPublisher(redis_url, channel)
        try:
            await engine._publish_slot(first)  # the first slot tells everything
            before = await input_bytes(admin)
            await engine._publish_slot(second)  # a steady-state slot
            per_data_center[size] = (await input_bytes(admin) - before) / size
            assert engine.events_dropped == 0 and engine.slots_published == 2

            stored = await admin.hgetall(state_key(channel))
            assert set(stored) == {HEAD_FIELD, FLEET_FIELD} | {
                data_center_field(t.id) for t in ground.terminals
            }
            assembled = await engine._publisher.latest_snapshot()
            expected = second.snapshot(second.start)
            assert _by_id(assembled) == _by_id(expected)
            assert sorted(a.SerializeToString() for a in assembled.assignments) == sorted(
                a.SerializeToString() for a in expected.assignments
            )
            assert assembled.slot == expected.slot
            assert assembled.sequence == await admin.xlen(f"{channel}:log")
            one = await EventPublisher(redis_url, channel).latest_snapshot([ground.terminals[3].id])
            assert [r.data_center_id for r in one.routes] == [ground.terminals[3].id]
        finally:
            await engine._publisher.aclose()
            engine._executor.shutdown()
    await admin.aclose()
    low, high = min(per_data_center.values()), max(per_data_center.values())
    assert high <= 1.5 * low, per_data_center


def route_state(data_center: str, round_index: int) -> events_pb2.LinkStateSnapshot:
    route = route_pb2.Route(
        data_center_id=data_center, region_id="westus2", available=True, one_way_delay_ms=round_index + 0.5
    )
    route.delay_samples_ms.extend([round_index + 0.5] * 15)
    return events_pb2.LinkStateSnapshot(routes=[route])


class Follower:
    """What a per-data-center subscriber saw: every yielded (sequence, body) and its data center's
    latest route, folded as a link follower does."""

    def __init__(self, redis_url: str, data_center: str) -> None:
        self.data_center = data_center
        self.subscriber = EventSubscriber(
            redis_url,
            after_sequence=None,
            data_centers=[data_center],
            initial_backoff=0.02,
            max_backoff=0.2,
        )
        self.seen: list[tuple[int, str]] = []
        self.route: route_pb2.Route | None = None

    async def run(self) -> None:
        async for event in self.subscriber.events():
            body = event.WhichOneof("body")
            self.seen.append((event.sequence, body))
            if body == "route_changed" and event.route_changed.route.data_center_id == self.data_center:
                self.route = event.route_changed.route
            elif body == "snapshot":
                mine = [r for r in event.snapshot.routes if r.data_center_id == self.data_center]
                assert [r.data_center_id for r in event.snapshot.routes] == [r.data_center_id for r in mine]
                if mine:
                    self.route = mine[-1]


@pytest.mark.slow
async def test_a_thousand_data_centers_stay_gap_free_through_kills_and_a_redis_restart(tmp_path):
    fleet = [f"mdc-{k:04d}" for k in range(1000)]
    followed = random.Random(5).sample(fleet, 20)
    server = start_redis_server(data_dir=tmp_path)
    admin = aioredis.Redis.from_url(server.url)
    followers = [Follower(server.url, dc) for dc in followed]
    tasks = []
    publisher = EventPublisher(server.url, approximate_trim=False, log_maxlen=20_000)
    last_published: dict[str, bytes] = {}
    try:

        async def publish_round(round_index: int, kill_at: int | None = None) -> None:
            for k, dc in enumerate(fleet):
                if k == kill_at:
                    assert await admin.client_kill_filter(_type="pubsub") == len(followers)
                state = route_state(dc, round_index)
                event = events_pb2.LinkEvent(route_changed=events_pb2.RouteChanged(route=state.routes[0]))
                while True:
                    try:
                        await publisher.publish(event, state)
                        break
                    except (RedisConnectionError, OSError):
                        if not restarted:
                            raise
                        await asyncio.sleep(0.05)  # the restarted Redis may still be coming up
                last_published[dc] = state.routes[0].SerializeToString()

        restarted = False
        async with asyncio.timeout(SAFETY_TIMEOUT):
            await publish_round(0)
            for follower in followers:
                tasks.append(asyncio.create_task(follower.run()))
            while not all(f.subscriber.connected for f in followers):  # noqa: ASYNC110 - polls state
                await asyncio.sleep(0.01)
            for round_index in (1, 2, 3):  # a CLIENT KILL in the middle of each round
                await publish_round(round_index, kill_at=300 + 100 * round_index)
            # Every follower caught up before Redis goes away.
            while not all(f.subscriber.last_sequence == 4000 for f in followers):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            restarted = True
            port = server.port
            server.stop()
            server = start_redis_server(port=port, data_dir=tmp_path)
            await publish_round(4)
            await publish_round(5)
            final = 6000
            while not all(f.subscriber.last_sequence == final for f in followers):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for follower in followers:
            await follower.subscriber.aclose()
        await publisher.aclose()
        await admin.aclose()
        server.stop()

    for follower in followers:
        sequences = [s for s, _ in follower.seen]
        assert sequences == sorted(set(sequences)), follower.data_center  # ordered, no duplicate
        # Started from its own entry of the state, then 1..4000 without a snapshot: the kills lost nothing.
        start, body = follower.seen[0]
        assert body == "snapshot" and start >= 1000  # (round 1 may have begun as it subscribed)
        before_restart = [s for s in follower.seen if s[0] <= 4000]
        assert [s for s, _ in before_restart[1:]] == list(range(start + 1, 4001))
        # Across the restart: every later event, or one resynchronising snapshot bridging the lost log.
        after = follower.seen[len(before_restart) :]
        for (previous, _), (sequence, body) in zip([before_restart[-1], *after[:-1]], after, strict=True):
            assert sequence == previous + 1 or body == "snapshot", (follower.data_center, previous, sequence)
        assert sum(body == "snapshot" for _, body in after) <= 1
        assert follower.route.SerializeToString() == last_published[follower.data_center]
