"""Inter-satellite links: ``none`` (bent pipe) or ``+grid``.

``+grid`` links, per shell, each satellite to its two neighbours in its plane (slot ±1, wrapping
round the plane) and to the satellites with the same slot index in the two neighbouring populated
planes. Satellites without plane/slot metadata (plane < 0, e.g. a TLE catalogue) get no ISLs.
Across the seam (last plane → first plane) a Walker delta shell is phase-shifted by the phasing
factor, so the neighbour of (last plane, slot s) is (first plane, s + shift): the shift is
measured once from positions (the slot offset that brings the two planes' satellites closest
together) rather than trusted from metadata. A Walker star shell (planes over 180°) has
counter-rotating planes at its seam and gets no seam links: a seam link is made only when the
two planes' orbit normals are about as close as other neighbouring planes' are.

A link exists only while its line of sight stays at least ``min_altitude_km`` (80 km) above the
Earth: the closest approach of the segment to the Earth's centre, against a sphere of the WGS84
equatorial radius (the ellipsoid lies inside that sphere, so the test is conservative).

Real catalogues (TLE files) carry no plane or slot: ``infer_grid`` infers them from the orbits at
one reference time (TEME states, so every satellite is compared at the same instant whatever its
TLE epoch):

- *shell*: inclination groups (gaps over ``inclination_gap_deg``), then within a group the densest
  ``shell_bin_km`` altitude bin (mean altitude from the mean motion) and every satellite within
  ``shell_tolerance_km`` of it; repeated while ``min_shell_size`` satellites remain. Satellites outside
  every shell, below ``min_altitude_km``, or in a cluster more than ``raising_margin_km`` below a more
  populated shell of the same inclination (a batch raising its orbit, or re-entering) are not used
  (plane -1);
- *plane*: the orbit normal's RAAN, clustered on the circle (gaps over ``plane_gap_deg``); an
  equatorial shell (inclination under 1 degree) has no RAAN and no planes;
- *slot*: rank of the argument of latitude within the plane.

``catalogue_grid_pairs`` then gives each satellite four laser ports (fore, aft, left, right) and
links free ports shortest first within a shell: the classic +grid on a full shell, and a connected
grid on a catalogue still being deployed (see its doc). ``nearest_neighbour_pairs`` is the alternative laser topology: shortest
links first, at most 4 per satellite. ``+grid`` on a constellation where no shell has two planes of
``min_plane_size`` satellites raises ``IslGridError`` naming the constellation — never 0 ISLs in silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from skyhaul.core.constants import C_KM_S, MU_KM3_S2, SGP4_RADIUS_KM, WGS84_A_KM


class IslGridError(ValueError):
    """``+grid`` cannot be built for a constellation (no planes to infer); the message names it."""


def segment_min_altitude_km(a_km: np.ndarray, b_km: np.ndarray, radius_km: float = WGS84_A_KM) -> np.ndarray:
    """Lowest altitude above a sphere along the segments a→b (..., 3) -> (...)."""
    d = b_km - a_km
    dd = np.einsum("...k,...k->...", d, d)
    s = np.clip(-np.einsum("...k,...k->...", a_km, d) / np.where(dd > 0, dd, 1.0), 0.0, 1.0)
    closest = a_km + s[..., None] * d
    return np.sqrt(np.einsum("...k,...k->...", closest, closest)) - radius_km


@dataclass(frozen=True)
class IslLinks:
    """Active ISLs at one time: undirected pairs (i < j) and their lengths."""

    i: np.ndarray
    j: np.ndarray
    length_km: np.ndarray

    @property
    def delay_s(self) -> np.ndarray:
        return self.length_km / C_KM_S

    def __len__(self) -> int:
        return int(self.i.size)


def _plane_normals(r_km: np.ndarray, members: np.ndarray) -> np.ndarray | None:
    """Unit orbit normal of a plane from its satellites ordered by slot (sum of r_s × r_s+1)."""
    r = r_km[members]
    if len(r) < 3 or not np.all(np.isfinite(r)):
        return None
    n = np.cross(r, np.roll(r, -1, axis=0)).sum(axis=0)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else None


def plus_grid_pairs(
    shell: np.ndarray, plane: np.ndarray, slot: np.ndarray, r_ref_km: np.ndarray | None = None
) -> np.ndarray:
    """Candidate +grid pairs (E, 2), i < j, unique, sorted. Satellites with plane < 0 are left out.

    ``r_ref_km`` (N, 3): positions at one reference time, used for the seam (see module doc);
    without it there are no seam links.
    """
    shell = np.asarray(shell, dtype=np.int64)
    plane = np.asarray(plane, dtype=np.int64)
    slot = np.asarray(slot, dtype=np.int64)
    pairs: list[np.ndarray] = []
    for sh in np.unique(shell[plane >= 0]):
        idx = np.flatnonzero((shell == sh) & (plane >= 0))
        # Planes are ranked: a thinned-out shell (every other plane launched) links its populated
        # planes to each other.
        planes, plane_rank = np.unique(plane[idx], return_inverse=True)
        n_planes = planes.size
        n_slots = int(slot[idx].max()) + 1
        # grid[p, s] = satellite index, -1 where a slot is empty.
        grid = np.full((n_planes, n_slots), -1, dtype=np.int64)
        grid[plane_rank, slot[idx]] = idx
        # Intra-plane ring (a 2-satellite plane gives the same pair twice; deduplicated below).
        pairs.append(np.stack([grid.ravel(), np.roll(grid, -1, axis=1).ravel()], axis=1))
        # Neighbouring planes, same slot index.
        if n_planes >= 2:
            pairs.append(np.stack([grid[:-1].ravel(), grid[1:].ravel()], axis=1))
        # Seam.
        if n_planes >= 3 and r_ref_km is not None:
            seam = _seam_pairs(grid, np.asarray(r_ref_km, dtype=float))
            if seam is not None:
                pairs.append(seam)
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    p = np.concatenate(pairs)
    p = p[(p[:, 0] >= 0) & (p[:, 1] >= 0) & (p[:, 0] != p[:, 1])]
    p = np.sort(p, axis=1)
    return np.unique(p, axis=0)


def _seam_pairs(grid: np.ndarray, r_km: np.ndarray) -> np.ndarray | None:
    n_planes, n_slots = grid.shape
    first, last = grid[0], grid[-1]
    if np.any(first < 0) or np.any(last < 0):
        return None
    normals = [_plane_normals(r_km, grid[p]) for p in range(n_planes)] if np.all(grid >= 0) else None
    if normals is None or any(n is None for n in normals):
        return None
    normals = np.array(normals)
    adjacent = np.degrees(np.arccos(np.clip(np.sum(normals[:-1] * normals[1:], axis=1), -1, 1)))
    seam_angle = np.degrees(np.arccos(np.clip(normals[-1] @ normals[0], -1, 1)))
    # Co-rotating and about as far apart as neighbouring planes (Walker delta); not a star's seam.
    if seam_angle > 1.5 * float(np.median(adjacent)) + 1e-6:
        return None
    # The slot shift that brings the two planes' satellites closest together.
    shifts = np.arange(n_slots)
    cand = first[(np.arange(n_slots)[None, :] + shifts[:, None]) % n_slots]  # (shift, s)
    dist = np.linalg.norm(r_km[cand] - r_km[last][None, :, :], axis=-1).sum(axis=1)
    best = int(np.argmin(dist))
    return np.stack([last, cand[best]], axis=1)


class IslTopology:
    """The static candidate ISL pairs of a constellation and the active ones at a given time."""

    def __init__(
        self,
        mode: str,
        shell: np.ndarray,
        plane: np.ndarray,
        slot: np.ndarray,
        r_ref_km: np.ndarray | None = None,
        min_altitude_km: float = 80.0,
        *,
        constellation: str = "the constellation",
    ) -> None:
        if mode not in ("none", "+grid"):
            raise ValueError(f"ISL mode {mode!r} is not one of none, +grid")
        if not np.isfinite(min_altitude_km) or min_altitude_km < 0:
            raise ValueError(f"ISL minimum altitude must be >= 0 km, got {min_altitude_km}")
        self.mode = mode
        self.n_sats = int(np.asarray(shell).size)
        self.min_altitude_km = float(min_altitude_km)
        if mode == "none":
            self.pairs = np.zeros((0, 2), dtype=np.int64)
        else:
            if self.n_sats and not np.any(np.asarray(plane) >= 0):
                raise IslGridError(
                    f"isl +grid: {constellation} has no orbital planes (a TLE catalogue?); infer them with "
                    "IslTopology.for_catalogue, or use isl: none"
                )
            self.pairs = plus_grid_pairs(shell, plane, slot, r_ref_km)

    @classmethod
    def from_pairs(
        cls, mode: str, n_sats: int, pairs: np.ndarray, min_altitude_km: float = 80.0
    ) -> IslTopology:
        """A topology with given candidate pairs (E, 2)."""
        topo = cls(
            "none",
            np.zeros(n_sats, dtype=np.int64),
            np.full(n_sats, -1),
            np.full(n_sats, -1),
            None,
            min_altitude_km,
        )
        topo.mode = mode
        p = np.sort(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
        topo.pairs = np.unique(p, axis=0) if p.size else np.zeros((0, 2), dtype=np.int64)
        return topo

    @classmethod
    def for_catalogue(
        cls,
        elements,
        r_teme_km: np.ndarray,
        v_teme_km_s: np.ndarray,
        mode: str = "+grid",
        *,
        min_altitude_km: float = 80.0,
        constellation: str | None = None,
        grid: GridOptions | None = None,
    ) -> IslTopology:
        """ISLs of a real catalogue from its states at one reference time: ``+grid`` on inferred
        planes and slots (``IslGridError`` when there are none), ``nearest`` (4 nearest in range), or
        ``none``. The states double as the reference positions (links are checked in any frame)."""
        name = constellation or _constellation_name(elements)
        options = grid or GridOptions()
        n = int(np.asarray(r_teme_km).shape[0])
        if mode == "none":
            return cls.from_pairs("none", n, np.zeros((0, 2)), min_altitude_km)
        if mode == "nearest":
            usable = mean_altitude_km(elements) >= options.min_altitude_km
            pairs = nearest_neighbour_pairs(r_teme_km, usable, options.max_range_km, min_altitude_km)
            return cls.from_pairs("nearest", n, pairs, min_altitude_km)
        if mode != "+grid":
            raise ValueError(f"ISL mode {mode!r} is not one of none, +grid, nearest")
        inferred = infer_grid(elements, r_teme_km, v_teme_km_s, options)
        if not inferred.has_grid(options.min_plane_size):
            raise IslGridError(
                f"isl +grid: cannot infer orbital planes for {name}: no shell has two planes of at least "
                f"{options.min_plane_size} satellites above {options.min_altitude_km:g} km "
                f"({inferred.used.sum()} of {n} satellites in a shell); use isl: none or nearest"
            )
        pairs = catalogue_grid_pairs(inferred, r_teme_km, v_teme_km_s, options.max_range_km, min_altitude_km)
        topo = cls.from_pairs("+grid", n, pairs, min_altitude_km)
        topo.inferred = inferred
        return topo

    @classmethod
    def for_elements(cls, elements, mode: str, r_ref_km=None, min_altitude_km: float = 80.0) -> IslTopology:
        n = len(elements.shell)
        plane = getattr(elements, "plane", None)
        slot = getattr(elements, "slot", None)
        if plane is None or slot is None:
            plane = np.full(n, -1)
            slot = np.full(n, -1)
        return cls(
            mode,
            elements.shell,
            plane,
            slot,
            r_ref_km,
            min_altitude_km,
            constellation=_constellation_name(elements),
        )

    def usable(self, r_km: np.ndarray, pairs: np.ndarray | None = None) -> np.ndarray:
        """Which pairs are usable at positions r (N, 3) or (T, N, 3): finite ends, line of sight
        above the altitude limit. Returns (E,) or (T, E) booleans."""
        p = self.pairs if pairs is None else pairs
        a = r_km[..., p[:, 0], :]
        b = r_km[..., p[:, 1], :]
        alt = segment_min_altitude_km(a, b)
        return np.isfinite(alt) & (alt >= self.min_altitude_km)

    def active(self, r_km: np.ndarray) -> IslLinks:
        """Active links at one time, r (N, 3)."""
        if self.pairs.shape[0] == 0:
            empty = np.zeros(0, dtype=np.int64)
            return IslLinks(empty, empty, np.zeros(0))
        ok = self.usable(r_km)
        p = self.pairs[ok]
        length = np.linalg.norm(r_km[p[:, 0]] - r_km[p[:, 1]], axis=1)
        return IslLinks(p[:, 0], p[:, 1], length)


# ------------------------------------------------------------------------------ real catalogues


@dataclass(frozen=True)
class GridOptions:
    """How planes and slots are inferred from a catalogue (see the module doc)."""

    min_altitude_km: float = 300.0  # satellites lower than this (re-entering, just launched) are not used
    # A shell this far below a more populated shell of the same inclination is a batch still raising
    # its orbit (or lowering it to re-enter): not used.
    raising_margin_km: float = 50.0
    shell_bin_km: float = 10.0
    shell_tolerance_km: float = 15.0
    min_shell_size: int = 20
    inclination_gap_deg: float = 1.0
    plane_gap_deg: float = 1.0
    min_plane_size: int = 2
    max_range_km: float = 5000.0  # longest laser link considered

    def __post_init__(self) -> None:
        for name in (
            "shell_bin_km",
            "shell_tolerance_km",
            "inclination_gap_deg",
            "plane_gap_deg",
            "max_range_km",
        ):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"isl grid options: {name} must be > 0")
        if not np.isfinite(self.min_altitude_km) or self.min_altitude_km < 0:
            raise ValueError("isl grid options: min_altitude_km must be >= 0")
        if self.min_shell_size < 1 or self.min_plane_size < 1:
            raise ValueError("isl grid options: min_shell_size and min_plane_size must be >= 1")


@dataclass(frozen=True, eq=False)
class InferredGrid:
    """Shell, plane and slot per satellite (-1: not used), shell altitudes and inclinations."""

    shell: np.ndarray
    plane: np.ndarray
    slot: np.ndarray
    shell_altitude_km: np.ndarray
    shell_inclination_deg: np.ndarray
    plane_raan_deg: np.ndarray  # per plane id (plane ids are global over shells)
    plane_shell: np.ndarray

    @property
    def used(self) -> np.ndarray:
        return self.plane >= 0

    def has_grid(self, min_plane_size: int = 2) -> bool:
        if self.plane_shell.size == 0:
            return False
        sizes = np.bincount(self.plane[self.used], minlength=self.plane_shell.size)
        big = sizes >= min_plane_size
        return bool(np.any(np.bincount(self.plane_shell[big], minlength=1) >= 2))


def _constellation_name(elements) -> str:
    shells = getattr(elements, "shells", ())
    return ", ".join(sorted({s.name for s in shells})) or "the constellation"


def mean_altitude_km(elements) -> np.ndarray:
    """Mean altitude from each satellite's mean motion (Kepler's third law, SGP4's constants)."""
    n_rad_s = np.asarray(elements.no_kozai_rad_min, dtype=float) / 60.0
    return (MU_KM3_S2 / n_rad_s**2) ** (1.0 / 3.0) - SGP4_RADIUS_KM


