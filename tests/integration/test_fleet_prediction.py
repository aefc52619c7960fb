"""PredictRoutes for a whole fleet over real gRPC: per-data-center figures equal to predicting each
route alone, streamed with progress; `skyhaul rtt --all` prints them; bad fleet requests are refused."""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import yaml

from skyhaul.cli import links as links_cli
from skyhaul.core.fleet import fleet_scenario
from skyhaul.core.summary import FleetAccumulator, TimelineAccumulator
from skyhaul.core.timeline import TimelineChunk
from skyhaul.links.service import LinksApp
from skyhaul.orbit.catalog import Catalog
from skyhaul.orbit.service import OrbitApp
from skyhaul.runtime.clock import EmulationClock, to_timestamp, to_unix
from skyhaul.runtime.server import start_server
from skyhaul.runtime.settings import Settings
from skyhaul.v1 import common_pb2, links_pb2, links_pb2_grpc

EPOCH = 1717200000.0  # 2024-06-01T00:00:00Z, the generated fleet's epoch
FLEET = 20


@pytest.fixture
async def fleet_links(tmp_path, redis_url):
    data = fleet_scenario(
        FLEET, 10, 11, constellation="starlink-shell1", isl="none", policy="highest-elevation"
    )
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {"SKYHAUL_SCENARIO": str(path), "SKYHAUL_REDIS_URL": redis_url}
    scenario = Settings.from_env("orbit", env).scenario
    clock = EmulationClock(scenario.epoch_unix, scenario.speed, time.time())
    orbit = await start_server(OrbitApp(Catalog(scenario), clock), "127.0.0.1:0")
    settings = Settings.from_env("links", {**env, "SKYHAUL_ORBIT_ADDR": f"127.0.0.1:{orbit.port}"})
    app = LinksApp(settings, clock)
    server = await start_server(app, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = links_pb2_grpc.LinkServiceStub(channel)
        deadline = time.monotonic() + 60
        while True:  # SERVING once the links service has the elements
            try:
                await stub.GetGroundSegment(links_pb2.GetGroundSegmentRequest(), timeout=2)
                await stub.PredictRoutes(
                    links_pb2.PredictRoutesRequest(
                        data_center_id=data["data_centers"][0]["id"], window=window(60)
                    ),
                    timeout=30,
                ).read()
                break
            except grpc.aio.AioRpcError:
                assert time.monotonic() < deadline, "links never answered"
                time.sleep(0.1)
        yield SimpleNamespace(stub=stub, address=f"127.0.0.1:{server.port}", data=data)
    finally:
        await channel.close()
        await server.stop(0.1)
        await orbit.stop(0.1)


def window(seconds: float) -> common_pb2.TimeWindow:
    return common_pb2.TimeWindow(start=to_timestamp(EPOCH), end=to_timestamp(EPOCH + seconds))


def figures(summary: links_pb2.RoutePredictionSummary) -> dict:
    return {
        "samples": summary.samples,
        "availability": summary.availability,
        "rtt": [
            None if np.isnan(v) else v  # no route at all: NaN, which equals nothing
            for v in (summary.rtt_min_ms, summary.rtt_p50_ms, summary.rtt_p95_ms, summary.rtt_max_ms)
        ],
        "handovers": summary.handovers,
        "outages": [(to_unix(w.start), to_unix(w.end)) for w in summary.outages],
        "outage_count": summary.outage_count,
        "longest_outage_s": summary.longest_outage_s,
    }


async def test_a_fleet_prediction_equals_each_route_predicted_alone(fleet_links):
    stub = fleet_links.stub
    request = links_pb2.PredictRoutesRequest(all_data_centers=True, window=window(3600))
    progress, per_dc = [], []
    async for message in stub.PredictRoutes(request, timeout=600):
        kind = message.WhichOneof("payload")
        assert kind in ("progress", "data_center_summary")
        if kind == "progress":
            assert not per_dc  # progress while computing, summaries at the end
            progress.append(message.progress)
        else:
            per_dc.append(message.data_center_summary)

    ids = [dc["id"] for dc in fleet_links.data["data_centers"]]
    homes = {dc["id"]: dc["home_region"] for dc in fleet_links.data["data_centers"]}
    assert [s.data_center_id for s in per_dc] == ids
    assert [s.region_id for s in per_dc] == [homes[i] for i in ids]
    assert progress and progress[-1].samples_done == progress[-1].samples_total == 3600
    assert [p.samples_done for p in progress] == sorted({p.samples_done for p in progress})
    assert all(p.data_centers == FLEET for p in progress)
    assert to_unix(progress[-1].reached) == EPOCH + 3600

    outages, reachable = 0, 0
    for fleet_summary in per_dc:
        alone = None
        one = links_pb2.PredictRoutesRequest(data_center_id=fleet_summary.data_center_id, window=window(3600))
        async for message in stub.PredictRoutes(one, timeout=600):
            if message.HasField("summary"):
                alone = message.summary
        assert figures(fleet_summary.summary) == figures(alone), fleet_summary.data_center_id
        outages += alone.outage_count
        reachable += alone.availability > 0.5
    assert outages > 0 and reachable >= 5  # real routes and real outages were compared

    subset = links_pb2.PredictRoutesRequest(data_center_ids=ids[3:5], region_id="westus2", window=window(600))
    got = [m.data_center_summary async for m in stub.PredictRoutes(subset, timeout=120)]
    got = [s for s in got if s.data_center_id]
    assert [(s.data_center_id, s.region_id) for s in got] == [(ids[3], "westus2"), (ids[4], "westus2")]


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"all_data_centers": True, "data_center_id": "x"}, grpc.StatusCode.INVALID_ARGUMENT, "not both"),
        ({"data_center_ids": ["mdc-nowhere"]}, grpc.StatusCode.NOT_FOUND, "unknown data center"),
        ({"all_data_centers": True, "region_id": "mars"}, grpc.StatusCode.NOT_FOUND, "unknown region"),
    ],
)
async def test_bad_fleet_requests_are_refused(fleet_links, fields, code, words):
    request = links_pb2.PredictRoutesRequest(window=window(60), **fields)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in fleet_links.stub.PredictRoutes(request, timeout=30):
            pass
    assert caught.value.code() == code and words in caught.value.details()


