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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skyhaul.core.constants import C_KM_S, WGS84_A_KM


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
            self.pairs = plus_grid_pairs(shell, plane, slot, r_ref_km)

    @classmethod
    def for_elements(cls, elements, mode: str, r_ref_km=None, min_altitude_km: float = 80.0) -> IslTopology:
        n = len(elements.shell)
        plane = getattr(elements, "plane", None)
        slot = getattr(elements, "slot", None)
        if plane is None or slot is None:
            plane = np.full(n, -1)
            slot = np.full(n, -1)
        return cls(mode, elements.shell, plane, slot, r_ref_km, min_altitude_km)

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
