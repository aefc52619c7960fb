"""Physical constants shared by the core.

Two Earth models coexist on purpose: SGP4 was fitted with WGS72 gravity constants, so anything that
feeds SGP4 (Walker mean motions) must use them; ground points and geodetic coordinates use WGS84.
"""

import math

# Speed of light in vacuum and the group index of silica fibre (terrestrial segments run at c / 1.47).
C_KM_S = 299792.458
FIBRE_INDEX = 1.47

# WGS84 ellipsoid: ground points, geodetic latitude/longitude/altitude.
WGS84_A_KM = 6378.137
WGS84_F = 1.0 / 298.257223563
WGS84_B_KM = WGS84_A_KM * (1.0 - WGS84_F)
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)  # first eccentricity squared
WGS84_EP2 = WGS84_E2 / (1.0 - WGS84_E2)  # second eccentricity squared

# Mean Earth radius (great-circle distances for fibre routes).
EARTH_RADIUS_KM = 6371.0

# SGP4's own WGS72 constants (sgp4.api.WGS72): what the propagator assumes, so Kepler's third law for a
# generated shell must use them too.
MU_KM3_S2 = 398600.8
SGP4_RADIUS_KM = 6378.135
SGP4_J2 = 0.001082616
SGP4_J3 = -0.00000253881
SGP4_XKE = 60.0 / math.sqrt(SGP4_RADIUS_KM**3 / MU_KM3_S2)  # sqrt(mu) in earth radii^1.5 per minute

# Time.
SECONDS_PER_DAY = 86400.0
UNIX_EPOCH_JD = 2440587.5  # Julian date of 1970-01-01T00:00:00Z
J2000_JD = 2451545.0  # 2000-01-01T12:00 (treated as UTC, like SGP4's gstime)

# Earth rotation rate implied by the IAU-82 GMST polynomial we rotate TEME with (rad per UT1 second):
# GMST advances 876600 h + 8640184.812866 s of sidereal time per Julian century of 36525 days.
EARTH_ROTATION_RAD_S = (
    (876600.0 * 3600.0 + 8640184.812866) / (36525.0 * SECONDS_PER_DAY) * (2.0 * math.pi / SECONDS_PER_DAY)
)
