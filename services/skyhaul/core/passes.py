"""Passes of satellites over a ground point: rise, culmination and set, refined well below a second.

1. Coarse scan: Earth-fixed positions and velocities of all satellites on a grid of at most 1/200 of the
   shortest orbital period (about 29 s in LEO), in bounded time chunks.
2. Events: a change of "above the mask" between two samples brackets a rise or set; a sample that is
   a local maximum of elevation brackets a culmination (including grazing passes that rise and set
   between two samples, which a pure threshold scan would miss).
3. Refinement: between samples the motion is a cubic Hermite interpolant of the sampled Earth-fixed
   position and velocity (error ~ (n h)^4 r / 384, centimetres at h = 30 s in LEO), so every bracket
   of every satellite is refined at once by vectorised bisection (rise/set) and golden-section search
   (culmination), with no further SGP4 calls and no loop over satellites.
"""

import math
from dataclasses import dataclass

import numpy as np

from .elements import orbital_period_s
from .frames import check_finite, check_latitude
from .geometry import GroundPoints, azimuth_deg
from .propagate import DEFAULT_CHUNK_SAT_STEPS, Propagator

MAX_WINDOW_S = 14 * 86400.0
MAX_SCAN_SAMPLES = 2_000_000
MAX_SCAN_SAT_STEPS = 400_000_000  # a few minutes of SGP4 on one core
# Local maxima further than this below the mask cannot hide a pass between samples at our step.
_PEAK_MARGIN_DEG = 30.0
_BISECTION_STEPS = 40
_GOLDEN_STEPS = 60
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class Pass:
    """One pass above the minimum elevation. Clipped ends sit on the window edge."""

    satellite_index: int
    rise_unix: float
    culmination_unix: float
    set_unix: float
    rise_azimuth_deg: float
    culmination_azimuth_deg: float
    set_azimuth_deg: float
    max_elevation_deg: float
    duration_s: float
    rise_clipped: bool = False
    set_clipped: bool = False


