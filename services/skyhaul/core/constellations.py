"""Constellation presets (Walker-delta shells) and user-defined shell lists.

Phasing factors F of the presets were chosen by a numeric search over F = 0..P-1 for the largest
minimum distance between any two satellites of the shell over an orbit (circular two-body model):
for Starlink's 72 x 22 shell F = 65 keeps satellites at least 71 km apart, whereas F = 0 puts two
satellites at the same point where planes cross. The figures are in the comments of each preset.
"""

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .elements import ElementSet, walker_shell


@dataclass(frozen=True)
class ShellSpec:
    """One Walker-delta shell: T = planes * sats_per_plane satellites, phasing F in [0, planes).

    The scenario's ``constellation.shells`` parse straight into this class. ``phasing`` defaults to
    F = 1: the default the running system has always applied to a scenario's own shells (the
    scenario loader's copy of this class said 1; this one said 0 but was only ever reached with an
    explicit F). F = 0 puts two satellites at the same point where planes cross, and the presets
    give their searched F explicitly. A one-plane shell must give ``phasing: 0``.
    """

    name: str
    planes: int
    sats_per_plane: int
    altitude_km: float
    inclination_deg: float
    phasing: int = 1
    raan_spread_deg: float = 360.0

    def build(self, epoch_unix: float) -> ElementSet:
        return walker_shell(
            self.name,
            self.planes,
            self.sats_per_plane,
            self.altitude_km,
            self.inclination_deg,
            self.phasing,
            epoch_unix,
            self.raan_spread_deg,
        )


class UnknownPresetError(KeyError):
    """No preset of that name; the message lists the known ones."""

    def __init__(self, name):
        self.name = name
        self.message = f"unknown constellation preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


# Minimum separation over an orbit for the chosen F (two-body, circular), from the search described above.
_STARLINK_550 = ShellSpec("starlink-550-53", 72, 22, 550.0, 53.0, 65)  # 71 km (F = 17: 20 km)
_STARLINK_540 = ShellSpec("starlink-540-53.2", 72, 22, 540.0, 53.2, 13)  # 48 km
_STARLINK_570 = ShellSpec("starlink-570-70", 36, 20, 570.0, 70.0, 25)  # 65 km
_STARLINK_560 = ShellSpec("starlink-560-97.6", 10, 52, 560.0, 97.6, 5)  # 55 km

_PRESET_SHELLS: dict[str, tuple[ShellSpec, ...]] = {
    "starlink-shell1": (dataclasses.replace(_STARLINK_550, name="starlink-shell1"),),
    "starlink-gen1": (_STARLINK_550, _STARLINK_540, _STARLINK_570, _STARLINK_560),
    "kuiper-630": (ShellSpec("kuiper-630", 34, 34, 630.0, 51.9, 7),),  # 78 km
    "telesat-1015": (ShellSpec("telesat-1015", 27, 13, 1015.0, 98.98, 26),),  # 155 km
    "o3b-meo": (ShellSpec("o3b-meo", 1, 20, 8062.0, 0.0, 0),),
}

PRESETS: dict[str, str] = {
    "starlink-shell1": "Starlink shell 1: 72 planes x 22 satellites, 550 km, 53 deg (1584)",
    "starlink-gen1": (
        "Starlink gen1 per the April 2021 FCC order, 4408 satellites: 72x22 at 550 km/53 deg, "
        "72x22 at 540 km/53.2 deg, 36x20 at 570 km/70 deg, 10x52 at 560 km/97.6 deg"
    ),
    "starlink-2020-10": (
        "Starlink as of the Azure + Starlink announcement (October 2020): 792 satellites in the 53 deg "
        "shell at 550 km, every other plane of shell 1 populated (36 x 22), with coverage gaps"
    ),
    "kuiper-630": "Kuiper first shell: 34 planes x 34 satellites, 630 km, 51.9 deg (1156)",
    "telesat-1015": "Telesat polar shell: 27 planes x 13 satellites, 1015 km, 98.98 deg (351)",
    "o3b-meo": (
        "O3b MEO: 20 satellites in one equatorial plane at 8062 km "
        "(about 149 ms RTT with the fibre of scenarios/o3b-meo.yaml)"
    ),
}

# Default minimum elevation of terminals and gateways for each preset (DESIGN "The link model").
PRESET_MIN_ELEVATION_DEG: dict[str, float] = {
    "starlink-shell1": 25.0,
    "starlink-gen1": 25.0,
    "starlink-2020-10": 25.0,
    "kuiper-630": 30.0,
    "telesat-1015": 10.0,
    "o3b-meo": 10.0,
}


def _starlink_2020_10(epoch_unix: float) -> ElementSet:
    # About 800 satellites were in orbit in October 2020, all in the 53 deg shell, launched 60 at a time
    # into groups of planes. Modelled as shell 1 with its even planes populated: 36 of 72 planes x 22.
    full = dataclasses.replace(_STARLINK_550, name="starlink-2020-10").build(epoch_unix)
    sparse = full.subset(np.flatnonzero(full.plane % 2 == 0))
    info = dataclasses.replace(sparse.shells[0], count=sparse.size)
    return dataclasses.replace(sparse, shells=(info,))


def preset_shells(name: str) -> tuple[ShellSpec, ...]:
    """The shells a preset is made of (starlink-2020-10: the full shell 1 it thins out)."""
    if name == "starlink-2020-10":
        return (dataclasses.replace(_STARLINK_550, name="starlink-2020-10"),)
    if name not in _PRESET_SHELLS:
        raise UnknownPresetError(name)
    return _PRESET_SHELLS[name]


def build_preset(name: str, epoch_unix: float) -> ElementSet:
    """Elements of a preset constellation with every satellite's epoch at epoch_unix."""
    if name == "starlink-2020-10":
        return _starlink_2020_10(epoch_unix)
    return build_shells(preset_shells(name), epoch_unix)


_SPEC_FIELDS = {f.name for f in dataclasses.fields(ShellSpec)}
_REQUIRED_FIELDS = {f.name for f in dataclasses.fields(ShellSpec) if f.default is dataclasses.MISSING}


def _as_spec(item, position: int) -> ShellSpec:
    if isinstance(item, ShellSpec):
        return item
    if not isinstance(item, Mapping):
        raise ValueError(f"shells[{position}]: expected a mapping or ShellSpec, got {type(item).__name__}")
    unknown = set(item) - _SPEC_FIELDS
    if unknown:
        raise ValueError(
            f"shells[{position}]: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
            f"allowed: {', '.join(sorted(_SPEC_FIELDS))}"
        )
    missing = _REQUIRED_FIELDS - set(item)
    if missing:
        raise ValueError(f"shells[{position}]: missing field(s) {', '.join(sorted(missing))}")
    return ShellSpec(**item)


def build_shells(shells: Iterable, epoch_unix: float) -> ElementSet:
    """One ElementSet from several shells (ShellSpec or dicts with ShellSpec's fields), in order."""
    specs = [_as_spec(item, i) for i, item in enumerate(shells)]
    if not specs:
        raise ValueError("a constellation needs at least one shell")
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.name in seen:
            raise ValueError(f"shells[{i}]: shell name {spec.name!r} is used twice")
        seen.add(spec.name)
    built = []
    for i, spec in enumerate(specs):
        try:
            built.append(spec.build(epoch_unix))
        except ValueError as error:
            raise ValueError(f"shells[{i}]: {error}") from None
    return built[0] if len(built) == 1 else ElementSet.concat(built)
