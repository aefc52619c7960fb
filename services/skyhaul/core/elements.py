"""Mean orbital elements of a constellation, as SGP4 takes them, plus per-satellite metadata.

An ElementSet is immutable: its arrays are read-only and its .version is a content hash, so a service
can tell its clients "these elements" and a client can tell whether it already holds them.
"""

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from sgp4.api import WGS72, Satrec, SatrecArray

from .constants import MU_KM3_S2, SECONDS_PER_DAY, SGP4_J2, SGP4_J3, SGP4_RADIUS_KM, SGP4_XKE
from .frames import jd_to_unix, unix_to_jd
from .tle import TleError, TleRecord, _FieldError, decode_tle

# SGP4 counts epochs in days from 1949 December 31 00:00 UT.
_SGP4_EPOCH_JD = 2433281.5
_XPDOTP = 1440.0 / (2.0 * math.pi)  # rev/day -> rad/min divisor, exactly as SGP4's twoline2rv
_DEG2RAD = math.pi / 180.0
_MAX_SYNTHETIC_SATNUM = 99999


@dataclass(frozen=True)
class ShellInfo:
    """How a group of satellites was defined: a Walker-delta shell or a loaded catalogue."""

    name: str
    count: int
    kind: str = "walker"  # "walker" | "catalogue"
    planes: int = 0
    sats_per_plane: int = 0
    altitude_km: float = math.nan
    inclination_deg: float = math.nan
    phasing: int = 0
    raan_spread_deg: float = 360.0


_ELEMENT_FIELDS = (
    "epoch_jd_whole",
    "epoch_jd_frac",
    "bstar",
    "ndot",
    "nddot",
    "ecco",
    "argpo_rad",
    "inclo_rad",
    "mo_rad",
    "no_kozai_rad_min",
    "nodeo_rad",
)
_INT_FIELDS = ("satnum", "norad_id", "shell", "plane", "slot")


