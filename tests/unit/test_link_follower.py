"""The one link follower: one filter, one notion of "up", one expiry shared by terminal and mdc.

Clocks are fake (a wall time the test moves by hand), so expiry is checked at exact instants.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from google.protobuf import duration_pb2

from skyhaul.mdc.link import SET_REASON, STALE_REASON, LinkWatcher
from skyhaul.runtime.clock import EmulationClock, to_timestamp
from skyhaul.runtime.link_follower import GRACE_SLOTS, STALE_AFTER_S, LinkFollower
from skyhaul.runtime.scenario import default_scenario
from skyhaul.runtime.settings import Settings
from skyhaul.terminal.service import RouteFeed
from skyhaul.terminal.shaping import DownReason, EmulatedLink
from skyhaul.v1 import events_pb2, route_pb2

SCENARIO = default_scenario()
DC = SCENARIO.data_centers[0].id
HOME = SCENARIO.data_centers[0].home_region
EPOCH = 1_700_000_000.0


class FakeWall:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_route(
    start: float, slot_s: float = 15.0, *, available: bool = True, dc: str = DC, region: str = HOME
) -> route_pb2.Route:
    return route_pb2.Route(
        data_center_id=dc,
        region_id=region,
        at=to_timestamp(start),
        available=available,
        one_way_delay_ms=20.0,
        capacity_up_mbps=50.0,
        capacity_down_mbps=50.0,
        slot=route_pb2.Slot(index=1, start=to_timestamp(start), end=to_timestamp(start + slot_s)),
        first_satellite_index=7 if available else -1,
        samples_start=to_timestamp(start),
        samples_step=duration_pb2.Duration(seconds=1),
        delay_samples_ms=[20.0] * int(slot_s + 1) if available else [],
    )


def changed(sequence: int, route: route_pb2.Route) -> events_pb2.LinkEvent:
    return events_pb2.LinkEvent(
        sequence=sequence, emulated_time=route.at, route_changed=events_pb2.RouteChanged(route=route)
    )


def test_one_filter_for_data_center_and_home_region() -> None:
    clock = EmulationClock(EPOCH, 1.0, 0.0, wall=FakeWall(0.0))
    follower = LinkFollower(DC, HOME, clock)
    updates = []
    follower.on_update(updates.append)
    assert follower.up() is None and follower.stale()  # nothing heard: unknown, no route
    assert follower.apply(changed(1, make_route(EPOCH, dc="mdc-other"))) is None
    assert follower.apply(changed(2, make_route(EPOCH, region="eastus"))) is None
    assert follower.route is None and updates == [] and follower.last_sequence == 2
    follower.apply(changed(3, make_route(EPOCH)))
    assert follower.up() is True and not follower.stale()
    assert [u.kind for u in updates] == ["route_changed"] and updates[0].route.first_satellite_index == 7


def test_a_route_expires_after_its_slot_plus_grace_then_the_link_is_down() -> None:
    wall = FakeWall(0.0)
    clock = EmulationClock(EPOCH, 10.0, 0.0, wall=wall)  # 10x: 15 emulated s = 1.5 wall s
    follower = LinkFollower(DC, HOME, clock)
    follower.apply(changed(1, make_route(EPOCH, slot_s=15.0)))
    expires = clock.to_wall(EPOCH + 15.0 * (1 + GRACE_SLOTS)) + STALE_AFTER_S
    assert follower.expires_at == pytest.approx(expires)
    wall.now = expires - 1e-6
    assert follower.up() is True and not follower.stale()
    wall.now = expires + 1e-6
    assert follower.up() is False and follower.stale() and follower.expired()
    follower.apply(changed(2, make_route(clock.now(), slot_s=15.0)))  # links speaks again
    assert follower.up() is True and not follower.stale()


def test_terminal_and_mdc_views_of_the_link_expire_at_the_same_instant() -> None:
    """Issue 16: the mdc reported a stale link as up while the terminal already said stale."""
    wall = FakeWall(100.0)
    clock = EmulationClock(EPOCH, 1.0, 100.0, wall=wall)
    settings = Settings.from_env("terminal", {"SKYHAUL_DATA_CENTER_ID": DC})
    dish = EmulatedLink(clock=wall)
    feed = RouteFeed(settings, clock, dish)
    watcher = LinkWatcher(LinkFollower(DC, HOME, clock))
    changes = []
    watcher.on_change(changes.append)

    event = changed(1, make_route(clock.now(), slot_s=15.0))
    feed.follower.apply(event)
    watcher.apply(event)
    assert feed.follower.expires_at == watcher.follower.expires_at
    expires = feed.follower.expires_at

    wall.now = expires - 1e-6  # past the grace the dish already holds the route as expired...
    assert dish.down_reason() is DownReason.ROUTE_EXPIRED
    assert not feed.stale and watcher.up and watcher.view.satellite_index == 7  # ...but not stale
    wall.now = expires + 1e-6
    assert feed.stale  # the terminal: route_stale, NOT_SERVING
    view = watcher.view
    assert not view.up and view.reason == STALE_REASON and view.satellite_index == -1
    assert view.since_unix == pytest.approx(clock.now())
    assert [c.up for c in changes] == [False] and view.last_event_sequence == 1

    event = changed(2, make_route(clock.now(), slot_s=15.0))
    feed.follower.apply(event)
    watcher.apply(event)
    assert not feed.stale and dish.is_up() and watcher.up and [c.up for c in changes] == [False, True]


def test_when_the_satellite_sets_before_the_slot_ends_dish_and_mdc_go_down_together() -> None:
    """The route's delay samples turn NaN (372 sets): the dish holds traffic from that instant on.
    The data center's view must end at the same instant from the route alone, not only once the
    links service's link_status for it arrives (late or lost, the view stayed up for the stale grace
    and the data center synced into the dead link, its span saying link_up=false over 372)."""
    wall = FakeWall(100.0)
    clock = EmulationClock(EPOCH, 15.0, 100.0, wall=wall)  # the seed scenario's speed: 1 s wall a slot
    settings = Settings.from_env("terminal", {"SKYHAUL_DATA_CENTER_ID": DC})
    dish = EmulatedLink(clock=wall)
    feed = RouteFeed(settings, clock, dish)
    watcher = LinkWatcher(LinkFollower(DC, HOME, clock))
    changes = []
    watcher.on_change(changes.append)

    route = make_route(clock.now(), slot_s=15.0)
    route.first_satellite_index = 372
    route.delay_samples_ms[:] = [20.0] * 6 + [float("nan")] * 10  # sets 6 emulated s into the slot
    event = changed(1, route)
    feed.follower.apply(event)
    watcher.apply(event)
    sets_at = clock.to_wall(clock.now() + 6.0)
    assert watcher.follower.ends_at == pytest.approx(sets_at)

    wall.now = sets_at - 1e-6
    assert dish.is_up() and watcher.up and watcher.view.satellite_index == 372
    wall.now = sets_at + 1e-6
    assert dish.down_reason() is DownReason.ROUTE_EXPIRED
    view = watcher.view
    assert not view.up and view.reason == SET_REASON and view.satellite_index == -1
    assert watcher.follower.up() is False and not watcher.follower.stale()  # ended, not stale
    assert [c.up for c in changes] == [False]

    event = changed(2, make_route(clock.now() + 9.0, slot_s=15.0))  # the next slot, a new satellite
    feed.follower.apply(event)
    watcher.apply(event)
    assert dish.is_up() and watcher.up and watcher.follower.ends_at is None
    assert [c.up for c in changes] == [False, True]


def test_a_link_never_named_stays_assumed_up_at_the_mdc_however_long() -> None:
    wall = FakeWall(0.0)
    watcher = LinkWatcher(LinkFollower(DC, HOME, EmulationClock(EPOCH, 1.0, 0.0, wall=wall)))
    wall.now = 1e9
    assert watcher.up and not watcher.view.known  # no route came: nothing can expire


async def test_the_mdc_hears_of_the_expiry_without_another_event() -> None:
    # A real loop and wall clock: the watcher must wake by itself when the route expires.
    start = time.time()
    clock = EmulationClock(EPOCH, 100.0, start)  # the 1 s slot + grace pass in 0.02 wall s
    watcher = LinkWatcher(LinkFollower(DC, HOME, clock))
    watcher.apply(changed(1, make_route(clock.now(), slot_s=1.0)))
    assert watcher.up
    down = asyncio.create_task(watcher.wait_down())
    await asyncio.wait_for(down, 10)
    assert watcher.view.reason == STALE_REASON
    assert time.time() >= watcher.follower.expires_at  # never before the expiry
