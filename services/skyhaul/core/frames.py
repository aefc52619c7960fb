"""Time scales and reference frames: Unix time, Julian dates, GMST, TEME -> Earth-fixed, WGS84.

Frame terms kept: SGP4's TEME is rotated to the Earth-fixed frame by the IAU-82 Greenwich mean sidereal
time alone, with UTC standing in for UT1 and no polar motion (the core has no Earth-orientation data).
This is the "PEF" frame of Vallado et al. (2006) taken as ITRF; the residual against a full reduction is
below 0.05 degrees in look angles and a few hundred metres in position.
"""

import math

import numpy as np

from .constants import (
    EARTH_ROTATION_RAD_S,
    SECONDS_PER_DAY,
    UNIX_EPOCH_JD,
    WGS84_A_KM,
    WGS84_B_KM,
    WGS84_E2,
    WGS84_EP2,
)

_J2000_UNIX = 946728000.0  # 2000-01-01T12:00:00Z
_TWO_PI = 2.0 * math.pi


def unix_to_jd(t_unix):
    """Split Julian dates (jd_whole, jd_frac) of Unix times, as float64 arrays of t's shape.

    The split keeps the sub-microsecond resolution that a single float64 Julian date would lose;
    jd_whole always ends in .5 (midnight) and 0 <= jd_frac < 1.
    """
    t = np.asarray(t_unix, dtype=np.float64)
    days, seconds = np.divmod(t, SECONDS_PER_DAY)
    return days + UNIX_EPOCH_JD, seconds / SECONDS_PER_DAY


def jd_to_unix(jd_whole, jd_frac=0.0):
    """Unix seconds of a (split) Julian date."""
    whole = np.asarray(jd_whole, dtype=np.float64)
    frac = np.asarray(jd_frac, dtype=np.float64)
    return (whole - UNIX_EPOCH_JD) * SECONDS_PER_DAY + frac * SECONDS_PER_DAY


def gmst_rad(t_unix):
    """Greenwich mean sidereal time (IAU-82, the polynomial SGP4 itself uses) in radians, in [0, 2pi).

    Whole days contribute an exact multiple of 86400 s of sidereal time, so only the seconds of the day
    and the slow terms are accumulated: this keeps nanoradian precision decades away from J2000.
    """
    t = np.asarray(t_unix, dtype=np.float64)
    since_j2000 = t - _J2000_UNIX
    whole_days, seconds_of_day = np.divmod(since_j2000, SECONDS_PER_DAY)
    centuries = (whole_days + seconds_of_day / SECONDS_PER_DAY) / 36525.0
    sidereal_s = (
        67310.54841
        + seconds_of_day
        + 8640184.812866 * centuries
        + (0.093104 - 6.2e-6 * centuries) * centuries * centuries
    )
    return np.mod(sidereal_s, SECONDS_PER_DAY) * (_TWO_PI / SECONDS_PER_DAY)


def _time_factors(t_unix, leading_shape):
    """cos/sin of GMST shaped to broadcast against an array whose leading axes are leading_shape."""
    theta = gmst_rad(t_unix)
    if theta.ndim > len(leading_shape) or leading_shape[: theta.ndim] != theta.shape:
        raise ValueError(
            f"time shape {theta.shape} does not match the leading axes {leading_shape} of the positions"
        )
    theta = theta.reshape(theta.shape + (1,) * (len(leading_shape) - theta.ndim))
    return np.cos(theta), np.sin(theta)


def rotate_teme_to_ecef(r_teme, cos_theta, sin_theta, v_teme=None, out_r=None, out_v=None):
    """Rotate TEME vectors (last axis xyz) by GMST given as broadcastable cos/sin arrays.

    Writes into out_r / out_v when given (they may have another memory layout than the inputs, which
    is how the propagator turns SGP4's satellite-major output into time-major arrays in one pass).
    """
    x, y, z = r_teme[..., 0], r_teme[..., 1], r_teme[..., 2]
    shape = np.broadcast_shapes(x.shape, cos_theta.shape)
    if out_r is None:
        out_r = np.empty(shape + (3,), dtype=np.float64)
    xe, ye = out_r[..., 0], out_r[..., 1]
    np.multiply(x, cos_theta, out=xe)
    xe += y * sin_theta
    np.multiply(y, cos_theta, out=ye)
    ye -= x * sin_theta
    out_r[..., 2] = z
    if v_teme is None:
        return out_r, None
    if out_v is None:
        out_v = np.empty(shape + (3,), dtype=np.float64)
    vx, vy = v_teme[..., 0], v_teme[..., 1]
    # Earth-fixed velocity = rotated TEME velocity - omega x r_ecef (the frame itself turns).
    vxe, vye = out_v[..., 0], out_v[..., 1]
    np.multiply(vx, cos_theta, out=vxe)
    vxe += vy * sin_theta
    vxe += EARTH_ROTATION_RAD_S * ye
    np.multiply(vy, cos_theta, out=vye)
    vye -= vx * sin_theta
    vye -= EARTH_ROTATION_RAD_S * xe
    out_v[..., 2] = v_teme[..., 2]
    return out_r, out_v


