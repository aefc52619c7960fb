"""What every service process builds before serving: its settings and the shared emulation clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path

from redis.exceptions import RedisError

from skyhaul.runtime.clock import EmulationClock, shared_start
from skyhaul.runtime.settings import Settings

log = logging.getLogger(__name__)

CLOCK_FILE = "clock-start.json"  # in the service's data dir: survives a restart of the service or of Redis


def _persisted_start(data_dir: Path, settings: Settings) -> float | None:
    try:
        saved = json.loads((data_dir / CLOCK_FILE).read_text())
        scenario = settings.scenario
        if saved["epoch_unix"] == scenario.epoch_unix and saved["speed"] == scenario.speed:
            return float(saved["start_wall"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _persist_start(data_dir: Path, settings: Settings, start: float) -> None:
    scenario = settings.scenario
    record = {"scenario": scenario.name, "epoch_unix": scenario.epoch_unix, "speed": scenario.speed}
    tmp = data_dir / f".{CLOCK_FILE}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):  # a read-only data dir only loses the hint, not the clock
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({**record, "start_wall": start}))
        tmp.replace(data_dir / CLOCK_FILE)


async def make_clock(settings: Settings) -> EmulationClock:
    """SKYHAUL_CLOCK_START when set (skyhaul up sets it, from its run dir); else agree on one
    through Redis, proposing the start this service persisted before, so a restart of the service
    or a Redis restarted empty continues the same clock instead of starting a new one."""
    scenario = settings.scenario
    start = settings.clock_start
    if start is None:
        persisted = _persisted_start(settings.data_dir, settings)
        proposed = persisted if persisted is not None else time.time()
        try:
            start = await asyncio.wait_for(shared_start(settings.redis_url, scenario.name, proposed), 5.0)
        except (OSError, TimeoutError, ConnectionError, RedisError) as exc:
            log.warning(
                "no shared clock start (Redis unreachable: %s); using %s",
                exc,
                "the persisted one" if persisted is not None else "now",
            )
            start = proposed
        if start != persisted:
            _persist_start(settings.data_dir, settings, start)
    return EmulationClock(scenario.epoch_unix, scenario.speed, start)
