"""The ground segment: data-center terminals, region gateways and the regions behind them.

Built from plain values (the scenario loader turns YAML into these). Ground nodes are ordered
terminals first, then gateways; ``positions_ecef`` and the per-node arrays follow that order.

A moving terminal follows waypoints ``(t_unix, lat_deg, lon_deg)``: between two waypoints it moves
along the great circle through them at constant angular speed (spherical interpolation of the
geodetic latitude/longitude treated as spherical coordinates); before the first waypoint and after
the last it stays put. Its altitude is the terminal's fixed ``alt_km``.

Fibre from a gateway to its region: great-circle distance times the
gateway's route factor, at c / 1.47 (great circle on the 6371 km mean-radius sphere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from skyhaul.core.constants import C_KM_S, EARTH_RADIUS_KM, FIBRE_INDEX
from skyhaul.core.frames import geodetic_to_ecef


class UnknownId(KeyError):
    """A terminal, gateway or region id that the ground segment does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown id"


def _check_lat_lon(what: str, lat_deg: float, lon_deg: float) -> None:
    if not np.isfinite(lat_deg) or not -90.0 <= lat_deg <= 90.0:
        raise ValueError(f"{what}: latitude {lat_deg} is outside [-90, 90]")
    if not np.isfinite(lon_deg) or not -180.0 <= lon_deg <= 360.0:
        raise ValueError(f"{what}: longitude {lon_deg} is outside [-180, 360]")


def _check_elevation(what: str, min_elevation_deg: float) -> None:
    if not np.isfinite(min_elevation_deg) or not 0.0 <= min_elevation_deg < 90.0:
        raise ValueError(f"{what}: min_elevation_deg {min_elevation_deg} is outside [0, 90)")


