"""An asyncio event loop whose timers keep sub-millisecond time.

asyncio rounds a selector timeout up to whole milliseconds for ``epoll_wait``, so a timer can fire
up to 1 ms late. The terminal's relay schedules every delivery with ``loop.call_at`` and needs its
timers to fire within the kernel's own wake-up latency: run it on ``new_event_loop()``, e.g. with
``run(main())`` or ``asyncio.Runner(loop_factory=new_event_loop)``.
"""

from __future__ import annotations

import asyncio
import select
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_FD_SETSIZE = 1024

if hasattr(selectors, "EpollSelector"):

    class PreciseSelector(selectors.EpollSelector):
        """An epoll selector whose timeouts have microsecond resolution.

        Waiting on the epoll descriptor itself with ``select()`` (whose timeout is a timeval) and
        then collecting the events with a zero timeout keeps wake-ups within the kernel's own
        latency instead of rounding them up to the next millisecond.
        """

        def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            if timeout is not None and timeout > 0 and self._selector.fileno() < _FD_SETSIZE:
                select.select([self._selector], [], [], timeout)
                timeout = 0
            return super().select(timeout)

    def new_event_loop() -> asyncio.AbstractEventLoop:
        """An asyncio loop with precise timers, for a process that shapes traffic in time."""
        return asyncio.SelectorEventLoop(PreciseSelector())

else:  # pragma: no cover - non-Linux platforms keep their default loop (timers to about 1 ms)

    def new_event_loop() -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a precise loop (Python 3.11 has no ``loop_factory`` on ``asyncio.run``)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


__all__ = ["new_event_loop", "run"]
