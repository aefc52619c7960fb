"""Fit the terminal model (``skyhaul.core.latency``) to a recorded trace, and compare model and trace.

Given a trace and the propagation floor at its probe times (space + terrestrial RTT for the
trace's location, e.g. from ``LinkModel`` and ``terrestrial_rtt_ms``), on the excess e = RTT - floor:

1. *Access and per-slot offset*: the minimum excess of each well-covered slot is access + offset
   (the minimum of ~1 000 jitter draws is a few hundredths of a ms). Access is the lowest slot
   minimum; the offsets above it are split at ``high_threshold_ms`` into the low component
   (exponential, its mean) and the high one (its share, its minimum, its mean excess). The keep
   probability (a reconfiguration keeps the previous offset) is the one whose simulated steps best
   match (Kolmogorov-Smirnov) the observed offset steps between adjacent slots.
2. *Jitter*: the excess over the slot's minimum, away from the spike (later than ``quiet_after_s``
   in the slot), by the method of moments for a gamma law (on values up to the 99.5th percentile).
3. *Spike*: the median over slots of (RTT - slot median) in fine bins after the slot start; its
   delay is the highest of the first 0.6 s's bins with enough replies (probes before it may be
   lost), height and decay from a least-squares fit of ``h exp(-(dt - delay) / decay)``.
4. *Loss* (when the trace can tell, i.e. it has sequence numbers or empty rows): rates by 50 ms bin
   around the boundary; bins contiguous with the boundary with a rate of 25 % or more (and at least
   3 losses) make the boundary window, the rest is the base rate. Dish exports give only a mean
   drop rate per second: the base rate. Traces without loss information keep the prior's loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import curve_fit, minimize

from skyhaul.core import traces as trace_stats
from skyhaul.core.latency import STARLINK, LatencyParams, PathProfile, TerminalSamples, terminal_samples

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class CalibrationError(ValueError):
    """The trace cannot be fitted (too short, no replies); the message says why."""


@dataclass(frozen=True)
class Comparison:
    """Model vs trace on the figures the model is judged by."""

    quantiles: tuple[float, ...]
    trace_rtt_ms: np.ndarray
    model_rtt_ms: np.ndarray
    trace_steps_ms: np.ndarray  # |change of the per-slot minimum| across boundaries
    model_steps_ms: np.ndarray
    steps_ks: float
    trace_loss: float  # NaN when the trace cannot tell
    model_loss: float
    trace_boundary_loss_share: float
    model_boundary_loss_share: float

    def rows(self) -> list[tuple[str, float, float]]:
        """(figure, trace, model) rows for a side-by-side table."""
        out = [
            (f"RTT p{round(q * 100)} ms", a, b)
            for q, a, b in zip(self.quantiles, self.trace_rtt_ms, self.model_rtt_ms, strict=True)
        ]
        for q in (0.5, 0.9, 1.0):
            label = "max" if q == 1.0 else f"p{round(q * 100)}"
            out.append((f"slot step {label} ms", _q(self.trace_steps_ms, q), _q(self.model_steps_ms, q)))
        out.append(("slot steps KS distance", float("nan"), self.steps_ks))
        out.append(("loss %", 100 * self.trace_loss, 100 * self.model_loss))
        out.append(
            (
                "loss within 0.5 s of a boundary %",
                100 * self.trace_boundary_loss_share,
                100 * self.model_boundary_loss_share,
            )
        )
        return out


def _q(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q)) if values.size else float("nan")


@dataclass(frozen=True)
class Calibration:
    params: LatencyParams
    laser: bool
    comparison: Comparison
    slots_used: int


def _fit_offsets(
    slots: np.ndarray, slot_min_excess: np.ndarray, high_threshold_ms: float
) -> dict[str, float]:
    access = float(slot_min_excess.min())
    offsets = slot_min_excess - access
    high = offsets >= high_threshold_ms
    low = offsets[~high]
    fit = {
        "access_ms": max(access, 0.0),
        "offset_low_mean_ms": float(low.mean()) if low.size else 0.0,
        "offset_high_prob": float(high.mean()),
        "offset_high_min_ms": 0.0,
        "offset_high_mean_ms": 0.0,
    }
    if high.any():
        fit["offset_high_min_ms"] = float(offsets[high].min())
        fit["offset_high_mean_ms"] = float((offsets[high] - offsets[high].min()).mean())
        fit.update(_mixture_mle(offsets, fit))
    # Keep probability: the one whose simulated boundary steps (same mixture, 4 000 slots, fixed
    # seed) are closest in Kolmogorov-Smirnov distance to the observed steps between adjacent slots.
    adjacent = np.diff(slots) == 1
    observed = np.abs(np.diff(offsets))[adjacent]
    if observed.size >= 3:
        rng = np.random.default_rng(0)
        n = 4000
        pick, size, keep_u = rng.random(n), rng.exponential(size=n), rng.random(n)
        draws = np.where(
            pick < fit["offset_high_prob"],
            fit["offset_high_min_ms"] + fit["offset_high_mean_ms"] * size,
            fit["offset_low_mean_ms"] * size,
        )
        best = (np.inf, 0.0)
        for keep in np.linspace(0.0, 0.9, 19):
            source = np.maximum.accumulate(np.where((keep_u >= keep) | (np.arange(n) == 0), np.arange(n), 0))
            steps = np.abs(np.diff(draws[source]))
            best = min(best, (trace_stats.ks_distance(observed, steps), float(keep)))
        fit["offset_keep_prob"] = best[1]
    return fit


def _mixture_mle(offsets: np.ndarray, start: dict[str, float]) -> dict[str, float]:
    """Maximum likelihood of (share, low mean, high mean) with the high component's minimum fixed:
    the split at a threshold counts the low component's tail as high; the likelihood does not."""
    floor = start["offset_high_min_ms"]
    above = offsets >= floor

    def nll(x):
        share = 1.0 / (1.0 + np.exp(-x[0]))
        low, high = np.exp(np.clip(x[1:], -10.0, 10.0))
        with np.errstate(over="ignore", under="ignore"):
            density = (1 - share) * np.exp(-offsets / low) / low + share * np.where(
                above, np.exp(-np.maximum(offsets - floor, 0.0) / high) / high, 0.0
            )
        return -float(np.sum(np.log(np.maximum(density, 1e-300))))

    share0 = min(max(start["offset_high_prob"], 0.02), 0.98)
    x0 = np.array(
        [
            np.log(share0 / (1 - share0)),
            np.log(max(start["offset_low_mean_ms"], 0.05)),
            np.log(max(start["offset_high_mean_ms"], 0.05)),
        ]
    )
    result = minimize(nll, x0, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000})
    if not result.success or nll(result.x) > nll(x0):
        return {}
    share = 1.0 / (1.0 + np.exp(-result.x[0]))
    return {
        "offset_high_prob": float(share),
        "offset_low_mean_ms": float(np.exp(result.x[1])),
        "offset_high_mean_ms": float(np.exp(result.x[2])),
    }


