"""The culled visibility test (KD-tree over the satellites, exact test for the candidates) gives the
very visible sets of the dense G x N test, on random ground points and several shells."""

from __future__ import annotations

import numpy as np
import pytest

from skyhaul.core import scheduler
from skyhaul.core.constellations import build_preset
from skyhaul.core.frames import geodetic_to_ecef
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.propagate import Propagator

EPOCH = 1717200000.0  # 2024-06-01T00:00:00Z


def random_ground(seed: int, count: int, mask_deg: float):
    """Ground points uniform on the sphere (some on mountains, some at the poles), as ECEF + up."""
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, count)))
    lat[:3] = [90.0, -90.0, 0.0]
    lon = rng.uniform(-180.0, 180.0, count)
    alt = rng.choice([0.0, 0.0, 1.5, 4.8], count)
    terminals = [Terminal(f"t{k}", float(lat[k]), float(lon[k]), float(alt[k])) for k in range(count)]
    ground = GroundSegment(terminals, [Gateway("gw", "r", 0.0, 0.0)], [Region("r", 0.0, 0.0)])
    masks = rng.choice([mask_deg, mask_deg + 5.0, 40.0], count + 1)
    return ground.positions_ecef(EPOCH), ground.up_vectors(EPOCH), masks


@pytest.mark.parametrize(
    ("preset", "mask_deg"),
    [("starlink-gen1", 25.0), ("kuiper-630", 30.0), ("telesat-1015", 10.0), ("starlink-shell1", 0.5)],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_culled_visibility_equals_the_dense_test(preset, mask_deg, seed):
    propagator = Propagator(build_preset(preset, EPOCH))
    obs, up, masks = random_ground(seed, 1500, mask_deg)
    for offset_s in (0.0, 437.0, 5023.5):
        sats = propagator.ecef(EPOCH + offset_s).r_km.copy()
        sats[::97] = np.nan  # satellites that failed to propagate are never visible
        assert obs.shape[0] * sats.shape[0] >= scheduler._CULL_MIN_PAIRS  # the culled path runs
        culled = scheduler._visible_culled(obs, up, sats, masks)
        dense = scheduler._visible_dense(obs, up, sats, masks)
        assert culled is not None
        assert dense.any() and dense.sum() < dense.size // 5  # a real test: some, not all, visible
        np.testing.assert_array_equal(culled, dense)
        np.testing.assert_array_equal(scheduler.visible_mask(obs, up, sats, masks), dense)


def test_a_meo_shell_and_small_or_batched_inputs_take_the_dense_path():
    propagator = Propagator(build_preset("o3b-meo", EPOCH))
    obs, up, masks = random_ground(3, 12_000, 10.0)
    sats = propagator.ecef(EPOCH).r_km
    assert scheduler._visible_culled(obs, up, sats, masks) is None  # MEO reach: the cull would keep most
    np.testing.assert_array_equal(
        scheduler.visible_mask(obs, up, sats, masks), scheduler._visible_dense(obs, up, sats, masks)
    )
    few = scheduler.visible_mask(obs[:5], up[:5], sats, masks[:5])
    assert few.shape == (5, sats.shape[0])
    batched_sats = np.stack([sats, sats])
    batched = scheduler.visible_mask(obs[:50], up[:50], batched_sats, masks[:50])
    assert batched.shape == (2, 50, sats.shape[0])
    np.testing.assert_array_equal(batched[1], scheduler.visible_mask(obs[:50], up[:50], sats, masks[:50]))


def test_nowhere_to_look_gives_an_empty_mask():
    obs = np.asarray(geodetic_to_ecef(np.zeros(300), np.zeros(300), 0.0), dtype=float)
    up = obs / np.linalg.norm(obs, axis=1, keepdims=True)
    sats = np.full((1000, 3), np.nan)
    out = scheduler.visible_mask(obs, up, sats, np.full(300, 25.0))
    assert out.shape == (300, 1000) and not out.any()