def teme_to_ecef(r_teme, t_unix, v_teme=None):
    """TEME position (and velocity) -> Earth-fixed, km and km/s.

    r_teme has shape (..., 3); t_unix is a scalar or an array whose shape equals the leading axes of
    r_teme (e.g. r (T, N, 3) with t (T,)). Returns r_ecef, or (r_ecef, v_ecef) when v_teme is given;
    v_ecef includes the -omega x r term, so it is the time derivative of r_ecef.
    """
    r = np.asarray(r_teme, dtype=np.float64)
    if r.shape[-1:] != (3,):
        raise ValueError(f"positions must have a last axis of 3 (x, y, z), got shape {r.shape}")
    cos_theta, sin_theta = _time_factors(t_unix, r.shape[:-1])
    if v_teme is None:
        return rotate_teme_to_ecef(r, cos_theta, sin_theta)[0]
    v = np.asarray(v_teme, dtype=np.float64)
    if v.shape != r.shape:
        raise ValueError(f"velocity shape {v.shape} differs from position shape {r.shape}")
    return rotate_teme_to_ecef(r, cos_theta, sin_theta, v)


def check_latitude(lat_deg, what="latitude"):
    """Raise ValueError naming the first latitude outside [-90, 90] (or not finite)."""
    lat = np.asarray(lat_deg, dtype=np.float64)
    bad = ~((lat >= -90.0) & (lat <= 90.0))
    if np.any(bad):
        value = lat[bad].flat[0] if lat.ndim else float(lat)
        raise ValueError(f"{what} {value:g} is outside [-90, 90] degrees")
    return lat


def check_finite(values, what):
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        value = arr[~np.isfinite(arr)].flat[0] if arr.ndim else float(arr)
        raise ValueError(f"{what} must be a finite number, got {value}")
    return arr


def geodetic_to_ecef(lat_deg, lon_deg, alt_km=0.0):
    """WGS84 geodetic latitude/longitude (degrees) and altitude (km) -> Earth-fixed xyz, shape (..., 3)."""
    lat = np.radians(check_latitude(lat_deg))
    lon = np.radians(check_finite(lon_deg, "longitude"))
    alt = check_finite(alt_km, "altitude")
    sin_lat, cos_lat = np.sin(lat), np.cos(lat)
    prime_vertical = WGS84_A_KM / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    lat, lon, alt = np.broadcast_arrays(lat, lon, alt)
    out = np.empty(lat.shape + (3,), dtype=np.float64)
    horizontal = (prime_vertical + alt) * cos_lat
    out[..., 0] = horizontal * np.cos(lon)
    out[..., 1] = horizontal * np.sin(lon)
    out[..., 2] = (prime_vertical * (1.0 - WGS84_E2) + alt) * sin_lat
    return out


def ecef_to_geodetic(r_ecef):
    """Earth-fixed xyz (..., 3) km -> (lat_deg, lon_deg, alt_km) on WGS84.

    Bowring's method iterated three times: sub-millimetre from the ground out to GEO; the altitude
    formula used stays well conditioned at the poles.
    """
    r = np.asarray(r_ecef, dtype=np.float64)
    if r.shape[-1:] != (3,):
        raise ValueError(f"positions must have a last axis of 3 (x, y, z), got shape {r.shape}")
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    p = np.hypot(x, y)
    lon = np.arctan2(y, x)
    reduced = np.arctan2(z * WGS84_A_KM, p * WGS84_B_KM)
    for _ in range(3):
        sin_b, cos_b = np.sin(reduced), np.cos(reduced)
        lat = np.arctan2(
            z + WGS84_EP2 * WGS84_B_KM * sin_b**3,
            p - WGS84_E2 * WGS84_A_KM * cos_b**3,
        )
        reduced = np.arctan2(WGS84_B_KM * np.sin(lat), WGS84_A_KM * np.cos(lat))
    sin_lat, cos_lat = np.sin(lat), np.cos(lat)
    alt = p * cos_lat + z * sin_lat - WGS84_A_KM * np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    return np.degrees(lat), np.degrees(lon), alt
