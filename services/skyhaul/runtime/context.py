"""What every service process builds before serving: its settings and the shared emulation clock."""

from __future__ import annotations

import asyncio
import logging
import time

from skyhaul.runtime.clock import EmulationClock, shared_start
from skyhaul.runtime.settings import Settings

log = logging.getLogger(__name__)


async def make_clock(settings: Settings) -> EmulationClock:
    """SKYHAUL_CLOCK_START when set (skyhaul up sets it); else agree on one through Redis."""
    scenario = settings.scenario
    start = settings.clock_start
    if start is None:
        try:
            start = await asyncio.wait_for(shared_start(settings.redis_url, scenario.name, time.time()), 5.0)
        except (OSError, TimeoutError, ConnectionError) as exc:
            log.warning("no shared clock start (Redis unreachable: %s); starting the clock now", exc)
            start = time.time()
    return EmulationClock(scenario.epoch_unix, scenario.speed, start)
