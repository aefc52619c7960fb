"""The link model of a route, as the terminal applies it: the same ``core.latency`` function the links
service used for the route's samples and predictions, evaluated here from the route's parameters.

Design: the route carries the model's *parameters* (``Route.terminal_model``: the path kind's
profile, the scenario seed, the terminal id, slot timing), not a dense table of samples. The
terminal evaluates ``core.latency.terminal_samples`` once per 10 ms jitter tick of the slot (at the
tick's middle, where access + offset + jitter are constant) and adds the reconfiguration spike
analytically at the packet's own time, so the delay applied at any instant is the model's value at
that instant: a run, a ``PredictRoutes`` and a replay of the same scenario and seed agree exactly
(the floor between the route's 1 s samples is interpolated linearly: microseconds). A replayed
trace (``Route.replay``) is a step function already: the probes' RTTs from their send times on.

Everything the model adds goes on the uplink (see ``shaping.LinkProfile``): a round trip then takes
the model's RTT at its start. Loss: per direction 1 - sqrt(1 - p), so a round trip is lost with
the model's probability p (1 where a replayed probe was lost).
"""

from __future__ import annotations

import math

import numpy as np

from skyhaul.contract.link_model_codec import terminal_model_from_proto
from skyhaul.core.latency import replay_lookup, terminal_samples
from skyhaul.runtime.clock import EmulationClock, to_unix
from skyhaul.v1 import route_pb2


def _seconds(d) -> float:
    return d.seconds + d.nanos * 1e-9


def _floor_rtt_ms(route: route_pb2.Route, t: np.ndarray) -> np.ndarray:
    """The route's round-trip floor at emulated times t, interpolated as the terminal does."""
    samples = np.asarray(route.delay_samples_ms, dtype=float)
    if samples.size == 0:
        return np.full(t.shape, 2.0 * route.one_way_delay_ms)
    finite = np.isfinite(samples)
    cut = int(np.argmin(finite)) if not finite.all() else samples.size
    samples = samples[: max(cut, 1)] if cut else np.array([route.one_way_delay_ms])
    start = to_unix(route.samples_start) if route.HasField("samples_start") else to_unix(route.at)
    step = _seconds(route.samples_step) or 1.0
    return 2.0 * np.interp(t, start + step * np.arange(samples.size), samples)


def _per_direction(p: np.ndarray) -> np.ndarray:
    return 1.0 - np.sqrt(np.clip(1.0 - p, 0.0, 1.0))


def link_model_fields(route: route_pb2.Route, clock: EmulationClock) -> dict:
    """``LinkProfile`` fields (``extra_times``, ``uplink_extra_s``, ``loss``, ``spike``) that apply the
    route's link model; empty for a route without one (propagation only, or an older links service)."""
    if not route.available or not route.HasField("slot"):
        return {}
    slot_start, slot_end = to_unix(route.slot.start), to_unix(route.slot.end)
    if route.HasField("replay"):
        replay = route.replay
        times = to_unix(replay.samples_start) + np.asarray(replay.offset_s, dtype=float)
        if times.size == 0:
            return {}
        rtt, lost = replay_lookup(times, replay.rtt_ms, replay.lost, times)
        extra_ms = rtt - _floor_rtt_ms(route, times)
        return {
            "extra_times": [clock.to_wall(t) for t in times],
            "uplink_extra_s": (extra_ms / 1e3).tolist(),
            "loss": _per_direction(np.where(lost, 1.0, 0.0)).tolist(),
        }
    if not route.HasField("terminal_model") or route.terminal_model.mode != "calibrated":
        return {}
    params, seed, terminal_id, laser = terminal_model_from_proto(route.terminal_model)
    tick = params.jitter_tick_s
    starts = slot_start + tick * np.arange(int(math.ceil((slot_end - slot_start) / tick - 1e-9)))
    middles = starts + 0.5 * tick
    model = terminal_samples(middles, 0.0, params, seed=seed, terminal_id=terminal_id, laser=laser)
    profile = params.profile(laser)
    extra_ms = model.access_ms + model.offset_ms + model.jitter_ms
    fields = {
        "extra_times": [clock.to_wall(t) for t in starts],
        "uplink_extra_s": (extra_ms / 1e3).tolist(),
        "loss": _per_direction(model.loss_probability).tolist(),
    }
    if profile.spike_height_ms > 0:
        fields["spike"] = (
            clock.to_wall(slot_start),
            profile.spike_height_ms / 1e3,
            clock.wall_delay(profile.spike_delay_s),
            clock.wall_delay(profile.spike_decay_s),
        )
    return fields


def model_rtt_ms(route: route_pb2.Route, clock: EmulationClock, t_unix) -> np.ndarray:
    """The round trip the terminal applies for probes sent at emulated times t (floor + the model's
    additions as ``LinkProfile`` evaluates them), for tests and tools that check the data plane."""
    from skyhaul.terminal.shaping import Direction, LinkProfile

    t = np.atleast_1d(np.asarray(t_unix, dtype=float))
    fields = link_model_fields(route, clock)
    profile = LinkProfile(available=True, delays_s=(0.0,), **fields)
    floor = _floor_rtt_ms(route, t)
    extra = np.array([profile.direction_delay_at(Direction.UPLINK, clock.to_wall(x)) for x in t]) * 1e3
    return floor + extra


__all__ = ["link_model_fields", "model_rtt_ms"]