class _Track:
    """Hermite interpolants of M satellites over up to two consecutive coarse segments (a-b, b-c)."""

    def __init__(self, times, r, v, up, north_east, origin):
        self.t = times  # (M, 3) sample times
        self.r = r  # (M, 3, 3) positions at the three samples
        self.v = v  # (M, 3, 3) velocities
        self.up, self.north_east, self.origin = up, north_east, origin

    def position(self, t):
        second = (t >= self.t[:, 1]) & (self.t[:, 2] > self.t[:, 1])
        i0 = second.astype(np.intp)
        rows = np.arange(t.shape[0])
        t0, t1 = self.t[rows, i0], self.t[rows, i0 + 1]
        h = t1 - t0
        h = np.where(h > 0.0, h, 1.0)
        s = ((t - t0) / h)[:, None]
        s2, s3 = s * s, s * s * s
        p0, p1 = self.r[rows, i0], self.r[rows, i0 + 1]
        m0, m1 = self.v[rows, i0] * h[:, None], self.v[rows, i0 + 1] * h[:, None]
        return (2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * m0 + (3 * s2 - 2 * s3) * p1 + (s3 - s2) * m1

    def sin_elevation(self, t):
        d = self.position(t) - self.origin
        return (d @ self.up) / np.sqrt(np.einsum("ij,ij->i", d, d))

    def elevation_azimuth(self, t):
        d = self.position(t) - self.origin
        up = d @ self.up
        north, east = (d @ self.north_east.T).T
        elevation = np.degrees(np.arctan2(up, np.hypot(north, east)))
        return elevation, azimuth_deg(east, north)

    def crossing(self, lo, hi, sin_mask):
        """First time in [lo, hi] where elevation reaches the mask, given f(lo) < 0 <= f(hi) or reverse."""
        rising = self.sin_elevation(lo) < sin_mask
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            above = self.sin_elevation(mid) >= sin_mask
            move_hi = above == rising  # the crossing lies before mid
            hi = np.where(move_hi, mid, hi)
            lo = np.where(move_hi, lo, mid)
        # Rise: first instant above (hi); set: last instant above (lo).
        return np.where(rising, hi, lo)

    def culmination(self, lo, hi):
        """Time of maximum elevation in [lo, hi] (golden-section search; elevation is unimodal there)."""
        a, b = lo.copy(), hi.copy()
        c = b - _INV_PHI * (b - a)
        d = a + _INV_PHI * (b - a)
        fc, fd = self.sin_elevation(c), self.sin_elevation(d)
        for _ in range(_GOLDEN_STEPS):
            left = fc >= fd  # the maximum lies in [a, d]: drop (d, b]; otherwise drop [a, c)
            b = np.where(left, d, b)
            a = np.where(left, a, c)
            probe = np.where(left, b - _INV_PHI * (b - a), a + _INV_PHI * (b - a))
            f_probe = self.sin_elevation(probe)
            c, d = np.where(left, probe, d), np.where(left, c, probe)
            fc, fd = np.where(left, f_probe, fd), np.where(left, fc, f_probe)
        best = 0.5 * (a + b)
        # The window edge can be the maximum (a pass clipped while still rising or already setting).
        candidates = np.stack([lo, best, hi])
        values = np.stack([self.sin_elevation(x) for x in candidates])
        return candidates[np.nanargmax(np.where(np.isnan(values), -2.0, values), axis=0), np.arange(lo.size)]


def _validate(lat_deg, lon_deg, alt_km, start_unix, end_unix, min_elevation_deg, min_duration_s):
    lat = check_latitude(lat_deg)
    check_finite(lon_deg, "longitude")
    check_finite(alt_km, "altitude")
    if lat.ndim:
        raise ValueError("find_passes takes one ground point (scalar latitude/longitude/altitude)")
    start = float(check_finite(start_unix, "window start"))
    end = float(check_finite(end_unix, "window end"))
    if end <= start:
        raise ValueError(f"the window ends ({end}) at or before it starts ({start}); end must be after start")
    if end - start > MAX_WINDOW_S:
        raise ValueError(
            f"the window is {(end - start) / 86400:.1f} days long; at most {MAX_WINDOW_S / 86400:.0f} days "
            "of passes can be searched in one call"
        )
    min_el = float(check_finite(min_elevation_deg, "minimum elevation"))
    if not -90.0 <= min_el <= 90.0:
        raise ValueError(f"minimum elevation {min_el:g} is outside [-90, 90] degrees")
    min_duration = float(check_finite(min_duration_s, "minimum duration"))
    if min_duration < 0:
        raise ValueError(f"minimum duration {min_duration:g} s must not be negative")
    return start, end, min_el, min_duration


def default_coarse_step_s(propagator: Propagator) -> float:
    """1/200 of the shortest orbital period (about 29 s in LEO), between 1 s and 300 s."""
    if propagator.size == 0:
        return 300.0
    shortest = float(np.min(orbital_period_s(propagator.elements)))
    return float(np.clip(shortest / 200.0, 1.0, 300.0))


def find_passes(
    propagator: Propagator,
    lat_deg: float,
    lon_deg: float,
    alt_km: float,
    start_unix: float,
    end_unix: float,
    min_elevation_deg: float,
    min_duration_s: float = 0.0,
    satellite_indices=None,
    coarse_step_s: float | None = None,
) -> list[Pass]:
    """Every pass above min_elevation_deg over the ground point within [start, end], sorted by rise.

    Rise/set are where elevation crosses the mask (to well under 0.1 s); a pass in progress at the
    window's start or end is cut there and flagged rise_clipped / set_clipped. Passes shorter than
    min_duration_s (after clipping) are dropped. satellite_indices restricts the search; indices in the
    result always refer to the propagator's satellites.
    """
    start, end, min_el, min_duration = _validate(
        lat_deg, lon_deg, alt_km, start_unix, end_unix, min_elevation_deg, min_duration_s
    )
    if satellite_indices is not None:
        index = np.asarray(satellite_indices)
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise ValueError("satellite_indices must be a 1-D list of integers")
        if index.size and (index.min() < 0 or index.max() >= propagator.size):
            raise ValueError(f"satellite_indices must lie in [0, {propagator.size - 1}]")
        index = np.unique(index.astype(np.int64))
        prop = propagator.subset(index)
    else:
        index = np.arange(propagator.size)
        prop = propagator
    if prop.size == 0:
        return []
    if coarse_step_s is None:
        step = default_coarse_step_s(prop)
    else:
        step = float(check_finite(coarse_step_s, "coarse step"))
        if step <= 0:
            raise ValueError(f"coarse step {step:g} s must be positive")
    samples = max(2, math.ceil((end - start) / step) + 1)
    if samples > MAX_SCAN_SAMPLES or samples * prop.size > MAX_SCAN_SAT_STEPS:
        raise ValueError(
            f"scanning {prop.size} satellites at {samples} times ({step:g} s steps) is too much work for one "
            f"call (limits: {MAX_SCAN_SAMPLES} times, {MAX_SCAN_SAT_STEPS:.0e} satellite-steps); use a "
            "shorter window, fewer satellites or a larger coarse step"
        )
    times = start + (end - start) * np.arange(samples) / (samples - 1)
    times[-1] = end

    ground = GroundPoints(float(lat_deg), float(lon_deg), float(alt_km))
    origin = ground.ecef[0]
    east, north, up = ground.rotation[0]
    north_east = np.stack([north, east])
    sin_mask = math.sin(math.radians(min_el))

    rises, sets, peaks = [], [], []  # lists of (sat, t, azimuth[, elevation]) arrays per chunk
    chunk = max(4, DEFAULT_CHUNK_SAT_STEPS // prop.size)
    for first in range(0, samples, chunk):
        last = min(first + chunk, samples)  # this chunk owns samples [first, last)
        lo_sample, hi_sample = max(first - 1, 0), min(last + 1, samples)
        state = prop.ecef(times[lo_sample:hi_sample], with_velocity=True)
        elevation = ground.elevation(state.r_km)  # (Tc, N)
        owned = np.arange(first, last)
        local = owned - lo_sample

        def track(k_a, k_b, k_c, sat, _state=state, _lo=lo_sample):
            ia, ib, ic = k_a - _lo, k_b - _lo, k_c - _lo
            sample_t = np.stack([times[k_a], times[k_b], times[k_c]], axis=1)
            r = np.stack([_state.r_km[ia, sat], _state.r_km[ib, sat], _state.r_km[ic, sat]], axis=1)
            v = np.stack([_state.v_km_s[ia, sat], _state.v_km_s[ib, sat], _state.v_km_s[ic, sat]], axis=1)
            return _Track(sample_t, r, v, up, north_east, origin)

        above = elevation >= min_el
        # Window edges: a pass already in progress, or still in progress.
        if first == 0:
            sat = np.flatnonzero(above[0])
            if sat.size:
                t0 = np.full(sat.size, times[0])
                _, az = track(
                    np.zeros_like(sat), np.zeros_like(sat), np.ones_like(sat), sat
                ).elevation_azimuth(t0)
                rises.append((sat, t0, az, np.ones(sat.size, bool)))
        if last == samples:
            sat = np.flatnonzero(above[samples - 1 - lo_sample])
            if sat.size:
                k = np.full(sat.size, samples - 1)
                t1 = np.full(sat.size, times[-1])
                _, az = track(k - 1, k, k, sat).elevation_azimuth(t1)
                sets.append((sat, t1, az, np.ones(sat.size, bool)))

        # Threshold crossings between owned sample k and k+1.
        inner = local[owned + 1 < samples]
        change = above[inner] != above[inner + 1]
        rows, sat = np.nonzero(change)
        if sat.size:
            k = inner[rows] + lo_sample
            tr = track(k, k + 1, k + 1, sat)
            t_cross = tr.crossing(times[k], times[k + 1], sin_mask)
            _, az = tr.elevation_azimuth(t_cross)
            rising = ~above[inner[rows], sat]
            clipped = np.zeros(sat.size, bool)
            rises.append((sat[rising], t_cross[rising], az[rising], clipped[rising]))
            sets.append((sat[~rising], t_cross[~rising], az[~rising], clipped[~rising]))

        # Local maxima of elevation at owned samples: culminations, and passes hiding between samples.
        el = elevation[local]
        left = np.where((owned > 0)[:, None], elevation[np.maximum(local - 1, 0)], -np.inf)
        right = np.where(
            (owned + 1 < samples)[:, None], elevation[np.minimum(local + 1, elevation.shape[0] - 1)], -np.inf
        )
        is_peak = (el > left) & (el >= right) & (el > min_el - _PEAK_MARGIN_DEG)
        rows, sat = np.nonzero(is_peak)
        if sat.size:
            k = owned[rows]
            k_a, k_c = np.maximum(k - 1, 0), np.minimum(k + 1, samples - 1)
            tr = track(k_a, k, k_c, sat)
            t_peak = tr.culmination(times[k_a], times[k_c])
            peak_el, peak_az = tr.elevation_azimuth(t_peak)
            keep = peak_el >= min_el
            peaks.append((sat[keep], t_peak[keep], peak_az[keep], peak_el[keep]))
            # Grazing pass: the peak clears the mask but no sample does; its rise and set lie on either
            # side of the peak inside this bracket.
            hidden = keep & (el[rows, sat] < min_el)
            if hidden.any():
                sub = track(k_a[hidden], k[hidden], k_c[hidden], sat[hidden])
                tp = t_peak[hidden]
                t_rise = sub.crossing(times[k_a[hidden]], tp, sin_mask)
                t_set = sub.crossing(tp, times[k_c[hidden]], sin_mask)
                _, az_rise = sub.elevation_azimuth(t_rise)
                _, az_set = sub.elevation_azimuth(t_set)
                none = np.zeros(tp.size, bool)
                rises.append((sat[hidden], t_rise, az_rise, none))
                sets.append((sat[hidden], t_set, az_set, none))

    return _assemble(index, start, end, min_el, rises, sets, peaks, min_duration)


def _concat(parts, width):
    if not parts:
        return [np.empty(0) for _ in range(width)]
    return [np.concatenate([p[i] for p in parts]) for i in range(width)]


def _assemble(index, start, end, min_el, rises, sets, peaks, min_duration) -> list[Pass]:
    rise_sat, rise_t, rise_az, rise_clip = _concat(rises, 4)
    set_sat, set_t, set_az, set_clip = _concat(sets, 4)
    peak_sat, peak_t, peak_az, peak_el = _concat(peaks, 4)
    if rise_sat.size != set_sat.size:
        raise RuntimeError(f"pass search found {rise_sat.size} rises but {set_sat.size} sets")
    span = (end - start) + 10.0
    order_r = np.lexsort((rise_t, rise_sat))
    order_s = np.lexsort((set_t, set_sat))
    rise_sat, rise_t, rise_az, rise_clip = (a[order_r] for a in (rise_sat, rise_t, rise_az, rise_clip))
    set_sat, set_t, set_az, set_clip = (a[order_s] for a in (set_sat, set_t, set_az, set_clip))
    if np.any(rise_sat != set_sat) or np.any(set_t < rise_t):
        raise RuntimeError("pass search produced unpaired rise and set events")

    count = rise_t.size
    max_el = np.full(count, np.nan)
    culm_t = rise_t.copy()
    culm_az = rise_az.copy()
    if peak_t.size and count:
        rise_key = rise_sat * span + (rise_t - start)
        set_key = set_sat * span + (set_t - start)
        peak_key = peak_sat * span + (peak_t - start)
        owner = np.searchsorted(rise_key, peak_key, side="right") - 1
        valid = (owner >= 0) & (peak_key <= set_key[np.maximum(owner, 0)] + 1e-6)
        owner, p_t, p_az, p_el = owner[valid], peak_t[valid], peak_az[valid], peak_el[valid]
        # Highest peak per pass: sort by (pass, elevation) and take the last of each pass.
        order = np.lexsort((p_el, owner))
        owner, p_t, p_az, p_el = owner[order], p_t[order], p_az[order], p_el[order]
        last_of_pass = np.r_[owner[1:] != owner[:-1], True] if owner.size else np.zeros(0, bool)
        best = owner[last_of_pass]
        max_el[best] = p_el[last_of_pass]
        culm_t[best] = p_t[last_of_pass]
        culm_az[best] = p_az[last_of_pass]
    # A pass without a refined peak (not expected: every pass holds a sampled or grazing maximum)
    # falls back to its rise.
    max_el[np.isnan(max_el)] = min_el

    duration = set_t - rise_t
    keep = duration >= min_duration
    result = [
        Pass(
            satellite_index=int(index[int(rise_sat[i])]),
            rise_unix=float(rise_t[i]),
            culmination_unix=float(culm_t[i]),
            set_unix=float(set_t[i]),
            rise_azimuth_deg=float(rise_az[i]),
            culmination_azimuth_deg=float(culm_az[i]),
            set_azimuth_deg=float(set_az[i]),
            max_elevation_deg=float(max_el[i]),
            duration_s=float(duration[i]),
            rise_clipped=bool(rise_clip[i]),
            set_clipped=bool(set_clip[i]),
        )
        for i in np.flatnonzero(keep)
    ]
    result.sort(key=lambda p: (p.rise_unix, p.satellite_index))
    return result