def _orbit_angles(r: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inclination, RAAN, argument of latitude) in degrees from inertial states (N, 3)."""
    h = np.cross(r, v)
    h = h / np.linalg.norm(h, axis=1, keepdims=True)
    inc = np.degrees(np.arccos(np.clip(h[:, 2], -1.0, 1.0)))
    node = np.stack([-h[:, 1], h[:, 0], np.zeros(len(h))], axis=1)  # z x h: towards the ascending node
    raan = np.degrees(np.arctan2(node[:, 1], node[:, 0])) % 360.0
    node_norm = np.linalg.norm(node, axis=1)
    node = np.where(node_norm[:, None] > 1e-9, node / np.maximum(node_norm, 1e-12)[:, None], [1.0, 0.0, 0.0])
    y = np.cross(h, node)
    u = np.degrees(np.arctan2(np.einsum("ij,ij->i", r, y), np.einsum("ij,ij->i", r, node))) % 360.0
    return inc, raan, u


def _gap_clusters(values: np.ndarray, gap: float) -> np.ndarray:
    """Cluster labels of 1-D values split wherever sorted neighbours are more than ``gap`` apart."""
    order = np.argsort(values, kind="stable")
    labels = np.empty(values.size, dtype=np.int64)
    labels[order] = np.concatenate([[0], np.cumsum(np.diff(values[order]) > gap)])
    return labels


def _circular_clusters(angles_deg: np.ndarray, gap: float) -> np.ndarray:
    """``_gap_clusters`` on the circle: cut at the largest gap, so a cluster may straddle 0/360."""
    if angles_deg.size == 1:
        return np.zeros(1, dtype=np.int64)
    ordered = np.sort(angles_deg)
    gaps = np.diff(np.append(ordered, ordered[0] + 360.0))
    cut = ordered[(int(np.argmax(gaps)) + 1) % ordered.size]
    return _gap_clusters((angles_deg - cut) % 360.0, gap)


def infer_grid(
    elements, r_teme_km: np.ndarray, v_teme_km_s: np.ndarray, options: GridOptions | None = None
) -> InferredGrid:
    """Shells, planes and slots of a catalogue from states at one time (see the module doc)."""
    opt = options or GridOptions()
    r = np.asarray(r_teme_km, dtype=float)
    v = np.asarray(v_teme_km_s, dtype=float)
    n = r.shape[0]
    altitude = mean_altitude_km(elements)
    finite = np.all(np.isfinite(r), axis=1) & np.all(np.isfinite(v), axis=1) & np.isfinite(altitude)
    inc, raan, u = (np.full(n, np.nan) for _ in range(3))
    if finite.any():
        inc[finite], raan[finite], u[finite] = _orbit_angles(r[finite], v[finite])
    shell = np.full(n, -1, dtype=np.int64)
    plane = np.full(n, -1, dtype=np.int64)
    slot = np.full(n, -1, dtype=np.int64)
    shell_alt, shell_inc, plane_raan, plane_shell, shell_group = [], [], [], [], []
    candidates = np.flatnonzero(finite & (altitude >= opt.min_altitude_km))
    if candidates.size:
        groups = _gap_clusters(inc[candidates], opt.inclination_gap_deg)
        for g in np.unique(groups):
            left = candidates[groups == g]
            while left.size >= opt.min_shell_size:
                bins = np.floor(altitude[left] / opt.shell_bin_km).astype(np.int64)
                values, counts = np.unique(bins, return_counts=True)
                centre = (values[np.argmax(counts)] + 0.5) * opt.shell_bin_km
                member = np.abs(altitude[left] - centre) <= opt.shell_tolerance_km
                members = left[member]
                left = left[~member]
                if members.size < opt.min_shell_size:
                    break
                if shell_alt and any(
                    inc_k == g and centre < alt_k - opt.raising_margin_km
                    for alt_k, inc_k in zip(shell_alt, shell_group, strict=True)
                ):
                    continue  # orbit raising batch
                k = len(shell_alt)
                shell_group.append(g)
                shell[members] = k
                shell_alt.append(float(np.median(altitude[members])))
                shell_inc.append(float(np.median(inc[members])))
                if shell_inc[-1] < 1.0:
                    continue  # equatorial: the node (and so the plane) is undefined
                labels = _circular_clusters(raan[members], opt.plane_gap_deg)
                # Planes numbered in RAAN order (from the largest gap), slots in argument-of-latitude order.
                for label in np.unique(labels):
                    in_plane = members[labels == label]
                    pid = len(plane_raan)
                    plane[in_plane] = pid
                    plane_shell.append(k)
                    ang = np.radians(raan[in_plane])
                    plane_raan.append(
                        float(np.degrees(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())) % 360.0)
                    )
                    slot[in_plane[np.argsort(u[in_plane], kind="stable")]] = np.arange(in_plane.size)
    return InferredGrid(
        shell,
        plane,
        slot,
        np.array(shell_alt),
        np.array(shell_inc),
        np.array(plane_raan),
        np.array(plane_shell, dtype=np.int64),
    )


def _in_range(r: np.ndarray, pairs: np.ndarray, max_range_km: float, min_altitude_km: float) -> np.ndarray:
    if pairs.size == 0:
        return np.zeros(0, dtype=bool)
    a, b = r[pairs[:, 0]], r[pairs[:, 1]]
    return (np.linalg.norm(a - b, axis=1) <= max_range_km) & (
        segment_min_altitude_km(a, b) >= min_altitude_km
    )


def catalogue_grid_pairs(
    grid: InferredGrid,
    r_ref_km: np.ndarray,
    v_ref_km_s: np.ndarray,
    max_range_km: float = 5000.0,
    min_altitude_km: float = 80.0,
    candidates_per_satellite: int = 12,
    co_moving_deg: float = 45.0,
) -> np.ndarray:
    """+grid candidate pairs (E, 2), i < j, for a catalogue: four laser ports per satellite.

    Each satellite has a fore, an aft, a left and a right port. A neighbour lies in the fore/aft
    direction when the separation is mostly along the velocity, else left/right (across the orbit
    plane); a link takes a free port at both ends (fore with aft, left with right), shortest links
    first (in-plane ring neighbours from the inferred slots before any other), between co-moving
    satellites (velocities within ``co_moving_deg``) of the same shell,
    among each one's ``candidates_per_satellite`` nearest. In a full Walker shell that gives the classic +grid (in-plane neighbours fore and aft,
    the neighbouring planes left and right); in a catalogue still being deployed, where a plane
    holds two satellites half an orbit apart, the fore/aft neighbour is taken from a nearby plane.
    At most 4 links per satellite, each within range and the grazing rule at the reference time.
    """
    r = np.asarray(r_ref_km, dtype=float)
    v = np.asarray(v_ref_km_s, dtype=float)
    used = np.flatnonzero(grid.used)
    if used.size < 2:
        return np.zeros((0, 2), dtype=np.int64)
    k = min(candidates_per_satellite + 1, used.size)
    _, near = cKDTree(r[used]).query(r[used], k=k)
    # In-plane ring neighbours (inferred slots) are candidates first: the classic +grid's fore/aft.
    ring = []
    for p in np.unique(grid.plane[used]):
        m = np.flatnonzero(grid.plane == p)
        m = m[np.argsort(grid.slot[m])]
        if m.size >= 2:
            ring.append(np.stack([m, np.roll(m, -1)], axis=1))
    ring_pairs = (
        np.unique(np.sort(np.concatenate(ring), axis=1), axis=0) if ring else np.zeros((0, 2), np.int64)
    )
    cand = np.stack([np.repeat(used, k), used[near.reshape(-1)]], axis=1)
    cand = np.unique(np.sort(np.concatenate([ring_pairs, cand]), axis=1), axis=0)
    cand = cand[(cand[:, 0] != cand[:, 1]) & (grid.shell[cand[:, 0]] == grid.shell[cand[:, 1]])]
    # Lasers hold links to co-moving neighbours only: two satellites crossing each other's orbit
    # (ascending meets descending) pass by at kilometres a second.
    unit_v = v / np.linalg.norm(v, axis=1, keepdims=True)
    cand = cand[
        np.einsum("ij,ij->i", unit_v[cand[:, 0]], unit_v[cand[:, 1]]) >= np.cos(np.radians(co_moving_deg))
    ]
    cand = cand[_in_range(r, cand, max_range_km, min_altitude_km)]
    if cand.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    a, b = cand[:, 0], cand[:, 1]
    sep = r[b] - r[a]
    along_dir = v[a] / np.linalg.norm(v[a], axis=1, keepdims=True)
    normal = np.cross(r[a], v[a])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    along = np.einsum("ij,ij->i", sep, along_dir)
    across = np.einsum("ij,ij->i", sep, normal)
    # Ports: 0 fore, 1 aft, 2 left (towards the orbit normal), 3 right; b uses the opposite port.
    port_a = np.where(
        np.abs(along) >= np.abs(across), np.where(along >= 0, 0, 1), np.where(across >= 0, 2, 3)
    )
    port_b = port_a ^ 1
    free = np.ones((r.shape[0], 4), dtype=bool)
    chosen = []
    in_ring = np.zeros(len(cand), dtype=bool)
    if ring_pairs.size:
        key = cand[:, 0] * r.shape[0] + cand[:, 1]
        in_ring = np.isin(key, ring_pairs[:, 0] * r.shape[0] + ring_pairs[:, 1])
    for e in np.lexsort((np.linalg.norm(sep, axis=1), ~in_ring)):
        i, j, pi, pj = a[e], b[e], port_a[e], port_b[e]
        if free[i, pi] and free[j, pj]:
            free[i, pi] = False
            free[j, pj] = False
            chosen.append((i, j))
    return np.array(chosen, dtype=np.int64).reshape(-1, 2)


def nearest_neighbour_pairs(
    r_km: np.ndarray,
    usable: np.ndarray | None = None,
    max_range_km: float = 5000.0,
    min_altitude_km: float = 80.0,
    max_links: int = 4,
) -> np.ndarray:
    """Nearest-neighbour laser topology: candidate pairs by increasing length, each accepted while both
    ends have fewer than ``max_links`` (E, 2), i < j."""
    r = np.asarray(r_km, dtype=float)
    ok = (
        np.all(np.isfinite(r), axis=1)
        if usable is None
        else (np.asarray(usable, bool) & np.all(np.isfinite(r), axis=1))
    )
    idx = np.flatnonzero(ok)
    if idx.size < 2:
        return np.zeros((0, 2), dtype=np.int64)
    tree = cKDTree(r[idx])
    cand = np.array(sorted(tree.query_pairs(max_range_km)), dtype=np.int64).reshape(-1, 2)
    cand = idx[cand]
    cand = cand[_in_range(r, cand, max_range_km, min_altitude_km)]
    length = np.linalg.norm(r[cand[:, 0]] - r[cand[:, 1]], axis=1)
    degree = np.zeros(r.shape[0], dtype=np.int64)
    chosen = []
    for i, j in cand[np.argsort(length, kind="stable")]:
        if degree[i] < max_links and degree[j] < max_links:
            chosen.append((i, j))
            degree[i] += 1
            degree[j] += 1
    return np.array(chosen, dtype=np.int64).reshape(-1, 2)
