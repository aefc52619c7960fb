"""Generated fleet scenarios: N data centers over land at populated latitudes, R cloud regions.

Pure: returns the scenario as a plain mapping (what the YAML file holds); the CLI validates it
with the scenario loader and writes it.

- Regions come from ``CLOUD_REGIONS``: Azure region names with city-level coordinates from the
  Green Software Foundation's carbon-aware-sdk (src/data/location-sources/azure-regions.json, MIT),
  less its placeholders, duplicates of one site (australiacentral2, *euap, eastusstg) and
  spaincentral (its longitude there has the wrong sign). R regions are the first R of a fixed
  order: ``REGION_PRIORITY`` (3 regions are the seed fleet's West US 2, North Europe, Australia
  East), then farthest-first, so every R is a spread-out prefix of the next.
- Sites are drawn (seeded) from ``PLACES``: towns and industrial sites of the kind a fleet serves
  (mines, oil and gas fields, ports, Arctic and desert stations) between 54° S and 79° N, with
  town-level coordinates rounded to 0.1° (public geographic facts, as in Natural Earth's populated
  places, public domain), each jittered by up to ±``JITTER_DEG`` so no two sites coincide.
- Each site is homed to its nearest region by great-circle distance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# (id, lat, lon): carbon-aware-sdk azure-regions.json (see the module docstring).
CLOUD_REGIONS: tuple[tuple[str, float, float], ...] = (
    ("australiacentral", -35.3075, 149.1244),
    ("australiaeast", -33.86, 151.2094),
    ("australiasoutheast", -37.8136, 144.9631),
    ("brazilsouth", -23.55, -46.633),
    ("brazilsoutheast", -22.90278, -43.2075),
    ("canadacentral", 43.653, -79.383),
    ("canadaeast", 46.817, -71.217),
    ("centralindia", 18.5822, 73.9197),
    ("centralus", 41.5908, -93.6208),
    ("eastasia", 22.267, 114.188),
    ("eastus", 37.3719, -79.8164),
    ("eastus2", 36.6681, -78.3889),
    ("francecentral", 46.3772, 2.373),
    ("francesouth", 43.8345, 2.1972),
    ("germanynorth", 53.073635, 8.806422),
    ("germanywestcentral", 50.110924, 8.682127),
    ("israelcentral", 31.2655698, 33.4506633),
    ("italynorth", 45.46888, 9.18109),
    ("japaneast", 35.68, 139.77),
    ("japanwest", 34.6939, 135.5022),
    ("jioindiacentral", 21.146633, 79.08886),
    ("jioindiawest", 22.470701, 70.05773),
    ("koreacentral", 37.5665, 126.978),
    ("koreasouth", 35.1796, 129.0756),
    ("mexicocentral", 20.588818, -100.389888),
    ("northcentralus", 41.8819, -87.6278),
    ("northeurope", 53.3478, -6.2597),
    ("norwayeast", 59.913868, 10.752245),
    ("norwaywest", 58.969975, 5.733107),
    ("polandcentral", 52.23334, 21.01666),
    ("qatarcentral", 25.551462, 51.439327),
    ("southafricanorth", -25.73134, 28.21837),
    ("southafricawest", -34.075691, 18.843266),
    ("southcentralus", 29.4167, -98.5),
    ("southeastasia", 1.283, 103.833),
    ("southindia", 12.9822, 80.1636),
    ("swedencentral", 60.67488, 17.14127),
    ("switzerlandnorth", 47.451542, 8.564572),
    ("switzerlandwest", 46.204391, 6.143158),
    ("uaecentral", 24.466667, 54.366669),
    ("uaenorth", 25.266666, 55.316666),
    ("uksouth", 50.941, -0.799),
    ("ukwest", 53.427, -3.084),
    ("westcentralus", 40.89, -110.234),
    ("westeurope", 52.3667, 4.9),
    ("westindia", 19.088, 72.868),
    ("westus", 37.783, -122.417),
    ("westus2", 47.233, -119.852),
    ("westus3", 33.448376, -112.074036),
)

# (slug, lat, lon): town-level, rounded to 0.1° (see the module docstring).
PLACES: tuple[tuple[str, float, float], ...] = (
    # North America
    ("prudhoe", 70.3, -148.4),
    ("nome", 64.5, -165.4),
    ("fairbanks", 64.8, -147.7),
    ("kodiak", 57.8, -152.4),
    ("whitehorse", 60.7, -135.1),
    ("yellowknife", 62.5, -114.4),
    ("fortmcmurray", 56.7, -111.4),
    ("iqaluit", 63.7, -68.5),
    ("labradorcity", 52.9, -66.9),
    ("sudbury", 46.5, -81.0),
    ("williston", 48.1, -103.6),
    ("gillette", 44.3, -105.5),
    ("elko", 40.8, -115.8),
    ("moab", 38.6, -109.5),
    ("midland", 32.0, -102.1),
    ("houma", 29.6, -90.7),
    ("bakersfield", 35.4, -119.0),
    ("hermosillo", 29.1, -110.9),
    ("zacatecas", 22.8, -102.6),
    ("ciudaddelcarmen", 18.6, -91.8),
    ("wilmington", 34.2, -77.9),
    ("duluth", 46.8, -92.1),
    # South and Central America
    ("panama", 9.0, -79.5),
    ("cusco", -13.5, -72.0),
    ("arequipa", -16.4, -71.5),
    ("calama", -22.5, -68.9),
    ("antofagasta", -23.6, -70.4),
    ("copiapo", -27.4, -70.3),
    ("neuquen", -38.9, -68.1),
    ("comodororivadavia", -45.9, -67.5),
    ("puntaarenas", -53.2, -70.9),
    ("manaus", -3.1, -60.0),
    ("carajas", -6.1, -50.2),
    ("macae", -22.4, -41.8),
    ("belohorizonte", -19.9, -43.9),
    ("santacruz", -17.8, -63.2),
    ("bogota", 4.7, -74.1),
    # Europe
    ("longyearbyen", 78.2, 15.6),
    ("hammerfest", 70.7, 23.7),
    ("tromso", 69.6, 19.0),
    ("kiruna", 67.9, 20.2),
    ("oulu", 65.0, 25.5),
    ("stavanger", 59.0, 5.7),
    ("aberdeen", 57.1, -2.1),
    ("lerwick", 60.2, -1.1),
    ("esbjerg", 55.5, 8.5),
    ("reykjavik", 64.1, -21.9),
    ("murmansk", 69.0, 33.1),
    ("vorkuta", 67.5, 64.0),
    ("almeria", 36.8, -2.5),
    ("constanta", 44.2, 28.6),
    # Africa
    ("nouadhibou", 20.9, -17.0),
    ("tamanrasset", 22.8, 5.5),
    ("hassimessaoud", 31.7, 6.1),
    ("agadez", 17.0, 8.0),
    ("portharcourt", 4.8, 7.0),
    ("kolwezi", -10.7, 25.5),
    ("kitwe", -12.8, 28.2),
    ("windhoek", -22.6, 17.1),
    ("kimberley", -28.7, 24.8),
    ("rustenburg", -25.7, 27.2),
    ("nairobi", -1.3, 36.8),
    ("juba", 4.9, 31.6),
    ("asmara", 15.3, 38.9),
    ("mwanza", -2.5, 32.9),
    ("tete", -16.2, 33.6),
    # Middle East and Asia
    ("duqm", 19.7, 57.7),
    ("basra", 30.5, 47.8),
    ("atyrau", 47.1, 51.9),
    ("aktobe", 50.3, 57.2),
    ("karaganda", 49.8, 73.1),
    ("oyutolgoi", 43.0, 106.9),
    ("norilsk", 69.3, 88.2),
    ("surgut", 61.3, 73.4),
    ("yakutsk", 62.0, 129.7),
    ("magadan", 59.6, 150.8),
    ("yuzhnosakhalinsk", 47.0, 142.7),
    ("lhasa", 29.7, 91.1),
    ("leh", 34.2, 77.6),
    ("jaisalmer", 26.9, 70.9),
    ("jamnagar", 22.5, 70.1),
    ("odisha", 20.3, 85.8),
    ("korla", 41.8, 86.2),
    ("daqing", 46.6, 125.0),
    ("palembang", -3.0, 104.8),
    ("balikpapan", -1.3, 116.8),
    ("timika", -4.5, 136.9),
    ("mindanao", 7.1, 125.6),
    ("hokkaido", 43.1, 141.3),
    # Oceania
    ("porthedland", -20.3, 118.6),
    ("karratha", -20.7, 116.8),
    ("newman", -23.4, 119.7),
    ("kalgoorlie", -30.7, 121.5),
    ("mountisa", -20.7, 139.5),
    ("alicesprings", -23.7, 133.9),
    ("darwin", -12.5, 130.8),
    ("gladstone", -23.8, 151.3),
    ("brokenhill", -32.0, 141.5),
    ("queenstown", -42.1, 145.6),
    ("westport", -41.8, 171.6),
    ("portmoresby", -9.4, 147.2),
)

JITTER_DEG = 0.25
MAX_DATA_CENTERS = 100_000
EARTH_RADIUS_KM = 6371.0


class FleetError(ValueError):
    """Arguments that cannot make a fleet (the message says which and why)."""


# The first regions a fleet gets: the seed fleet's three continents, then the other big land masses.
REGION_PRIORITY = (
    "westus2",
    "northeurope",
    "australiaeast",
    "southeastasia",
    "brazilsouth",
    "southafricanorth",
    "eastus",
    "japaneast",
    "centralindia",
    "uaenorth",
)


def region_order() -> list[int]:
    """Indices into ``CLOUD_REGIONS``: ``REGION_PRIORITY`` first, then farthest-first from the ones
    already taken (deterministic), so every R is a spread-out prefix of the next."""
    ids = [r[0] for r in CLOUD_REGIONS]
    lat = np.radians([r[1] for r in CLOUD_REGIONS])
    lon = np.radians([r[2] for r in CLOUD_REGIONS])
    order = [ids.index(name) for name in REGION_PRIORITY]
    nearest = np.min([great_circle_km(lat[i], lon[i], lat, lon) for i in order], axis=0)
    taken = np.zeros(lat.size, dtype=bool)
    taken[order] = True
    while not taken.all():
        nxt = int(np.argmax(np.where(taken, -1.0, nearest)))
        order.append(nxt)
        taken[nxt] = True
        nearest = np.minimum(nearest, great_circle_km(lat[nxt], lon[nxt], lat, lon))
    return order


def great_circle_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Haversine distance on a sphere of the Earth's mean radius, inputs in radians (broadcast)."""
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def nearest_region(lat_deg, lon_deg, regions: list[tuple[str, float, float]]) -> np.ndarray:
    """Index of the nearest region (great circle) for each site; ties go to the earlier region."""
    site_lat = np.radians(np.atleast_1d(np.asarray(lat_deg, float)))[:, None]
    site_lon = np.radians(np.atleast_1d(np.asarray(lon_deg, float)))[:, None]
    reg_lat = np.radians([r[1] for r in regions])[None, :]
    reg_lon = np.radians([r[2] for r in regions])[None, :]
    return np.argmin(great_circle_km(site_lat, site_lon, reg_lat, reg_lon), axis=1)