def _check_positive(what: str, name: str, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{what}: {name} must be a positive number, got {value}")


@dataclass(frozen=True)
class Terminal:
    """A modular data center's dish. Fixed at (lat, lon, alt) unless ``track`` is given."""

    id: str
    lat_deg: float = 0.0
    lon_deg: float = 0.0
    alt_km: float = 0.0
    min_elevation_deg: float = 25.0
    uplink_mbps: float = 40.0
    downlink_mbps: float = 200.0
    # Waypoints (t_unix, lat_deg, lon_deg), strictly increasing in time; empty = fixed position.
    track: tuple[tuple[float, float, float], ...] = ()
    home_region_id: str | None = None

    def __post_init__(self) -> None:
        what = f"terminal {self.id!r}"
        if not self.id:
            raise ValueError("terminal: id must not be empty")
        _check_elevation(what, self.min_elevation_deg)
        _check_positive(what, "uplink_mbps", self.uplink_mbps)
        _check_positive(what, "downlink_mbps", self.downlink_mbps)
        if not np.isfinite(self.alt_km) or not -1.0 <= self.alt_km <= 100.0:
            raise ValueError(f"{what}: alt_km {self.alt_km} is outside [-1, 100]")
        if self.track:
            object.__setattr__(self, "track", tuple(tuple(float(v) for v in w) for w in self.track))
            for k, w in enumerate(self.track):
                if len(w) != 3:
                    raise ValueError(f"{what}: track[{k}] must be (t, lat, lon), got {w}")
                _check_lat_lon(f"{what} track[{k}]", w[1], w[2])
            times = np.array([w[0] for w in self.track])
            if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
                raise ValueError(f"{what}: track times must be finite and strictly increasing")
            # Position when queried without a time is the first waypoint.
            object.__setattr__(self, "lat_deg", self.track[0][1])
            object.__setattr__(self, "lon_deg", self.track[0][2])
        else:
            _check_lat_lon(what, self.lat_deg, self.lon_deg)

    @classmethod
    def moving(
        cls,
        id: str,
        waypoints: Sequence[tuple[float, float, float]],
        epoch_unix: float = 0.0,
        **kwargs,
    ) -> Terminal:
        """A terminal on a track whose waypoint times are offsets (s) from ``epoch_unix``."""
        if len(waypoints) < 1:
            raise ValueError(f"terminal {id!r}: a track needs at least one waypoint")
        track = tuple((epoch_unix + float(t), float(lat), float(lon)) for t, lat, lon in waypoints)
        return cls(id=id, track=track, **kwargs)


@dataclass(frozen=True)
class Gateway:
    """A ground station attached to a cloud region by terrestrial fibre."""

    id: str
    region_id: str
    lat_deg: float
    lon_deg: float
    alt_km: float = 0.0
    min_elevation_deg: float = 25.0
    capacity_mbps: float = 20000.0
    fibre_route_factor: float = 1.5

    def __post_init__(self) -> None:
        what = f"gateway {self.id!r}"
        if not self.id:
            raise ValueError("gateway: id must not be empty")
        _check_lat_lon(what, self.lat_deg, self.lon_deg)
        _check_elevation(what, self.min_elevation_deg)
        _check_positive(what, "capacity_mbps", self.capacity_mbps)
        if not np.isfinite(self.fibre_route_factor) or self.fibre_route_factor < 1.0:
            raise ValueError(f"{what}: fibre_route_factor must be >= 1, got {self.fibre_route_factor}")


@dataclass(frozen=True)
class Region:
    id: str
    lat_deg: float
    lon_deg: float

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("region: id must not be empty")
        _check_lat_lon(f"region {self.id!r}", self.lat_deg, self.lon_deg)


def great_circle_km(lat1_deg, lon1_deg, lat2_deg, lon2_deg):
    """Great-circle distance on the mean-radius sphere (haversine), broadcasting."""
    p1, p2 = np.radians(lat1_deg), np.radians(lat2_deg)
    dl = np.radians(np.asarray(lon2_deg) - np.asarray(lon1_deg))
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _unit(lat_deg, lon_deg):
    la, lo = np.radians(lat_deg), np.radians(lon_deg)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


@dataclass
class GroundSegment:
    """Terminals, gateways and regions, with vectorised positions and fibre delays."""

    terminals: tuple[Terminal, ...]
    gateways: tuple[Gateway, ...]
    regions: tuple[Region, ...]
    # Derived (filled in __post_init__).
    terminal_index: dict[str, int] = field(init=False)
    gateway_index: dict[str, int] = field(init=False)
    region_index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.terminals = tuple(self.terminals)
        self.gateways = tuple(self.gateways)
        self.regions = tuple(self.regions)
        for kind, items in (
            ("terminal", self.terminals),
            ("gateway", self.gateways),
            ("region", self.regions),
        ):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise ValueError(f"{kind} id {item.id!r} appears twice")
                seen.add(item.id)
        self.terminal_index = {t.id: k for k, t in enumerate(self.terminals)}
        self.gateway_index = {g.id: k for k, g in enumerate(self.gateways)}
        self.region_index = {r.id: k for k, r in enumerate(self.regions)}
        for g in self.gateways:
            if g.region_id not in self.region_index:
                raise ValueError(f"gateway {g.id!r}: region {g.region_id!r} is not a known region")
        for t in self.terminals:
            if t.home_region_id is not None and t.home_region_id not in self.region_index:
                raise ValueError(f"terminal {t.id!r}: home region {t.home_region_id!r} is not a known region")

        nt, ng = len(self.terminals), len(self.gateways)
        self.gateway_region = np.array(
            [self.region_index[g.region_id] for g in self.gateways], dtype=np.int64
        )
        self.min_elevation_deg = np.array(
            [t.min_elevation_deg for t in self.terminals] + [g.min_elevation_deg for g in self.gateways],
            dtype=float,
        ).reshape(nt + ng)
        self.terminal_uplink_mbps = np.array([t.uplink_mbps for t in self.terminals], dtype=float)
        self.terminal_downlink_mbps = np.array([t.downlink_mbps for t in self.terminals], dtype=float)
        self.gateway_capacity_mbps = np.array([g.capacity_mbps for g in self.gateways], dtype=float)
        if ng:
            glat = np.array([g.lat_deg for g in self.gateways])
            glon = np.array([g.lon_deg for g in self.gateways])
            rlat = np.array([self.regions[k].lat_deg for k in self.gateway_region])
            rlon = np.array([self.regions[k].lon_deg for k in self.gateway_region])
            factor = np.array([g.fibre_route_factor for g in self.gateways])
            self.fibre_km = great_circle_km(glat, glon, rlat, rlon) * factor
        else:
            self.fibre_km = np.zeros(0)
        self.fibre_delay_s = self.fibre_km * FIBRE_INDEX / C_KM_S

        # Fixed geodetic coordinates of every ground node; moving terminals are overwritten per time.
        self._lat = np.array([t.lat_deg for t in self.terminals] + [g.lat_deg for g in self.gateways], float)
        self._lon = np.array([t.lon_deg for t in self.terminals] + [g.lon_deg for g in self.gateways], float)
        self._alt = np.array([t.alt_km for t in self.terminals] + [g.alt_km for g in self.gateways], float)
        self._moving = [k for k, t in enumerate(self.terminals) if len(t.track) > 1]
        self._fixed_ecef = np.asarray(geodetic_to_ecef(self._lat, self._lon, self._alt), dtype=float).reshape(
            nt + ng, 3
        )

    def terminal(self, terminal_id: str) -> int:
        """Index of a terminal; UnknownId names the known ones."""
        if terminal_id not in self.terminal_index:
            raise UnknownId(
                f"unknown terminal {terminal_id!r}; known: {', '.join(self.terminal_index) or 'none'}"
            )
        return self.terminal_index[terminal_id]

    def region(self, region_id: str) -> int:
        """Index of a region; UnknownId names the known ones."""
        if region_id not in self.region_index:
            raise UnknownId(f"unknown region {region_id!r}; known: {', '.join(self.region_index) or 'none'}")
        return self.region_index[region_id]

    def gateway(self, gateway_id: str) -> int:
        """Index of a gateway; UnknownId names the known ones."""
        if gateway_id not in self.gateway_index:
            raise UnknownId(
                f"unknown gateway {gateway_id!r}; known: {', '.join(self.gateway_index) or 'none'}"
            )
        return self.gateway_index[gateway_id]

    @property
    def n_terminals(self) -> int:
        return len(self.terminals)

    @property
    def n_gateways(self) -> int:
        return len(self.gateways)

    @property
    def n_ground(self) -> int:
        return len(self.terminals) + len(self.gateways)

    @property
    def has_moving(self) -> bool:
        return bool(self._moving)

    def geodetic(self, t_unix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lat_deg, lon_deg, alt_km) of every ground node: shape (G,) for scalar t, (T, G) for arrays."""
        t = np.asarray(t_unix, dtype=float)
        shape = t.shape + (self.n_ground,)
        lat = np.broadcast_to(self._lat, shape).copy()
        lon = np.broadcast_to(self._lon, shape).copy()
        alt = np.broadcast_to(self._alt, shape).copy()
        for k in self._moving:
            la, lo = self.track_position(k, t)
            lat[..., k] = la
            lon[..., k] = lo
        return lat, lon, alt

    def track_position(self, terminal: int, t_unix) -> tuple[np.ndarray, np.ndarray]:
        """Latitude/longitude of a terminal at times t (great-circle interpolation between waypoints)."""
        track = self.terminals[terminal].track
        t = np.asarray(t_unix, dtype=float)
        if len(track) <= 1:
            return np.full(t.shape, self._lat[terminal]), np.full(t.shape, self._lon[terminal])
        wt = np.array([w[0] for w in track])
        wu = _unit(np.array([w[1] for w in track]), np.array([w[2] for w in track]))
        tc = np.clip(t, wt[0], wt[-1])
        seg = np.clip(np.searchsorted(wt, tc, side="right") - 1, 0, len(wt) - 2)
        f = ((tc - wt[seg]) / (wt[seg + 1] - wt[seg]))[..., None]
        a, b = wu[seg], wu[seg + 1]
        omega = np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0))[..., None]
        so = np.sin(omega)
        # Slerp; where the two waypoints coincide (or nearly) the straight blend is exact enough.
        small = so < 1e-9
        safe = np.where(small, 1.0, so)
        wa = np.where(small, 1.0 - f, np.sin((1.0 - f) * omega) / safe)
        wb = np.where(small, f, np.sin(f * omega) / safe)
        u = wa * a + wb * b
        u = u / np.linalg.norm(u, axis=-1, keepdims=True)
        lat = np.degrees(np.arcsin(np.clip(u[..., 2], -1.0, 1.0)))
        lon = np.degrees(np.arctan2(u[..., 1], u[..., 0]))
        return lat, lon

    def positions_ecef(self, t_unix) -> np.ndarray:
        """ECEF (km) of every ground node (terminals, then gateways): (G, 3) or (T, G, 3)."""
        t = np.asarray(t_unix, dtype=float)
        if not self._moving:
            return np.broadcast_to(self._fixed_ecef, t.shape + self._fixed_ecef.shape).copy()
        lat, lon, alt = self.geodetic(t)
        return np.asarray(geodetic_to_ecef(lat, lon, alt), dtype=float)

    def up_vectors(self, t_unix) -> np.ndarray:
        """Unit geodetic normals ("up") of every ground node: (G, 3) or (T, G, 3)."""
        lat, lon, _ = self.geodetic(t_unix)
        return _unit(lat, lon)
