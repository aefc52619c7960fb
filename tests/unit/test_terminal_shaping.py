"""The terminal's link rules without sockets: delay interpolation, FIFO leave times, the shared
token buckets, holding traffic while the link is down, overrides and their expiry, outage time.

Time is simulated: the link gets an injected clock, and the shapers are driven with explicit
monotonic readings (here the same numbers as the wall clock)."""

import math
import re

import numpy as np
import pytest

from skyhaul.runtime.errors import InvalidArgument
from skyhaul.terminal.shaping import (
    MIN_PIECE_BYTES,
    Direction,
    DirectionShaper,
    DownReason,
    EmulatedLink,
    LinkProfile,
    Overrides,
    TokenBucket,
)


class ManualClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def drain(shaper: DirectionShaper, backlog: int, start: float, clock: ManualClock | None = None):
    """Feed ``backlog`` bytes through ``shaper`` as fast as it allows, stepping simulated time to
    each retry it asks for. Returns [(bytes, leave time)] per piece."""
    now = start
    pieces = []
    while backlog > 0:
        if clock is not None:
            clock.now = now
        nbytes, when = shaper.plan(backlog, now, now)
        if nbytes == 0:
            assert when > now and math.isfinite(when), "a hold must name a later retry time here"
            now = when
            continue
        pieces.append((nbytes, when))
        backlog -= nbytes
    return pieces


# --- profiles -----------------------------------------------------------------------------------


def test_delay_is_interpolated_linearly_between_samples_and_clamped_outside():
    delays = [0.010, 0.030, 0.020, 0.025]
    profile = LinkProfile(delays_s=delays, start_unix=1_000.0, step_s=2.0)
    sample_times = 1_000.0 + 2.0 * np.arange(len(delays))
    rng = np.random.default_rng(5)
    for at in rng.uniform(990.0, 1_015.0, 500):
        assert profile.delay_at(at) == pytest.approx(np.interp(at, sample_times, delays), abs=1e-15)
    assert profile.delay_at(1_001.0) == pytest.approx(0.020)  # halfway between 10 and 30 ms
    assert profile.delay_at(1_006.0) == pytest.approx(0.025)  # the last sample exactly


def test_a_single_sample_is_a_constant_delay():
    profile = LinkProfile.constant(0.042)
    assert {profile.delay_at(at) for at in (-1e9, 0.0, 1.7e9)} == {0.042}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"delays_s": []}, "delays_s"),
        ({"delays_s": [0.01, -0.002]}, "delays_s[1]"),
        ({"delays_s": [float("nan")]}, "delays_s[0]"),
        ({"step_s": 0}, "step_s"),
        ({"uplink_bps": 0}, "uplink_bps"),
        ({"downlink_bps": -5}, "downlink_bps"),
        ({"valid_until": float("inf")}, "valid_until"),
        ({"stalls": [(1.0, -0.1)]}, "stalls[0].duration_s"),
        ({"stalls": [(1.0,)]}, "stalls[0]"),
        ({"available": "yes"}, "available"),
    ],
)
def test_a_bad_profile_is_refused_with_the_field_named(fields, named):
    with pytest.raises(InvalidArgument, match="^" + re.escape(named) + ":"):
        LinkProfile(**fields)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"extra_delay_s": -0.01}, "extra_delay_s"),
        ({"rate_cap_bps": 0}, "rate_cap_bps"),
        ({"outage_until": "x"}, "outage_until"),
    ],
)
def test_bad_overrides_are_refused_with_the_field_named(fields, named):
    with pytest.raises(InvalidArgument, match=f"^{named}"):
        Overrides(**fields)


def test_bad_input_to_the_link_changes_nothing():
    clock = ManualClock()
    profile = LinkProfile.constant(0.02)
    link = EmulatedLink(profile, clock=clock)
    link.override_delay(0.005)
    before = link.overrides
    with pytest.raises(InvalidArgument):
        link.set_profile("not a profile")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        link.override_delay(-1.0)
    with pytest.raises(InvalidArgument):
        link.cap_rate(1e6, duration_s=0)
    with pytest.raises(InvalidArgument):
        link.force_outage(-3)
    assert link.profile is profile
    assert link.overrides == before


# --- FIFO leave times ---------------------------------------------------------------------------


