"""Ground-satellite link (GSL) rules: the true elevation mask, and Hypatia's maximum slant range.

Skyhaul's rule is geometric: a satellite is usable while its elevation above the ground point's
local horizon (WGS84 normal) is at least the mask (25 deg for Starlink). Hypatia (Kassing et al.,
IMC 2020, ``satgenpy``) uses a maximum GSL length instead, derived from the mask with a flat-Earth
cone::

    cone_radius = h / tan(e)          max_gsl_length = sqrt(cone_radius^2 + h^2) = h / sin(e)

(e.g. Kuiper 630 km at 30 deg: 1 260 km; Starlink 550 km at 25 deg: 1 301 km). On a spherical
Earth of radius R the elevation e and slant range d to a satellite at altitude h are related by::

    d = sqrt((R + h)^2 - (R cos e)^2) - R sin e        sin e = ((R + h)^2 - R^2 - d^2) / (2 R d)

so Hypatia's range corresponds to a lower true elevation than its nominal mask (Kuiper at 30 deg:
about 25.2 deg), and its visible sets are larger. ``GslRule.hypatia`` reproduces a Hypatia study
exactly; ``slant_range_for_elevation_km`` converts the other way on the sphere.

Wired: the scenario's ``link_model.gsl_rule: slant-range`` hands ``LinkModel`` a ``GslRule``, whose
``visible`` then replaces the elevation mask in visibility.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skyhaul.core.constants import SGP4_RADIUS_KM

RULES = ("elevation", "slant-range")


def hypatia_max_gsl_length_km(altitude_km, min_elevation_deg):
    """Hypatia's maximum GSL length for a shell altitude and its nominal mask (h / sin e)."""
    altitude = np.asarray(altitude_km, dtype=float)
    elevation = np.radians(np.asarray(min_elevation_deg, dtype=float))
    cone_radius = altitude / np.tan(elevation)
    return np.sqrt(cone_radius**2 + altitude**2)


def slant_range_for_elevation_km(elevation_deg, altitude_km, earth_radius_km: float = SGP4_RADIUS_KM):
    """Slant range from a ground point to a satellite at ``altitude_km`` seen at ``elevation_deg``
    (spherical Earth)."""
    e = np.radians(np.asarray(elevation_deg, dtype=float))
    r_sat = earth_radius_km + np.asarray(altitude_km, dtype=float)
    return np.sqrt(r_sat**2 - (earth_radius_km * np.cos(e)) ** 2) - earth_radius_km * np.sin(e)


def elevation_for_slant_range_deg(range_km, altitude_km, earth_radius_km: float = SGP4_RADIUS_KM):
    """Elevation at which a satellite at ``altitude_km`` is ``range_km`` away (spherical Earth)."""
    d = np.asarray(range_km, dtype=float)
    r_sat = earth_radius_km + np.asarray(altitude_km, dtype=float)
    sin_e = (r_sat**2 - earth_radius_km**2 - d**2) / (2.0 * earth_radius_km * d)
    return np.degrees(np.arcsin(np.clip(sin_e, -1.0, 1.0)))


@dataclass(frozen=True)
class GslRule:
    """Which satellites a ground point may use: above ``min_elevation_deg`` (``elevation``) or within
    ``max_range_km`` (``slant-range``, Hypatia's rule)."""

    kind: str = "elevation"
    min_elevation_deg: float = 25.0
    max_range_km: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise ValueError(f"gsl rule: {self.kind!r} is not one of {', '.join(RULES)}")
        if not (np.isfinite(self.min_elevation_deg) and -90.0 <= self.min_elevation_deg <= 90.0):
            raise ValueError(f"gsl rule: min_elevation_deg {self.min_elevation_deg} is outside [-90, 90]")
        if self.kind == "slant-range" and (
            self.max_range_km is None or not np.isfinite(self.max_range_km) or self.max_range_km <= 0
        ):
            raise ValueError(f"gsl rule: slant-range needs max_range_km > 0, got {self.max_range_km}")

    @classmethod
    def hypatia(cls, altitude_km: float, min_elevation_deg: float) -> GslRule:
        """Hypatia's rule for a shell: max range h / sin(e) (see the module doc)."""
        return cls(
            "slant-range", min_elevation_deg, float(hypatia_max_gsl_length_km(altitude_km, min_elevation_deg))
        )

    def visible(self, ground_ecef: np.ndarray, ground_up: np.ndarray, sat_ecef: np.ndarray) -> np.ndarray:
        """(G, N) mask for ground points (G, 3) with unit up vectors (G, 3) and satellites (N, 3);
        satellites with non-finite positions are never visible."""
        g = np.asarray(ground_ecef, dtype=float)[:, None, :]
        s = np.asarray(sat_ecef, dtype=float)[None, :, :]
        d = s - g
        dist = np.linalg.norm(d, axis=-1)
        finite = np.all(np.isfinite(s), axis=-1)
        if self.kind == "slant-range":
            return finite & (dist <= self.max_range_km)
        up = np.asarray(ground_up, dtype=float)[:, None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            sin_el = np.einsum("gnk,gnk->gn", d, np.broadcast_to(up, d.shape)) / dist
        return finite & (sin_el >= np.sin(np.radians(self.min_elevation_deg)))
