"""Our look angles against Skyfield's for real TLEs and ground points.

Frame terms: we rotate TEME to Earth-fixed by IAU-82 GMST with UTC in place of UT1 and no polar motion.
Skyfield rotates by GMST of UT1 (its built-in Earth-orientation table) and goes through GCRS with the full
precession-nutation model, which cancels out of a topocentric vector. What is left is UT1 - UTC (under
0.9 s: at most ~0.4 km of ground displacement), hence 0.05 deg and 0.5 km.
"""

import datetime as dt

import numpy as np
import pytest

skyfield_api = pytest.importorskip("skyfield.api")

from support.shared_data import shared_data  # noqa: E402

from skyhaul.core.elements import ElementSet  # noqa: E402
from skyhaul.core.geometry import GroundPoints  # noqa: E402
from skyhaul.core.propagate import Propagator  # noqa: E402
from skyhaul.core.tle import load_tle_file  # noqa: E402

GROUND = [  # (lat, lon, alt_km): Quincy WA, Prudhoe Bay, Singapore, Sydney, a 3 km plateau in the Andes
    (47.233, -119.852, 0.4),
    (70.2, -148.5, 0.0),
    (1.35, 103.82, 0.0),
    (-33.87, 151.21, 0.05),
    (-22.9, -68.2, 3.0),
]


def _sample(file_name, every):
    records = load_tle_file(shared_data(f"tle/{file_name}")).records
    return records[::every]


@pytest.mark.parametrize(
    ("file_name", "every"),
    [("starlink_2020-10-30.tle", 40), ("kuiper_2026-08-22.tle", 40), ("o3b_2026-08-22.tle", 6)],
)
def test_look_angles_agree_with_skyfield(file_name, every):
    records = _sample(file_name, every)
    elements = ElementSet.from_tle(records)
    epoch = float(np.median(elements.epoch_unix))
    times = epoch + np.array([0.0, 1800.0, 7200.0, 21600.0, 43200.0])
    state = Propagator(elements).ecef(times)
    assert np.all(state.error == 0)
    lat, lon, alt = (np.array(column) for column in zip(*GROUND, strict=True))
    el, az, rng = GroundPoints(lat, lon, alt).look_angles(state.r_km)  # (T, G, N)

    ts = skyfield_api.load.timescale(builtin=True)
    # Calendar UTC from Unix seconds (ts.utc(1970, 1, 1, 0, 0, seconds) would count leap seconds as of 1970).
    t_sky = ts.from_datetimes([dt.datetime.fromtimestamp(t, dt.UTC) for t in times])
    compared = 0
    for n, record in enumerate(records):
        satellite = skyfield_api.EarthSatellite(record.line1, record.line2, record.name, ts)
        for g, (glat, glon, galt) in enumerate(GROUND):
            site = skyfield_api.wgs84.latlon(glat, glon, elevation_m=galt * 1000.0)
            alt_sky, az_sky, dist_sky = (satellite - site).at(t_sky).altaz()
            ours_el, ours_az, ours_rng = el[:, g, n], az[:, g, n], rng[:, g, n]
            np.testing.assert_allclose(ours_el, alt_sky.degrees, rtol=0, atol=0.05)
            np.testing.assert_allclose(ours_rng, dist_sky.km, rtol=0, atol=0.5)
            # Azimuth is undefined at the zenith; compare it where it is well conditioned.
            usable = ours_el < 80.0
            az_error = (ours_az - az_sky.degrees + 180.0) % 360.0 - 180.0
            assert np.all(np.abs(az_error[usable]) < 0.05), (record.name, GROUND[g])
            compared += int(np.sum(ours_el > 0.0))
    assert compared > 0  # some of the comparisons are of satellites actually in view
