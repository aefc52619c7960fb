"""The link model on the wire (``Route.terminal_model``, ``Route.replay``): written by the links
service, read by the terminal, so both evaluate ``core.latency`` with the same parameters."""

from __future__ import annotations

import numpy as np

from skyhaul.core.latency import LatencyParams, PathProfile
from skyhaul.runtime.clock import to_timestamp
from skyhaul.v1 import route_pb2


def terminal_model_to_proto(
    params: LatencyParams, seed: int, terminal_id: str, laser: bool
) -> route_pb2.TerminalLinkModel:
    """The terminal model's parameters for one route (the profile of its path kind)."""
    profile = params.profile(laser)
    return route_pb2.TerminalLinkModel(
        mode=params.mode,
        seed=int(seed),
        terminal_id=terminal_id,
        laser=bool(laser),
        profile=route_pb2.PathProfile(
            **{name: float(getattr(profile, name)) for name in PathProfile.__dataclass_fields__}
        ),
        slot_interval_s=params.slot_interval_s,
        slot_offset_s=params.slot_offset_s,
        jitter_tick_s=params.jitter_tick_s,
    )


def terminal_model_from_proto(message: route_pb2.TerminalLinkModel) -> tuple[LatencyParams, int, str, bool]:
    """(params, seed, terminal id, laser) back from a route's terminal model (the path kind's profile
    in both slots: only the one of its kind is used)."""
    profile = PathProfile(
        **{name: getattr(message.profile, name) for name in PathProfile.__dataclass_fields__}
    )
    params = LatencyParams(
        mode=message.mode,
        bent_pipe=profile,
        laser=profile,
        slot_interval_s=message.slot_interval_s,
        slot_offset_s=message.slot_offset_s,
        jitter_tick_s=message.jitter_tick_s,
    )
    return params, int(message.seed), message.terminal_id, bool(message.laser)


def replay_to_proto(
    times: np.ndarray, rtt_ms: np.ndarray, lost: np.ndarray, source: str
) -> route_pb2.ReplaySamples:
    message = route_pb2.ReplaySamples(
        offset_s=(np.asarray(times, dtype=float) - float(times[0])).tolist(),
        rtt_ms=np.asarray(rtt_ms, dtype=float).tolist(),
        lost=np.asarray(lost, dtype=bool).tolist(),
        source=source,
    )
    message.samples_start.CopyFrom(to_timestamp(float(times[0])))
    return message


__all__ = ["replay_to_proto", "terminal_model_from_proto", "terminal_model_to_proto"]
