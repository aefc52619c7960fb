"""The links service's view of a core ``LinkModel``: slots, route messages with their delay samples,
assignments with look angles, and outage reasons in words (the physics stays in the core).

Shared by the query RPCs and the live engine. Every function here runs in a worker thread and
uses the model it is given exclusively (a ``LinkModel`` is not thread-safe).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from skyhaul.core.elements import ElementSet
from skyhaul.core.ground import GroundSegment
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.timeline import Decision, LinkModel
from skyhaul.links import codec
from skyhaul.v1 import route_pb2


def new_model(
    elements: ElementSet, ground: GroundSegment, config: SchedulerConfig, options: dict | None = None
) -> LinkModel:
    """A LinkModel with its own sgp4 records (sgp4 releases the GIL and its records hold
    per-call state, so two threads must not share them); satellites are named ``sat-<index>``.
    ``options``: the scenario's link model (``ground_from_scenario.model_options``)."""
    own = dataclasses.replace(elements)
    names = tuple(codec.sat_label(i) for i in range(own.size))
    return LinkModel.from_elements(own, ground, config, sat_names=names, **(options or {}))


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


def route_message(model: LinkModel, data_center_id: str, region_id: str, t: float) -> route_pb2.Route:
    """The route at t with delay samples across its slot (raises UnknownId for unknown ids)."""
    route = model.route(data_center_id, region_id, t)
    times, delay_s = model.delay_samples(data_center_id, region_id, t)
    config = model.config
    slot_index, slot_start, slot_end = slot_of(config, t)
    slot = codec.slot_to_proto(slot_index, slot_start, slot_end)
    message = codec.route_to_proto(
        route, slot, times, delay_s, config.sample_step_s, config.handover_stall_ms
    )
    add_terminal_model(model, message, data_center_id, region_id, t, times, delay_s, slot_start, slot_end)
    return message


def add_terminal_model(
    model: LinkModel,
    message: route_pb2.Route,
    data_center_id: str,
    region_id: str,
    t: float,
    times: np.ndarray,
    delay_s: np.ndarray,
    slot_start: float,
    slot_end: float,
) -> None:
    """The link model's round trips and loss per sample, and what the terminal needs to apply the
    same model: its parameters (it evaluates ``core.latency`` itself) or the replayed trace's probes."""
    terminal, region = model.ground.terminal(data_center_id), model.ground.region(region_id)
    decision = model.decide(model.decision_time(t))
    laser = model.path_is_laser(decision, terminal, region)
    floor = 2e3 * np.asarray(delay_s, dtype=float)
    rtt, loss = model.terminal_rtt(terminal, np.asarray(times, dtype=float), floor, laser)
    message.rtt_samples_ms.extend(np.asarray(rtt, dtype=float).tolist())
    message.loss_probability.extend(np.asarray(loss, dtype=float).tolist())
    replay = model.replays.get(data_center_id)
    if replay is not None:
        message.replay.CopyFrom(codec.replay_to_proto(*replay.window(slot_start, slot_end), replay.source))
    elif model.latency is not None:
        message.terminal_model.CopyFrom(
            codec.terminal_model_to_proto(model.latency, model.latency_seed, data_center_id, laser)
        )


def assignments(model: LinkModel, t: float, decision: Decision) -> list[route_pb2.Assignment]:
    """Which satellite each terminal and gateway uses at t (``LinkModel.serving_satellites``),
    with its look angles; a node without a satellite shows index -1 and zero angles."""
    rows, sats = model.serving_satellites(t, decision)
    angles = model.look_angles(t, rows, sats)
    ground = model.ground
    out = []
    for k, (row, sat) in enumerate(zip(rows, sats, strict=True)):
        if row < ground.n_terminals:
            node_id, kind = ground.terminals[row].id, route_pb2.GROUND_KIND_TERMINAL
        else:
            node_id, kind = ground.gateways[row - ground.n_terminals].id, route_pb2.GROUND_KIND_GATEWAY
        out.append(codec.assignment(node_id, kind, sat, *(0.0 if np.isnan(v) else v for v in angles[:, k])))
    return out


def outage_reason(model: LinkModel, terminal: int, region_id: str, t: float, decision: Decision) -> str:
    """Why a data center has no route at t, in words."""
    mask = float(model.ground.min_elevation_deg[terminal])
    held = int(decision.terminal_sat[terminal])
    if held < 0:
        if not model.visible(t)[terminal].any():
            return f"no satellite above {mask:g} deg"
        if model.config.isl == "none":
            return f"no satellite above {mask:g} deg that a gateway also sees"
        return f"no path to a gateway of {region_id}"
    el = float(model.elevations(t, np.array([terminal]), np.array([held]))[0, 0])
    if not el >= mask:
        return f"{codec.sat_label(held)} set below {mask:g} deg before the slot ended"
    return f"no path from {codec.sat_label(held)} to a gateway of {region_id}"


def up_reason(route: route_pb2.Route) -> str:
    """Why a data center's route is up, in words: its first satellite and its gateway."""
    sats = [h.to_id for h in route.hops if h.segment == route_pb2.SEGMENT_KIND_UPLINK]
    via = sats[0] if sats else "a satellite"
    return f"route via {via} and {route.gateway_id or 'a gateway'}"


__all__ = ["assignments", "new_model", "outage_reason", "route_message", "slot_of", "step_start", "up_reason"]
