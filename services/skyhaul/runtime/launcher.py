"""Run the whole system as local child processes: Redis, orbit, links, a region per scenario region,
and a terminal + mdc pair per data center. Used by `skyhaul up`, the demo and the e2e tests.

The launcher supervises what it started, as Kubernetes' restart policy does: a child that dies
after it once served is restarted with exponential backoff (capped, reset once it has run for a
stable period); too many restarts in a window stop the run with the child's name and last log
lines. Every child dies with the launcher (PR_SET_PDEATHSIG, Redis included).

Each run keeps its state in its own run dir (`run.json`, mode 0600: addresses, pids, restarts,
relays, the clock) and, while `skyhaul up` lives, an entry in the index under the state dir
(`$SKYHAUL_STATE_DIR/runs/`, default `~/.skyhaul/runs/`) so the CLI finds the live run by itself.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skyhaul.runtime import auth, tls
from skyhaul.runtime.packet_mode import PacketMode
from skyhaul.runtime.redis_server import (
    RedisProcess,
    RedisServerError,
    die_with_parent,
    generate_password,
    start_redis_server,
)
from skyhaul.runtime.scenario import Scenario, load_scenario
from skyhaul.runtime.services import SERVICES
from skyhaul.runtime.settings import Forward, SettingsError, parse_forwards, shard_members

STOP_GRACE_S = 5.0
STATE_DIR_VAR = "SKYHAUL_STATE_DIR"
RUN_VAR = "SKYHAUL_RUN"  # the run dir chosen by `skyhaul --run DIR`
RUN_STATE_FILE = "run.json"
CLOCK_FILE = "clock.json"
REDIS_LABEL = "redis"


def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_VAR, Path.home() / ".skyhaul"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class RestartPolicy:
    """Kubernetes' restartPolicy: Always, with its CrashLoopBackOff, scaled to a laptop.

    The n-th restart in a row waits initial_delay_s * 2**(n-1), at most max_delay_s; a child that
    ran stable_after_s without dying starts again from initial_delay_s. More than max_restarts
    restarts of one child within window_s is a crash loop: the run stops.
    """

    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    max_restarts: int = 5
    window_s: float = 300.0

    def __post_init__(self) -> None:
        if not (0 < self.initial_delay_s <= self.max_delay_s):
            raise ValueError("restart delays must satisfy 0 < initial <= max")
        if self.max_restarts < 0 or self.window_s <= 0 or self.stable_after_s < 0:
            raise ValueError("max_restarts >= 0, window_s > 0 and stable_after_s >= 0 are required")


@dataclass
class ProcessSpec:
    name: str  # unique label: "orbit", "region-westus2", "mdc-prudhoe", "terminal-mdc-prudhoe"
    service: str  # orbit | links | region | mdc | terminal
    port: int
    env: dict[str, str] = field(default_factory=dict)
    relay_ports: dict[int, str] = field(default_factory=dict)  # terminal: local port -> target
    host: str = "127.0.0.1"  # packet mode: a region address or a control veth's end
    argv_prefix: list[str] = field(default_factory=list)  # packet mode: `ip netns exec NS` for an mdc
    hosts: list[str] = field(default_factory=list)  # mdc/terminal: the data centers it hosts

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Endpoints:
    """What `skyhaul up` prints and writes to the run state file for the CLI to find."""

    scenario: str
    scenario_path: str
    redis_url: str
    run_dir: str
    clock_start: float
    speed: float
    epoch_unix: float
    services: dict[str, str]  # label -> host:port
    relays: dict[str, dict[int, str]]  # terminal label -> {local port: target}
    pids: dict[str, int]
    restarts: dict[str, int] = field(default_factory=dict)  # label (and "redis" when ours) -> count
    launcher_pid: int = 0
    packet: dict | None = None  # packet mode: region addresses, namespaces (runtime/packet_mode.py)
    layout: str = "per-dc"  # "per-dc" or "shards N"
    hosts: dict[str, list[str]] = field(default_factory=dict)  # mdc/terminal label -> data centers it hosts
    data_centers: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # id -> {"mdc": label, "terminal": label}

    def address(self, label: str) -> str:
        return self.services[label]

    def first(self, service: str) -> str:
        for label, addr in self.services.items():
            if label == service or label.startswith(service + "-"):
                return addr
        raise KeyError(service)


def extra_forwards(scenario: Scenario, items: list[str] | tuple[str, ...]) -> dict[str, tuple[Forward, ...]]:
    """The relays a user adds: each data center's scenario `forwards` plus `--forward` items.

    An item is `LOCALPORT=HOST:PORT` (the only data center) or `DC_ID:LOCALPORT=HOST:PORT`.
    Raises SettingsError naming the item; a local port used twice or already taken is refused.
    """
    dc_ids = [dc.id for dc in scenario.data_centers]
    chosen: dict[str, list[Forward]] = {dc.id: [] for dc in scenario.data_centers}
    for dc in scenario.data_centers:
        for item in dc.forwards:
            chosen[dc.id] += parse_forwards(item, f"data_centers[{dc.id}].forwards")
    for item in items:
        local, sep, target = item.partition("=")
        dc_id, colon, port = local.rpartition(":")
        if not colon:
            if len(dc_ids) != 1:
                raise SettingsError(
                    f"--forward {item!r}: the scenario has {len(dc_ids)} data centers; "
                    f"name one as DC_ID:LOCALPORT=HOST:PORT ({', '.join(dc_ids) or 'none'})"
                )
            dc_id = dc_ids[0]
        if dc_id not in chosen:
            raise SettingsError(f"--forward {item!r}: {dc_id!r} is not a data center ({', '.join(dc_ids)})")
        chosen[dc_id] += parse_forwards(f"{port}{sep}{target}", f"--forward {item!r}")
    seen: set[int] = set()
    for forwards in chosen.values():
        for forward in forwards:
            if not 1 <= forward.listen_port <= 65535:
                raise SettingsError(
                    f"forward {forward.listen_port}={forward.target}: local port outside 1-65535"
                )
            if forward.listen_port in seen:
                raise SettingsError(f"forward {forward.listen_port}={forward.target}: local port used twice")
            if not port_is_free(forward.listen_port):
                raise SettingsError(
                    f"forward {forward.listen_port}={forward.target}: 127.0.0.1:{forward.listen_port} is in use"
                )
            seen.add(forward.listen_port)
    return {dc_id: tuple(forwards) for dc_id, forwards in chosen.items()}


PER_DC_MAX = 16
"""`--layout auto` runs one mdc + terminal pair per data center up to this many data centers."""

DCS_PER_SHARD = 64
"""`--layout auto` above PER_DC_MAX: about this many data centers per shard, at most 2 x cores shards."""

LAYOUTS = ("auto", "per-dc", "shards")
RELAY_PORT_LOW, RELAY_PORT_HIGH = 20000, 32768  # below Linux's ephemeral range (32768-60999)


@dataclass(frozen=True)
class Layout:
    """How the data centers map onto processes: `per-dc` (a terminal + mdc pair each) or `shards`
    (`shards` terminal + mdc pairs, shard K hosting the data centers at positions p % shards == K)."""

    kind: str
    shards: int = 0

    def describe(self) -> str:
        return "one mdc + terminal per data center" if self.kind == "per-dc" else f"{self.shards} shards"


def choose_layout(
    data_centers: int,
    layout: str = "auto",
    shards: int | None = None,
    cores: int | None = None,
    packet: bool = False,
) -> Layout:
    """The process layout for `data_centers` (see docs/running.md). Raises SettingsError on a bad choice.

    auto: per-dc up to PER_DC_MAX data centers (and always in packet mode: a data center's mdc runs
    inside its own network namespace), else shards = min(2 x cores, ceil(data centers / DCS_PER_SHARD)).
    `shards` alone implies the shards layout.
    """
    if layout not in LAYOUTS:
        raise SettingsError(f"--layout {layout!r}: one of {', '.join(LAYOUTS)}")
    if shards is not None and shards < 1:
        raise SettingsError(f"--shards {shards}: at least 1")
    if shards is not None and layout == "per-dc":
        raise SettingsError("--shards goes with --layout shards (or auto), not per-dc")
    if layout == "auto" and shards is not None:
        layout = "shards"
    if layout == "auto":
        if packet or data_centers <= PER_DC_MAX:
            return Layout("per-dc")
        layout = "shards"
    if layout == "per-dc":
        return Layout("per-dc")
    if packet:
        raise SettingsError(
            "the packet data plane runs each data center's mdc inside its own network namespace: "
            "use --layout per-dc (or auto)"
        )
    if data_centers == 0:
        return Layout("per-dc")
    if shards is None:
        cores = cores or os.cpu_count() or 1
        shards = min(2 * cores, -(-data_centers // DCS_PER_SHARD))
    if shards > data_centers:
        raise SettingsError(f"--shards {shards}: the scenario has only {data_centers} data centers")
    return Layout("shards", max(1, shards))


def free_port_block(count: int, avoid: set[int] = frozenset(), attempts: int = 200) -> int:
    """The first of `count` consecutive free loopback ports below the ephemeral range."""
    import random

    span = RELAY_PORT_HIGH - RELAY_PORT_LOW - count
    if count <= 0 or span <= 0:
        raise SettingsError(
            f"cannot find {count} consecutive free ports in {RELAY_PORT_LOW}-{RELAY_PORT_HIGH}"
        )
    rng = random.Random()
    for _ in range(attempts):
        base = RELAY_PORT_LOW + rng.randrange(span)
        ports = range(base, base + count)
        if not avoid.intersection(ports) and all(port_is_free(port) for port in ports):
            return base
    raise SettingsError(f"cannot find {count} consecutive free ports in {RELAY_PORT_LOW}-{RELAY_PORT_HIGH}")


def plan(
    scenario: Scenario,
    scenario_path: str | None,
    run_dir: Path,
    redis_url: str,
    clock_start: float,
    forwards: dict[str, tuple[Forward, ...]] | None = None,
    layout: Layout | None = None,
) -> list[ProcessSpec]:
    """Decide every child process, its port, its environment and the data centers it hosts."""
    forwards = forwards or {}
    layout = layout or Layout("per-dc")
    specs = [ProcessSpec("orbit", "orbit", free_port()), ProcessSpec("links", "links", free_port())]
    regions = {
        r.id: ProcessSpec(f"region-{r.id}", "region", free_port(), {"SKYHAUL_REGION_ID": r.id})
        for r in scenario.regions
    }
    specs += regions.values()
    if layout.kind == "shards":
        specs += _shard_specs(scenario, regions, forwards, layout.shards)
    else:
        specs += _per_dc_specs(scenario, regions, forwards)
    common = {
        "SKYHAUL_REDIS_URL": redis_url,
        "SKYHAUL_CLOCK_START": repr(clock_start),
        "SKYHAUL_ORBIT_ADDR": specs[0].address,
        "SKYHAUL_LINKS_ADDR": specs[1].address,
        "SKYHAUL_REGION_ADDR": next(iter(regions.values())).address,
    }
    if scenario_path:
        common["SKYHAUL_SCENARIO"] = str(Path(scenario_path).resolve())
    for spec in specs:
        spec.env = {
            **common,
            **spec.env,
            "SKYHAUL_LISTEN": f"127.0.0.1:{spec.port}",
            "SKYHAUL_DATA_DIR": str(run_dir / "data" / spec.name),
            "OTEL_SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME", f"skyhaul-{spec.service}"),
        }
    return specs


def _per_dc_specs(
    scenario: Scenario, regions: dict[str, ProcessSpec], forwards: dict[str, tuple[Forward, ...]]
) -> list[ProcessSpec]:
    specs = []
    for dc in scenario.data_centers:
        relay_port = free_port()
        home = regions[dc.home_region]
        # The region's gRPC port first (the data center's own sync), then the user's applications.
        relays = {relay_port: home.address} | {f.listen_port: f.target for f in forwards.get(dc.id, ())}
        terminal = ProcessSpec(
            f"terminal-{dc.id}",
            "terminal",
            free_port(),
            {
                "SKYHAUL_DATA_CENTER_ID": dc.id,
                "SKYHAUL_TERMINAL_FORWARDS": ",".join(f"{port}={target}" for port, target in relays.items()),
            },
            relays,
            hosts=[dc.id],
        )
        # The data center reaches its region only through its terminal.
        mdc = ProcessSpec(
            dc.id if dc.id.startswith("mdc") else f"mdc-{dc.id}",
            "mdc",
            free_port(),
            {
                "SKYHAUL_DATA_CENTER_ID": dc.id,
                "SKYHAUL_REGION_ADDR": f"127.0.0.1:{relay_port}",
                "SKYHAUL_TERMINAL_ADDR": terminal.address,
            },
            hosts=[dc.id],
        )
        specs += [terminal, mdc]
    return specs


def _shard_specs(
    scenario: Scenario,
    regions: dict[str, ProcessSpec],
    forwards: dict[str, tuple[Forward, ...]],
    count: int,
) -> list[ProcessSpec]:
    """`count` terminal + mdc pairs; the j-th data center of shard K syncs through port base_K + j."""
    ids = [dc.id for dc in scenario.data_centers]
    homes = {dc.id: dc.home_region for dc in scenario.data_centers}
    region_addrs = ",".join(f"{rid}={spec.address}" for rid, spec in regions.items())
    user_ports = {f.listen_port for items in forwards.values() for f in items}
    block = free_port_block(len(ids), avoid=user_ports)
    specs = []
    offset = 0
    for index in range(count):
        members = shard_members(ids, index, count)
        base = block + offset
        offset += len(members)
        relays = {base + j: regions[homes[dc]].address for j, dc in enumerate(members)}
        user = [(dc, f) for dc in members for f in forwards.get(dc, ())]
        relays |= {f.listen_port: f.target for _, f in user}
        shard = f"{index}/{count}"
        terminal = ProcessSpec(
            f"terminal-shard-{index}",
            "terminal",
            free_port(),
            {
                "SKYHAUL_SHARD": shard,
                "SKYHAUL_RELAY_BASE_PORT": str(base),
                "SKYHAUL_REGION_ADDRS": region_addrs,
                "SKYHAUL_TERMINAL_FORWARDS": ",".join(f"{dc}:{f.listen_port}={f.target}" for dc, f in user),
            },
            relays,
            hosts=list(members),
        )
        mdc = ProcessSpec(
            f"mdc-shard-{index}",
            "mdc",
            free_port(),
            {
                "SKYHAUL_SHARD": shard,
                "SKYHAUL_REGION_RELAY": f"127.0.0.1:{base}",
                "SKYHAUL_REGION_ADDRS": region_addrs,
                "SKYHAUL_TERMINAL_ADDR": terminal.address,
            },
            hosts=list(members),
        )
        specs += [terminal, mdc]
    return specs


def data_center_map(specs: list[ProcessSpec]) -> dict[str, dict[str, str]]:
    """data center id -> {"mdc": label, "terminal": label} of the processes hosting it."""
    found: dict[str, dict[str, str]] = {}
    for spec in specs:
        for dc in spec.hosts:
            found.setdefault(dc, {})[spec.service] = spec.name
    return found


OPEN_FILES_WANTED = 65536


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard one (children inherit it): a shard holds a
    store, relay listeners and connections for each of its data centers. Returns (soft, hard)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < OPEN_FILES_WANTED:
        with contextlib.suppress(ValueError, OSError):  # only a privileged launcher may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_WANTED, OPEN_FILES_WANTED))
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft, hard


def check_health(address: str, timeout: float = 2.0) -> str:
    """The overall health status name of a server ("SERVING", "NOT_SERVING", or the error)."""
    try:
        with tls.sync_channel(address) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as exc:
        return f"UNREACHABLE ({exc.code().name})"


def check_redis(url: str, timeout: float = 1.0) -> str:
    """ "SERVING" when the Redis at `url` answers PING, else why not (same words as check_health)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
        return "SERVING"
    except (redis.exceptions.RedisError, OSError) as exc:
        return f"UNREACHABLE ({type(exc).__name__})"
    finally:
        client.close()


