"""Starlink-like satellite assignment: reconfiguration slots and assignment policies.

Slots: the global scheduler re-decides every ``slot_interval_s`` (15 s) at ``slot_offset_s`` (12 s)
past a multiple of the interval counted from the Unix epoch, which for the defaults is seconds 12,
27, 42 and 57 of every UTC minute (Unix time has no leap seconds, so minutes are multiples of 60).
``continuous`` mode re-decides at every evaluation time instead, for comparison.

What is held through a slot: the decision is taken with the geometry at the slot start and the
whole path (terminal's satellite, ISL hops, the gateway's satellite) is held until the next slot
start while the satellites keep moving. A real scheduler knows the orbits, so candidates are the
satellites that stay above the mask for the whole slot; only when a ground node has none does it
fall back to one that is above the mask at the slot start. If such a satellite sets mid-slot, the
link is down until the next slot boundary (no immediate reassignment) — as the real scheduler,
which only acts at slot boundaries. "Above the mask for the whole slot" is tested at both ends of
the slot: a pass's elevation rises then falls, so above at both ends means above in between.

Policies (one satellite per terminal unless ``shortest-path``), ties broken by the lowest
satellite index:
- ``highest-elevation``: the candidate with the highest elevation.
- ``longest-visibility``: the candidate that stays above the mask longest from now (looked ahead
  in coarse steps, refined by linear interpolation of the elevation at the crossing; capped at
  the look-ahead horizon, then highest elevation).
- ``least-loaded``: greedy over terminals in index order; each takes the candidate whose beam has
  the least committed demand (sum of downlink rates of terminals already on it / beam capacity),
  then highest elevation.
- ``shortest-path``: every candidate satellite may carry the route; the routing picks per route.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

MODES = ("slotted", "continuous")
POLICIES = ("highest-elevation", "longest-visibility", "least-loaded", "shortest-path")
ISL_MODES = ("none", "+grid", "nearest")

# Slack on slot arithmetic so a time exactly at a slot start does not fall into the previous slot.
_SLOT_EPS = 1e-9


@dataclass(frozen=True)
class SchedulerConfig:
    """The scenario's ``scheduler:`` section plus the link model's own parameters."""

    mode: str = "slotted"
    slot_interval_s: float = 15.0
    slot_offset_s: float = 12.0
    policy: str = "highest-elevation"
    gateway_policy: str = "shortest-path"
    isl: str = "none"
    handover_stall_ms: float = 0.0
    sample_step_s: float = 1.0
    # Capacity of one satellite's user beam per direction, shared by the terminals on it.
    beam_capacity_mbps: float = 20000.0
    # longest-visibility look-ahead: horizon and coarse step (equal to the slot interval, the
    # look-ahead times are future slot starts, whose geometry is cached and reused).
    lookahead_horizon_s: float = 900.0
    lookahead_step_s: float = 15.0
    isl_min_altitude_km: float = 80.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"scheduler.mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.policy not in POLICIES:
            raise ValueError(f"scheduler.policy: {self.policy!r} is not one of {', '.join(POLICIES)}")
        if self.gateway_policy not in POLICIES:
            raise ValueError(
                f"scheduler.gateway_policy: {self.gateway_policy!r} is not one of {', '.join(POLICIES)}"
            )
        if self.isl not in ISL_MODES:
            raise ValueError(f"scheduler.isl: {self.isl!r} is not one of {', '.join(ISL_MODES)}")
        for name in ("slot_interval_s", "sample_step_s", "beam_capacity_mbps", "lookahead_step_s"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"scheduler.{name}: must be > 0, got {value}")
        if not np.isfinite(self.slot_offset_s):
            raise ValueError(f"scheduler.slot_offset_s: must be a finite number, got {self.slot_offset_s}")
        if not np.isfinite(self.handover_stall_ms) or self.handover_stall_ms < 0:
            raise ValueError(f"scheduler.handover_stall_ms: must be >= 0, got {self.handover_stall_ms}")
        if self.sample_step_s > self.slot_interval_s:
            raise ValueError(
                f"scheduler.sample_step_s: {self.sample_step_s} s is longer than the slot interval "
                f"({self.slot_interval_s} s)"
            )
        if not np.isfinite(self.lookahead_horizon_s) or self.lookahead_horizon_s < self.lookahead_step_s:
            raise ValueError(
                f"scheduler.lookahead_horizon_s: must be >= lookahead_step_s, got {self.lookahead_horizon_s}"
            )
        if not np.isfinite(self.isl_min_altitude_km) or self.isl_min_altitude_km < 0:
            raise ValueError(f"scheduler.isl_min_altitude_km: must be >= 0, got {self.isl_min_altitude_km}")

    @property
    def slotted(self) -> bool:
        return self.mode == "slotted"

    def slot_index(self, t_unix):
        return slot_index(t_unix, self.slot_interval_s, self.slot_offset_s)

    def slot_start(self, t_unix):
        return slot_start(t_unix, self.slot_interval_s, self.slot_offset_s)

    def decision_time(self, t_unix):
        """When the assignment in force at t was decided: its slot start, or t itself when continuous."""
        if self.slotted:
            return self.slot_start(t_unix)
        return np.asarray(t_unix, dtype=float) if np.ndim(t_unix) else float(t_unix)


def _check_interval(interval_s: float) -> None:
    if not np.isfinite(interval_s) or interval_s <= 0:
        raise ValueError(f"slot interval must be > 0 s, got {interval_s}")


def slot_index(t_unix, interval_s: float = 15.0, offset_s: float = 12.0):
    """Index of the slot containing t (slot k spans [offset + k·interval, offset + (k+1)·interval))."""
    _check_interval(interval_s)
    k = np.floor((np.asarray(t_unix, dtype=float) - offset_s) / interval_s + _SLOT_EPS).astype(np.int64)
    return k if k.ndim else int(k)


def slot_start(t_unix, interval_s: float = 15.0, offset_s: float = 12.0):
    """Start (Unix s) of the slot containing t."""
    s = offset_s + np.asarray(slot_index(t_unix, interval_s, offset_s), dtype=float) * interval_s
    return s if s.ndim else float(s)


def slot_bounds(t_unix, interval_s: float = 15.0, offset_s: float = 12.0):
    """(start, end) of the slot containing t."""
    s = slot_start(t_unix, interval_s, offset_s)
    return s, s + interval_s


def sin_elevation(obs_ecef: np.ndarray, obs_up: np.ndarray, sat_ecef: np.ndarray) -> np.ndarray:
    """Sine of the elevation of satellites seen from ground nodes (ECEF + geodetic up vectors).

    obs (..., G, 3), sats (..., N, 3) -> (..., G, N); NaN positions give NaN (never visible).
    Matrix products, no (G, N, 3) temporary: sin(el) = up·(s − o) / |s − o|, with
    |s − o|² = |s|² + |o|² − 2 o·s (the cancellation costs ~1e-14 relative at LEO ranges).
    Visibility and "highest" need no arcsin: the sine is monotonic in the elevation.
    """
    obs = np.asarray(obs_ecef, dtype=float)
    up = np.asarray(obs_up, dtype=float)
    sat_t = np.swapaxes(np.asarray(sat_ecef, dtype=float), -1, -2)  # (..., 3, N)
    height = up @ sat_t
    height -= np.sum(up * obs, axis=-1)[..., None]
    range2 = obs @ sat_t
    range2 *= -2.0
    range2 += np.sum(sat_t * sat_t, axis=-2)[..., None, :]
    range2 += np.sum(obs * obs, axis=-1)[..., None]
    np.maximum(range2, 1e-12, out=range2)
    return height / np.sqrt(range2)


def elevation_deg(obs_ecef: np.ndarray, obs_up: np.ndarray, sat_ecef: np.ndarray) -> np.ndarray:
    """Elevation (degrees) of satellites from ground nodes; shapes as ``sin_elevation``."""
    return np.degrees(np.arcsin(np.clip(sin_elevation(obs_ecef, obs_up, sat_ecef), -1.0, 1.0)))


_CULL_MIN_PAIRS = 200_000
"""Below this many (ground, satellite) pairs the dense test is cheaper than building a tree."""

_CULL_MARGIN_DEG = 1.0
"""Elevation margin of the culling bound: it uses the geocentric horizon, which differs from the
geodetic one (the mask's) by at most 0.2 deg."""

_CULL_MAX_REACH = 0.5
"""Above this reach (as a fraction of the shell's radius: MEO) the cull keeps most pairs: dense."""


def visible_mask(
    obs_ecef: np.ndarray, obs_up: np.ndarray, sat_ecef: np.ndarray, min_elevation_deg
) -> np.ndarray:
    """(…, G, N): satellite above each ground node's mask (degrees in [0, 90), per node (G,)).

    The cheap test for visibility alone: height > 0 and height² ≥ sin²(mask)·range² (no sqrt,
    division or arcsin over the G × N matrix). For a large fleet over a LEO shell (G·N ≥
    200 000, one time) the pairs are culled first: a satellite can be above a node's mask only
    within the slant range that mask allows at the highest satellite's radius, so a KD-tree over
    the satellites yields the few candidates per node and only they get the exact test (same
    result; a node sees tens of a constellation's thousands of satellites).
    """
    obs = np.asarray(obs_ecef, dtype=float)
    up = np.asarray(obs_up, dtype=float)
    sat = np.asarray(sat_ecef, dtype=float)
    mask = np.broadcast_to(np.asarray(min_elevation_deg, dtype=float), obs.shape[:-1])
    if obs.ndim == 2 and sat.ndim == 2 and obs.shape[0] * sat.shape[0] >= _CULL_MIN_PAIRS:
        culled = _visible_culled(obs, up, sat, mask)
        if culled is not None:
            return culled
    return _visible_dense(obs, up, sat, mask)


def _visible_dense(obs: np.ndarray, up: np.ndarray, sat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    sat_t = np.swapaxes(sat, -1, -2)
    height = up @ sat_t
    height -= np.sum(up * obs, axis=-1)[..., None]
    range2 = obs @ sat_t
    range2 *= -2.0
    range2 += np.sum(sat_t * sat_t, axis=-2)[..., None, :]
    range2 += np.sum(obs * obs, axis=-1)[..., None]
    sin2 = np.sin(np.radians(mask)) ** 2
    range2 *= sin2[..., None]
    visible = height > 0
    height *= height
    visible &= height >= range2
    return visible


def _visible_culled(obs: np.ndarray, up: np.ndarray, sat: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """``_visible_dense`` for one time through a KD-tree cull; None when the cull would not pay."""
    out = np.zeros((obs.shape[0], sat.shape[0]), dtype=bool)
    sat_rows = np.flatnonzero(np.isfinite(sat).all(axis=1))  # NaN satellites are never visible
    obs_rows = np.flatnonzero(np.isfinite(obs).all(axis=1) & np.isfinite(up).all(axis=1))
    if sat_rows.size == 0 or obs_rows.size == 0:
        return out
    sats = sat[sat_rows]
    sat_radius = float(np.sqrt(np.max(np.einsum("ij,ij->i", sats, sats))))
    ground = obs[obs_rows]
    ground_radius = np.sqrt(np.einsum("ij,ij->i", ground, ground))
    # Slant range at the (lowered) mask to a satellite at the highest radius: the largest a visible
    # satellite can be away (the range at a given elevation grows with the satellite's radius).
    elevation = np.radians(mask[obs_rows] - _CULL_MARGIN_DEG)
    reach = np.sqrt(np.maximum(sat_radius**2 - (ground_radius * np.cos(elevation)) ** 2, 0.0))
    reach -= ground_radius * np.sin(elevation)
    if float(np.max(reach)) > _CULL_MAX_REACH * sat_radius:
        return None
    near = cKDTree(sats).query_ball_point(ground, reach * (1.0 + 1e-9) + 1e-6, return_sorted=False)
    counts = np.fromiter(map(len, near), dtype=np.intp, count=len(near))
    rows = np.repeat(obs_rows, counts)
    cols = sat_rows[np.fromiter(itertools.chain.from_iterable(near), dtype=np.intp, count=int(counts.sum()))]
    # The dense test's arithmetic, pair by pair.
    o, u, s = obs[rows], up[rows], sat[cols]
    height = np.einsum("ij,ij->i", u, s)
    height -= np.einsum("ij,ij->i", u, o)
    range2 = np.einsum("ij,ij->i", o, s)
    range2 *= -2.0
    range2 += np.einsum("ij,ij->i", s, s)
    range2 += np.einsum("ij,ij->i", o, o)
    range2 *= np.sin(np.radians(mask[rows])) ** 2
    keep = height > 0
    height *= height
    keep &= height >= range2
    out[rows[keep], cols[keep]] = True
    return out


def candidates(visible_now: np.ndarray, visible_end: np.ndarray | None) -> np.ndarray:
    """Satellites a ground node may be given: those above the mask for the whole slot, or — for
    a node that has none — those above it now."""
    if visible_end is None:
        return visible_now
    whole = visible_now & visible_end
    none_whole = ~whole.any(axis=-1, keepdims=True)
    return np.where(none_whole, visible_now, whole)


def remaining_visibility_s(elev_ahead_deg: np.ndarray, min_elevation_deg, step_s: float) -> np.ndarray:
    """Time each satellite stays above the mask, from elevations sampled every ``step_s``.

    elev_ahead_deg: (K, G, N) with K ≥ 2, sample 0 = now. Returns (G, N) seconds, capped at
    (K - 1)·step_s; 0 where not above the mask now. The crossing is located by linear
    interpolation between the last sample above and the first below.
    """
    mask = np.asarray(min_elevation_deg, dtype=float)[:, None]
    above = elev_ahead_deg >= mask  # NaN compares False
    k_count = above.shape[0]
    # First sample index that is below the mask (K when never).
    below = ~above
    first_below = np.where(below.any(axis=0), np.argmax(below, axis=0), k_count)
    remaining = (first_below - 1).astype(float) * step_s
    crossing = (first_below > 0) & (first_below < k_count)
    if np.any(crossing):
        g, n = np.nonzero(crossing)
        kb = first_below[g, n]
        e0 = elev_ahead_deg[kb - 1, g, n]
        e1 = elev_ahead_deg[kb, g, n]
        frac = np.where(np.isfinite(e1) & (e0 > e1), (e0 - mask[g, 0]) / np.where(e0 > e1, e0 - e1, 1.0), 0.0)
        remaining[g, n] += np.clip(frac, 0.0, 1.0) * step_s
    remaining[~above[0]] = 0.0
    return remaining


def assign(
    policy: str,
    elev_deg: np.ndarray,
    allowed: np.ndarray,
    *,
    remaining_s: np.ndarray | None = None,
    demand_mbps: np.ndarray | None = None,
    beam_capacity_mbps: float = 20000.0,
) -> np.ndarray:
    """One satellite per ground node (rows of ``allowed`` (G, N)); -1 where none is allowed.

    Not for ``shortest-path`` (there the route picks). Deterministic: ties go to the lowest index.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown assignment policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if policy == "shortest-path":
        raise ValueError("shortest-path assigns no single satellite: the routing picks among all candidates")
    g_count, n_count = allowed.shape
    has_any = allowed.any(axis=1)
    elev = np.where(allowed, elev_deg, -np.inf)
    if policy == "highest-elevation":
        choice = np.argmax(elev, axis=1)
    elif policy == "longest-visibility":
        if remaining_s is None:
            raise ValueError("longest-visibility needs remaining_s (time above the mask per satellite)")
        # Remaining time first, then elevation (< 1000 so it never outweighs a whole second).
        score = np.where(allowed, np.round(remaining_s, 6) * 1000.0 + elev_deg, -np.inf)
        choice = np.argmax(score, axis=1)
    else:  # least-loaded
        demand = np.ones(g_count) if demand_mbps is None else np.asarray(demand_mbps, dtype=float)
        load = np.zeros(n_count)
        choice = np.zeros(g_count, dtype=np.int64)
        # Greedy in node order: a Python loop over ground nodes (few), vectorised over satellites.
        for g in range(g_count):
            if not has_any[g]:
                continue
            cand = np.flatnonzero(allowed[g])
            committed = load[cand] / beam_capacity_mbps
            order = np.lexsort((cand, -elev_deg[g, cand], np.round(committed, 12)))
            best = cand[order[0]]
            choice[g] = best
            load[best] += demand[g]
    return np.where(has_any, choice, -1).astype(np.int64)
