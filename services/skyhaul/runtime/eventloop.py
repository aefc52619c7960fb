"""An asyncio event loop whose timers keep sub-millisecond time.

asyncio rounds a selector timeout up to whole milliseconds for ``epoll_wait``, so a timer can fire
up to 1 ms late. The terminal's relay schedules every delivery with ``loop.call_at`` and needs its
timers to fire within the kernel's own wake-up latency: run it on ``new_event_loop()``, e.g. with
``run(main())`` or ``asyncio.Runner(loop_factory=new_event_loop)``. The kernel also lets a sleep
overrun by the thread's timer slack (50 µs by default): ``new_event_loop()`` sets the calling
thread's (the one that runs the loop) to 1 µs.
"""

from __future__ import annotations

import asyncio
import ctypes
import select
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_FD_SETSIZE = 1024
_PR_SET_TIMERSLACK = 29
PRECISE_TIMER_SLACK_NS = 1000


def tighten_timer_slack() -> bool:
    """Let the kernel overrun this thread's sleeps by 1 µs instead of 50 µs (per thread, Linux
    only; real-time threads have no slack anyway). Returns whether the kernel agreed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_TIMERSLACK, PRECISE_TIMER_SLACK_NS, 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - no prctl on this platform
        return False


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
        """An asyncio loop with precise timers, for a process that shapes traffic in time. Call
        it on the thread that will run the loop (``asyncio.Runner`` does): the slack is that
        thread's."""
        tighten_timer_slack()
        return asyncio.SelectorEventLoop(PreciseSelector())

else:  # pragma: no cover - non-Linux platforms keep their default loop (timers to about 1 ms)

    def new_event_loop() -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a precise loop (Python 3.11 has no ``loop_factory`` on ``asyncio.run``)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


__all__ = ["new_event_loop", "run", "tighten_timer_slack"]
