"""One emulation clock for all services: scenario epoch + (wall - start) x speed.

A speed above 1 compresses the schedule (slots, passes, outages); packet physics on the data
plane (delays, rates) stays in wall time. Every query RPC may pass an explicit time instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2

CLOCK_KEY_PREFIX = "skyhaul.v1.clock:"


@dataclass(frozen=True)
class EmulationClock:
    epoch_unix: float
    speed: float
    start_wall: float
    wall: Callable[[], float] = field(default=time.time, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"clock speed must be > 0, got {self.speed}")

    def now(self) -> float:
        """Emulated Unix time now."""
        return self.to_emulated(self.wall())

    def to_emulated(self, wall_unix: float) -> float:
        return self.epoch_unix + (wall_unix - self.start_wall) * self.speed

    def to_wall(self, emulated_unix: float) -> float:
        return self.start_wall + (emulated_unix - self.epoch_unix) / self.speed

    def wall_delay(self, emulated_seconds: float) -> float:
        """Wall seconds that pass while `emulated_seconds` elapse on this clock."""
        return emulated_seconds / self.speed

    def resolve(self, stamp: timestamp_pb2.Timestamp | None, present: bool | None = None) -> float:
        """An explicit protobuf time if the request set one, else now."""
        if stamp is not None and (present if present is not None else (stamp.seconds or stamp.nanos)):
            return to_unix(stamp)
        return self.now()


def to_unix(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.seconds + stamp.nanos * 1e-9


def to_timestamp(unix: float) -> timestamp_pb2.Timestamp:
    seconds = int(unix // 1)
    nanos = int(round((unix - seconds) * 1e9))
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


async def shared_start(redis_url: str, scenario_name: str, proposed_wall: float) -> float:
    """Agree on one clock start through Redis: the first service to ask sets it (SET NX)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        key = CLOCK_KEY_PREFIX + scenario_name
        await client.set(key, repr(proposed_wall), nx=True)
        value = await client.get(key)
        return float(value)
    finally:
        await client.aclose()
