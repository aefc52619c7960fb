"""ISLs for real catalogues: planes and slots inferred from the elements, +grid or nearest neighbours."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from support.shared_data import shared_data

from skyhaul.core.constellations import build_preset
from skyhaul.core.elements import ElementSet
from skyhaul.core.gsl import GslRule
from skyhaul.core.isl import GridOptions, IslGridError, IslTopology, infer_grid, segment_min_altitude_km
from skyhaul.core.propagate import Propagator
from skyhaul.core.tle import load_tle_file

SEATTLE, FRANKFURT, SYDNEY = (47.6, -122.3), (50.1, 8.7), (-33.9, 151.2)


def _catalogue(name):
    records = load_tle_file(shared_data(f"tle/{name}")).records
    elements = ElementSet.from_tle(records, shell_name=name.split("_")[0])
    t_ref = float(np.max(elements.epoch_unix))
    r, v, _ = Propagator(elements).teme(t_ref)
    return elements, t_ref, np.asarray(r), np.asarray(v)


@pytest.fixture(scope="module")
def kuiper():
    elements, t_ref, r, v = _catalogue("kuiper_2026-08-22.tle")
    return elements, t_ref, r, v, IslTopology.for_catalogue(elements, r, v, "+grid")


def test_kuiper_grid_degree_and_grazing(kuiper):
    elements, _, r, _, topo = kuiper
    degree = np.bincount(topo.pairs.ravel(), minlength=len(elements))
    assert degree.max() <= 4
    assert topo.pairs.shape[0] > len(elements)  # a grid, not a handful of links
    assert np.all(segment_min_altitude_km(r[topo.pairs[:, 0]], r[topo.pairs[:, 1]]) >= 80.0)
    # Orbit-raising satellites (well below the 630 km shell) get no links.
    altitude = np.linalg.norm(r, axis=1) - 6378.0
    assert np.all(degree[altitude < 560.0] == 0)
    assert topo.inferred.shell_altitude_km == pytest.approx([630.0], abs=10.0)


def test_kuiper_grid_routes_between_continents(kuiper):
    elements, t_ref, _, _, topo = kuiper
    n = len(elements)
    found = 0
    for dt in np.arange(0.0, 3600.0, 300.0):
        sat = np.asarray(Propagator(elements).ecef(t_ref + dt).r_km, dtype=float)
        links = topo.active(sat)
        assert np.all(segment_min_altitude_km(sat[links.i], sat[links.j]) >= 80.0)
        graph = coo_matrix((links.length_km, (links.i, links.j)), shape=(n, n)).tocsr()
        lat = np.radians([SEATTLE[0], FRANKFURT[0], SYDNEY[0]])
        lon = np.radians([SEATTLE[1], FRANKFURT[1], SYDNEY[1]])
        up = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)
        visible = GslRule("elevation", 30.0).visible(up * 6371.0, up, sat)
        if not visible.all(axis=1).any() and not (visible[0].any() and visible[1].any()):
            continue
        dist = dijkstra(graph, directed=False, indices=np.flatnonzero(visible[0]))
        if np.isfinite(dist[:, visible[1]]).any():
            found += 1
    assert found >= 3  # Seattle -> Frankfurt over Kuiper lasers at several times in an hour


def test_starlink_2020_grid_uses_the_operational_shell():
    elements, _, r, v = _catalogue("starlink_2020-10-30.tle")
    grid = infer_grid(elements, r, v)
    assert grid.shell_altitude_km == pytest.approx([550.0], abs=10.0)
    assert 500 <= grid.used.sum() <= 560  # the rest are raising their orbits or debris
    topo = IslTopology.for_catalogue(elements, r, v, "+grid")
    assert np.bincount(topo.pairs.ravel()).max() <= 4
    # Raising the altitude floor above the shell leaves no satellite to link: an error, not 0 ISLs.
    with pytest.raises(IslGridError, match="above 600 km"):
        IslTopology.for_catalogue(elements, r, v, "+grid", grid=GridOptions(min_altitude_km=600.0))


def test_grid_without_planes_is_an_error_naming_the_constellation():
    elements, _, r, v = _catalogue("o3b_2026-08-22.tle")  # equatorial: no RAAN, no planes
    with pytest.raises(IslGridError, match="o3b"):
        IslTopology.for_catalogue(elements, r, v, "+grid")
    nearest = IslTopology.for_catalogue(elements, r, v, "nearest", grid=GridOptions(min_altitude_km=1000.0))
    assert np.bincount(nearest.pairs.ravel()).max() <= 4


def test_scattered_catalogue_has_no_planes():
    # Satellites in a shell at random RAAN: every "plane" holds one satellite.
    shell = build_preset("kuiper-630", 1_700_000_000.0)
    rng = np.random.default_rng(4)
    pick = rng.choice(len(shell), 60, replace=False)
    sub = shell.subset(pick)
    scattered = dataclasses.replace(
        sub, nodeo_rad=rng.uniform(0, 2 * np.pi, 60), plane=np.full(60, -1), slot=np.full(60, -1)
    )
    r, v, _ = Propagator(scattered).teme(1_700_000_000.0)
    with pytest.raises(IslGridError, match="kuiper-630"):
        IslTopology.for_catalogue(
            scattered, np.asarray(r), np.asarray(v), "+grid", grid=GridOptions(plane_gap_deg=0.05)
        )


def test_plus_grid_on_planeless_elements_is_refused():
    with pytest.raises(IslGridError, match="starlink-2020"):
        IslTopology("+grid", np.zeros(5, int), np.full(5, -1), np.full(5, -1), constellation="starlink-2020")
    assert len(IslTopology("none", np.zeros(5, int), np.full(5, -1), np.full(5, -1)).pairs) == 0


def test_walker_shell_gets_the_classic_grid():
    elements = build_preset("starlink-shell1", 1_700_000_000.0)
    r, v, _ = Propagator(elements).teme(1_700_000_000.0)
    grid = infer_grid(elements, np.asarray(r), np.asarray(v))
    assert grid.plane_shell.size == 72
    assert np.bincount(grid.plane[grid.used]).tolist() == [22] * 72
    topo = IslTopology.for_catalogue(elements, np.asarray(r), np.asarray(v), "+grid")
    degree = np.bincount(topo.pairs.ravel(), minlength=len(elements))
    assert degree.max() == 4 and np.median(degree) >= 3
    n = len(elements)
    graph = coo_matrix((np.ones(len(topo.pairs)), (topo.pairs[:, 0], topo.pairs[:, 1])), shape=(n, n))
    assert np.isfinite(dijkstra(graph, directed=False, indices=[0], unweighted=True)).all()