def _fit_jitter(excess_over_slot_min: np.ndarray) -> dict[str, float]:
    # Moments of the values up to the 99.5th percentile: one reply seconds late (a dish export's
    # stalled second) would otherwise set the variance alone.
    values = excess_over_slot_min[excess_over_slot_min <= np.quantile(excess_over_slot_min, 0.995)]
    mean = float(values.mean())
    var = float(values.var())
    if mean <= 0 or var <= 0:
        return {"jitter_shape": 1.0, "jitter_scale_ms": 0.0}
    return {"jitter_shape": mean * mean / var, "jitter_scale_ms": var / mean}


def _spike_shape(x, height, decay):
    return height * np.exp(-x / decay)


def _fit_spike(
    trace: trace_stats.Trace, interval_s: float, offset_s: float, bin_s: float = 0.02
) -> dict[str, float]:
    starts, profile = trace_stats.spike_profile(trace.t_unix, trace.rtt_ms, bin_s, 1.5, interval_s, offset_s)
    _, pos = trace_stats.slot_position(trace.t_unix[trace.received], interval_s, offset_s)
    counts = np.bincount((pos / bin_s).astype(np.int64), minlength=starts.size)[: starts.size]
    enough = counts >= max(3, 0.3 * np.median(counts))
    if not enough.any():
        return {"spike_height_ms": 0.0, "spike_delay_s": 0.0, "spike_decay_s": 0.05}
    # The spike starts at its highest bin (probes before it may be lost, or not yet delayed).
    early = enough & np.isfinite(profile) & (starts < 0.6)
    if not early.any():
        return {"spike_height_ms": 0.0, "spike_delay_s": 0.0, "spike_decay_s": 0.05}
    delay = float(starts[np.flatnonzero(early)[np.argmax(profile[early])]])
    sel = enough & (starts >= delay) & np.isfinite(profile)
    x = starts[sel] + bin_s / 2 - delay
    y = profile[sel]
    if y.max() <= 1.0:
        return {"spike_height_ms": 0.0, "spike_delay_s": 0.0, "spike_decay_s": 0.05}
    try:
        (height, decay), _ = curve_fit(
            _spike_shape, x, y, p0=(float(y.max()), 0.1), bounds=([0.0, 0.005], [5000.0, 2.0])
        )
    except RuntimeError:
        height, decay = float(y.max()), 0.1
    return {"spike_height_ms": float(height), "spike_delay_s": delay, "spike_decay_s": float(decay)}


