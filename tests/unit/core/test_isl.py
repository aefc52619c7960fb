"""+grid inter-satellite links: topology per shell, the seam, and the 80 km grazing limit."""

import numpy as np
import pytest

from skyhaul.core.constants import WGS84_A_KM
from skyhaul.core.elements import ElementSet, walker_shell
from skyhaul.core.isl import IslTopology, segment_min_altitude_km
from skyhaul.core.propagate import Propagator

EPOCH = 1604016000.0  # 2020-10-30T00:00:00Z


def _degrees(pairs, n):
    return np.bincount(pairs.ravel(), minlength=n)


def _topology(elements, at):
    r = Propagator(elements).ecef(at).r_km
    return IslTopology.for_elements(elements, "+grid", r_ref_km=r), r


def test_walker_delta_grid_gives_every_satellite_four_links_and_the_seam_joins_nearest_neighbours():
    shell = walker_shell("s1", 72, 22, 550, 53, 17, EPOCH)
    topo, r = _topology(shell, EPOCH)
    assert topo.pairs.shape == (2 * shell.size, 2)
    assert np.all(_degrees(topo.pairs, shell.size) == 4)
    # Intra-plane links join consecutive slots; inter-plane links join the same slot of the next plane.
    plane, slot = shell.plane, shell.slot
    i, j = topo.pairs.T
    same_plane = plane[i] == plane[j]
    assert np.all(np.isin((slot[j] - slot[i])[same_plane] % 22, [1, 21]))
    inter = ~same_plane
    seam = inter & (np.abs(plane[i] - plane[j]) == 71)
    assert seam.sum() == 22
    assert np.all(slot[i][inter & ~seam] == slot[j][inter & ~seam])
    # The seam's links are as short as the other cross-plane links at any later time: a wrong phase
    # shift would make them a whole slot spacing (~2000 km) longer.
    r_later = Propagator(shell).ecef(EPOCH + 2000.0).r_km
    links = topo.active(r_later)
    lengths = dict(zip(zip(links.i.tolist(), links.j.tolist(), strict=True), links.length_km, strict=True))
    seam_len = np.array([lengths[(a, b)] for a, b in topo.pairs[seam]])
    other_len = np.array([lengths[(a, b)] for a, b in topo.pairs[inter & ~seam]])
    assert seam_len.max() <= 1.02 * other_len.max()
    assert np.allclose(links.length_km, np.linalg.norm(r_later[links.i] - r_later[links.j], axis=1))


def test_a_walker_star_shell_has_no_links_across_its_counter_rotating_seam():
    star = walker_shell("polar", 6, 20, 560, 97.6, 1, EPOCH, raan_spread_deg=180.0)
    topo, _ = _topology(star, EPOCH)
    deg = _degrees(topo.pairs, star.size)
    edge_planes = np.isin(star.plane, [0, 5])
    assert np.all(deg[edge_planes] == 3)
    assert np.all(deg[~edge_planes] == 4)


def test_links_stay_within_a_shell():
    both = ElementSet.concat(
        [walker_shell("a", 10, 10, 550, 53, 1, EPOCH), walker_shell("b", 8, 12, 1100, 70, 3, EPOCH)]
    )
    topo, _ = _topology(both, EPOCH)
    shell = both.shell
    assert np.all(shell[topo.pairs[:, 0]] == shell[topo.pairs[:, 1]])
    assert np.all(_degrees(topo.pairs, both.size) == 4)


def test_segment_min_altitude_matches_the_chord_geometry():
    r = WGS84_A_KM + 550.0
    for theta_deg in (10.0, 60.0, 120.0, 170.0):
        half = np.radians(theta_deg / 2)
        a = np.array([r * np.cos(half), r * np.sin(half), 0.0])
        b = np.array([r * np.cos(half), -r * np.sin(half), 0.0])
        assert segment_min_altitude_km(a, b) == pytest.approx(r * np.cos(half) - WGS84_A_KM)
    # When the closest point is an end, it is that end's altitude.
    a = np.array([r, 0.0, 0.0])
    b = np.array([r + 500.0, 100.0, 0.0])
    assert segment_min_altitude_km(a, b) == pytest.approx(550.0)


def test_a_line_of_sight_below_80_km_is_not_a_link():
    r = WGS84_A_KM + 550.0
    # The angle at which the chord's lowest point is exactly 80 km up, and a little either side.
    limit = 2 * np.degrees(np.arccos((WGS84_A_KM + 80.0) / r))
    positions = []
    for theta in (limit - 0.2, limit + 0.2):
        half = np.radians(theta / 2)
        positions += [[r * np.cos(half), r * np.sin(half), 0.0], [r * np.cos(half), -r * np.sin(half), 0.0]]
    positions = np.array(positions)
    # Two two-satellite "planes" in one shell, plane index as the pair.
    topo = IslTopology("+grid", np.zeros(4, int), np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    intra = (topo.pairs == [[0, 1]]).all(axis=1) | (topo.pairs == [[2, 3]]).all(axis=1)
    ok = topo.usable(positions)
    assert ok[intra].tolist() == [True, False]
    links = topo.active(positions)
    assert (0, 1) in set(zip(links.i.tolist(), links.j.tolist(), strict=True))
    assert (2, 3) not in set(zip(links.i.tolist(), links.j.tolist(), strict=True))


def test_sparse_planes_lose_their_intra_plane_links_through_the_earth():
    # Three satellites per plane are 120 degrees apart: the chord passes through the Earth.
    sparse = walker_shell("sparse", 12, 3, 550, 53, 1, EPOCH)
    topo, r = _topology(sparse, EPOCH)
    links = topo.active(r)
    same_plane = sparse.plane[links.i] == sparse.plane[links.j]
    assert not same_plane.any()
    assert len(links) > 0


def test_bent_pipe_has_no_links_and_bad_modes_are_refused():
    shell = walker_shell("s", 4, 4, 550, 53, 1, EPOCH)
    assert IslTopology.for_elements(shell, "none").pairs.shape == (0, 2)
    with pytest.raises(ValueError, match="'mesh' is not one of none, \\+grid"):
        IslTopology.for_elements(shell, "mesh")
    with pytest.raises(ValueError, match="minimum altitude"):
        IslTopology.for_elements(shell, "+grid", min_altitude_km=-5)
