"""Property-based tests of every RPC's request validation: requests generated from the contract.

Every RPC of every service (orbit, links, region, mdc, terminal) gets requests built by a
Hypothesis strategy that walks the request message's descriptor: integers with their extremes,
floats with NaN and infinities, strings that are empty, huge (10 MiB), `..`-laden or carry NUL,
bytes, enums with undefined numbers, nested and repeated messages, maps, and Timestamps and
Durations with nanos out of range and seconds at +-2**62. The real servers run in this process on
127.0.0.1:0 (in a thread with its own event loop); streams are read with a deadline.

For each call:
- the status is never INTERNAL or UNKNOWN (an unexpected exception in a servicer);
- a request carrying a malformed Timestamp or Duration (nanos out of range, a time outside the
  emulation range 1957-2200) is never answered OK;
- no hang: a unary call answers within its deadline (a stream may run to its deadline: following
  live events or the clock is what it is for);
- an error message never echoes more than 200 characters of a string it was sent;
- a refused call to an RPC that changes state leaves the state as it was (the region's containers,
  blobs and the request's block list; the data center's objects, workload and temp files; the
  terminal's overrides).

Example counts are bounded (FUZZ_EXAMPLES per RPC, default 20) so the file runs in well under two
minutes; the totals are printed at the end (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from collections.abc import Awaitable
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor as descriptor_module
from google.protobuf import message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.storage import clock_for, make_settings

from skyhaul.links.service import LinksApp
from skyhaul.mdc.service import MdcApp
from skyhaul.mdc.sync import SyncConfig
from skyhaul.orbit.catalog import Catalog
from skyhaul.orbit.service import OrbitApp
from skyhaul.region.service import RegionApp
from skyhaul.runtime.redis_server import free_port
from skyhaul.runtime.server import start_server
from skyhaul.terminal.service import TerminalApp
from skyhaul.v1 import (
    links_pb2,
    mdc_pb2,
    mdc_pb2_grpc,
    orbit_pb2,
    region_pb2,
    region_pb2_grpc,
    terminal_pb2,
    terminal_pb2_grpc,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
# Hypothesis describes every example it draws; a 10 MiB string makes a long description.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
UNARY_DEADLINE_S = 15.0
STREAM_DEADLINE_S = 3.0
STREAM_MESSAGES = 3  # read at most this many messages of a server stream, then cancel
MAX_ECHO = 200
EPOCH = 1604016000  # 2020-10-30T00:00:00Z, the scenario's epoch
DATA_CENTER, REGION, CONTAINER, CONSTELLATION = "mdc-test", "westus2", "mdc-sync", "o3b-meo"

SCENARIO = f"""
name: fuzz
epoch: "2020-10-30T00:00:00Z"
speed: 1
constellation: {{preset: {CONSTELLATION}}}
regions:
  - id: {REGION}
    gateways:
      - {{id: gw-belem, lat: -1.45, lon: -48.5}}
data_centers:
  - id: {DATA_CENTER}
    home_region: {REGION}
    location: {{lat: 0.5, lon: -50.0}}
    sync: {{block_size_bytes: 65536}}