async def test_cli_rtt_all_prints_every_data_center(fleet_links, capsys):
    parser = argparse.ArgumentParser(prog="skyhaul")
    links_cli.register(parser.add_subparsers(dest="command"))
    base = [
        "rtt",
        "--all",
        "--hours",
        "0.1",
        "--start",
        "2024-06-01T00:00:00Z",
        "--links",
        fleet_links.address,
    ]
    assert await links_cli.cmd_rtt(parser.parse_args(base)) == 0
    out = capsys.readouterr().out
    assert f"{FLEET} data centers" in out and "lowest availability" in out
    assert all(dc["id"] in out for dc in fleet_links.data["data_centers"])
    assert await links_cli.cmd_rtt(parser.parse_args([*base, "--json"])) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["data_centers"]) == FLEET and all(r["samples"] == 360 for r in result["data_centers"])
    code = await links_cli.cmd_rtt(parser.parse_args(["rtt", "mdc-x", "westus2", "--all", "--hours", "1"]))
    assert code == 2 and "not both" in capsys.readouterr().err


def test_fleet_accumulator_matches_one_accumulator_per_route():
    rng = np.random.default_rng(3)
    acc = FleetAccumulator(4, 1.0, 30.0)
    alone = [TimelineAccumulator(1.0, 30.0) for _ in range(4)]
    for c in range(6):
        t = EPOCH + c * 100 + np.arange(100.0)
        rtt = rng.uniform(20.0, 80.0, (100, 4)) * (1 + c)  # RTT spreads across chunks (histogram grows)
        rtt[rng.random((100, 4)) < 0.1] = np.nan
        rtt[0, 0] = 5000.0  # beyond max_ms: counted in the last bin
        first = rng.integers(-1, 5, (100, 4))
        chunk = TimelineChunk(
            t, rtt, np.ones((100, 4)), np.ones((100, 4)), first, rng.random((100, 4)) < 0.05
        )
        acc.add(chunk)
        for p in range(4):
            alone[p].add(chunk.route(p))
    assert acc.samples == 600
    assert [s.__dict__ for s in acc.summaries()] == [a.summary().__dict__ for a in alone]
    with pytest.raises(ValueError, match="4 routes"):
        acc.add(TimelineChunk(t, rtt[:, :2], rtt[:, :2], rtt[:, :2], first[:, :2], first[:, :2] > 0))


def test_the_grown_histogram_gives_the_percentiles_of_the_data():
    rng = np.random.default_rng(4)
    acc = TimelineAccumulator(1.0)
    chunks = [rng.uniform(30.0, 40.0, 500), rng.uniform(10.0, 15.0, 500), rng.uniform(60.0, 3000.0, 100)]
    for c, rtt in enumerate(chunks):
        acc.add(TimelineChunk(EPOCH + 500 * c + np.arange(rtt.size), rtt, rtt, rtt, rtt > 0, rtt < 0))
    values = np.minimum(np.concatenate(chunks), 2000.0)  # beyond max_ms counts in the last bin
    summary = acc.summary()
    for q, got in ((0.5, summary.rtt_ms_p50), (0.95, summary.rtt_ms_p95)):
        ranked = np.sort(values)[int(np.ceil(q * values.size)) - 1]
        assert abs(got - ranked) <= 0.01  # exact to a bin