@dataclass(frozen=True, eq=False)
class ElementSet:
    """N satellites: SGP4 mean elements (units as Satrec.sgp4init takes them) and metadata.

    norad_id is -1 for generated satellites; plane and slot are -1 for catalogue satellites; shell
    indexes into .shells.
    """

    satnum: np.ndarray
    epoch_jd_whole: np.ndarray
    epoch_jd_frac: np.ndarray
    bstar: np.ndarray  # 1 / earth radii
    ndot: np.ndarray  # rad / min^2 (unused by SGP4 itself, kept for TLE round trips)
    nddot: np.ndarray  # rad / min^3
    ecco: np.ndarray
    argpo_rad: np.ndarray
    inclo_rad: np.ndarray
    mo_rad: np.ndarray
    no_kozai_rad_min: np.ndarray
    nodeo_rad: np.ndarray
    names: tuple[str, ...]
    norad_id: np.ndarray
    shell: np.ndarray
    plane: np.ndarray
    slot: np.ndarray
    shells: tuple[ShellInfo, ...]

    def __post_init__(self):
        size = len(self.names)
        object.__setattr__(self, "names", tuple(str(name) for name in self.names))
        object.__setattr__(self, "shells", tuple(self.shells))
        for name in _ELEMENT_FIELDS + _INT_FIELDS:
            dtype = np.float64 if name in _ELEMENT_FIELDS else np.int64
            array = np.array(getattr(self, name), dtype=dtype, copy=True).reshape(-1)
            if array.shape != (size,):
                raise ValueError(f"ElementSet.{name} has {array.size} entries for {size} satellites")
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        if size and (self.shell.min() < 0 or self.shell.max() >= len(self.shells)):
            raise ValueError(f"ElementSet.shell indexes outside the {len(self.shells)} shells")

    # ------------------------------------------------------------------ basic views
    @property
    def size(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return self.size

    @property
    def epoch_unix(self) -> np.ndarray:
        """Epoch of each satellite's elements, Unix seconds."""
        return jd_to_unix(self.epoch_jd_whole, self.epoch_jd_frac)

    @cached_property
    def version(self) -> str:
        """Content hash: equal elements and metadata give an equal version, in any process."""
        digest = hashlib.sha256()
        for name in _INT_FIELDS + _ELEMENT_FIELDS:
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        digest.update("\x1f".join(self.names).encode())
        digest.update(repr(self.shells).encode())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ SGP4 records
    @cached_property
    def satrecs(self) -> tuple[Satrec, ...]:
        """One initialised sgp4 Satrec per satellite (built once; sgp4init is the only per-satellite loop)."""
        records = []
        for i in range(self.size):
            whole, frac = float(self.epoch_jd_whole[i]), float(self.epoch_jd_frac[i])
            sat = Satrec()
            sat.sgp4init(
                WGS72,
                "i",
                int(self.satnum[i]),
                (whole + frac) - _SGP4_EPOCH_JD,  # the same expression SGP4's twoline2rv passes
                float(self.bstar[i]),
                float(self.ndot[i]),
                float(self.nddot[i]),
                float(self.ecco[i]),
                float(self.argpo_rad[i]),
                float(self.inclo_rad[i]),
                float(self.mo_rad[i]),
                float(self.no_kozai_rad_min[i]),
                float(self.nodeo_rad[i]),
            )
            # Keep the split epoch exactly: propagation time is (jd - jdsatepoch) + (fr - jdsatepochF).
            sat.jdsatepoch = whole
            sat.jdsatepochF = frac
            records.append(sat)
        return tuple(records)

    def to_satrec_array(self) -> SatrecArray:
        """The vectorised sgp4 array of all satellites (cached)."""
        return self._satrec_array

    @cached_property
    def _satrec_array(self) -> SatrecArray:
        return SatrecArray(list(self.satrecs))

    # ------------------------------------------------------------------ constructors / combinators
    @classmethod
    def from_tle(cls, records: Iterable[TleRecord], shell_name: str = "catalogue") -> "ElementSet":
        """Elements of parsed TLE records, converted exactly as SGP4's twoline2rv converts them."""
        records = list(records)
        columns: dict[str, list] = {name: [] for name in _ELEMENT_FIELDS + ("satnum",)}
        for record in records:
            try:
                decoded = decode_tle(record.line1, record.line2)
            except _FieldError as error:
                line = record.line_number + error.line_index
                raise TleError(record.source, line, error.reason) from None
            columns["satnum"].append(decoded.satnum)
            columns["epoch_jd_whole"].append(decoded.epoch_jd_whole)
            columns["epoch_jd_frac"].append(decoded.epoch_jd_frac)
            columns["bstar"].append(decoded.bstar_mantissa * 10.0**decoded.bstar_exponent)
            columns["ndot"].append(decoded.ndot_rev_day2 / (_XPDOTP * 1440.0))
            columns["nddot"].append(
                decoded.nddot_mantissa * 10.0**decoded.nddot_exponent / (_XPDOTP * 1440.0 * 1440)
            )
            columns["ecco"].append(decoded.eccentricity)
            columns["argpo_rad"].append(decoded.argp_deg * _DEG2RAD)
            columns["inclo_rad"].append(decoded.inclination_deg * _DEG2RAD)
            columns["mo_rad"].append(decoded.mean_anomaly_deg * _DEG2RAD)
            columns["no_kozai_rad_min"].append(decoded.mean_motion_rev_day / _XPDOTP)
            columns["nodeo_rad"].append(decoded.raan_deg * _DEG2RAD)
        size = len(records)
        return cls(
            **columns,
            names=tuple(record.name for record in records),
            norad_id=columns["satnum"],
            shell=np.zeros(size, dtype=np.int64),
            plane=np.full(size, -1),
            slot=np.full(size, -1),
            shells=(ShellInfo(name=shell_name, count=size, kind="catalogue"),),
        )

    @classmethod
    def concat(cls, sets: Sequence["ElementSet"]) -> "ElementSet":
        """One set holding the satellites of all sets in order; shells are appended, indices shifted."""
        sets = list(sets)
        if not sets:
            raise ValueError("ElementSet.concat needs at least one element set")
        shells: list[ShellInfo] = []
        shell_index = []
        for element_set in sets:
            shell_index.append(element_set.shell + len(shells))
            shells.extend(element_set.shells)
        arrays = {
            name: np.concatenate([getattr(s, name) for s in sets])
            for name in _ELEMENT_FIELDS + _INT_FIELDS
            if name != "shell"
        }
        return cls(
            **arrays,
            names=tuple(name for s in sets for name in s.names),
            shell=np.concatenate(shell_index),
            shells=tuple(shells),
        )

    def subset(self, indices) -> "ElementSet":
        """The satellites at the given indices (in that order); shell definitions are kept as they are."""
        index = np.asarray(indices)
        if index.dtype == bool:
            if index.shape != (self.size,):
                raise ValueError(f"boolean mask has shape {index.shape}, expected ({self.size},)")
            index = np.flatnonzero(index)
        index = index.astype(np.int64, copy=False).reshape(-1)
        if index.size and (index.min() < -self.size or index.max() >= self.size):
            raise IndexError(f"satellite index out of range for {self.size} satellites")
        index = np.where(index < 0, index + self.size, index)
        values = {name: getattr(self, name)[index] for name in _ELEMENT_FIELDS + _INT_FIELDS}
        subset = ElementSet(**values, names=tuple(self.names[i] for i in index), shells=self.shells)
        if "satrecs" in self.__dict__:  # reuse initialised records instead of running sgp4init again
            subset.__dict__["satrecs"] = tuple(self.satrecs[i] for i in index)
        return subset

    def __repr__(self) -> str:
        shells = ", ".join(f"{s.name}:{s.count}" for s in self.shells)
        return f"ElementSet(size={self.size}, shells=[{shells}], version={self.version})"


# ---------------------------------------------------------------------- Walker shells
def _kozai_mean_motion(brouwer_rad_min, inclination_rad, eccentricity):
    """Invert SGP4's initialisation (Kozai -> Brouwer mean motion): the no_kozai giving this Brouwer value.

    sgp4init divides no_kozai by (1 + delta(no_kozai)); a fixed-point iteration converges to machine
    precision in a handful of steps because delta is ~1e-4.
    """
    cos_i2 = np.cos(inclination_rad) ** 2
    one_minus_e2 = 1.0 - eccentricity**2
    d1 = 0.75 * SGP4_J2 * (3.0 * cos_i2 - 1.0) / (np.sqrt(one_minus_e2) * one_minus_e2)
    kozai = np.array(brouwer_rad_min, dtype=np.float64, copy=True)
    for _ in range(8):
        ak = (SGP4_XKE / kozai) ** (2.0 / 3.0)
        delta = d1 / (ak * ak)
        adel = ak * (1.0 - delta * delta - delta * (1.0 / 3.0 + 134.0 * delta * delta / 81.0))
        delta = d1 / (adel * adel)
        kozai = brouwer_rad_min * (1.0 + delta)
    return kozai


def circular_orbit_elements(altitude_km, inclination_deg):
    """SGP4 mean elements (no_kozai rad/min, eccentricity, argp rad) that fly at altitude_km on average.

    altitude is the orbit-mean geocentric radius minus SGP4's equatorial radius (6378.135 km). Two SGP4
    effects are compensated:
    - J2: the mean radius is the Brouwer semi-major axis minus 0.75 J2 (3 cos^2 i - 1) / a, and SGP4's
      input is the Kozai mean motion, not the Brouwer one (about 0.3 km at 550 km);
    - J3: a mean eccentricity of 0 makes SGP4's long-period J3 term swing the radius by about +-6 km at
      550 km / 53 deg. A frozen orbit (e = -J3/(2 J2) sin i / a, argument of perigee 270 deg) cancels it,
      leaving only J2's short-period term, 0.25 J2 sin^2 i / a (about +-1 km at 53 deg).
    The argument of perigee drifts under J2 (a few degrees a day in LEO), so the J3 swing returns slowly
    over weeks.
    """
    altitude = np.asarray(altitude_km, dtype=np.float64)
    inclination = np.radians(np.asarray(inclination_deg, dtype=np.float64))
    radius = (SGP4_RADIUS_KM + altitude) / SGP4_RADIUS_KM  # earth radii
    k = 0.75 * SGP4_J2 * (3.0 * np.cos(inclination) ** 2 - 1.0)
    brouwer_a = 0.5 * (radius + np.sqrt(radius * radius + 4.0 * k))
    brouwer_n = SGP4_XKE / brouwer_a**1.5
    eccentricity = np.abs(0.5 * (SGP4_J3 / SGP4_J2) * np.sin(inclination) / brouwer_a)
    argp = np.where(eccentricity > 0.0, 1.5 * math.pi, 0.0)
    return _kozai_mean_motion(brouwer_n, inclination, eccentricity), eccentricity, argp


def kepler_mean_motion_rad_min(altitude_km):
    """Plain two-body mean motion of a circular orbit (what a naive generator would use), rad/min."""
    a = SGP4_RADIUS_KM + np.asarray(altitude_km, dtype=np.float64)
    return np.sqrt(MU_KM3_S2 / a**3) * 60.0


def _check_walker(name, planes, sats_per_plane, altitude_km, inclination_deg, phasing, raan_spread_deg):
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"shell name must be a non-empty string, got {name!r}")
    for what, value in (("planes", planes), ("sats_per_plane", sats_per_plane)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"shell {name!r}: {what} must be a positive integer, got {value!r}")
    if planes * sats_per_plane > 100_000:
        raise ValueError(
            f"shell {name!r}: {planes} x {sats_per_plane} = {planes * sats_per_plane} satellites "
            "is more than the 100000 a shell may hold"
        )
    if isinstance(phasing, bool) or not isinstance(phasing, (int, np.integer)) or not 0 <= phasing < planes:
        raise ValueError(f"shell {name!r}: phasing must be an integer in [0, {planes - 1}], got {phasing!r}")
    if not (isinstance(altitude_km, (int, float, np.number)) and 150.0 <= altitude_km <= 100_000.0):
        raise ValueError(f"shell {name!r}: altitude_km {altitude_km!r} is outside [150, 100000] km")
    if not (isinstance(inclination_deg, (int, float, np.number)) and 0.0 <= inclination_deg <= 180.0):
        raise ValueError(f"shell {name!r}: inclination_deg {inclination_deg!r} is outside [0, 180]")
    if not (isinstance(raan_spread_deg, (int, float, np.number)) and 0.0 < raan_spread_deg <= 360.0):
        raise ValueError(f"shell {name!r}: raan_spread_deg {raan_spread_deg!r} is outside (0, 360]")