def _fit_loss(
    trace: trace_stats.Trace, interval_s: float, offset_s: float, bin_s: float = 0.05
) -> dict[str, float] | None:
    if trace.drop_rate is not None:
        rate = float(np.nanmean(trace.drop_rate))
        return {"loss_base": rate, "loss_boundary": rate, "loss_before_s": 0.0, "loss_after_s": 0.0}
    if not trace.loss_known:
        return None
    _, pos = trace_stats.slot_position(trace.t_unix, interval_s, offset_s)
    lost = ~trace.received
    # Position relative to the nearest boundary, in bins: negative before it, >= 0 after it.
    rel = np.where(pos >= interval_s / 2, pos - interval_s, pos)
    which = np.floor(rel / bin_s).astype(np.int64)
    reach = int(round(1.0 / bin_s))

    def flagged(b: int) -> bool:
        sel = which == b
        n, k = int(sel.sum()), int(lost[sel].sum())
        return n > 0 and k >= 3 and k / n >= 0.25

    after = 0
    while after < reach and flagged(after):
        after += 1
    before = 0
    while before < reach and flagged(-before - 1):
        before += 1
    window = (which >= -before) & (which < after)
    base = float(lost[~window].mean()) if (~window).any() else 0.0
    boundary = float(lost[window].mean()) if window.any() else base
    return {
        "loss_base": base,
        "loss_boundary": boundary,
        "loss_before_s": before * bin_s,
        "loss_after_s": after * bin_s,
    }


def calibrate(
    trace: trace_stats.Trace,
    floor_ms,
    *,
    laser: bool = False,
    prior: LatencyParams = STARLINK,
    high_threshold_ms: float = 5.0,
    quiet_after_s: float = 1.0,
    seed: int = 0,
    terminal_id: str = "calibration",
) -> Calibration:
    """Fit the ``laser`` or bent-pipe profile of ``prior`` to the trace; ``floor_ms`` (scalar or per
    probe) is the propagation floor at the probe times. Returns the parameters and the comparison
    of the fitted model (sampled at the trace's probe times) with the trace."""
    floor = np.broadcast_to(np.asarray(floor_ms, dtype=float), trace.t_unix.shape)
    interval, offset = prior.slot_interval_s, prior.slot_offset_s
    ok = trace.received & np.isfinite(floor)
    if ok.sum() < 20:
        raise CalibrationError(f"the trace has {int(ok.sum())} replies with a floor; at least 20 are needed")
    excess = trace.rtt_ms - floor
    slots, slot_min = trace_stats.per_slot_stat(trace.t_unix[ok], excess[ok], "min", 0.5, interval, offset)
    if slots.size < 2:
        raise CalibrationError(
            f"the trace covers {slots.size} reconfiguration slot(s) of {interval:g} s; at least 2 are needed"
        )
    fit: dict[str, float] = {}
    fit.update(_fit_offsets(slots, slot_min, high_threshold_ms))
    index, pos = trace_stats.slot_position(trace.t_unix, interval, offset)
    by_slot = dict(zip(slots.tolist(), slot_min.tolist(), strict=True))
    quiet = ok & (pos >= quiet_after_s) & np.isin(index, slots)
    slot_floor = np.array([by_slot[k] for k in index[quiet]])
    fit.update(_fit_jitter(excess[quiet] - slot_floor))
    fit.update(_fit_spike(trace, interval, offset))
    loss = _fit_loss(trace, interval, offset)
    if loss is not None:
        fit.update(loss)
    profile = replace(prior.profile(laser), **fit)
    params = replace(prior.with_profile(laser, profile), mode="calibrated", source="calibrated to a trace")
    model = model_at_trace_times(trace, floor, params, laser=laser, seed=seed, terminal_id=terminal_id)
    return Calibration(params, laser, compare(trace, model, interval, offset), int(slots.size))


