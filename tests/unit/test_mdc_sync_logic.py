"""The sync worker's pure parts without sockets: link state folded from events, backoff, pacing, block slots."""

from __future__ import annotations

import asyncio

from skyhaul.mdc.link import LinkWatcher
from skyhaul.mdc.sync import Backoff, Pacer, PrioritySlots
from skyhaul.runtime.clock import EmulationClock
from skyhaul.runtime.link_follower import LinkFollower
from skyhaul.v1 import events_pb2, route_pb2

DC = "mdc-a"


def route(available: bool, data_center: str = DC, region: str = "westus2", **fields) -> route_pb2.Route:
    return route_pb2.Route(data_center_id=data_center, region_id=region, available=available, **fields)


def route_event(sequence: int, r: route_pb2.Route, emulated: int = 1_000) -> events_pb2.LinkEvent:
    event = events_pb2.LinkEvent(sequence=sequence)
    event.emulated_time.seconds = emulated
    event.route_changed.route.CopyFrom(r)
    return event


def status_event(sequence: int, up: bool, data_center: str = DC) -> events_pb2.LinkEvent:
    event = events_pb2.LinkEvent(sequence=sequence)
    event.link_status.data_center_id = data_center
    event.link_status.up = up
    event.link_status.reason = "" if up else "no satellite above 25.0 deg"
    return event


def watcher() -> LinkWatcher:
    # Emulated "now" is 42 and wall time stands still: no route ever expires here.
    clock = EmulationClock(epoch_unix=42.0, speed=1.0, start_wall=0.0, wall=lambda: 0.0)
    return LinkWatcher(LinkFollower(DC, "westus2", clock))


def test_without_events_the_link_is_assumed_up_and_unknown() -> None:
    link = watcher()
    assert link.up and not link.view.known and link.view.satellite_index == -1
    assert link.view.since_unix is None


def test_routes_set_delay_capacity_and_satellite_and_other_data_centers_are_ignored() -> None:
    link = watcher()
    changes = []
    link.on_change(changes.append)
    link.apply(
        route_event(
            1,
            route(
                True,
                one_way_delay_ms=21.5,
                capacity_up_mbps=40,
                capacity_down_mbps=200,
                first_satellite_index=17,
            ),
        )
    )
    view = link.view
    assert view.up and view.known and view.satellite_index == 17 and view.rtt_ms == 43.0
    assert (view.capacity_up_mbps, view.capacity_down_mbps) == (40, 200)
    assert view.since_unix == 1_000 and view.last_event_sequence == 1
    assert changes == []  # it was (assumed) up before: no up/down change

    link.apply(status_event(2, False, data_center="mdc-other"))
    link.apply(route_event(3, route(False, region="eastus")))  # a route to another region
    assert link.up and link.view.last_event_sequence == 1

    link.apply(route_event(4, route(False), emulated=1_015))
    assert not link.up and link.view.satellite_index == -1 and link.view.reason == "no route to the region"
    assert link.view.since_unix == 1_015 and [c.up for c in changes] == [False]

    link.apply(status_event(5, True))
    assert link.up and link.view.since_unix == 42.0  # no emulated time on the event: now
    assert [c.up for c in changes] == [False, True]


def test_a_snapshot_resynchronises_the_state() -> None:
    link = watcher()
    link.apply(status_event(1, False))
    assert not link.up and link.view.reason == "no satellite above 25.0 deg"
    snapshot = events_pb2.LinkEvent(sequence=9)
    snapshot.snapshot.routes.append(route(True, data_center="mdc-other"))
    snapshot.snapshot.routes.append(route(True, one_way_delay_ms=30, first_satellite_index=3))
    link.apply(snapshot)
    assert link.up and link.view.satellite_index == 3 and link.view.last_event_sequence == 9


async def test_waiters_follow_the_state() -> None:
    link = watcher()
    await asyncio.wait_for(link.wait_up(), 1)
    down = asyncio.create_task(link.wait_down())
    await asyncio.sleep(0)
    assert not down.done()
    link.apply(status_event(1, False))
    await asyncio.wait_for(down, 1)
    up = asyncio.create_task(link.wait_up())
    await asyncio.sleep(0)
    assert not up.done()
    link.apply(status_event(2, True))
    await asyncio.wait_for(up, 1)


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.1, 2.0)
    delays = [backoff.next_delay() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(1.0 <= d <= 2.0 for d in delays[6:])
    assert len(set(delays)) > 5  # jittered, not a fixed schedule
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_pacer_spaces_sends_to_the_shared_rate() -> None:
    pacer = Pacer()
    # Four 1 MB blocks at 8 Mbit/s, all asked for at t=100: they go 1 s apart.
    waits = [pacer.book(1_000_000, 8e6, now=100.0) for _ in range(4)]
    assert waits == [0.0, 1.0, 2.0, 3.0]
    # After an idle spell nothing is owed: the next block goes at once (no burst credit either).
    assert pacer.book(1_000_000, 8e6, now=200.0) == 0.0
    assert pacer.book(1_000_000, 8e6, now=200.0) == 1.0


async def test_priority_slots_serve_the_most_urgent_waiter_first() -> None:
    slots = PrioritySlots(1)
    await slots.acquire((2, 0.0))  # a bulk block holds the only slot
    order: list[str] = []

    async def waiter(name: str, key: tuple) -> None:
        await slots.acquire(key)
        order.append(name)
        slots.release()

    bulk = asyncio.create_task(waiter("bulk", (2, 1.0)))
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(waiter("cancelled", (0, 0.5)))
    telemetry = asyncio.create_task(waiter("telemetry", (0, 9.0)))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    slots.release()
    await asyncio.wait_for(asyncio.gather(bulk, telemetry), 1)
    assert order == ["telemetry", "bulk"]  # telemetry overtook the bulk block that waited longer
    await slots.acquire((2, 0.0))  # every slot came back
