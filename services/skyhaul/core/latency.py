"""What a real terminal adds to the space path: latency component by component, and loss.

RTT of a probe sent at t by a terminal, up to the region (or up to the PoP when the region is the PoP)::

    rtt(t) = space(t)                 2 x the route's one-way delay: terminal -> satellite(s) -> gateway
           + terrestrial              2 x (gateway -> PoP fibre + PoP -> region backbone), c / 1.47,
                                      great circle x route factor (``terrestrial_rtt_ms``)
           + access                   fixed share: scheduling frame, processing (per path kind)
           + offset[slot]             drawn at each reconfiguration (a mixture: mostly small, sometimes
                                      a much higher floor for the whole slot)
           + jitter(t)                inside a slot: gamma distributed, redrawn every ``jitter_tick_s``
           + spike(t - slot start)    height x exp(-(dt - delay) / decay) for dt >= delay
    lost(t) = u(t) < loss_base, or loss_boundary within [-before, +after] s of a slot boundary

Slots start at ``slot_offset_s`` past a multiple of ``slot_interval_s`` (Starlink: :12/:27/:42/:57).
A *laser* path (one that uses inter-satellite links) takes the ``laser`` profile, a bent pipe the
``bent_pipe`` one.

Randomness is counter based: every draw is a pure function of (scenario seed, terminal id, stream,
slot index, tick within the slot) through a SplitMix64 mix of a BLAKE2b key — never Python's
``hash()`` (salted per process) — so any subset of sample times, in any order, in any process,
gets bit-identical values: a run, a prediction and a replay agree.

``mode="propagation"`` returns the floor (space + terrestrial) exactly, with no loss.

Defaults (``STARLINK``) are fitted by ``skyhaul.core.calibrate`` (see ``docs/link-model.md``):

- bent pipe: Victoria BC (48.43, -123.37) -> Seattle PoP, pooled: LENS dish traces of
  clarkzjw/LEOLiveStreaming ``bent_pipe_victoria_5/_2_latency.csv`` (2024-09-10, 2024-12-18, 120 000
  replies) and clarkzjw/LEOViz 2025-04-15 ``ping -D`` (5 008 probes); floor from starlink-gen1
  through the Bellingham WA gateway (community map 2023-10-10) plus Bellingham -> Seattle fibre.
  Loss only from the 2025 log (the others carry no sequence numbers): 9 of 5 008, none near a
  boundary. Fit: access 3.72 ms; offset low Exp(3.59 ms), high 16.7 % at 5.49 ms + Exp(23.7 ms),
  kept at a reconfiguration with 0.15; jitter gamma(1.96, 5.16 ms) (mean 10.1 ms); spike 57.2 ms
  from 0.04 s decaying with 0.078 s; loss 0.18 %, no boundary excess.
- laser: Seychelles (-4.68, 55.49) -> Frankfurt PoP over ISLs (clarkzjw/LEONetEM
  ``ping-example-isl.txt``, 2024-08-12, 10 337 probes, 3.26 % lost, 97 % of them within 0.5 s of a
  boundary); floor from starlink-gen1 +grid, shortest-path policy, Frankfurt (Usingen) gateway.
  Fit: access 41.2 ms; offset high 90 % at 21.5 ms + Exp(17.0 ms), low Exp(0); kept with 0.15;
  jitter gamma(2.05, 4.15 ms); spike 266 ms from 0.32 s (the probes before are lost) decaying with
  0.11 s; loss 0.19 % base, 90 % from 0.20 s before to 0.35 s after a boundary. Ten slots only:
  the laser figures are the least certain.

Published context (not fitted here): Huston 2024 (potaroo ispcol 2024-05 "TCP and Starlink"):
minimum latency changes every 15 s, mean jitter 6.7 ms, 1-2 % loss unrelated to congestion;
SpaceX March 2024: US peak-hour median 33 ms, p99 < 65 ms.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.special import gammaincinv

from skyhaul.core.constants import C_KM_S, FIBRE_INDEX
from skyhaul.core.ground import great_circle_km

MODES = ("calibrated", "propagation")


@dataclass(frozen=True)
class PathProfile:
    """What a terminal adds on one kind of path (bent pipe or laser). Times in ms unless named _s."""

    access_ms: float = 0.0
    offset_low_mean_ms: float = 0.0
    offset_high_prob: float = 0.0
    offset_high_min_ms: float = 0.0
    offset_high_mean_ms: float = 0.0  # mean excess above offset_high_min_ms
    # Chance that a reconfiguration keeps the previous slot's offset (same satellite and gateway kept):
    # real per-slot minima come in runs, so most boundary steps are small while the spread is wide.
    offset_keep_prob: float = 0.0
    jitter_shape: float = 1.0
    jitter_scale_ms: float = 0.0
    spike_height_ms: float = 0.0
    spike_delay_s: float = 0.0
    spike_decay_s: float = 0.05
    loss_base: float = 0.0
    loss_boundary: float = 0.0
    loss_before_s: float = 0.0
    loss_after_s: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "access_ms",
            "offset_low_mean_ms",
            "offset_high_min_ms",
            "offset_high_mean_ms",
            "jitter_scale_ms",
            "spike_height_ms",
            "spike_delay_s",
            "loss_before_s",
            "loss_after_s",
        ):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"link model: {name} must be a finite number >= 0, got {value}")
        for name in ("jitter_shape", "spike_decay_s"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"link model: {name} must be > 0, got {value}")
        for name in ("offset_high_prob", "offset_keep_prob", "loss_base", "loss_boundary"):
            value = getattr(self, name)
            if not np.isfinite(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"link model: {name} must be a probability in [0, 1], got {value}")

    @property
    def jitter_mean_ms(self) -> float:
        return self.jitter_shape * self.jitter_scale_ms

    @property
    def offset_mean_ms(self) -> float:
        p = self.offset_high_prob
        return (1 - p) * self.offset_low_mean_ms + p * (self.offset_high_min_ms + self.offset_high_mean_ms)


@dataclass(frozen=True)
class LatencyParams:
    """The whole terminal model. ``mode='propagation'`` keeps today's floor (no additions, no loss)."""

    mode: str = "calibrated"
    bent_pipe: PathProfile = field(default_factory=PathProfile)
    laser: PathProfile = field(default_factory=PathProfile)
    # Terrestrial segments (fibre at c / 1.47 over great circle x factor).
    gateway_pop_route_factor: float = 1.5
    backbone_route_factor: float = 1.5
    slot_interval_s: float = 15.0
    slot_offset_s: float = 12.0
    jitter_tick_s: float = 0.01
    source: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"link_model: {self.mode!r} is not one of {', '.join(MODES)}")
        for name in ("gateway_pop_route_factor", "backbone_route_factor"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 1.0:
                raise ValueError(f"link model: {name} must be >= 1, got {value}")
        for name in ("slot_interval_s", "jitter_tick_s"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"link model: {name} must be > 0, got {value}")
        if self.jitter_tick_s > self.slot_interval_s:
            raise ValueError("link model: jitter_tick_s must not exceed the slot interval")

    def profile(self, laser: bool) -> PathProfile:
        return self.laser if laser else self.bent_pipe

    def with_profile(self, laser: bool, profile: PathProfile) -> LatencyParams:
        return replace(self, laser=profile) if laser else replace(self, bent_pipe=profile)


# Fitted by skyhaul.core.calibrate to the traces named in the module docstring (see docs/link-model.md).
STARLINK_BENT_PIPE = PathProfile(
    access_ms=3.72,
    offset_low_mean_ms=3.59,
    offset_high_prob=0.167,
    offset_high_min_ms=5.49,
    offset_high_mean_ms=23.7,
    offset_keep_prob=0.15,
    jitter_shape=1.96,
    jitter_scale_ms=5.16,
    spike_height_ms=57.2,
    spike_delay_s=0.04,
    spike_decay_s=0.078,
    loss_base=0.0018,
    loss_boundary=0.0018,
    loss_before_s=0.0,
    loss_after_s=0.0,
)
STARLINK_LASER = PathProfile(
    access_ms=41.2,
    offset_low_mean_ms=0.0,
    offset_high_prob=0.9,
    offset_high_min_ms=21.5,
    offset_high_mean_ms=17.0,
    offset_keep_prob=0.15,
    jitter_shape=2.05,
    jitter_scale_ms=4.15,
    spike_height_ms=266.0,
    spike_delay_s=0.32,
    spike_decay_s=0.110,
    loss_base=0.0019,
    loss_boundary=0.90,
    loss_before_s=0.20,
    loss_after_s=0.35,
)
STARLINK = LatencyParams(
    bent_pipe=STARLINK_BENT_PIPE,
    laser=STARLINK_LASER,
    source="fitted to the Victoria (bent pipe) and Seychelles (laser) traces, see docs/link-model.md",
)
PROPAGATION = LatencyParams(mode="propagation", source="propagation floor only")

# Other constellations: no public trace of their terminals to fit, so their default is the floor
# (documented in docs/link-model.md); a scenario may give its own parameters.
_CONSTELLATION_DEFAULTS: dict[str, LatencyParams] = {"starlink": STARLINK}


def default_params(constellation: str) -> LatencyParams:
    """Defaults for a constellation (preset or catalogue name): Starlink ones fitted, others the floor."""
    name = constellation.lower()
    for prefix, params in _CONSTELLATION_DEFAULTS.items():
        if name.startswith(prefix):
            return params
    return PROPAGATION


# ------------------------------------------------------------------------------- terrestrial part


def fibre_rtt_ms(distance_km, route_factor: float = 1.0):
    """RTT over fibre laid along a great circle of ``distance_km`` times ``route_factor``."""
    return 2e3 * np.asarray(distance_km, dtype=float) * route_factor * FIBRE_INDEX / C_KM_S


def terrestrial_rtt_ms(
    gateway_lat_deg,
    gateway_lon_deg,
    pop_lat_deg,
    pop_lon_deg,
    region_lat_deg=None,
    region_lon_deg=None,
    params: LatencyParams = STARLINK,
):
    """RTT of gateway -> PoP fibre plus PoP -> region backbone (omit the region to stop at the PoP)."""
    rtt = fibre_rtt_ms(
        great_circle_km(gateway_lat_deg, gateway_lon_deg, pop_lat_deg, pop_lon_deg),
        params.gateway_pop_route_factor,
    )
    if region_lat_deg is not None:
        rtt = rtt + fibre_rtt_ms(
            great_circle_km(pop_lat_deg, pop_lon_deg, region_lat_deg, region_lon_deg),
            params.backbone_route_factor,
        )
    return rtt


# ----------------------------------------------------------------------------- counter-based RNG

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_STREAMS = {"offset-pick": 1, "offset-size": 2, "jitter": 3, "loss": 4, "offset-keep": 5}
# How far back a kept offset is followed; a run longer than this redraws (keep 0.5: 2**-31 odds).
OFFSET_LOOKBACK_SLOTS = 32


def stream_key(seed: int, terminal_id: str, stream: str) -> np.uint64:
    """A 64-bit key from (seed, terminal, stream): BLAKE2b, stable across processes and platforms."""
    digest = hashlib.blake2b(f"{int(seed)}\x1f{terminal_id}\x1f{_STREAMS[stream]}".encode(), digest_size=8)
    return np.uint64(int.from_bytes(digest.digest(), "little"))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniforms(key: np.uint64, slot, tick=0) -> np.ndarray:
    """Uniform draws in (0, 1) as a pure function of (key, slot index, tick): random access, vectorised."""
    slot_u = np.asarray(slot, dtype=np.int64).astype(np.uint64)
    tick_u = np.asarray(tick, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(_splitmix64(key ^ _splitmix64(slot_u)) + tick_u)
    # 53 random bits, offset by half a unit so the result is never exactly 0 or 1.
    return ((mixed >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


# ---------------------------------------------------------------------------------------- model


@dataclass(frozen=True, eq=False)
class TerminalSamples:
    """RTT samples and their parts (ms), and which probes are lost. NaN floor = no route (outage)."""

    t_unix: np.ndarray
    rtt_ms: np.ndarray  # NaN where lost or no route
    floor_ms: np.ndarray  # space + terrestrial
    access_ms: np.ndarray
    offset_ms: np.ndarray
    jitter_ms: np.ndarray
    spike_ms: np.ndarray
    loss_probability: np.ndarray
    lost: np.ndarray

    @property
    def model_rtt_ms(self) -> np.ndarray:
        """The RTT a probe would see had it not been lost (NaN only in outage)."""
        return self.floor_ms + self.access_ms + self.offset_ms + self.jitter_ms + self.spike_ms


def slot_position(t_unix, params: LatencyParams) -> tuple[np.ndarray, np.ndarray]:
    """(slot index, seconds since the slot start)."""
    shifted = np.asarray(t_unix, dtype=float) - params.slot_offset_s
    index = np.floor(shifted / params.slot_interval_s).astype(np.int64)
    return index, shifted - index * params.slot_interval_s


def offset_source_slots(slots, keep_prob: float, seed: int, terminal_id: str) -> np.ndarray:
    """The slot whose draw each slot's offset is: itself, or (kept with ``keep_prob`` at each
    reconfiguration) the last slot before it that redrew. A pure function of the slot index."""
    slots = np.asarray(slots, dtype=np.int64)
    if keep_prob <= 0 or slots.size == 0:
        return slots
    unique, inverse = np.unique(slots, return_inverse=True)
    back = unique[:, None] - np.arange(OFFSET_LOOKBACK_SLOTS)[None, :]
    redraw = uniforms(stream_key(seed, terminal_id, "offset-keep"), back) >= keep_prob
    redraw[:, -1] = True
    source = unique - np.argmax(redraw, axis=1)
    return source[inverse].reshape(slots.shape)


def slot_offsets_ms(slots, profile: PathProfile, seed: int, terminal_id: str) -> np.ndarray:
    """The per-slot offset of each slot index (mixture: Exp(low mean), or high min + Exp(high mean),
    drawn at the slot's source slot, see ``offset_source_slots``)."""
    source = offset_source_slots(slots, profile.offset_keep_prob, seed, terminal_id)
    pick = uniforms(stream_key(seed, terminal_id, "offset-pick"), source)
    size = uniforms(stream_key(seed, terminal_id, "offset-size"), source)
    exp = -np.log(size)
    high = pick < profile.offset_high_prob
    return np.where(
        high, profile.offset_high_min_ms + profile.offset_high_mean_ms * exp, profile.offset_low_mean_ms * exp
    )


def loss_probability(t_unix, params: LatencyParams, laser=False) -> np.ndarray:
    """Probability that a probe sent at t is lost (base rate, or the boundary rate near a boundary)."""
    t = np.asarray(t_unix, dtype=float)
    if params.mode == "propagation":
        return np.zeros(t.shape)
    _, pos = slot_position(t, params)
    laser = np.broadcast_to(np.asarray(laser, dtype=bool), t.shape)
    out = np.empty(t.shape)
    for flag in (False, True):
        sel = laser == flag
        if not sel.any():
            continue
        prof = params.profile(flag)
        near = (pos[sel] < prof.loss_after_s) | (pos[sel] >= params.slot_interval_s - prof.loss_before_s)
        out[sel] = np.where(near, prof.loss_boundary, prof.loss_base)
    return out


def terminal_samples(
    t_unix,
    floor_ms,
    params: LatencyParams,
    *,
    seed: int,
    terminal_id: str,
    laser=False,
) -> TerminalSamples:
    """The model at times t (any order, any subset) given the floor there (space + terrestrial RTT, ms;
    NaN = no route). ``laser`` (bool or per sample) selects the path profile."""
    t = np.asarray(t_unix, dtype=float)
    floor = np.broadcast_to(np.asarray(floor_ms, dtype=float), t.shape).astype(float)
    if not np.all(np.isfinite(t)):
        raise ValueError("link model: sample times must be finite")
    zeros = np.zeros(t.shape)
    if params.mode == "propagation":
        no_loss = np.zeros(t.shape, dtype=bool)
        return TerminalSamples(t, floor.copy(), floor, zeros, zeros, zeros, zeros, zeros.copy(), no_loss)
    laser = np.broadcast_to(np.asarray(laser, dtype=bool), t.shape)
    slots, pos = slot_position(t, params)
    ticks = np.floor(pos / params.jitter_tick_s + 1e-9).astype(np.int64)
    access, offset, jitter, spike = (np.zeros(t.shape) for _ in range(4))
    u_jitter = uniforms(stream_key(seed, terminal_id, "jitter"), slots, ticks)
    for flag in (False, True):
        sel = laser == flag
        if not sel.any():
            continue
        prof = params.profile(flag)
        access[sel] = prof.access_ms
        offset[sel] = slot_offsets_ms(slots[sel], prof, seed, terminal_id)
        if prof.jitter_scale_ms > 0:
            jitter[sel] = prof.jitter_scale_ms * gammaincinv(prof.jitter_shape, u_jitter[sel])
        since = pos[sel] - prof.spike_delay_s
        spike[sel] = np.where(
            since >= 0, prof.spike_height_ms * np.exp(-np.maximum(since, 0.0) / prof.spike_decay_s), 0.0
        )
    p_loss = loss_probability(t, params, laser)
    lost = uniforms(stream_key(seed, terminal_id, "loss"), slots, ticks) < p_loss
    total = floor + access + offset + jitter + spike
    rtt = np.where(lost, np.nan, total)
    return TerminalSamples(t, rtt, floor, access, offset, jitter, spike, p_loss, lost & np.isfinite(floor))


def expected_loss(
    t_start_unix: float, t_end_unix: float, params: LatencyParams, laser=False, step_s=0.01
) -> float:
    """Mean loss probability over a window (what a prediction reports as expected loss)."""
    if t_end_unix <= t_start_unix:
        raise ValueError("window end must be after its start")
    t = np.arange(t_start_unix, t_end_unix, step_s)
    return float(loss_probability(t, params, laser).mean())


# ------------------------------------------------------------------------------------ trace replay


@dataclass(frozen=True, eq=False)
class ReplayTrace:
    """A recorded trace on the scenario's clock: probe k (trace time tau_k) is at tau_k + ``shift_s``;
    with ``loop`` the trace repeats every ``period_s`` (its span rounded up to whole slots, so the
    slot phase is kept). The RTT at t is the last probe's at or before t (held; before the first
    probe, the first's), lost when that probe was lost. Everyone evaluates ``at``: the links service
    for predictions and route samples, the terminal for the data plane."""

    t_unix: np.ndarray  # trace times (s), increasing
    rtt_ms: np.ndarray  # NaN = lost
    shift_s: float
    loop: bool = True
    period_s: float = 0.0
    source: str = ""

    @classmethod
    def build(
        cls,
        t_unix,
        rtt_ms,
        *,
        epoch_unix: float,
        shift_s: float | None = None,
        loop: bool = True,
        slot_interval_s: float = 15.0,
        source: str = "",
    ) -> ReplayTrace:
        """``shift_s`` None: the whole number of slots that brings the trace's start to the epoch or
        just after it (slot phase kept)."""
        t = np.asarray(t_unix, dtype=float)
        rtt = np.asarray(rtt_ms, dtype=float)
        if t.ndim != 1 or t.shape != rtt.shape or t.size < 2 or np.any(np.diff(t) < 0):
            raise ValueError("replay: needs at least 2 probes with increasing times")
        if not np.isfinite(rtt).any():
            raise ValueError("replay: the trace has no replies")
        if shift_s is None:
            shift_s = float(np.ceil((epoch_unix - t[0]) / slot_interval_s) * slot_interval_s)
        span = t[-1] - t[0]
        period = float(np.floor(span / slot_interval_s + 1.0) * slot_interval_s)
        return cls(t, rtt, float(shift_s), bool(loop), period, source)

    def at(self, t_unix) -> tuple[np.ndarray, np.ndarray]:
        """(RTT ms, lost) at scenario times t; RTT is the held value even where lost."""
        tau = np.asarray(t_unix, dtype=float) - self.shift_s
        if self.loop:
            tau = self.t_unix[0] + np.mod(tau - self.t_unix[0], self.period_s)
        index = np.clip(np.searchsorted(self.t_unix, tau, side="right") - 1, 0, self.t_unix.size - 1)
        rtt = self.rtt_ms[index]
        lost = ~np.isfinite(rtt)
        return self._held()[index], lost

    def _held(self) -> np.ndarray:
        """RTTs with each lost probe's value taken from the last reply before it (the first reply's
        before any)."""
        ok = np.isfinite(self.rtt_ms)
        last = np.maximum.accumulate(np.where(ok, np.arange(ok.size), -1))
        first = int(np.argmax(ok))
        return self.rtt_ms[np.where(last >= 0, last, first)]

    def window(self, start_unix: float, end_unix: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The probes that decide the RTT over [start, end) on the scenario's clock, as (scenario
        times, held RTT ms, lost): the one in force at the start, then every later one. ``at`` over
        these (``replay_lookup``) gives exactly what ``at`` gives over the whole trace."""
        if end_unix <= start_unix:
            raise ValueError("replay window end must be after its start")
        first_rtt, first_lost = self.at(np.array([start_unix]))
        tau0 = start_unix - self.shift_s
        held = self._held()
        times, rtts, losts = [np.array([start_unix])], [first_rtt], [first_lost]
        if self.loop:
            k0 = np.floor((tau0 - self.t_unix[0]) / self.period_s)
            k1 = np.floor((end_unix - self.shift_s - self.t_unix[0]) / self.period_s)
            copies = np.arange(k0, k1 + 1)
        else:
            copies = np.array([0.0])
        for k in copies:
            t = self.t_unix + self.shift_s + k * self.period_s
            keep = (t > start_unix) & (t < end_unix)
            times.append(t[keep])
            rtts.append(held[keep])
            losts.append(~np.isfinite(self.rtt_ms[keep]))
        return np.concatenate(times), np.concatenate(rtts), np.concatenate(losts)


def replay_lookup(times, rtt_ms, lost, t) -> tuple[np.ndarray, np.ndarray]:
    """(RTT ms, lost) at t from a ``ReplayTrace.window``: the last probe at or before t."""
    times = np.asarray(times, dtype=float)
    index = np.clip(np.searchsorted(times, np.asarray(t, dtype=float), side="right") - 1, 0, times.size - 1)
    return np.asarray(rtt_ms, dtype=float)[index], np.asarray(lost, dtype=bool)[index]
