"""The scenario's ground as the core's GroundSegment: terminals, gateways, regions, moving tracks."""

import pytest

from skyhaul.core.ground import Gateway, Terminal
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.links.ground_from_scenario import gateway_regions, ground_segment, terminal
from skyhaul.runtime.scenario import parse_scenario

SCENARIO = {
    "name": "ground",
    "epoch": "2020-10-30T00:00:00Z",
    "constellation": {"preset": "starlink-shell1"},
    "scheduler": {"terminal_min_elevation_deg": 30, "gateway_min_elevation_deg": 20, "isl": "+grid"},
    "regions": [
        {
            "id": "westus2",
            "gateways": [
                {"id": "gw-quincy", "lat": 47.233, "lon": -119.852, "alt_m": 380, "fibre_route_factor": 1.3},
                {
                    "id": "gw-fairbanks",
                    "lat": 64.84,
                    "lon": -147.72,
                    "min_elevation_deg": 15,
                    "capacity_mbps": 9000,
                },
            ],
        },
        {"id": "eastus"},
    ],
    "data_centers": [
        {
            "id": "mdc-kodiak",
            "home_region": "westus2",
            "location": {"lat": 57.79, "lon": -152.4, "alt_m": 120},
            "terminal": {"uplink_mbps": 25, "downlink_mbps": 150},
        },
        {
            "id": "mdc-ship",
            "home_region": "eastus",
            "track": [
                {"t_s": 0, "lat": 47.0, "lon": -125.0, "alt_m": 15},
                {"t_s": 3600, "lat": 50.0, "lon": -135.0},
            ],
            "terminal": {"min_elevation_deg": 40},
        },
    ],
}
EPOCH = 1604016000.0


def test_terminals_follow_the_data_centers_in_order_with_their_dish_and_home():
    scenario = parse_scenario(SCENARIO)
    ground = ground_segment(scenario)
    kodiak, ship = ground.terminals
    assert [t.id for t in ground.terminals] == ["mdc-kodiak", "mdc-ship"]
    assert (kodiak.lat_deg, kodiak.lon_deg, kodiak.alt_km) == (57.79, -152.4, pytest.approx(0.12))
    assert (kodiak.uplink_mbps, kodiak.downlink_mbps) == (25.0, 150.0)
    assert kodiak.min_elevation_deg == 30.0  # the scheduler section's default for terminals
    assert kodiak.home_region_id == "westus2" and not kodiak.track
    # A moving one: track offsets become Unix times, its altitude is the first point's.
    assert ship.track == ((EPOCH, 47.0, -125.0), (EPOCH + 3600.0, 50.0, -135.0))
    assert ship.alt_km == pytest.approx(0.015)
    assert ship.min_elevation_deg == 40.0 and ship.home_region_id == "eastus"
    # Rates the data center did not give are core Terminal's defaults.
    assert (ship.uplink_mbps, ship.downlink_mbps) == (Terminal.uplink_mbps, Terminal.downlink_mbps)
    lat, lon = ground.track_position(1, EPOCH + 3600.0)
    assert (float(lat), float(lon)) == pytest.approx((50.0, -135.0))
    assert terminal(scenario.data_centers[0], scenario.epoch_unix) == kodiak


def test_gateways_and_regions_keep_their_scenario_values_and_core_defaults():
    scenario = parse_scenario(SCENARIO)
    ground = ground_segment(scenario)
    quincy, fairbanks, eastus = ground.gateways
    assert (quincy.id, quincy.region_id, quincy.alt_km) == ("gw-quincy", "westus2", pytest.approx(0.38))
    assert quincy.fibre_route_factor == 1.3 and quincy.min_elevation_deg == 20.0
    assert quincy.capacity_mbps == Gateway.capacity_mbps
    assert (fairbanks.min_elevation_deg, fairbanks.capacity_mbps) == (15.0, 9000.0)
    assert fairbanks.fibre_route_factor == Gateway.fibre_route_factor
    # A region without gateways gets one at the region itself.
    assert (eastus.id, eastus.region_id) == ("gw-eastus", "eastus")
    assert (eastus.lat_deg, eastus.lon_deg) == (
        scenario.region("eastus").location.lat,
        scenario.region("eastus").location.lon,
    )
    assert [(r.id, r.lat_deg) for r in ground.regions] == [("westus2", 47.233), ("eastus", 37.3719)]
    assert ground.fibre_km[1] > 2000 and ground.fibre_km[0] == ground.fibre_km[2] == pytest.approx(
        0.0, abs=1e-9
    )
    assert gateway_regions(scenario) == {
        "gw-quincy": "westus2",
        "gw-fairbanks": "westus2",
        "gw-eastus": "eastus",
    }


def test_the_scheduler_section_is_already_the_core_config():
    scenario = parse_scenario(SCENARIO)
    assert scenario.scheduler == SchedulerConfig(isl="+grid")
