"""What the links service reads off a core ``LinkModel``: slots, routes with samples, assignments.

Shared by the query RPCs and the live engine. Every function here runs in a worker thread and
uses the model it is given exclusively (a ``LinkModel`` is not thread-safe).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from skyhaul.core.elements import ElementSet
from skyhaul.core.geometry import GroundPoints
from skyhaul.core.ground import GroundSegment
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.timeline import Decision, LinkModel
from skyhaul.links import codec
from skyhaul.v1 import route_pb2


def new_model(elements: ElementSet, ground: GroundSegment, config: SchedulerConfig) -> LinkModel:
    """A LinkModel with its own sgp4 records (sgp4 releases the GIL and its records hold
    per-call state, so two threads must not share them); satellites are named ``sat-<index>``."""
    own = dataclasses.replace(elements)
    names = tuple(codec.sat_label(i) for i in range(own.size))
    return LinkModel.from_elements(own, ground, config, sat_names=names)


def slot_of(config: SchedulerConfig, t: float) -> tuple[int, float, float]:
    """(index, start, end) of the slot in force at t; in continuous mode the step starting at t."""
    if config.slotted:
        index = config.slot_index(t)
        start = config.slot_start(t)
        return int(index), float(start), float(start) + config.slot_interval_s
    index = int(math.floor(t / config.sample_step_s + 1e-9))
    return index, float(t), float(t) + config.sample_step_s


def step_start(config: SchedulerConfig, t: float) -> float:
    """Where the live engine's decision for t is taken: the slot start, or t's step on the
    sample grid in continuous mode."""
    if config.slotted:
        return float(config.slot_start(t))
    return math.floor(t / config.sample_step_s + 1e-9) * config.sample_step_s


def route_message(lm: LinkModel, data_center_id: str, region_id: str, t: float) -> route_pb2.Route:
    """The route at t with delay samples across its slot (raises UnknownId for unknown ids)."""
    route = lm.route(data_center_id, region_id, t)
    times, delay_s = lm.delay_samples(data_center_id, region_id, t)
    cfg = lm.config
    slot = codec.slot_to_proto(*slot_of(cfg, t))
    return codec.route_to_proto(route, slot, times, delay_s, cfg.sample_step_s, cfg.handover_stall_ms)


def _look_angles(lm: LinkModel, t: float, rows: list[int], sats: list[int]) -> np.ndarray:
    """(elevation, azimuth, range) per (ground node, satellite) pair; NaN where sat < 0. Shape (3, P)."""
    out = np.full((3, len(rows)), np.nan)
    pick = [k for k, s in enumerate(sats) if s >= 0]
    if not pick:
        return out
    r = lm.state_vectors(t)[0]
    lat, lon, alt = lm.ground.geodetic(t)
    rows_a = np.array([rows[k] for k in pick])
    sats_a = np.array([sats[k] for k in pick])
    el, az, rng = GroundPoints(lat[rows_a], lon[rows_a], alt[rows_a]).look_angles(r[sats_a])
    diag = np.arange(len(pick))
    out[:, pick] = np.stack([el[diag, diag], az[diag, diag], rng[diag, diag]])
    return out


def assignments(lm: LinkModel, t: float, decision: Decision) -> list[route_pb2.Assignment]:
    """Which satellite each terminal and gateway uses at t.

    A terminal: its held satellite while that is above its mask, else -1 (an outage). A gateway:
    one entry per satellite that carries a route down to it; a gateway that carries no route shows
    the highest satellite above its mask (-1 when there is none).
    """
    gs = lm.ground
    n_t = gs.n_terminals
    vis = lm.visible(t)
    rows: list[int] = []
    sats: list[int] = []
    ids: list[tuple[str, int]] = []
    for k, term in enumerate(gs.terminals):
        s = int(decision.terminal_sat[k])
        rows.append(k)
        sats.append(s if s >= 0 and vis[k, s] else -1)
        ids.append((term.id, route_pb2.GROUND_KIND_TERMINAL))
    paths = decision.routes.paths
    gateway_of = decision.routes.gateway
    last_sat = paths[..., -3] if paths.shape[-1] >= 3 else np.full(gateway_of.shape, -1)
    for g, gw in enumerate(gs.gateways):
        row = n_t + g
        used = sorted({int(s) for s in last_sat[gateway_of == g] if s >= 0 and vis[row, s]})
        if not used:
            visible = np.flatnonzero(vis[row])
            if visible.size:
                el = lm.elevations(t, np.array([row]), visible)[0]
                used = [int(visible[int(np.argmax(el))])]
            else:
                used = [-1]
        for s in used:
            rows.append(row)
            sats.append(s)
            ids.append((gw.id, route_pb2.GROUND_KIND_GATEWAY))
    angles = _look_angles(lm, t, rows, sats)
    return [
        codec.assignment(gid, kind, s, *(0.0 if np.isnan(v) else v for v in angles[:, k]))
        for k, ((gid, kind), s) in enumerate(zip(ids, sats, strict=True))
    ]


def outage_reason(lm: LinkModel, terminal: int, region_id: str, t: float, decision: Decision) -> str:
    """Why a data center has no route at t, in words."""
    gs = lm.ground
    mask = float(gs.min_elevation_deg[terminal])
    held = int(decision.terminal_sat[terminal])
    if held < 0:
        if not lm.visible(t)[terminal].any():
            return f"no satellite above {mask:g} deg"
        if lm.config.isl == "none":
            return f"no satellite above {mask:g} deg that a gateway also sees"
        return f"no path to a gateway of {region_id}"
    el = float(lm.elevations(t, np.array([terminal]), np.array([held]))[0, 0])
    if not el >= mask:
        return f"{codec.sat_label(held)} set below {mask:g} deg before the slot ended"
    return f"no path from {codec.sat_label(held)} to a gateway of {region_id}"


def up_reason(route: route_pb2.Route) -> str:
    sats = [h.to_id for h in route.hops if h.segment == route_pb2.SEGMENT_KIND_UPLINK]
    via = sats[0] if sats else "a satellite"
    return f"route via {via} and {route.gateway_id or 'a gateway'}"


__all__ = ["assignments", "new_model", "outage_reason", "route_message", "slot_of", "step_start", "up_reason"]