class LaunchError(RuntimeError):
    pass


class LaunchInterrupted(LaunchError):
    """SIGTERM/SIGINT arrived while starting: everything started so far was stopped."""


class CrashLoop(LaunchError):
    """A child restarted more often than the policy allows; `str()` is one line, `log_tail` the rest."""

    def __init__(self, message: str, name: str, log_tail: str) -> None:
        super().__init__(message)
        self.name = name
        self.log_tail = log_tail


@dataclass
class _Child:
    """A supervised process and its restart bookkeeping."""

    name: str
    process: subprocess.Popen | None
    started: float  # monotonic
    served: bool = False  # was SERVING once: only then is a death a crash worth restarting
    restarts: int = 0
    delay_s: float = 0.0  # the next backoff
    restart_at: float | None = None  # monotonic time of the scheduled restart while dead
    recent: collections.deque = field(default_factory=collections.deque)  # monotonic restart times

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _exit_text(code: int | None) -> str:
    if code is None:
        return "did not start"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _write_private(path: Path, text: str) -> None:
    """Write atomically, readable by the owner only (the run state will carry a per-run token)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)  # an existing tmp keeps its old mode through O_CREAT
    os.replace(tmp, path)


def load_clock_start(run_dir: Path, scenario: Scenario) -> float:
    """The clock start persisted in the run dir for this scenario, or a new one (then persisted).

    A restart of `skyhaul up` on the same run dir continues the same emulated clock, so what the
    data center stored before (created_at, synced_at) stays in order with what comes after.
    """
    path = run_dir / CLOCK_FILE
    try:
        saved = json.loads(path.read_text())
        if saved["epoch_unix"] == scenario.epoch_unix and saved["speed"] == scenario.speed:
            return float(saved["start_wall"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    start = time.time()
    record = {"scenario": scenario.name, "epoch_unix": scenario.epoch_unix, "speed": scenario.speed}
    _write_private(path, json.dumps({**record, "start_wall": start}, indent=2))
    return start


class Launcher:
    """Start, watch (supervise) and stop the local system. Use as a context manager."""

    def __init__(
        self,
        scenario_path: str | None,
        run_dir: Path,
        *,
        redis_url: str | None = None,
        quiet: bool = False,
        forwards: list[str] | tuple[str, ...] = (),
        restart_policy: RestartPolicy | None = None,
        stop_event: threading.Event | None = None,
        data_plane: str | None = None,
        listen_all: bool = False,
        layout: str = "auto",
        shards: int | None = None,
    ) -> None:
        """Raises ScenarioError or SettingsError (bad `forwards`, layout), PrivilegeError or
        PacketModeError (packet mode without its privileges) before anything starts."""
        self.scenario_path = scenario_path
        self.scenario = load_scenario(scenario_path) if scenario_path else None
        if self.scenario is None:
            from skyhaul.runtime.scenario import default_scenario

            self.scenario = default_scenario()
        self.forwards = extra_forwards(self.scenario, forwards)
        self.run_dir = run_dir.resolve()  # children run with cwd=run_dir: every path they get is absolute
        self.redis_url = redis_url if redis_url is not None else os.environ.get("SKYHAUL_REDIS_URL")
        self.quiet = quiet
        self.policy = restart_policy or RestartPolicy()
        self.stop_event = stop_event or threading.Event()
        self.listen_all = listen_all  # services and relays on every interface, not only loopback
        self.redis: RedisProcess | None = None
        self.specs: list[ProcessSpec] = []
        self.procs: dict[str, subprocess.Popen] = {}
        self.children: dict[str, _Child] = {}
        self.endpoints: Endpoints | None = None
        self.clock_start: float | None = None
        self._phase = "starting"
        # Packet mode checks its privileges here, before anything is made (PrivilegeError).
        self.packet = PacketMode.prepare(self.scenario, data_plane)
        self._token_file_set = False  # SKYHAUL_TOKEN_FILE set by start() for this process
        self.layout = choose_layout(
            len(self.scenario.data_centers), layout, shards, packet=self.packet is not None
        )

    def __enter__(self) -> Launcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def state_path(self) -> Path:
        return self.run_dir / RUN_STATE_FILE

    def start(self, ready_timeout: float | None = None) -> Endpoints:
        """Start everything and wait until every service is SERVING.

        Raises LaunchError (a child died before it ever served, or not ready in time) or
        LaunchInterrupted (stop_event set, e.g. by SIGTERM); either way nothing is left running.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        assert self.scenario is not None
        if ready_timeout is None:  # a fleet's first routes and stores take longer
            ready_timeout = 90.0 + 0.1 * len(self.scenario.data_centers)
        raise_open_files_limit()
        try:
            if not self.redis_url:
                self.redis = start_redis_server(data_dir=self.run_dir / "redis", password=generate_password())
                self.redis_url = self.redis.url
                self.children[REDIS_LABEL] = _Child(
                    REDIS_LABEL, self.redis.process, time.monotonic(), served=True
                )
            if self.packet is not None:
                self.packet.create()
                self.packet.expose_redis(self.redis_url, own=self.redis is not None)
            self.clock_start = load_clock_start(self.run_dir, self.scenario)
            self.specs = plan(
                self.scenario,
                self.scenario_path,
                self.run_dir,
                self.redis_url,
                self.clock_start,
                self.forwards,
                self.layout,
            )
            if self.packet is not None:
                self.packet.adapt(self.specs)
            security = auth.run_security_env(self.run_dir)  # token (also <run_dir>/token) + event key
            self._share_token_with_this_process()
            for spec in self.specs:
                spec.env.update(security)
                if self.listen_all:
                    spec.env["SKYHAUL_LISTEN"] = f"0.0.0.0:{spec.port}"
                    if "SKYHAUL_TERMINAL_FORWARDS" in spec.env:
                        # LISTENHOST first, then the data center a shard's item names (settings.py).
                        spec.env["SKYHAUL_TERMINAL_FORWARDS"] = ",".join(
                            f"0.0.0.0:{item}" for item in spec.env["SKYHAUL_TERMINAL_FORWARDS"].split(",")
                        )
            self.endpoints = Endpoints(
                scenario=self.scenario.name,
                scenario_path=str(Path(self.scenario_path).resolve()) if self.scenario_path else "",
                redis_url=self.redis_url,
                run_dir=str(self.run_dir),
                clock_start=self.clock_start,
                speed=self.scenario.speed,
                epoch_unix=self.scenario.epoch_unix,
                services={s.name: s.address for s in self.specs},
                relays={s.name: s.relay_ports for s in self.specs if s.relay_ports},
                pids={},
                launcher_pid=os.getpid(),
                packet=None if self.packet is None else self.packet.describe(),
                layout=self.layout.kind if self.layout.kind == "per-dc" else f"shards {self.layout.shards}",
                hosts={s.name: s.hosts for s in self.specs if s.hosts},
                data_centers=data_center_map(self.specs),
            )
            for spec in self.specs:
                self._spawn(spec)
            self.write_state("starting")
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        self.write_state("serving")
        return self.endpoints

    def _share_token_with_this_process(self) -> None:
        # The process that runs the launcher (`skyhaul up`, the demo, tests) is a client of its
        # run: its channels (runtime/clients.py) find the token through SKYHAUL_TOKEN_FILE until
        # stop(). A token given by the environment is the run's token already.
        if os.environ.get(auth.TOKEN_ENV) or os.environ.get(auth.TOKEN_FILE_ENV):
            return
        os.environ[auth.TOKEN_FILE_ENV] = str(self.run_dir / auth.TOKEN_FILE_NAME)
        self._token_file_set = True

    def _unshare_token(self) -> None:
        if self._token_file_set:
            self._token_file_set = False
            os.environ.pop(auth.TOKEN_FILE_ENV, None)

    def _spawn(self, spec: ProcessSpec) -> None:
        env = {**os.environ, **spec.env}
        log = open(self.run_dir / "logs" / f"{spec.name}.log", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            [*spec.argv_prefix, sys.executable, "-m", SERVICES[spec.service].module],  # its own entry point
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
            cwd=self.run_dir,
        )
        log.close()
        self.procs[spec.name] = process
        child = self.children.get(spec.name)
        if child is None:
            self.children[spec.name] = _Child(spec.name, process, time.monotonic())
        else:
            child.process, child.started = process, time.monotonic()

    def _respawn(self, name: str) -> None:
        if name == REDIS_LABEL:
            assert self.redis is not None
            port = self.redis.port
            self.redis.stop()  # reaps the dead one, keeps nothing running
            # The same port: every child keeps its SKYHAUL_REDIS_URL and reconnects by itself.
            password = self.redis.password  # the same URL: children reconnect with what they have
            self.redis = start_redis_server(port=port, data_dir=self.run_dir / "redis", password=password)
            if self.packet is not None:  # the data centers reach it over their control veths
                self.packet.expose_redis(self.redis.url, own=True)
            child = self.children[REDIS_LABEL]
            child.process, child.started = self.redis.process, time.monotonic()
        else:
            self._spawn(next(s for s in self.specs if s.name == name))

    def log_path(self, name: str) -> Path:
        if name == REDIS_LABEL and self.redis is not None:
            return self.redis.log_path
        return self.run_dir / "logs" / f"{name}.log"

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_path(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def restarts(self) -> dict[str, int]:
        return {name: child.restarts for name, child in self.children.items()}

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {s.name: s.address for s in self.specs}
        while pending:
            if self.stop_event.is_set():
                raise LaunchInterrupted(f"interrupted while starting ({', '.join(pending)} not SERVING yet)")
            dead = [name for name in self.dead() if not self.children[name].served]
            if dead:
                name = dead[0]
                raise LaunchError(f"{name} {_exit_text(self.procs[name].returncode)}:\n{self.log_tail(name)}")
            self.supervise()  # Redis, or a child that served and then died, restarts as it would later
            for name, addr in list(pending.items()):
                if self.stop_event.is_set():
                    break
                if check_health(addr, timeout=1.0) == "SERVING":
                    self.children[name].served = True
                    del pending[name]
            if pending and time.monotonic() > deadline:
                states = ", ".join(f"{n}: {check_health(a)}" for n, a in pending.items())
                raise LaunchError(f"not SERVING after {timeout:.0f} s: {states}")
            if pending:
                self.stop_event.wait(0.2)

    def supervise(self, now: float | None = None) -> list[str]:
        """One round of supervision: schedule a restart for each child found dead, run the restarts
        that are due. Returns one line per thing done (for the console). Raises CrashLoop.

        Call it from the thread that started the children: their parent-death signal follows it.
        """
        messages = []
        if self.stop_event.is_set():
            return messages
        for name, child in self.children.items():
            now = time.monotonic() if now is None else now
            if child.restart_at is None:
                if child.alive() or not child.served:
                    continue
                code = child.process.returncode if child.process is not None else None
                if now - child.started >= self.policy.stable_after_s:
                    child.delay_s = 0.0  # it ran long enough: back to the first delay
                child.delay_s = (
                    self.policy.initial_delay_s
                    if child.delay_s == 0
                    else min(child.delay_s * 2, self.policy.max_delay_s)
                )
                while child.recent and now - child.recent[0] > self.policy.window_s:
                    child.recent.popleft()
                if len(child.recent) >= self.policy.max_restarts:
                    raise CrashLoop(
                        f"{name} keeps crashing ({_exit_text(code)}; {len(child.recent)} restarts in "
                        f"the last {self.policy.window_s:g} s): stopping the run; last lines of "
                        f"{self.log_path(name)}:",
                        name,
                        self.log_tail(name),
                    )
                child.restart_at = now + child.delay_s
                messages.append(f"{name} {_exit_text(code)}; restarting in {child.delay_s:g} s")
            elif now >= child.restart_at:
                child.restart_at = None
                child.restarts += 1
                child.recent.append(now)
                try:
                    self._respawn(name)
                except (OSError, RedisServerError) as exc:
                    child.process = None  # counts as one more crash on the next round
                    messages.append(f"{name} could not restart: {exc}")
                    continue
                messages.append(f"{name} restarted (restart {child.restarts})")
                self.write_state()
        return messages

    def write_state(self, phase: str | None = None) -> None:
        """The run state file: what the CLI reads to reach this run (mode 0600)."""
        if self.endpoints is None:
            return
        if phase is not None:
            self._phase = phase
        self.endpoints.pids = {
            name: child.process.pid
            for name, child in self.children.items()
            if child.process is not None and name != REDIS_LABEL
        }
        self.endpoints.restarts = self.restarts()
        state = {**asdict(self.endpoints), "phase": self._phase}
        if self.redis is not None:
            state["redis_pid"] = self.redis.pid if self.redis.process.poll() is None else None
        with contextlib.suppress(OSError):
            _write_private(self.state_path, json.dumps(state, indent=2))

    def stop(self) -> None:
        self.stop_event.set()  # no restart from here on
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.packet is not None:
            self.packet.close()
        self._unshare_token()
        if self.endpoints is not None and self.state_path.exists():
            self.write_state("stopped")


# --- finding runs: an index of live `skyhaul up` runs under the state dir -------------------------


def _index_dir() -> Path:
    return state_dir() / "runs"


def _index_entry(run_dir: Path) -> Path:
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return _index_dir() / f"{digest}.json"


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def register_run(run_dir: Path) -> Path:
    """Record this process as the live launcher of `run_dir` (removed by unregister_run).

    Raises RunSelectionError when another live launcher already runs in `run_dir`.
    """
    entry = _index_entry(run_dir)
    try:
        other = json.loads(entry.read_text())
    except (OSError, ValueError):
        other = {}
    if other.get("pid") not in (None, os.getpid()) and _live(other):
        raise RunSelectionError(
            f"{run_dir} is in use by the skyhaul up with pid {other['pid']}; stop it or choose another --run-dir"
        )
    entry.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    record = {"run_dir": str(run_dir.resolve()), "pid": pid, "pid_started": _process_started(pid)}
    _write_private(entry, json.dumps({**record, "registered": time.time()}))
    return entry


def unregister_run(run_dir: Path) -> None:
    entry = _index_entry(run_dir)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(entry.read_text()).get("pid") == os.getpid():
            entry.unlink()


def _live(record: dict[str, Any]) -> bool:
    started = _process_started(int(record.get("pid", 0) or 0))
    # The same pid and the same process start: a reused pid is not our launcher.
    return started is not None and record.get("pid_started") in (None, started)


def live_runs() -> list[dict[str, Any]]:
    """The index entries of live runs, most recent first; entries of dead launchers are removed."""
    runs = []
    directory = _index_dir()
    for entry in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = json.loads(entry.read_text())
        except (OSError, ValueError):
            continue
        if _live(record):
            runs.append(record)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return sorted(runs, key=lambda r: r.get("registered", 0), reverse=True)


class RunSelectionError(ValueError):
    """No run can be chosen without guessing; the message says how to choose."""


def read_run_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunSelectionError(f"--run {run_dir}: no run state there ({path} does not exist)") from None
    except (OSError, ValueError) as exc:
        raise RunSelectionError(f"--run {run_dir}: cannot read {path} ({exc})") from None


def find_run(explicit: str | Path | None = None) -> dict[str, Any] | None:
    """The run state to talk to: `explicit` (--run / SKYHAUL_RUN), else the one live run, else None.

    Several live runs and none chosen is an error rather than a guess.
    """
    explicit = explicit or os.environ.get(RUN_VAR) or None
    if explicit:
        return read_run_state(explicit)
    runs = live_runs()
    if not runs:
        return None
    if len(runs) > 1:
        listed = ", ".join(f"{r['run_dir']} (pid {r['pid']})" for r in runs)
        raise RunSelectionError(f"{len(runs)} runs are live: {listed}; choose one with --run DIR")
    try:
        return read_run_state(runs[0]["run_dir"])
    except RunSelectionError:
        return None
