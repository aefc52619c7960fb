"""Vectorised SGP4 propagation of a whole constellation, in TEME and Earth-fixed coordinates.

The hot path is one SatrecArray.sgp4 call per time chunk (all satellites x all times of the chunk in C)
followed by one vectorised GMST rotation that also turns sgp4's satellite-major output into the
time-major arrays the rest of the core uses. Time is chunked so memory stays bounded for long windows.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .elements import ElementSet
from .frames import gmst_rad, rotate_teme_to_ecef, unix_to_jd

# Sat-steps per sgp4 call: large enough to amortise the call, small enough that one chunk's sgp4 output
# (two float64 (N, T, 3) arrays) stays in the tens of megabytes.
DEFAULT_CHUNK_SAT_STEPS = 1 << 18


@dataclass(frozen=True, eq=False)
class EcefState:
    """Earth-fixed states: r_km (T, N, 3), or (N, 3) when the time was a scalar; error (T, N) / (N,).

    error holds sgp4's error codes (0 = fine, 1-6 = the orbit model broke down, e.g. 6 = decayed);
    positions and velocities of such entries are NaN.
    """

    t_unix: np.ndarray
    r_km: np.ndarray
    v_km_s: np.ndarray | None
    error: np.ndarray


def _times(t_unix) -> np.ndarray:
    t = np.asarray(t_unix, dtype=np.float64)
    if t.ndim > 1:
        raise ValueError(f"times must be a scalar or a 1-D array, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite Unix seconds")
    return t


class Propagator:
    """Propagates every satellite of an ElementSet at once."""

    def __init__(self, elements: ElementSet):
        if not isinstance(elements, ElementSet):
            raise TypeError(f"Propagator needs an ElementSet, got {type(elements).__name__}")
        self._elements = elements
        self._array = elements.to_satrec_array() if elements.size else None

    @property
    def elements(self) -> ElementSet:
        return self._elements

    @property
    def size(self) -> int:
        return self._elements.size

    def subset(self, indices) -> "Propagator":
        """A propagator over some satellites (reusing their initialised sgp4 records)."""
        self._elements.satrecs  # noqa: B018 - make sure the records exist so the subset shares them
        return Propagator(self._elements.subset(indices))

    # ------------------------------------------------------------------ TEME
    def teme_jd(self, jd_whole, jd_frac):
        """TEME (r km, v km/s, error) at split Julian dates (UTC), shapes (T, N, 3) / (T, N).

        Scalars give (N, 3) / (N,). This is the exact interface of sgp4: use it when sub-microsecond
        timing matters (a float64 Unix time near 2020 is only resolved to 0.24 microseconds).
        """
        whole = np.asarray(jd_whole, dtype=np.float64)
        frac = np.asarray(jd_frac, dtype=np.float64)
        scalar = whole.ndim == 0 and frac.ndim == 0
        whole, frac = np.broadcast_arrays(np.atleast_1d(whole), np.atleast_1d(frac))
        if whole.ndim != 1:
            raise ValueError(f"Julian dates must be scalars or 1-D arrays, got shape {whole.shape}")
        n, t = self.size, whole.shape[0]
        if n == 0:
            r = np.empty((t, 0, 3))
            e = np.empty((t, 0), dtype=np.int8)
            return (r[0], r[0].copy(), e[0]) if scalar else (r, r.copy(), e)
        e, r, v = self._array.sgp4(np.ascontiguousarray(whole), np.ascontiguousarray(frac))
        r = np.ascontiguousarray(r.transpose(1, 0, 2))
        v = np.ascontiguousarray(v.transpose(1, 0, 2))
        error = e.T.astype(np.int8)
        bad = error != 0
        if bad.any():
            r[bad] = np.nan
            v[bad] = np.nan
        if scalar:
            return r[0], v[0], error[0]
        return r, v, error

    def teme(self, t_unix):
        """TEME (r km, v km/s, error) at Unix times: (T, N, 3) / (T, N), or (N, 3) / (N,) for a scalar."""
        t = _times(t_unix)
        jd_whole, jd_frac = unix_to_jd(t)
        return self.teme_jd(jd_whole, jd_frac)

    # ------------------------------------------------------------------ Earth-fixed
    def _chunk_steps(self, chunk: int | None) -> int:
        if chunk is not None:
            if int(chunk) < 1:
                raise ValueError(f"chunk must be a positive number of time steps, got {chunk}")
            return int(chunk)
        return max(1, DEFAULT_CHUNK_SAT_STEPS // max(1, self.size))

    def _ecef_into(self, t, out_r, out_v, out_error) -> None:
        """Propagate all satellites at times t (1-D) and write Earth-fixed states into the outputs."""
        jd_whole, jd_frac = unix_to_jd(t)
        e, r, v = self._array.sgp4(jd_whole, jd_frac)  # (N, T), (N, T, 3), (N, T, 3)
        theta = gmst_rad(t)[:, None]
        rotate_teme_to_ecef(
            r.transpose(1, 0, 2),
            np.cos(theta),
            np.sin(theta),
            None if out_v is None else v.transpose(1, 0, 2),
            out_r=out_r,
            out_v=out_v,
        )
        np.copyto(out_error, e.T, casting="unsafe")
        if e.any():  # sgp4 already returns NaN for failed entries; make it a guarantee
            bad = out_error != 0
            out_r[bad] = np.nan
            if out_v is not None:
                out_v[bad] = np.nan

    def ecef(self, t_unix, with_velocity: bool = False, chunk: int | None = None) -> EcefState:
        """Earth-fixed states of all satellites at Unix time(s). See EcefState for shapes."""
        t = _times(t_unix)
        times = np.atleast_1d(t)
        n, count = self.size, times.shape[0]
        r = np.empty((count, n, 3))
        v = np.empty((count, n, 3)) if with_velocity else None
        error = np.zeros((count, n), dtype=np.int8)
        if n:
            step = self._chunk_steps(chunk)
            for start in range(0, count, step):
                part = slice(start, start + step)
                self._ecef_into(times[part], r[part], None if v is None else v[part], error[part])
        if t.ndim == 0:
            return EcefState(t, r[0], None if v is None else v[0], error[0])
        return EcefState(t, r, v, error)

    def iter_ecef(self, t_unix, chunk: int | None = None, with_velocity: bool = False) -> Iterator[EcefState]:
        """Earth-fixed states over a long time array, one chunk of times at a time (bounded memory)."""
        times = np.atleast_1d(_times(t_unix))
        step = self._chunk_steps(chunk)
        for start in range(0, times.shape[0], step):
            yield self.ecef(times[start : start + step], with_velocity=with_velocity, chunk=step)
