"""Look angles (elevation, azimuth, slant range) from ground points to satellites, all at once.

Each ground point's east-north-up rotation is computed once; the local coordinates of every satellite
for every ground point then come out of a single matrix product.
"""

import numpy as np

from .frames import check_finite, check_latitude, geodetic_to_ecef


def enu_rotation(lat_deg, lon_deg) -> np.ndarray:
    """Rows east, north, up (geodetic normal) in Earth-fixed coordinates, shape (..., 3, 3)."""
    lat = np.radians(check_latitude(lat_deg))
    lon = np.radians(check_finite(lon_deg, "longitude"))
    lat, lon = np.broadcast_arrays(lat, lon)
    sin_lat, cos_lat = np.sin(lat), np.cos(lat)
    sin_lon, cos_lon = np.sin(lon), np.cos(lon)
    rotation = np.empty(lat.shape + (3, 3))
    rotation[..., 0, :] = np.stack([-sin_lon, cos_lon, np.zeros_like(lon)], axis=-1)
    rotation[..., 1, :] = np.stack([-sin_lat * cos_lon, -sin_lat * sin_lon, cos_lat], axis=-1)
    rotation[..., 2, :] = np.stack([cos_lat * cos_lon, cos_lat * sin_lon, sin_lat], axis=-1)
    return rotation


def azimuth_deg(east, north) -> np.ndarray:
    """Azimuth from north through east in [0, 360) (a tiny negative angle would round to 360.0)."""
    azimuth = np.degrees(np.arctan2(east, north, order="C"))
    azimuth = np.mod(azimuth, 360.0)
    return np.where(azimuth >= 360.0, 0.0, azimuth)


class GroundPoints:
    """G ground points (WGS84 geodetic) with their Earth-fixed positions and ENU rotations precomputed.

    Scalar latitude/longitude/altitude make a single point whose results drop the G axis.
    """

    def __init__(self, lat_deg, lon_deg, alt_km=0.0):
        lat = check_latitude(lat_deg)
        lon = check_finite(lon_deg, "longitude")
        alt = check_finite(alt_km, "altitude")
        if max(lat.ndim, lon.ndim, alt.ndim) > 1:
            raise ValueError("ground points must be given as scalars or 1-D arrays")
        self.single = lat.ndim == 0 and lon.ndim == 0 and alt.ndim == 0
        lat, lon, alt = (np.atleast_1d(a) for a in np.broadcast_arrays(lat, lon, alt))
        self.lat_deg, self.lon_deg, self.alt_km = lat, lon, alt
        self.ecef = geodetic_to_ecef(lat, lon, alt)  # (G, 3)
        self.rotation = enu_rotation(lat, lon)  # (G, 3, 3)
        count = lat.shape[0]
        # One (3G, 3) matrix: sat @ stacked.T gives every point's E, N, U dot products in one product.
        self._stacked = self.rotation.reshape(3 * count, 3)
        self._offset = np.einsum("gij,gj->gi", self.rotation, self.ecef).reshape(3 * count)

    @property
    def size(self) -> int:
        return self.lat_deg.shape[0]

    def enu(self, sat_ecef):
        """East, north, up components (km) of every satellite seen from every point.

        sat_ecef (N, 3) -> three (G, N) arrays; (T, N, 3) -> three (T, G, N) arrays (G axis dropped for a
        single point). The arrays are views in (…, N, G) memory order; look_angles returns C-ordered ones.
        """
        sat = np.asarray(sat_ecef, dtype=np.float64)
        if sat.ndim not in (2, 3) or sat.shape[-1] != 3:
            raise ValueError(f"satellite positions must have shape (N, 3) or (T, N, 3), got {sat.shape}")
        local = sat @ self._stacked.T  # (..., N, 3G)
        local -= self._offset
        local = local.reshape(sat.shape[:-1] + (self.size, 3))  # (..., N, G, 3)
        local = np.moveaxis(local, -2, -3)  # (..., G, N, 3)
        if self.single:
            local = local[..., 0, :, :]
        return local[..., 0], local[..., 1], local[..., 2]

    def look_angles(self, sat_ecef):
        """(elevation_deg, azimuth_deg in [0, 360) from north through east, range_km)."""
        east, north, up = self.enu(sat_ecef)
        horizontal = np.hypot(east, north, order="C")
        slant = np.hypot(horizontal, up, order="C")
        elevation = np.degrees(np.arctan2(up, horizontal, order="C"))
        azimuth = azimuth_deg(east, north)
        return elevation, azimuth, slant

    def elevation(self, sat_ecef) -> np.ndarray:
        """Elevation only (degrees), the cheaper call for visibility masks."""
        east, north, up = self.enu(sat_ecef)
        return np.degrees(np.arctan2(up, np.hypot(east, north, order="C"), order="C"))

    def range_km(self, sat_ecef) -> np.ndarray:
        """Slant range from each point to each satellite, km."""
        east, north, up = self.enu(sat_ecef)
        return np.sqrt(east * east + north * north + up * up)


def look_angles(observer_lat_deg, observer_lon_deg, observer_alt_km, sat_ecef):
    """Elevation (deg), azimuth (deg) and range (km) from observers to satellites.

    Observers (G,) and sat_ecef (N, 3) give (G, N); sat_ecef (T, N, 3) gives (T, G, N); scalar observer
    coordinates drop the G axis. For repeated calls over the same points build a GroundPoints once.
    """
    return GroundPoints(observer_lat_deg, observer_lon_deg, observer_alt_km).look_angles(sat_ecef)


def slant_range_km(observer_ecef, sat_ecef) -> np.ndarray:
    """Distance between Earth-fixed points, broadcasting over leading axes."""
    diff = np.asarray(sat_ecef, dtype=np.float64) - np.asarray(observer_ecef, dtype=np.float64)
    return np.sqrt(np.einsum("...i,...i->...", diff, diff))


def elevation_mask(elevation_deg, min_elevation_deg) -> np.ndarray:
    """Boolean visibility: elevation at or above the mask (NaN elevations are not visible)."""
    min_elevation = np.asarray(min_elevation_deg, dtype=np.float64)
    if np.any(~((min_elevation >= -90.0) & (min_elevation <= 90.0))):
        raise ValueError(f"minimum elevation {min_elevation} is outside [-90, 90] degrees")
    return np.asarray(elevation_deg) >= min_elevation
