"""The Starlink ground preset (community map, 2023-10-10) and homing a terminal to a PoP."""

from __future__ import annotations

import pytest

from skyhaul.core.starlink_ground import OPERATING_STATUSES, home_pop, parse_ground_csv
from skyhaul.runtime.linkdata import starlink_ground


@pytest.fixture(scope="module")
def ground():
    return starlink_ground()


def test_the_shipped_preset(ground):
    assert len(ground.pops) == 23 and len(ground.gateways) == 222
    assert {p.name for p in ground.pops} >= {"SEA", "FRA", "LGA/NYC", "SYD"}
    bellingham = next(g for g in ground.gateways if g.name == "Bellingham, WA")
    assert bellingham.pop == "SEA" and bellingham.status in OPERATING_STATUSES
    assert bellingham in ground.gateways_of("SEA")
    assert all(g.pop == "FRA" for g in ground.gateways_of("FRA"))


@pytest.mark.parametrize(
    ("place", "lat", "lon", "pop"),
    [
        ("Victoria BC", 48.43, -123.37, "SEA"),
        ("Calgary", 51.05, -114.07, "SEA"),
        ("Anchorage", 61.22, -149.90, "SEA"),
        ("Seychelles", -4.68, 55.49, "FRA"),
        ("Munich", 48.26, 11.67, "FRA"),
        ("Boston", 42.34, -71.09, "LGA/NYC"),
        ("Auckland", -36.85, 174.76, "AKL"),
    ],
)
def test_homing_by_region(ground, place, lat, lon, pop):
    assert home_pop(lat, lon, ground).name == pop, place


def test_override_and_bad_input(ground):
    assert home_pop(48.43, -123.37, ground, override="DEN").name == "DEN"
    with pytest.raises(KeyError, match="unknown PoP 'XXX'"):
        home_pop(48.43, -123.37, ground, override="XXX")
    with pytest.raises(ValueError, match="not a location"):
        home_pop(91.0, 0.0, ground)


def test_parse_errors():
    header = "kind,name,lat,lon,group,status,pop\n"
    with pytest.raises(ValueError, match="unknown PoP"):
        parse_ground_csv(
            header + "pop,SEA,47.6,-122.3,north-america,,\ngateway,A,48,-122,north-america,live,FRA\n"
        )
    with pytest.raises(ValueError, match="row 2"):
        parse_ground_csv(header + "pop,SEA,x,-122.3,north-america,,\n")
    with pytest.raises(ValueError, match="columns"):
        parse_ground_csv("kind,name\npop,SEA\n")