def fleet_scenario(
    data_centers: int,
    regions: int,
    seed: int,
    *,
    constellation: str = "starlink-gen1",
    isl: str = "+grid",
    policy: str = "shortest-path",
    epoch: str = "2024-06-01T00:00:00Z",
    speed: float = 1.0,
    objects: int = 1,
    size_bytes: int = 65_536,
    interval_s: float = 600.0,
) -> dict[str, Any]:
    """The scenario mapping of a generated fleet (validate it with the scenario loader)."""
    if isinstance(data_centers, bool) or not isinstance(data_centers, int):
        raise FleetError(f"data centers must be a whole number, got {data_centers!r}")
    if isinstance(regions, bool) or not isinstance(regions, int):
        raise FleetError(f"regions must be a whole number, got {regions!r}")
    if not 1 <= data_centers <= MAX_DATA_CENTERS:
        raise FleetError(f"data centers must be between 1 and {MAX_DATA_CENTERS}, got {data_centers}")
    if not 1 <= regions <= len(CLOUD_REGIONS):
        raise FleetError(
            f"regions must be between 1 and {len(CLOUD_REGIONS)} (known cloud regions), got {regions}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FleetError(f"seed must be a whole number >= 0, got {seed!r}")

    chosen = [CLOUD_REGIONS[i] for i in region_order()[:regions]]
    rng = np.random.default_rng(seed)
    place = rng.integers(0, len(PLACES), data_centers)
    jitter = rng.uniform(-JITTER_DEG, JITTER_DEG, (data_centers, 2))
    lat = np.clip(np.array([PLACES[p][1] for p in place]) + jitter[:, 0], -89.9, 89.9)
    lon = (np.array([PLACES[p][2] for p in place]) + jitter[:, 1] + 180.0) % 360.0 - 180.0
    lat, lon = np.round(lat, 4), np.round(lon, 4)  # what the file holds is what homing used
    home = nearest_region(lat, lon, chosen)

    width = len(str(data_centers))
    sites = []
    for k in range(data_centers):
        slug = PLACES[place[k]][0].replace("-", "")[: 40 - len("mdc--") - width]
        sites.append(
            {
                "id": f"mdc-{k:0{width}d}-{slug}",
                "home_region": chosen[home[k]][0],
                "location": {"lat": float(lat[k]), "lon": float(lon[k])},
                "terminal": {"uplink_mbps": 20, "downlink_mbps": 100},
                "workload": {
                    "objects": objects,
                    "size_bytes": size_bytes,
                    "interval_s": interval_s,
                    "priority": "telemetry",
                },
            }
        )
    return {
        "name": f"fleet-{data_centers}",
        "description": (
            f"Generated fleet: {data_centers} data centers over land at populated latitudes, homed to "
            f"the nearest of {regions} cloud regions (skyhaul scenario fleet --data-centers "
            f"{data_centers} --regions {regions} --seed {seed})."
        ),
        "epoch": epoch,
        "speed": speed,
        "constellation": {"preset": constellation},
        "scheduler": {"mode": "slotted", "policy": policy, "isl": isl, "handover_stall_ms": 30},
        "regions": [{"id": rid, "location": {"lat": rlat, "lon": rlon}} for rid, rlat, rlon in chosen],
        "data_centers": sites,
    }


def describe_place_table() -> str:
    """One line about the embedded tables (for --help)."""
    lats = [p[1] for p in PLACES]
    return (
        f"{len(PLACES)} places between {min(lats):.0f}° and {max(lats):.0f}° latitude, "
        f"{len(CLOUD_REGIONS)} cloud regions"
    )


__all__ = [
    "CLOUD_REGIONS",
    "PLACES",
    "REGION_PRIORITY",
    "FleetError",
    "describe_place_table",
    "fleet_scenario",
    "great_circle_km",
    "nearest_region",
    "region_order",
]
