"""Protobuf <-> core conversions for orbital data. One place, used by orbit, links and the CLI."""

from __future__ import annotations

import numpy as np

from skyhaul.core.elements import ElementSet, ShellInfo
from skyhaul.core.passes import Pass
from skyhaul.runtime.clock import to_timestamp
from skyhaul.v1 import common_pb2, orbit_pb2

F8 = np.dtype("<f8")

# GetElementsResponse array field <-> ElementSet attribute.
_ELEMENT_ARRAYS = {
    "epoch_jd_whole": "epoch_jd_whole",
    "epoch_jd_fraction": "epoch_jd_frac",
    "bstar": "bstar",
    "ndot": "ndot",
    "nddot": "nddot",
    "eccentricity": "ecco",
    "argument_of_perigee_rad": "argpo_rad",
    "inclination_rad": "inclo_rad",
    "mean_anomaly_rad": "mo_rad",
    "mean_motion_rad_per_min": "no_kozai_rad_min",
    "raan_rad": "nodeo_rad",
}


def to_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=F8).tobytes()


def from_bytes(data: bytes, shape: tuple[int, ...] = (-1,)) -> np.ndarray:
    return np.frombuffer(data, dtype=F8).reshape(shape)


def shells_to_proto(elements: ElementSet) -> list[orbit_pb2.Shell]:
    shells, first = [], 0
    counts = np.bincount(elements.shell, minlength=len(elements.shells))
    for i, info in enumerate(elements.shells):
        starts = np.flatnonzero(elements.shell == i)
        first = int(starts[0]) if starts.size else first
        shells.append(
            orbit_pb2.Shell(
                name=info.name,
                planes=info.planes,
                satellites_per_plane=info.sats_per_plane,
                altitude_km=0.0 if np.isnan(info.altitude_km) else info.altitude_km,
                inclination_deg=0.0 if np.isnan(info.inclination_deg) else info.inclination_deg,
                phasing=info.phasing,
                first_satellite_index=first,
                satellite_count=int(counts[i]),
            )
        )
    return shells


def satellites_to_proto(elements: ElementSet) -> list[orbit_pb2.Satellite]:
    epochs = elements.epoch_unix
    return [
        orbit_pb2.Satellite(
            index=i,
            name=elements.names[i],
            shell=int(elements.shell[i]),
            plane=int(elements.plane[i]),
            slot=int(elements.slot[i]),
            norad_id=int(elements.norad_id[i]),
            epoch=to_timestamp(float(epochs[i])),
        )
        for i in range(elements.size)
    ]


def elements_to_proto(
    elements: ElementSet, summary: orbit_pb2.ConstellationSummary
) -> orbit_pb2.GetElementsResponse:
    response = orbit_pb2.GetElementsResponse(summary=summary, satnum=elements.satnum.tolist())
    for field, attr in _ELEMENT_ARRAYS.items():
        getattr(response, field).extend(getattr(elements, attr).tolist())
    response.satellites.extend(satellites_to_proto(elements))
    return response


def elements_from_proto(response: orbit_pb2.GetElementsResponse) -> ElementSet:
    """Rebuild the exact ElementSet the orbit service propagates (same version hash)."""
    shells = []
    for shell in response.summary.shells:
        walker = shell.planes > 0
        shells.append(
            ShellInfo(
                name=shell.name,
                count=shell.satellite_count,
                kind="walker" if walker else "catalogue",
                planes=shell.planes,
                sats_per_plane=shell.satellites_per_plane,
                altitude_km=shell.altitude_km if walker else float("nan"),
                inclination_deg=shell.inclination_deg if walker else float("nan"),
                phasing=shell.phasing,
            )
        )
    sats = response.satellites
    arrays = {
        attr: np.array(getattr(response, field), dtype=np.float64) for field, attr in _ELEMENT_ARRAYS.items()
    }
    return ElementSet(
        satnum=np.array(response.satnum, dtype=np.int64),
        names=tuple(s.name for s in sats),
        norad_id=np.array([s.norad_id for s in sats], dtype=np.int64),
        shell=np.array([s.shell for s in sats], dtype=np.int64),
        plane=np.array([s.plane for s in sats], dtype=np.int64),
        slot=np.array([s.slot for s in sats], dtype=np.int64),
        shells=tuple(shells),
        **arrays,
    )


def pass_to_proto(p: Pass, names: tuple[str, ...]) -> common_pb2.Pass:
    return common_pb2.Pass(
        satellite_index=p.satellite_index,
        satellite_name=names[p.satellite_index] if p.satellite_index < len(names) else "",
        rise_time=to_timestamp(p.rise_unix),
        culmination_time=to_timestamp(p.culmination_unix),
        set_time=to_timestamp(p.set_unix),
        rise_azimuth_deg=p.rise_azimuth_deg,
        culmination_azimuth_deg=p.culmination_azimuth_deg,
        set_azimuth_deg=p.set_azimuth_deg,
        max_elevation_deg=p.max_elevation_deg,
        duration_s=p.duration_s,
        rise_clipped=p.rise_clipped,
        set_clipped=p.set_clipped,
    )
