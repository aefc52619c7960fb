"""The terminal: the data center's satellite dish as a TCP relay that applies the current route's
one-way delay, rate and outages in each direction (see ``relay`` and ``shaping``)."""

from skyhaul.terminal.relay import (
    DirectionStats,
    TerminalRelay,
    TerminalStats,
)
from skyhaul.terminal.shaping import (
    Direction,
    DirectionShaper,
    DownReason,
    EmulatedLink,
    LinkProfile,
    Overrides,
    TokenBucket,
)

__all__ = [
    "Direction",
    "DirectionShaper",
    "DirectionStats",
    "DownReason",
    "EmulatedLink",
    "LinkProfile",
    "Overrides",
    "TerminalRelay",
    "TerminalStats",
    "TokenBucket",
]