def test_leave_times_never_decrease_when_the_delay_shrinks_and_no_byte_leaves_early():
    # The delay falls from 120 ms to 20 ms within 50 ms (a route change): later bytes would
    # overtake earlier ones if each simply left at entry + delay.
    link = EmulatedLink(
        LinkProfile(delays_s=[0.120, 0.020, 0.020], start_unix=0.0, step_s=0.05), clock=ManualClock(0.0)
    )
    shaper = DirectionShaper(link, Direction.UPLINK)
    rng = np.random.default_rng(11)
    entries = np.sort(rng.uniform(0.0, 0.2, 400))
    leaves = []
    for entered in entries:
        nbytes, leave = shaper.plan(int(rng.integers(1, 100_000)), entered, entered)
        assert nbytes > 0
        assert leave >= entered + link.delay_s(entered) - 1e-12
        leaves.append(leave)
    assert np.all(np.diff(leaves) >= 0)
    assert any(
        leave > entered + link.delay_s(entered) + 1e-3 for entered, leave in zip(entries, leaves, strict=True)
    )


def test_with_a_steady_delay_bytes_leave_exactly_one_delay_after_they_entered():
    link = EmulatedLink(LinkProfile.constant(0.035), clock=ManualClock(0.0))
    shaper = DirectionShaper(link, Direction.DOWNLINK)
    for entered in (0.0, 0.001, 0.5, 0.5, 3.25):
        nbytes, leave = shaper.plan(1_000, entered, entered)
        assert (nbytes, leave) == (1_000, pytest.approx(entered + 0.035))


def test_the_extra_delay_override_adds_to_the_route_delay_until_it_expires():
    clock = ManualClock(100.0)
    link = EmulatedLink(LinkProfile.constant(0.030), clock=clock)
    link.override_delay(0.050, duration_s=10.0)
    shaper = DirectionShaper(link, Direction.UPLINK)
    assert shaper.plan(10, 105.0, 105.0)[1] == pytest.approx(105.080)
    assert shaper.plan(10, 111.0, 111.0)[1] == pytest.approx(111.030)
    assert link.delay_s(111.0) == pytest.approx(0.030)


# --- rates --------------------------------------------------------------------------------------


def test_the_token_bucket_serialises_at_the_rate_with_a_small_burst():
    bucket = TokenBucket(burst_s=0.002)
    rate = 50e6
    ends = [bucket.reserve(10_000, now=5.0, rate_bps=rate) for _ in range(1_000)]
    # From idle, one burst (2 ms) of credit, then exactly the rate.
    assert ends[0] == pytest.approx(5.0 - 0.002 + 10_000 * 8 / rate)
    assert np.diff(ends) == pytest.approx(10_000 * 8 / rate)
    # Idle time beyond the burst is not banked.
    assert bucket.reserve(10_000, now=100.0, rate_bps=rate) == pytest.approx(
        100.0 - 0.002 + 10_000 * 8 / rate
    )


@pytest.mark.parametrize("rate", [1e6, 50e6, 370e6])
def test_a_backlog_leaves_at_the_link_rate(rate):
    link = EmulatedLink(
        LinkProfile.constant(0.02, uplink_bps=rate, downlink_bps=rate), clock=ManualClock(0.0)
    )
    shaper = DirectionShaper(link, Direction.UPLINK)
    backlog = int(rate / 8 * 2.0)  # two seconds' worth
    pieces = drain(shaper, backlog, start=0.0)
    sizes = [size for size, _ in pieces]
    leaves = [leave for _, leave in pieces]
    assert sum(sizes) == backlog
    assert max(sizes) <= max(MIN_PIECE_BYTES, rate * link.burst_s / 8)
    achieved = backlog * 8 / (leaves[-1] - 0.02)
    assert achieved == pytest.approx(rate, rel=0.01)


def test_connections_of_one_direction_share_its_bucket_and_the_directions_are_independent():
    rate = 20e6
    link = EmulatedLink(LinkProfile.constant(0.0, uplink_bps=rate, downlink_bps=rate), clock=ManualClock(0.0))
    shapers = [
        DirectionShaper(link, Direction.UPLINK),
        DirectionShaper(link, Direction.UPLINK),
        DirectionShaper(link, Direction.DOWNLINK),
    ]
    sent = [0, 0, 0]
    now = 0.0
    while now < 1.0:  # every shaper always has a backlog; take turns, one piece each
        retries = []
        for index, shaper in enumerate(shapers):
            nbytes, when = shaper.plan(10**9, now, now)
            if nbytes:
                sent[index] += nbytes
            else:
                retries.append(when)
        if len(retries) == len(shapers):
            now = min(retries)
    assert (sent[0] + sent[1]) * 8 / now == pytest.approx(rate, rel=0.02)
    assert sent[2] * 8 / now == pytest.approx(rate, rel=0.02)  # the downlink has its own bucket


def test_the_rate_cap_override_applies_to_both_directions_until_it_expires():
    clock = ManualClock(0.0)
    link = EmulatedLink(LinkProfile.constant(0.0, uplink_bps=40e6, downlink_bps=200e6), clock=clock)
    link.cap_rate(100e6, duration_s=5.0)
    assert link.rate_bps(Direction.UPLINK, 1.0) == 40e6  # the route is slower than the cap
    assert link.rate_bps(Direction.DOWNLINK, 1.0) == 100e6
    assert link.rate_bps(Direction.DOWNLINK, 5.0) == 200e6
    link.cap_rate(None)
    assert link.rate_bps(Direction.DOWNLINK, 1.0) == 200e6