"""

BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

# RPCs that change state, and so must change nothing when they refuse.
MUTATING = {
    "CloudRegionService": {
        "CreateContainer",
        "DeleteContainer",
        "StageBlock",
        "CommitBlockList",
        "DeleteBlob",
    },
    "ModularDataCenterService": {"PutObject", "DeleteObject", "SetWorkload"},
    "TerminalService": {"SetOverrides", "ClearOverrides"},
}

# --------------------------------------------------------------------------- strategies from descriptors

HUGE = "x" * (10 * 2**20)  # a 10 MiB string
NAMES = [DATA_CENTER, REGION, CONTAINER, CONSTELLATION, "gw-belem", "eastus", "blob/a.bin", "fuzz/k1"]
NASTY_STRINGS = [
    "",
    "..",
    "../../etc/passwd",
    "a/../b",
    "a\x00b",
    "\x7f",
    "/abs",
    "a\\b",
    "é" * 300,
    "A" * 1025,
]
INT32 = [0, 1, -1, 2, 7, 100, 10**6, 2**31 - 1, -(2**31)]
INT64 = [0, 1, -1, 65536, 10**9, 2**31, 2**62, -(2**62), 2**63 - 1, -(2**63)]
UINT64 = [0, 1, 2, 10**6, 2**62, 2**64 - 1]
SECONDS = [
    0,
    1,
    -1,
    EPOCH,
    EPOCH + 60,
    EPOCH + 3600,
    EPOCH + 40 * 86400,
    2**62,
    -(2**62),
    2**63 - 1,
    -(2**63) + 1,
]
NANOS = [0, 1, -1, 999_999_999, 1_000_000_000, 2_000_000_000, -(2**31), 2**31 - 1, 500_000_000]
DURATION_SECONDS = [0, 1, -1, 60, 86400, 3 * 10**11, 2**62, -(2**62), 315_576_000_000]


def _scalar(field: descriptor_module.FieldDescriptor) -> st.SearchStrategy:
    kind = field.type
    fd = descriptor_module.FieldDescriptor
    if kind in (fd.TYPE_INT32, fd.TYPE_SINT32, fd.TYPE_SFIXED32):
        return st.one_of(st.sampled_from(INT32), st.integers(-(2**31), 2**31 - 1))
    if kind in (fd.TYPE_INT64, fd.TYPE_SINT64, fd.TYPE_SFIXED64):
        return st.one_of(st.sampled_from(INT64), st.integers(-(2**63), 2**63 - 1))
    if kind in (fd.TYPE_UINT32, fd.TYPE_FIXED32):
        return st.one_of(st.sampled_from([0, 1, 2**32 - 1]), st.integers(0, 2**32 - 1))
    if kind in (fd.TYPE_UINT64, fd.TYPE_FIXED64):
        return st.one_of(st.sampled_from(UINT64), st.integers(0, 2**64 - 1))
    if kind in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
        width = 32 if kind == fd.TYPE_FLOAT else 64
        special = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            90.0,
            91.0,
            -1e9,
            1e9,
            1e308,
            float("nan"),
            float("inf"),
            float("-inf"),
        ]
        return st.one_of(st.sampled_from(special), st.floats(width=width))
    if kind == fd.TYPE_BOOL:
        return st.booleans()
    if kind == fd.TYPE_STRING:
        return st.one_of(
            st.sampled_from(NAMES),
            st.sampled_from(NASTY_STRINGS),
            st.just(HUGE),
            st.text(max_size=40),
        )
    if kind == fd.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from([b"", bytes(32), b"\xff" * 100_000]))
    if kind == fd.TYPE_ENUM:
        return st.one_of(
            st.sampled_from([v.number for v in field.enum_type.values]), st.sampled_from([-1, 99])
        )
    raise AssertionError(f"no strategy for field type {kind} of {field.full_name}")


def _time_like(descriptor: descriptor_module.Descriptor) -> st.SearchStrategy | None:
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        seconds = st.one_of(st.sampled_from(SECONDS), st.integers(-(2**63) + 1, 2**63 - 1))
    elif descriptor.full_name == "google.protobuf.Duration":
        seconds = st.one_of(st.sampled_from(DURATION_SECONDS), st.integers(-(2**63) + 1, 2**63 - 1))
    else:
        return None
    nanos = st.one_of(st.sampled_from(NANOS), st.integers(-(2**31), 2**31 - 1))
    return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)


def message_strategy(descriptor: descriptor_module.Descriptor, depth: int = 0) -> st.SearchStrategy:
    """Messages of this type: any subset of fields set, each to a value of its kind (incl. extremes)."""
    special = _time_like(descriptor)
    if special is not None:
        return special
    cls = message_factory.GetMessageClass(descriptor)
    fields = {}
    for field in descriptor.fields:
        if field.type == field.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                key_field, value_field = (
                    field.message_type.fields_by_name["key"],
                    field.message_type.fields_by_name["value"],
                )
                fields[field.name] = st.dictionaries(
                    _scalar(key_field), _value(value_field, depth), max_size=3
                )
                continue
            if depth >= 3:
                continue
            value = message_strategy(field.message_type, depth + 1)
        else:
            value = _scalar(field)
        if field.is_repeated:
            value = st.lists(value, max_size=4)
        fields[field.name] = value

    def build(values: dict) -> object:
        message = cls()
        for name, value in values.items():
            field = descriptor.fields_by_name[name]
            if field.type == field.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
                target = getattr(message, name)
                for k, v in value.items():
                    if field.message_type.fields_by_name["value"].type == field.TYPE_MESSAGE:
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif field.is_repeated:
                getattr(message, name).extend(value)
            elif field.type == field.TYPE_MESSAGE:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries({}, optional=fields).map(build)


def _value(field: descriptor_module.FieldDescriptor, depth: int) -> st.SearchStrategy:
    if field.type == field.TYPE_MESSAGE:
        return message_strategy(field.message_type, depth + 1)
    return _scalar(field)


def strings_in(message) -> list[str]:
    """Every string value in a message, nested ones and map keys included."""
    found: list[str] = []
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        if field.type == field.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            for k, v in value.items():
                found.append(k) if isinstance(k, str) else None
                if isinstance(v, str):
                    found.append(v)
                elif hasattr(v, "ListFields"):
                    found += strings_in(v)
            continue
        for item in values:
            if isinstance(item, str):
                found.append(item)
            elif hasattr(item, "ListFields"):
                found += strings_in(item)
    return found


EARLIEST, LATEST = -410227200, 7258118400  # 1957-01-01 and 2200-01-01 UTC, the emulation range


def malformed_times(message) -> list[str]:
    """Timestamps and Durations no RPC may accept: nanos out of range (or of the wrong sign for a
    Duration), or a Timestamp outside the emulation range."""
    found: list[str] = []
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        if not 0 <= message.nanos < 10**9 or not EARLIEST <= message.seconds <= LATEST:
            found.append(f"Timestamp({message.seconds}, {message.nanos})")
        return found
    if name == "google.protobuf.Duration":
        s, n = message.seconds, message.nanos
        if not -(10**9) < n < 10**9 or (s > 0 and n < 0) or (s < 0 and n > 0):
            found.append(f"Duration({s}, {n})")
        return found
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE or field.message_type.GetOptions().map_entry:
            continue
        for item in value if field.is_repeated else [value]:
            found += malformed_times(item)
    return found


# --------------------------------------------------------------------------- the services


class Harness:
    """Every service on 127.0.0.1:0, in one event loop running in a background thread."""

    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-services", daemon=True)
        self.servers: list = []
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.sync_channels: dict[str, grpc.Channel] = {}

    def run(self, coro: Awaitable, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        scenario = self.tmp / "scenario.yaml"
        scenario.write_text(SCENARIO)
        env = {"SKYHAUL_REDIS_URL": self.redis_url}
        orbit_settings = make_settings("orbit", scenario, self.tmp / "orbit", **env)
        clock = clock_for(orbit_settings)
        orbit = await start_server(OrbitApp(Catalog(orbit_settings.scenario), clock), "127.0.0.1:0")
        links_settings = make_settings(
            "links", scenario, self.tmp / "links", SKYHAUL_ORBIT_ADDR=f"127.0.0.1:{orbit.port}", **env
        )
        self.links_app = LinksApp(links_settings, clock)
        links = await start_server(self.links_app, "127.0.0.1:0")
        region_settings = make_settings("region", scenario, self.tmp / "region", **env)
        self.region_app = RegionApp(region_settings, clock)
        region = await start_server(self.region_app, "127.0.0.1:0")
        # The data center syncs to a port where nothing listens: the fuzzed region changes only by
        # the fuzzer's own calls, and the data center's objects stay put (pending).
        mdc_settings = make_settings(
            "mdc",
            scenario,
            self.tmp / "mdc",
            SKYHAUL_REGION_ADDR=f"127.0.0.1:{free_port()}",
            SKYHAUL_TERMINAL_ADDR=f"127.0.0.1:{free_port()}",
            **env,
        )
        self.mdc_app = MdcApp(
            mdc_settings,
            clock,
            sync_config=SyncConfig(block_size_bytes=65536, rpc_timeout_s=1, backoff_max_s=1),
        )
        mdc = await start_server(self.mdc_app, "127.0.0.1:0")
        terminal_settings = make_settings(
            "terminal", scenario, self.tmp / "terminal", SKYHAUL_DATA_CENTER_ID=DATA_CENTER, **env
        )
        terminal = await start_server(TerminalApp(terminal_settings, clock), "127.0.0.1:0")
        self.servers = [terminal, mdc, region, links, orbit]
        ports = {
            "OrbitService": orbit.port,
            "LinkService": links.port,
            "CloudRegionService": region.port,
            "ModularDataCenterService": mdc.port,
            "TerminalService": terminal.port,
        }
        options = [
            ("grpc.max_receive_message_length", 64 * 2**20),
            ("grpc.max_send_message_length", 64 * 2**20),
        ]
        self.sync_channels = {
            name: grpc.insecure_channel(f"127.0.0.1:{port}", options=options) for name, port in ports.items()
        }
        self.channels = {
            name: grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
            for name, port in ports.items()
        }
        deadline = time.monotonic() + 60
        while self.links_app.elements is None:  # links answers queries once it has orbit's elements
            assert time.monotonic() < deadline, "links never loaded the elements"
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        async def _stop():
            for channel in self.channels.values():
                await channel.close()
            for sync_channel in self.sync_channels.values():
                sync_channel.close()
            for server in self.servers:
                await server.stop(0.1)

        try:
            self.run(_stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    # ----------------------------------------------------------------- state snapshots

    async def snapshot(self, service: str, request) -> object:
        if service == "CloudRegionService":
            stub = region_pb2_grpc.CloudRegionServiceStub(self.channels[service])
            containers = list(
                (await stub.ListContainers(region_pb2.ListContainersRequest(), timeout=10)).containers
            )
            blobs = {}
            for container in containers:
                reply = await stub.ListBlobs(
                    region_pb2.ListBlobsRequest(container=container, max_results=5000), timeout=10
                )
                blobs[container] = sorted((b.name, b.sha256_hex, b.etag) for b in reply.blobs)
            blocks = None
            container, blob = getattr(request, "container", ""), getattr(request, "blob", "")
            if container in containers and blob:
                try:
                    listing = await stub.GetBlockList(
                        region_pb2.GetBlockListRequest(container=container, blob=blob), timeout=10
                    )
                    blocks = (
                        [(b.block_id, b.size) for b in listing.committed],
                        [(b.block_id, b.size) for b in listing.uncommitted],
                    )
                except grpc.aio.AioRpcError:
                    blocks = "unreadable"
            return containers, blobs, blocks
        if service == "ModularDataCenterService":
            stub = mdc_pb2_grpc.ModularDataCenterServiceStub(self.channels[service])
            reply = await stub.ListObjects(mdc_pb2.ListObjectsRequest(max_results=10000), timeout=10)
            status = await stub.GetStatus(mdc_pb2.GetStatusRequest(), timeout=10)
            temp = sorted(os.listdir(self.mdc_app.store.root_dir / "tmp"))
            return sorted((o.key, o.sha256_hex, o.size) for o in reply.objects), status.workload, temp
        if service == "TerminalService":
            stub = terminal_pb2_grpc.TerminalServiceStub(self.channels[service])
            stats = await stub.GetStats(terminal_pb2.GetStatsRequest(), timeout=10)
            overrides = stats.overrides
            return (overrides.extra_delay_ms, overrides.rate_cap_mbps, overrides.forced_outage)
        return None

    # ----------------------------------------------------------------- one call

    async def call(
        self, service: str, method: descriptor_module.MethodDescriptor, request
    ) -> tuple[str, str]:
        """Make the call; returns (outcome, problem) where problem is '' when all is well."""
        mutating = method.name in MUTATING.get(service, ())
        before = await self.snapshot(service, request) if mutating else None
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        path = f"/{method.containing_service.full_name}/{method.name}"
        channel = self.channels[service]
        serialize, deserialize = request_type.SerializeToString, response_type.FromString
        began = time.monotonic()
        code = grpc.StatusCode.OK
        details = ""
        try:
            if method.client_streaming:
                # The blocking client: grpc.aio's reports INTERNAL "Internal error from Core" instead
                # of the server's status when the server refuses a stream before it ends
                # (grpc/grpc#36066), which would hide what the server said.
                multi = self.sync_channels[service].stream_unary(
                    path, request_serializer=serialize, response_deserializer=deserialize
                )
                try:
                    await asyncio.to_thread(multi, iter(request), timeout=UNARY_DEADLINE_S)
                except grpc.RpcError as exc:
                    code, details = exc.code(), exc.details() or ""
            elif method.server_streaming:
                stream = channel.unary_stream(
                    path, request_serializer=serialize, response_deserializer=deserialize
                )
                call = stream(request, timeout=STREAM_DEADLINE_S)
                received = 0
                async for _ in call:
                    received += 1
                    if received >= STREAM_MESSAGES:
                        call.cancel()
                        break
            else:
                unary = channel.unary_unary(
                    path, request_serializer=serialize, response_deserializer=deserialize
                )
                await unary(request, timeout=UNARY_DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
        elapsed = time.monotonic() - began
        problems = []
        if code in BAD_CODES:
            problems.append(f"{code.name}: {details[:300]}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and not method.server_streaming:
            problems.append(f"hang: no answer in {UNARY_DEADLINE_S} s")
        if elapsed > UNARY_DEADLINE_S + 5:
            problems.append(f"hang: the call took {elapsed:.1f} s")
        sent = request if not method.client_streaming else None
        strings = strings_in(sent) if sent is not None else [s for m in request for s in strings_in(m)]
        for text in strings:
            if len(text) > MAX_ECHO and text[: MAX_ECHO + 1] in details:
                problems.append(
                    f"the error echoes more than {MAX_ECHO} characters of a {len(text)}-character string"
                )
                break
        if code == grpc.StatusCode.OK and sent is not None and malformed_times(sent):
            problems.append(f"accepted a malformed time {malformed_times(sent)[0]}")
        if mutating and code != grpc.StatusCode.OK:
            after = await self.snapshot(service, request)
            if after != before:
                problems.append(f"refused with {code.name} but the state changed")
        if method.name == "SetWorkload" and code == grpc.StatusCode.OK and self.mdc_app.workload is not None:
            # An accepted workload keeps putting objects: stop it, or the next call's before/after
            # comparison sees the workload's puts and blames that call.
            await self.mdc_app.workload.stop()
        return code.name, "; ".join(problems)


# --------------------------------------------------------------------------- the tests

SERVICES = [
    ("OrbitService", orbit_pb2),
    ("LinkService", links_pb2),
    ("CloudRegionService", region_pb2),
    ("ModularDataCenterService", mdc_pb2),
    ("TerminalService", terminal_pb2),
]
METHODS = [
    (name, method) for name, module in SERVICES for method in module.DESCRIPTOR.services_by_name[name].methods
]
TOTALS: collections.Counter[str] = collections.Counter()
BAD: list[str] = []


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, redis_server):
    previous = os.environ.get("SKYHAUL_RECONCILE_INTERVAL_S")
    os.environ["SKYHAUL_RECONCILE_INTERVAL_S"] = "0"  # only on demand: the fuzzer's calls alone change state
    services = Harness(tmp_path_factory.mktemp("fuzz"), redis_server.url)
    try:
        services.start()
        yield services
    finally:
        services.stop()
        if previous is None:
            os.environ.pop("SKYHAUL_RECONCILE_INTERVAL_S", None)
        else:
            os.environ["SKYHAUL_RECONCILE_INTERVAL_S"] = previous
        print(
            f"\nrpc fuzz: {TOTALS['inputs']} inputs over {len(METHODS)} RPCs, {len(BAD)} bad outcomes; "
            f"statuses {dict(sorted((k, v) for k, v in TOTALS.items() if k != 'inputs'))}"
        )
        for line in BAD[:20]:
            print("  " + line)


def test_every_rpc_of_the_contract_is_fuzzed() -> None:
    # A new RPC is fuzzed without touching this file; an empty list would make the tests vacuous.
    assert len(METHODS) >= 35
    assert {"DeleteObject", "Reconcile", "CommitBlockList", "WatchEvents", "GetRoute"} <= {
        m.name for _, m in METHODS
    }


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
def test_rpc_refuses_bad_input_cleanly(harness: Harness, service: str, method) -> None:
    request_messages = message_strategy(method.input_type)
    strategy = (
        st.lists(request_messages, min_size=0, max_size=3) if method.client_streaming else request_messages
    )
    bad_here: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same inputs on every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
    )
    @given(request=strategy)
    def check(request) -> None:
        outcome, problem = harness.run(harness.call(service, method, request))
        TOTALS["inputs"] += 1
        TOTALS[outcome] += 1
        if problem:
            shown = repr(request)[:300]
            bad_here.append(f"{service}.{method.name}: {problem}; request {shown}")

    check()
    BAD.extend(bad_here)
    assert not bad_here, "\n".join(bad_here[:5])
