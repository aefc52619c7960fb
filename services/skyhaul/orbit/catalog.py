"""The constellations an orbit service knows: the scenario's own, and every preset on demand."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from skyhaul.contract.orbit_codec import shells_to_proto
from skyhaul.core.constellations import PRESETS, UnknownPresetError, build_preset, build_shells
from skyhaul.core.elements import ElementSet
from skyhaul.core.propagate import Propagator
from skyhaul.core.tle import TleError, load_tle_file
from skyhaul.runtime.clock import to_timestamp
from skyhaul.runtime.errors import InvalidArgument, NotFound
from skyhaul.runtime.scenario import ConstellationSpec, Scenario
from skyhaul.v1 import orbit_pb2


def build_constellation(spec: ConstellationSpec, epoch_unix: float) -> tuple[ElementSet, str, int]:
    """Elements for a scenario's constellation: (elements, description, satellites skipped)."""
    if spec.preset:
        try:
            return build_preset(spec.preset, epoch_unix), PRESETS[spec.preset], 0
        except UnknownPresetError as exc:
            raise InvalidArgument(f"constellation.preset: {exc}") from None
    if spec.tle_file:
        try:
            result = load_tle_file(
                spec.tle_file, name_filter=spec.name_filter, skip_invalid=spec.skip_invalid
            )
        except TleError as exc:
            raise InvalidArgument(f"constellation.tle_file: {exc}") from None
        if not result.records:
            raise InvalidArgument(
                f"constellation.tle_file: no satellite in {spec.tle_file} matches {spec.name_filter!r}"
            )
        description = f"{len(result.records)} satellites from {spec.tle_file}"
        return ElementSet.from_tle(result.records), description, len(result.skipped)
    shells = [
        {
            "name": s.name,
            "planes": s.planes,
            "sats_per_plane": s.sats_per_plane,
            "altitude_km": s.altitude_km,
            "inclination_deg": s.inclination_deg,
            "phasing": s.phasing,
        }
        for s in spec.shells
    ]
    with_shells = build_shells(shells, epoch_unix)
    return with_shells, f"{with_shells.size} satellites in {len(shells)} Walker shell(s)", 0


@dataclass(frozen=True)
class Constellation:
    name: str
    description: str
    source: int
    elements: ElementSet
    propagator: Propagator

    def summary(self) -> orbit_pb2.ConstellationSummary:
        epochs = self.elements.epoch_unix
        return orbit_pb2.ConstellationSummary(
            name=self.name,
            description=self.description,
            source=self.source,
            satellite_count=self.elements.size,
            shells=shells_to_proto(self.elements),
            elements_version=self.elements.version,
            epoch=to_timestamp(float(np.min(epochs)) if epochs.size else 0.0),
        )


class Catalog:
    def __init__(self, scenario: Scenario) -> None:
        self.epoch_unix = scenario.epoch_unix
        spec = scenario.constellation
        elements, description, self.skipped = build_constellation(spec, scenario.epoch_unix)
        source = orbit_pb2.ELEMENT_SOURCE_TLE_FILE if spec.tle_file else orbit_pb2.ELEMENT_SOURCE_WALKER
        self.default = spec.label
        self._items = {
            self.default: Constellation(self.default, description, source, elements, Propagator(elements))
        }
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return [self.default, *sorted(p for p in PRESETS if p != self.default)]

    def get(self, name: str) -> Constellation:
        name = name or self.default
        with self._lock:
            if name not in self._items:
                if name not in PRESETS:
                    raise NotFound(f"unknown constellation {name!r}; known: {', '.join(self.names())}")
                elements = build_preset(name, self.epoch_unix)
                self._items[name] = Constellation(
                    name, PRESETS[name], orbit_pb2.ELEMENT_SOURCE_WALKER, elements, Propagator(elements)
                )
            return self._items[name]