def test_an_uncapped_link_sends_a_chunk_whole():
    link = EmulatedLink(LinkProfile.constant(0.0), clock=ManualClock(0.0))
    assert DirectionShaper(link, Direction.UPLINK).plan(4 << 20, 1.0, 1.0) == (4 << 20, 1.0)


# --- outages ------------------------------------------------------------------------------------


def test_without_a_route_traffic_is_held_until_the_link_changes():
    clock = ManualClock(0.0)
    link = EmulatedLink(clock=clock)
    shaper = DirectionShaper(link, Direction.UPLINK)
    assert link.down_reason() is DownReason.NO_ROUTE
    assert shaper.plan(100, 0.0, 0.0) == (0, math.inf)
    link.set_profile(LinkProfile.unavailable())
    assert link.down_reason() is DownReason.ROUTE_UNAVAILABLE
    assert shaper.plan(100, 0.0, 0.0) == (0, math.inf)
    assert link.delay_s() is None


def test_a_route_is_applied_until_it_expires_then_the_link_is_down():
    clock = ManualClock(10.0)
    link = EmulatedLink(LinkProfile.constant(0.03, valid_until=25.0), clock=clock)
    assert link.is_up(24.999)
    assert link.down_reason(25.0) is DownReason.ROUTE_EXPIRED
    assert link.next_change(10.0) == 25.0
    assert DirectionShaper(link, Direction.UPLINK).plan(100, 26.0, 26.0) == (0, math.inf)


def test_a_stall_holds_traffic_until_it_ends_and_held_bytes_take_the_delay_of_their_release():
    clock = ManualClock(0.0)
    profile = LinkProfile(delays_s=[0.030, 0.050], start_unix=0.0, step_s=2.0, stalls=[(12.0, 0.040)])
    link = EmulatedLink(profile, clock=clock)
    shaper = DirectionShaper(link, Direction.DOWNLINK)
    assert link.down_reason(12.01) is DownReason.HANDOVER_STALL
    # Monotonic time runs 500 s ahead of wall time here: retries come back in monotonic time.
    assert shaper.plan(100, 512.01, 12.01) == (0, pytest.approx(512.040))
    nbytes, leave = shaper.plan(100, 512.040, 12.040)
    assert (nbytes, leave) == (100, pytest.approx(512.040 + 0.050))


def test_a_forced_outage_holds_traffic_for_its_duration():
    clock = ManualClock(50.0)
    link = EmulatedLink(LinkProfile.constant(0.02), clock=clock)
    link.force_outage(5.0)
    shaper = DirectionShaper(link, Direction.UPLINK)
    assert link.down_reason(52.0) is DownReason.FORCED_OUTAGE
    assert shaper.plan(100, 52.0, 52.0) == (0, pytest.approx(55.0))
    assert shaper.plan(100, 55.0, 55.0) == (100, pytest.approx(55.02))
    link.force_outage(10.0)
    link.force_outage(0)  # ends it early
    assert link.is_up(51.0)


def test_outage_seconds_add_up_every_kind_of_down_time_since_the_link_was_created():
    clock = ManualClock(0.0)
    link = EmulatedLink(clock=clock)  # no route for the first 2 s
    clock.now = 2.0
    link.set_profile(LinkProfile.constant(0.02, valid_until=60.0))
    clock.now = 10.0
    link.force_outage(5.0)  # 10..15
    clock.now = 20.0
    link.set_profile(LinkProfile.unavailable())  # 20..23
    clock.now = 23.0
    link.set_profile(LinkProfile(delays_s=[0.02], stalls=[(30.0, 0.5), (31.0, 0.25)], valid_until=50.0))
    assert link.outage_seconds(40.0) == pytest.approx(2 + 5 + 3 + 0.75)
    # Past valid_until the route has expired: that is down time too, counted up to "now".
    assert link.outage_seconds(55.0) == pytest.approx(2 + 5 + 3 + 0.75 + 5)
    clock.now = 40.0
    link.force_outage(1.0)  # overlapping a live state: 40..41
    assert link.outage_seconds(45.0) == pytest.approx(2 + 5 + 3 + 0.75 + 1)


def test_listeners_hear_every_change_until_they_unsubscribe():
    link = EmulatedLink(clock=ManualClock(0.0))
    heard = []
    unsubscribe = link.subscribe(lambda: heard.append(link.is_up()))
    link.set_profile(LinkProfile.constant(0.01))
    link.force_outage(3.0)
    unsubscribe()
    link.clear_overrides()
    assert heard == [True, False]
