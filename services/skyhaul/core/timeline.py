"""The link model over time: state and routes at a time, and streamed route predictions.

``LinkModel`` ties propagation, visibility, the scheduler, ISLs and routing together:

- A *decision* is taken at the decision time of t (its slot start, or t itself in continuous mode)
  with the geometry then: candidates, assignments, every (terminal, region) path and capacity.
- The state at t evaluates the held paths at t with the satellites where they are at t.
- ``predict`` streams a timeline in bounded chunks. Slotted mode decides once per slot and
  evaluates the slot's samples along the fixed path, vectorised; satellite positions inside a slot
  come from cubic Hermite interpolation of the SGP4 states (position and Earth-fixed velocity) at
  the two slot ends: over 15 s the error is a few centimetres in LEO (a tenth of a picosecond of
  delay), and it saves propagating every satellite at every sample.

Not thread-safe (it caches geometry and decisions): use one per worker thread, or a lock.

RTT is twice the one-way delay along the held path (the return path is the same path: the graph
is symmetric and the assignment holds for the slot).

The terminal model (``latency=``, ``core.latency``): predictions add to the floor what a real
terminal adds (access, per-slot offset, jitter, spike) and report each sample's loss probability,
seeded by (``latency_seed``, terminal id, slot); a path with an ISL hop takes the laser profile.
A data center in ``replays`` takes its recorded trace's RTT instead. Without ``latency`` (or with
``mode='propagation'``) the timeline is the floor, exactly as before.

GSL rule (``gsl_rule=``, ``core.gsl``): Hypatia's slant range instead of the elevation mask for
visibility; satellites below ``min_satellite_altitude_km`` (mean altitude of their elements:
re-entering, orbit raising) are never visible and carry no ISL. Catalogues without plane metadata
get their ISLs from ``IslTopology.for_catalogue`` (``+grid`` inferred, or ``nearest``).

Handovers: the terminal's first-hop satellite changes between two consecutive decisions while a
route exists in both. The configured stall (ms) is reported per handover; at sample steps of a
second or more it does not remove samples, so availability does not include it (``stall_s`` in the
summary does).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from skyhaul.core.constants import C_KM_S
from skyhaul.core.geometry import GroundPoints
from skyhaul.core.ground import GroundSegment
from skyhaul.core.gsl import GslRule, elevation_for_slant_range_deg
from skyhaul.core.isl import GridOptions, IslLinks, IslTopology, mean_altitude_km
from skyhaul.core.latency import LatencyParams, ReplayTrace, terminal_samples
from skyhaul.core.routing import (
    FIBRE,
    Hop,
    NodeLayout,
    PathEvaluation,
    Route,
    StepRoutes,
    evaluate_paths,
    solve_step,
)
from skyhaul.core.scheduler import (
    SchedulerConfig,
    assign,
    candidates,
    elevation_deg,
    remaining_visibility_s,
    visible_mask,
)


def hermite(t, ta: float, tb: float, ra, va, rb, vb):
    """Cubic Hermite interpolation of positions between states (r, v) at ta and tb.

    t (K,), r/v (M, 3) -> (K, M, 3).
    """
    h = tb - ta
    s = ((np.asarray(t, dtype=float) - ta) / h)[:, None, None]
    s2, s3 = s * s, s * s * s
    return (
        (2 * s3 - 3 * s2 + 1) * ra + (s3 - 2 * s2 + s) * h * va + (-2 * s3 + 3 * s2) * rb + (s3 - s2) * h * vb
    )


@dataclass
class Decision:
    """What the scheduler and routing chose at one decision time."""

    t_unix: float
    end_unix: float | None  # slot end (slotted), None (continuous)
    routes: StepRoutes
    terminal_sat: np.ndarray  # (T,) the satellite each terminal is on, -1 none
    allowed_up: np.ndarray  # (T, N)
    allowed_down: np.ndarray  # (Gw, N)
    isl_count: int


@dataclass
class LinkState:
    """Link state at time t (decided at ``decided_at``)."""

    t_unix: float
    decided_at: float
    terminal_sat: np.ndarray  # (T,)
    handover: np.ndarray  # (T,) the terminal's satellite changed at this decision
    delay_s: np.ndarray  # (T, R) one-way at t along the held path, NaN = outage
    capacity_up_mbps: np.ndarray  # (T, R), 0 in outage
    capacity_down_mbps: np.ndarray
    visible_count: np.ndarray  # (T + Gw,) satellites above each ground node's mask at t
    isl_count: int  # ISLs active at the decision
    decision: Decision

    @property
    def available(self) -> np.ndarray:
        return np.isfinite(self.delay_s)


@dataclass
class TimelineChunk:
    """One chunk of a prediction. Arrays are (K, P) for P routes, or (K,) for a single route."""

    t_unix: np.ndarray
    rtt_ms: np.ndarray  # NaN = no route
    capacity_up_mbps: np.ndarray
    capacity_down_mbps: np.ndarray
    first_sat: np.ndarray  # -1 = no route
    handover: np.ndarray  # True at the first sample after a boundary where the terminal's satellite changed
    # The propagation floor (space + terrestrial RTT) and the probability that a packet sent at the
    # sample is lost (without a terminal model rtt_ms is the floor and the loss 0).
    floor_rtt_ms: np.ndarray | None = None
    loss_probability: np.ndarray | None = None

    def route(self, p: int) -> TimelineChunk:
        """The chunk of one route (1-D arrays)."""
        return TimelineChunk(
            self.t_unix,
            self.rtt_ms[:, p],
            self.capacity_up_mbps[:, p],
            self.capacity_down_mbps[:, p],
            self.first_sat[:, p],
            self.handover[:, p],
            None if self.floor_rtt_ms is None else self.floor_rtt_ms[:, p],
            None if self.loss_probability is None else self.loss_probability[:, p],
        )


class LinkModel:
    """Scheduler + ISLs + routing over a propagated constellation and a ground segment."""

    routing_method = "auto"  # core.routing's solve_step method; "per-source" is the reference

    def __init__(
        self,
        propagator,
        ground: GroundSegment,
        config: SchedulerConfig,
        *,
        shell: np.ndarray,
        plane: np.ndarray | None = None,
        slot: np.ndarray | None = None,
        reference_time_unix: float | None = None,
        sat_names: Sequence[str] | None = None,
        cache_size: int | None = None,
        latency: LatencyParams | None = None,
        latency_seed: int = 0,
        replays: dict[str, ReplayTrace] | None = None,
        gsl_rule: GslRule | None = None,
        satellite_usable: np.ndarray | None = None,
        elements=None,
        constellation: str | None = None,
        min_satellite_altitude_km: float = 0.0,
    ) -> None:
        if not isinstance(config, SchedulerConfig):
            raise TypeError("config must be a SchedulerConfig")
        self.propagator = propagator
        self.ground = ground
        self.config = config
        self._shell = np.asarray(shell)
        n = self._shell.size
        self._plane = np.full(n, -1) if plane is None else np.asarray(plane)
        self._slot = np.full(n, -1) if slot is None else np.asarray(slot)
        self.n_sats = n
        self.sat_names = tuple(sat_names) if sat_names is not None else None
        self.layout = NodeLayout(n, ground.n_terminals, ground.n_gateways, len(ground.regions))
        self._reference_time = reference_time_unix
        self._isl: IslTopology | None = None
        lookahead = int(np.ceil(config.lookahead_horizon_s / config.lookahead_step_s)) + 1
        self._cache_size = cache_size or (lookahead + 8)
        self._states: OrderedDict[float, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._decisions: OrderedDict[float, Decision] = OrderedDict()
        self._ground_cache: OrderedDict[float, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._vis_cache: OrderedDict[float, np.ndarray] = OrderedDict()
        self._isl_cache: OrderedDict[float, np.ndarray] = OrderedDict()
        self.latency = latency
        self.latency_seed = int(latency_seed)
        self.replays = dict(replays or {})
        if gsl_rule is not None and not isinstance(gsl_rule, GslRule):
            raise TypeError("gsl_rule must be a GslRule")
        self.gsl_rule = gsl_rule if gsl_rule is not None and gsl_rule.kind == "slant-range" else None
        self._usable = None if satellite_usable is None else np.asarray(satellite_usable, dtype=bool)
        self._elements = elements
        self.constellation = constellation
        self.min_satellite_altitude_km = float(min_satellite_altitude_km)
        self._path_mask = ground.min_elevation_deg
        if self.gsl_rule is not None:
            # Held paths break mid-slot where the range rule would drop them: on a sphere a range is an
            # elevation per altitude, the lowest used altitude giving the most permissive one.
            alt = mean_altitude_km(elements) if elements is not None else np.array([550.0])
            if self._usable is not None and self._usable.any():
                alt = alt[self._usable]
            floor = float(elevation_for_slant_range_deg(self.gsl_rule.max_range_km, float(np.min(alt))))
            self._path_mask = np.full(ground.n_ground, floor)

    @classmethod
    def from_elements(cls, elements, ground: GroundSegment, config: SchedulerConfig, propagator=None, **kw):
        """Build from an orbit-core ``ElementSet`` (shell / plane / slot metadata, epoch)."""
        if propagator is None:
            from skyhaul.core.propagate import Propagator

            propagator = Propagator(elements)
        ref = kw.pop("reference_time_unix", None)
        if ref is None:
            ref = _element_epoch(elements)
        names = kw.pop("sat_names", None)
        if names is None:
            names = getattr(elements, "names", None)
        min_alt = float(kw.get("min_satellite_altitude_km", 0.0))
        if min_alt > 0 and "satellite_usable" not in kw:
            kw["satellite_usable"] = mean_altitude_km(elements) >= min_alt
        kw.setdefault("elements", elements)
        return cls(
            propagator,
            ground,
            config,
            shell=np.asarray(elements.shell),
            plane=getattr(elements, "plane", None),
            slot=getattr(elements, "slot", None),
            reference_time_unix=ref,
            sat_names=names,
            **kw,
        )

    # ---- geometry (cached per time) ------------------------------------------------------------

    def _propagate(self, t: float, with_velocity: bool) -> tuple[np.ndarray, np.ndarray | None]:
        res = self.propagator.ecef(float(t), with_velocity=with_velocity)
        r = np.asarray(res.r_km, dtype=float)
        v = None
        if with_velocity:
            v = np.asarray(getattr(res, "v_km_s", None), dtype=float)
        return r, v

    def state_vectors(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(r, v) of every satellite at t, Earth-fixed km and km/s (LRU cached)."""
        key = float(t)
        hit = self._states.get(key)
        if hit is not None:
            self._states.move_to_end(key)
            return hit
        r, v = self._propagate(key, True)
        self._states[key] = (r, v)
        if len(self._states) > self._cache_size:
            self._states.popitem(last=False)
        return r, v

    def ground_at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(ECEF, up vectors) of every ground node at t."""
        if not self.ground.has_moving:
            key = 0.0
        else:
            key = float(t)
        hit = self._ground_cache.get(key)
        if hit is not None:
            return hit
        val = (self.ground.positions_ecef(t), self.ground.up_vectors(t))
        self._ground_cache[key] = val
        if len(self._ground_cache) > 8:
            self._ground_cache.popitem(last=False)
        return val

    def isl_topology(self, t_hint: float | None = None) -> IslTopology:
        """The +grid (or empty) ISL topology. Its seam is measured from positions at the elements'
        epoch, or — without one — at the first time asked about (``t_hint``)."""
        if self._isl is None and self._catalogue_isl():
            self._isl = catalogue_isl_topology(
                self._elements,
                self.config.isl,
                self.constellation,
                self.min_satellite_altitude_km,
                self.config.isl_min_altitude_km,
            )
        if self._isl is None:
            r_ref = None
            if self.config.isl != "none":
                t_ref = self._reference_time if self._reference_time is not None else t_hint
                r_ref = self._propagate(t_ref, False)[0] if t_ref is not None else None
            self._isl = IslTopology(
                self.config.isl, self._shell, self._plane, self._slot, r_ref, self.config.isl_min_altitude_km
            )
        return self._isl

    def _catalogue_isl(self) -> bool:
        """ISLs from ``IslTopology.for_catalogue``: ``nearest``, or ``+grid`` on elements without
        plane metadata (a TLE catalogue)."""
        if self._elements is None or self.config.isl == "none":
            return False
        return self.config.isl == "nearest" or not np.any(self._plane >= 0)

    def _isl_usable(self, t: float) -> np.ndarray:
        key = float(t)
        hit = self._isl_cache.get(key)
        if hit is None:
            hit = self.isl_topology(key).usable(self.state_vectors(key)[0])
            self._isl_cache[key] = hit
            if len(self._isl_cache) > 3:
                self._isl_cache.popitem(last=False)
        return hit

    def visible(self, t: float) -> np.ndarray:
        """(G, N): satellite above each ground node's mask at t (cached)."""
        key = float(t)
        hit = self._vis_cache.get(key)
        if hit is None:
            r, _ = self.state_vectors(key)
            g, up = self.ground_at(key)
            if self.gsl_rule is not None:
                hit = self.gsl_rule.visible(g, up, r)
            else:
                hit = visible_mask(g, up, r, self.ground.min_elevation_deg)
            if self._usable is not None:
                hit &= self._usable[None, :]
            self._vis_cache[key] = hit
            if len(self._vis_cache) > 3:
                self._vis_cache.popitem(last=False)
        return hit

    def elevations(self, t: float, rows=None, cols=None) -> np.ndarray:
        """Elevation (deg) of satellites ``cols`` from ground nodes ``rows`` at t (all when None)."""
        r, _ = self.state_vectors(t)
        g, up = self.ground_at(t)
        if rows is not None:
            g, up = g[rows], up[rows]
        if cols is not None:
            r = r[cols]
        return elevation_deg(g, up, r)

    def look_angles(self, t: float, rows: Sequence[int], sats: Sequence[int]) -> np.ndarray:
        """(elevation deg, azimuth deg, range km) of satellite ``sats[k]`` seen from ground node
        ``rows[k]`` at t, shape (3, P); NaN where ``sats[k] < 0`` (no satellite)."""
        out = np.full((3, len(rows)), np.nan)
        pick = [k for k, sat in enumerate(sats) if sat >= 0]
        if not pick:
            return out
        r = self.state_vectors(t)[0]
        lat, lon, alt = self.ground.geodetic(t)
        pick_rows = np.array([rows[k] for k in pick])
        pick_sats = np.array([sats[k] for k in pick])
        el, az, rng = GroundPoints(lat[pick_rows], lon[pick_rows], alt[pick_rows]).look_angles(r[pick_sats])
        diag = np.arange(len(pick))
        out[:, pick] = np.stack([el[diag, diag], az[diag, diag], rng[diag, diag]])
        return out

    def serving_satellites(self, t: float, decision: Decision) -> tuple[list[int], list[int]]:
        """Which satellite each ground node uses at t under ``decision``: (ground rows, satellites).

        A terminal (one entry each, in order): its held satellite while that is above its mask,
        else -1 (an outage). Then each gateway: one entry per satellite that carries a route down
        to it and is above its mask; a gateway that carries no route shows its highest satellite
        above the mask (-1 when there is none), so a view of the ground is never empty.
        """
        n_t = self.ground.n_terminals
        vis = self.visible(t)
        rows: list[int] = []
        sats: list[int] = []
        for k in range(n_t):
            held = int(decision.terminal_sat[k])
            rows.append(k)
            sats.append(held if held >= 0 and vis[k, held] else -1)
        paths = decision.routes.paths
        gateway_of = decision.routes.gateway
        # Paths are right-aligned ... sat, gateway, region: the satellite before the gateway.
        last_sat = paths[..., -3] if paths.shape[-1] >= 3 else np.full(gateway_of.shape, -1)
        for g in range(self.ground.n_gateways):
            row = n_t + g
            used = sorted({int(s) for s in last_sat[gateway_of == g] if s >= 0 and vis[row, s]})
            if not used:
                visible = np.flatnonzero(vis[row])
                if visible.size:
                    el = self.elevations(t, np.array([row]), visible)[0]
                    used = [int(visible[int(np.argmax(el))])]
                else:
                    used = [-1]
            rows.extend([row] * len(used))
            sats.extend(used)
        return rows, sats

    # ---- decisions -----------------------------------------------------------------------------

    def _remaining(self, decided_at: float, rows: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """Remaining time above the mask for the allowed (row, sat) pairs, looked ahead from decided_at."""
        cfg = self.config
        cols = np.flatnonzero(allowed.any(axis=0))
        out = np.zeros(allowed.shape)
        if cols.size == 0:
            return out
        k = int(np.ceil(cfg.lookahead_horizon_s / cfg.lookahead_step_s))
        times = decided_at + cfg.lookahead_step_s * np.arange(k + 1)
        elev = np.stack([self.elevations(t, rows, cols) for t in times])
        out[:, cols] = remaining_visibility_s(elev, self.ground.min_elevation_deg[rows], cfg.lookahead_step_s)
        return out

    def _assign(self, policy: str, decided_at: float, rows: np.ndarray, allowed: np.ndarray, demand):
        if policy == "shortest-path":
            return allowed, None
        elev = self.elevations(decided_at, rows)
        remaining = self._remaining(decided_at, rows, allowed) if policy == "longest-visibility" else None
        sel = assign(
            policy,
            elev,
            allowed,
            remaining_s=remaining,
            demand_mbps=demand,
            beam_capacity_mbps=self.config.beam_capacity_mbps,
        )
        one = np.zeros_like(allowed)
        ok = sel >= 0
        one[np.flatnonzero(ok), sel[ok]] = True
        return one, sel

    def decide(self, decided_at: float) -> Decision:
        """The decision taken at ``decided_at``: a slot start in slotted mode (the slot is
        [decided_at, decided_at + interval)), any time in continuous mode. Cached: asking again is free."""
        key = float(decided_at)
        hit = self._decisions.get(key)
        if hit is not None:
            self._decisions.move_to_end(key)
            return hit
        cfg, ground, lay = self.config, self.ground, self.layout
        n_t = ground.n_terminals
        r0, _ = self.state_vectors(key)
        g0, _ = self.ground_at(key)
        vis0 = self.visible(key)
        end = key + cfg.slot_interval_s if cfg.slotted else None
        vis1 = self.visible(end) if end is not None else None
        all_rows = np.arange(ground.n_ground)

        gw_rows = all_rows[n_t:]
        gw_cand = candidates(vis0[n_t:], None if vis1 is None else vis1[n_t:])
        allowed_down, _ = self._assign(cfg.gateway_policy, key, gw_rows, gw_cand, None)

        topo = self.isl_topology(key)
        if topo.pairs.shape[0]:
            # Held through the slot: usable at both ends (the geometry changes little in 15 s).
            ok = self._isl_usable(key)
            if end is not None:
                ok = ok & self._isl_usable(end)
            p = topo.pairs[ok]
            isl = IslLinks(p[:, 0], p[:, 1], np.linalg.norm(r0[p[:, 0]] - r0[p[:, 1]], axis=1))
        else:
            empty = np.zeros(0, dtype=np.int64)
            isl = IslLinks(empty, empty, np.zeros(0))

        # Bent pipe: a terminal's satellite must also be linked to a gateway.
        reach = allowed_down.any(axis=0) if cfg.isl == "none" else np.ones(self.n_sats, dtype=bool)
        term_cand = candidates(vis0[:n_t] & reach, None if vis1 is None else vis1[:n_t] & reach)
        allowed_up, term_sel = self._assign(
            cfg.policy, key, all_rows[:n_t], term_cand, ground.terminal_downlink_mbps
        )
        routes = solve_step(
            key,
            lay,
            r0,
            g0,
            allowed_up,
            allowed_down,
            isl,
            ground.fibre_delay_s,
            ground.gateway_region,
            ground.terminal_uplink_mbps,
            ground.terminal_downlink_mbps,
            ground.gateway_capacity_mbps,
            cfg.beam_capacity_mbps,
            method=self.routing_method,
        )
        if term_sel is None:
            term_sel = self._home_first_hop(routes)
        dec = Decision(key, end, routes, term_sel, allowed_up, allowed_down, len(isl))
        self._decisions[key] = dec
        if len(self._decisions) > 4:
            self._decisions.popitem(last=False)
        return dec

    def _home_first_hop(self, routes: StepRoutes) -> np.ndarray:
        """With shortest-path, the terminal's satellite is its home route's first hop (or, without a
        home region, the first region's route that exists)."""
        out = np.full(self.ground.n_terminals, -1, dtype=np.int64)
        for k, term in enumerate(self.ground.terminals):
            if term.home_region_id is not None:
                out[k] = routes.first_sat[k, self.ground.region_index[term.home_region_id]]
            else:
                got = routes.first_sat[k][routes.first_sat[k] >= 0]
                out[k] = got[0] if got.size else -1
        return out

    def decision_time(self, t: float) -> float:
        return float(self.config.decision_time(t))

    def previous_decision_time(self, decided_at: float) -> float:
        cfg = self.config
        return decided_at - (cfg.slot_interval_s if cfg.slotted else cfg.sample_step_s)

    # ---- evaluation ----------------------------------------------------------------------------

    def _evaluate(
        self, dec: Decision, pair_t: np.ndarray, pair_r: np.ndarray, times: np.ndarray, exact: bool
    ):
        """Held paths of the given (terminal, region) pairs at ``times``."""
        paths = dec.routes.paths[pair_t, pair_r]
        if exact:

            def positions(sats):
                return np.stack([self.state_vectors(t)[0][sats] for t in times])

        else:
            ra, va = self.state_vectors(dec.t_unix)
            rb, vb = self.state_vectors(dec.end_unix)

            def positions(sats):
                return hermite(times, dec.t_unix, dec.end_unix, ra[sats], va[sats], rb[sats], vb[sats])

        if self.ground.has_moving:
            g = self.ground.positions_ecef(times)
            up = self.ground.up_vectors(times)
        else:
            g0, up0 = self.ground_at(times[0])
            g = np.broadcast_to(g0, (len(times),) + g0.shape)
            up = np.broadcast_to(up0, (len(times),) + up0.shape)
        return evaluate_paths(
            paths,
            self.layout,
            positions,
            g,
            up,
            self._path_mask,
            self.ground.fibre_delay_s,
            self.config.isl_min_altitude_km,
        )

    def state_at(self, t_unix: float) -> LinkState:
        """Assignments, held routes evaluated at t, visibility and ISL count."""
        t = float(t_unix)
        decided_at = self.decision_time(t)
        dec = self.decide(decided_at)
        prev = self.decide(self.previous_decision_time(decided_at))
        handover = (
            (dec.terminal_sat >= 0) & (prev.terminal_sat >= 0) & (dec.terminal_sat != prev.terminal_sat)
        )
        n_t, n_r = self.layout.n_terminals, self.layout.n_regions
        tt, rr = np.meshgrid(np.arange(n_t), np.arange(n_r), indexing="ij")
        ev = self._evaluate(dec, tt.ravel(), rr.ravel(), np.array([t]), exact=True)
        delay = ev.delay_s[0].reshape(n_t, n_r)
        up = np.where(np.isfinite(delay), dec.routes.capacity_up_mbps, 0.0)
        down = np.where(np.isfinite(delay), dec.routes.capacity_down_mbps, 0.0)
        vis = self.visible(t).sum(axis=1)
        return LinkState(t, decided_at, dec.terminal_sat, handover, delay, up, down, vis, dec.isl_count, dec)

    def _indices(self, terminal_id: str, region_id: str) -> tuple[int, int]:
        return self.ground.terminal(terminal_id), self.ground.region(region_id)

    def label(self, node: int) -> str:
        kind = int(self.layout.kind(node))
        lay = self.layout
        if kind == 0:
            return self.sat_names[node] if self.sat_names is not None else f"sat-{node}"
        if kind == 1:
            return self.ground.terminals[node - lay.terminal0].id
        if kind == 2:
            return self.ground.gateways[node - lay.gateway0].id
        return self.ground.regions[node - lay.region0].id

    def route(self, terminal_id: str, region_id: str, t_unix: float) -> Route:
        """The held route of one terminal to one region at t, hop by hop."""
        ti, ri = self._indices(terminal_id, region_id)
        t = float(t_unix)
        decided_at = self.decision_time(t)
        dec = self.decide(decided_at)
        prev = self.decide(self.previous_decision_time(decided_at))
        ev = self._evaluate(dec, np.array([ti]), np.array([ri]), np.array([t]), exact=True)
        delay = float(ev.delay_s[0, 0])
        available = bool(np.isfinite(delay))
        padded = dec.routes.paths[ti, ri]
        path = padded[padded >= 0]
        offset = padded.size - path.size  # right-aligned: segment k of path is segment offset + k
        hops = []
        lay = self.layout
        kinds = lay.kind(path)
        names = {(1, 0): "uplink", (0, 0): "isl", (0, 2): "downlink", (2, 3): FIBRE}
        for k in range(len(path) - 1):
            kind = names[(int(kinds[k]), int(kinds[k + 1]))]
            if kind == FIBRE:
                gw = path[k] - lay.gateway0
                km = float(self.ground.fibre_km[gw])
                delay_s = float(self.ground.fibre_delay_s[gw])
            else:
                km = float(ev.segment_km[0, 0, offset + k])
                delay_s = km / C_KM_S
            hops.append(Hop(kind, self.label(path[k]), self.label(path[k + 1]), km, delay_s))
        sats = tuple(int(s) for s in path[kinds == 0])
        gw_idx = int(dec.routes.gateway[ti, ri])
        first = int(dec.routes.first_sat[ti, ri])
        prev_first = int(prev.routes.first_sat[ti, ri])
        return Route(
            terminal_id=terminal_id,
            region_id=region_id,
            t_unix=t,
            available=available,
            one_way_delay_s=delay,
            hops=tuple(hops),
            satellites=sats,
            gateway_id=self.ground.gateways[gw_idx].id if gw_idx >= 0 else None,
            capacity_up_mbps=float(dec.routes.capacity_up_mbps[ti, ri]) if available else 0.0,
            capacity_down_mbps=float(dec.routes.capacity_down_mbps[ti, ri]) if available else 0.0,
            decided_at=decided_at,
            handover=bool(first >= 0 and prev_first >= 0 and first != prev_first),
        )

    def delay_samples(
        self, terminal_id: str, region_id: str, t_unix: float, step_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One-way delay samples along the route held in the slot containing t: (times, delay_s).

        Samples at the slot start + k·step (``sample_step_s`` by default) up to the slot end; NaN
        where the held path is broken. In continuous mode the route holds only at t: one sample.
        """
        ti, ri = self._indices(terminal_id, region_id)
        step = self.config.sample_step_s if step_s is None else float(step_s)
        if not np.isfinite(step) or step <= 0:
            raise ValueError(f"step must be > 0 s, got {step_s}")
        dec = self.decide(self.decision_time(float(t_unix)))
        if dec.end_unix is None:
            times = np.array([dec.t_unix])
            return times, dec.routes.delay_s[ti, ri][None]
        times = dec.t_unix + step * np.arange(int(np.ceil((dec.end_unix - dec.t_unix) / step - 1e-9)))
        ev = self._evaluate(dec, np.array([ti]), np.array([ri]), times, exact=False)
        return times, ev.delay_s[:, 0]

    # ---- prediction ----------------------------------------------------------------------------

    def predict(
        self,
        pairs: Sequence[tuple[str, str]],
        t_start_unix: float,
        t_end_unix: float,
        step_s: float | None = None,
        chunk_samples: int = 3600,
    ) -> Iterator[TimelineChunk]:
        """Stream the timeline of several (terminal_id, region_id) routes over [t_start, t_end).

        Samples at t_start + k·step. Yields chunks of at most ``chunk_samples`` samples, so memory
        does not grow with the window.
        """
        step = self.config.sample_step_s if step_s is None else float(step_s)
        if not np.isfinite(step) or step <= 0:
            raise ValueError(f"step must be > 0 s, got {step_s}")
        if not (np.isfinite(t_start_unix) and np.isfinite(t_end_unix)) or t_end_unix <= t_start_unix:
            raise ValueError(f"window end ({t_end_unix}) must be after its start ({t_start_unix})")
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples must be >= 1, got {chunk_samples}")
        if not pairs:
            raise ValueError("predict needs at least one (terminal, region) pair")
        idx = [self._indices(a, b) for a, b in pairs]
        pair_t = np.array([i for i, _ in idx])
        pair_r = np.array([j for _, j in idx])
        return self._predict(pair_t, pair_r, float(t_start_unix), float(t_end_unix), step, chunk_samples)

    def predict_route(
        self,
        terminal_id: str,
        region_id: str,
        t_start_unix: float,
        t_end_unix: float,
        step_s=None,
        chunk_samples=3600,
    ) -> Iterator[TimelineChunk]:
        """``predict`` for one route, chunks with 1-D arrays (arguments checked at the call)."""
        chunks = self.predict([(terminal_id, region_id)], t_start_unix, t_end_unix, step_s, chunk_samples)
        return (chunk.route(0) for chunk in chunks)

    def _predict(self, pair_t, pair_r, t0, t1, step, chunk_samples) -> Iterator[TimelineChunk]:
        cfg = self.config
        n_samples = int(np.ceil((t1 - t0) / step - 1e-9))
        n_p = pair_t.size
        prev_first: np.ndarray | None = None
        if cfg.slotted:
            first_decision = self.decision_time(t0)
            if first_decision >= t0:  # the first slot starts inside the window: compare with the one before
                prev_first = self.decide(self.previous_decision_time(first_decision)).routes.first_sat[
                    pair_t, pair_r
                ]
        for c0 in range(0, n_samples, chunk_samples):
            times = t0 + step * np.arange(c0, min(n_samples, c0 + chunk_samples))
            k = times.size
            rtt = np.full((k, n_p), np.nan)
            cap_up = np.zeros((k, n_p))
            cap_down = np.zeros((k, n_p))
            first = np.full((k, n_p), -1, dtype=np.int64)
            handover = np.zeros((k, n_p), dtype=bool)
            laser = np.zeros((k, n_p), dtype=bool)
            if cfg.slotted:
                keys = cfg.slot_index(times)
                cuts = np.flatnonzero(np.diff(keys)) + 1
                groups = np.split(np.arange(k), cuts)
            else:
                groups = [np.array([i]) for i in range(k)]
            for grp in groups:
                dec = self.decide(self.decision_time(times[grp[0]]))
                if cfg.slotted:
                    ev: PathEvaluation = self._evaluate(dec, pair_t, pair_r, times[grp], exact=False)
                    delay = ev.delay_s
                else:
                    delay = dec.routes.delay_s[pair_t, pair_r][None, :]
                ok = np.isfinite(delay)
                rtt[grp] = 2e3 * delay
                cap_up[grp] = np.where(ok, dec.routes.capacity_up_mbps[pair_t, pair_r], 0.0)
                cap_down[grp] = np.where(ok, dec.routes.capacity_down_mbps[pair_t, pair_r], 0.0)
                f = dec.routes.first_sat[pair_t, pair_r]
                first[grp] = np.where(ok, f, -1)
                if prev_first is not None:
                    handover[grp[0]] = (f >= 0) & (prev_first >= 0) & (f != prev_first)
                prev_first = f
                if self.latency is not None or self.replays:
                    laser[grp] = self._laser(dec.routes.paths[pair_t, pair_r])
            if self.latency is None and not self.replays:
                yield TimelineChunk(
                    times, rtt, cap_up, cap_down, first, handover, rtt.copy(), np.zeros((k, n_p))
                )
                continue
            floor = rtt
            rtt = np.empty_like(floor)
            loss = np.zeros_like(floor)
            for p in range(n_p):
                rtt[:, p], loss[:, p] = self.terminal_rtt(int(pair_t[p]), times, floor[:, p], laser[:, p])
            yield TimelineChunk(times, rtt, cap_up, cap_down, first, handover, floor, loss)

    def terminal_rtt(
        self, terminal: int, times: np.ndarray, floor_ms: np.ndarray, laser
    ) -> tuple[np.ndarray, np.ndarray]:
        """(RTT ms, loss probability) of a terminal's route at ``times`` given its floor: the replayed
        trace, the terminal model, or the floor itself; NaN where the floor is NaN (no route)."""
        term_id = self.ground.terminals[terminal].id
        replay = self.replays.get(term_id)
        if replay is not None:
            rtt, lost = replay.at(times)
            return np.where(np.isfinite(floor_ms), rtt, np.nan), np.where(lost, 1.0, 0.0)
        if self.latency is None:
            return floor_ms, np.zeros(np.shape(floor_ms))
        samples = terminal_samples(
            times, floor_ms, self.latency, seed=self.latency_seed, terminal_id=term_id, laser=laser
        )
        return samples.model_rtt_ms, samples.loss_probability

    def path_is_laser(self, dec: Decision, terminal: int, region: int) -> bool:
        """The held path uses an inter-satellite link (the laser profile applies)."""
        return bool(self._laser(dec.routes.paths[terminal, region][None])[0])

    def _laser(self, paths: np.ndarray) -> np.ndarray:
        """(P,) paths (P, H) with more than one satellite."""
        return (self.layout.kind(paths) == 0).sum(axis=-1) > 1


def catalogue_isl_topology(
    elements,
    mode: str,
    constellation: str | None = None,
    min_satellite_altitude_km: float = 0.0,
    isl_min_altitude_km: float = 80.0,
) -> IslTopology:
    """ISLs of a catalogue (``+grid`` inferred from the elements, ``nearest``, ``none``), from its
    TEME states at its newest element epoch; ``IslGridError`` names the constellation when ``+grid``
    has no planes to infer."""
    from skyhaul.core.propagate import Propagator

    t_ref = float(np.max(np.asarray(elements.epoch_unix, dtype=float)))
    r, v, _ = Propagator(elements).teme(t_ref)
    options = GridOptions(min_altitude_km=max(min_satellite_altitude_km, 0.0))
    return IslTopology.for_catalogue(
        elements,
        np.asarray(r, dtype=float),
        np.asarray(v, dtype=float),
        mode,
        min_altitude_km=isl_min_altitude_km,
        constellation=constellation,
        grid=options,
    )


def _element_epoch(elements) -> float | None:
    for name in ("epoch_unix", "reference_epoch_unix"):
        value = getattr(elements, name, None)
        if value is not None:
            arr = np.asarray(value, dtype=float)
            return float(np.nanmedian(arr)) if arr.ndim else float(arr)
    return None