def walker_shell(
    name: str,
    planes: int,
    sats_per_plane: int,
    altitude_km: float,
    inclination_deg: float,
    phasing: int,
    epoch_unix: float,
    raan_spread_deg: float = 360.0,
) -> ElementSet:
    """A Walker-delta shell i: T/P/F (T = planes * sats_per_plane, P = planes, F = phasing).

    Plane p has its ascending node at p * raan_spread / P; satellite s of plane p starts at argument of
    latitude 360 s / S + 360 F p / T degrees. Orbits are circular at altitude_km (see
    circular_orbit_elements), without drag. Names are "<name>-<plane>-<slot>".
    """
    _check_walker(name, planes, sats_per_plane, altitude_km, inclination_deg, phasing, raan_spread_deg)
    if not math.isfinite(float(epoch_unix)):
        raise ValueError(f"shell {name!r}: epoch must be a finite Unix time, got {epoch_unix!r}")
    total = planes * sats_per_plane
    plane = np.repeat(np.arange(planes), sats_per_plane)
    slot = np.tile(np.arange(sats_per_plane), planes)
    raan_deg = plane * (raan_spread_deg / planes)
    latitude_arg_deg = 360.0 * slot / sats_per_plane + 360.0 * phasing * plane / total
    no_kozai, ecc, argp = circular_orbit_elements(altitude_km, inclination_deg)
    jd_whole, jd_frac = unix_to_jd(float(epoch_unix))
    width_p, width_s = len(str(planes - 1)), len(str(sats_per_plane - 1))
    return ElementSet(
        satnum=np.arange(total) % _MAX_SYNTHETIC_SATNUM + 1,
        epoch_jd_whole=np.full(total, jd_whole),
        epoch_jd_frac=np.full(total, jd_frac),
        bstar=np.zeros(total),
        ndot=np.zeros(total),
        nddot=np.zeros(total),
        ecco=np.full(total, ecc),
        argpo_rad=np.full(total, argp),
        inclo_rad=np.full(total, math.radians(inclination_deg)),
        mo_rad=np.radians(np.mod(latitude_arg_deg - math.degrees(argp), 360.0)),
        no_kozai_rad_min=np.full(total, no_kozai),
        nodeo_rad=np.radians(np.mod(raan_deg, 360.0)),
        names=tuple(f"{name}-{p:0{width_p}d}-{s:0{width_s}d}" for p, s in zip(plane, slot, strict=True)),
        norad_id=np.full(total, -1),
        shell=np.zeros(total, dtype=np.int64),
        plane=plane,
        slot=slot,
        shells=(
            ShellInfo(
                name=name,
                count=total,
                kind="walker",
                planes=planes,
                sats_per_plane=sats_per_plane,
                altitude_km=float(altitude_km),
                inclination_deg=float(inclination_deg),
                phasing=int(phasing),
                raan_spread_deg=float(raan_spread_deg),
            ),
        ),
    )


def mean_motion_rev_day(element_set: ElementSet) -> np.ndarray:
    """Kozai mean motion in revolutions per day (the TLE unit)."""
    return element_set.no_kozai_rad_min * _XPDOTP


def orbital_period_s(element_set: ElementSet) -> np.ndarray:
    """Nominal orbital period of each satellite, seconds."""
    return SECONDS_PER_DAY / mean_motion_rev_day(element_set)