def model_at_trace_times(
    trace: trace_stats.Trace,
    floor_ms,
    params: LatencyParams,
    *,
    laser: bool = False,
    seed: int = 0,
    terminal_id: str = "calibration",
    repeats: int = 20,
) -> TerminalSamples:
    """The model sampled at the trace's probe times, over ``repeats`` copies of the trace's span laid
    end to end (each shifted by a whole number of slots, so positions in the slot are kept and the
    floor is replayed) — a short trace has few slots, and the model's distribution should not be
    judged by as few draws as the trace has."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    floor = np.broadcast_to(np.asarray(floor_ms, dtype=float), trace.t_unix.shape)
    interval = params.slot_interval_s
    period = (np.floor(trace.duration_s / interval) + 2) * interval
    times = np.concatenate([trace.t_unix + k * period for k in range(repeats)])
    return terminal_samples(
        times, np.tile(floor, repeats), params, seed=seed, terminal_id=terminal_id, laser=laser
    )


def compare(
    trace: trace_stats.Trace,
    model: TerminalSamples,
    interval_s: float = 15.0,
    offset_s: float = 12.0,
    quantiles=QUANTILES,
) -> Comparison:
    """The figures of the model's samples beside the trace's (model loss only where the trace can tell
    which probes were sent: a replies-only trace is compared by its probe times, losses ignored)."""
    slots = {"interval_s": interval_s, "offset_s": offset_s}
    trace_steps = trace_stats.boundary_steps(trace.t_unix, trace.rtt_ms, "min", **slots)
    model_steps = trace_stats.boundary_steps(model.t_unix, model.rtt_ms, "min", **slots)
    return Comparison(
        quantiles=tuple(quantiles),
        trace_rtt_ms=trace_stats.rtt_quantiles(trace.rtt_ms, quantiles),
        model_rtt_ms=trace_stats.rtt_quantiles(model.rtt_ms, quantiles),
        trace_steps_ms=trace_steps,
        model_steps_ms=model_steps,
        steps_ks=trace_stats.ks_distance(trace_steps, model_steps),
        trace_loss=trace.loss_rate,
        model_loss=float(model.lost.mean()),
        trace_boundary_loss_share=trace_stats.boundary_loss_share(trace.t_unix, trace.rtt_ms, **slots),
        model_boundary_loss_share=trace_stats.boundary_loss_share(model.t_unix, model.rtt_ms, **slots),
    )


def scenario_snippet(params: LatencyParams, laser: bool) -> str:
    """The fitted profile as a scenario YAML snippet (``link_model:`` section)."""
    profile = params.profile(laser)
    kind = "laser" if laser else "bent_pipe"
    lines = ["link_model:", "  mode: calibrated", f"  {kind}:"]
    for name in PathProfile.__dataclass_fields__:
        value = getattr(profile, name)
        lines.append(f"    {name}: {value:.4g}")
    return "\n".join(lines)


def link_floor_ms(model, terminal_id: str, region_id: str, t_unix, step_s: float = 0.05) -> np.ndarray:
    """Round-trip propagation floor (ms) of a ``LinkModel`` route at arbitrary times t: predicted on a
    grid of ``step_s`` over t's span, each t taking the grid sample at or before it (within a slot
    the geometry moves a few mm per 50 ms; across a boundary the held path changes, so no blending)."""
    t = np.asarray(t_unix, dtype=float)
    if t.size == 0:
        return np.zeros(0)
    t0 = float(np.floor(t.min() / step_s) * step_s)
    t1 = float(t.max() + step_s)
    grid_t, grid_rtt = [], []
    for chunk in model.predict_route(terminal_id, region_id, t0, t1, step_s, chunk_samples=20000):
        grid_t.append(chunk.t_unix)
        grid_rtt.append(chunk.rtt_ms if chunk.floor_rtt_ms is None else chunk.floor_rtt_ms)
    grid_t = np.concatenate(grid_t)
    grid_rtt = np.concatenate(grid_rtt)
    at = np.clip(np.searchsorted(grid_t, t + 1e-9, side="right") - 1, 0, grid_t.size - 1)
    return grid_rtt[at]
