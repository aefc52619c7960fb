"""Run the whole system as local child processes: Redis, orbit, links, a region per scenario region,
and a terminal + mdc pair per data center. Used by `skyhaul up`, the demo and the e2e tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skyhaul.runtime import auth, tls
from skyhaul.runtime.redis_server import RedisProcess, generate_password, start_redis_server
from skyhaul.runtime.scenario import Scenario, load_scenario
from skyhaul.runtime.services import SERVICES

STOP_GRACE_S = 5.0
STATE_DIR_VAR = "SKYHAUL_STATE_DIR"


def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_VAR, Path.home() / ".skyhaul"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ProcessSpec:
    name: str  # unique label: "orbit", "region-westus2", "mdc-prudhoe", "terminal-mdc-prudhoe"
    service: str  # orbit | links | region | mdc | terminal
    port: int
    env: dict[str, str] = field(default_factory=dict)
    relay_ports: dict[int, str] = field(default_factory=dict)  # terminal: local port -> target

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Endpoints:
    """What `skyhaul up` prints and writes to endpoints.json for the CLI to find."""

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

    def address(self, label: str) -> str:
        return self.services[label]

    def first(self, service: str) -> str:
        for label, addr in self.services.items():
            if label == service or label.startswith(service + "-"):
                return addr
        raise KeyError(service)


def plan(
    scenario: Scenario, scenario_path: str | None, run_dir: Path, redis_url: str, clock_start: float
) -> list[ProcessSpec]:
    """Decide every child process, its port and its environment."""
    specs = [ProcessSpec("orbit", "orbit", free_port()), ProcessSpec("links", "links", free_port())]
    regions = {
        r.id: ProcessSpec(f"region-{r.id}", "region", free_port(), {"SKYHAUL_REGION_ID": r.id})
        for r in scenario.regions
    }
    specs += regions.values()
    for dc in scenario.data_centers:
        relay_port = free_port()
        home = regions[dc.home_region]
        terminal = ProcessSpec(
            f"terminal-{dc.id}",
            "terminal",
            free_port(),
            {"SKYHAUL_DATA_CENTER_ID": dc.id, "SKYHAUL_TERMINAL_FORWARDS": f"{relay_port}={home.address}"},
            {relay_port: home.address},
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
        )
        specs += [terminal, mdc]
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


def _die_with_parent() -> None:
    # Children get SIGTERM if the launcher itself dies (even by SIGKILL): no process left behind.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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


class LaunchError(RuntimeError):
    pass


class Launcher:
    """Start, watch and stop the local system. Use as a context manager."""

    def __init__(
        self,
        scenario_path: str | None,
        run_dir: Path,
        *,
        redis_url: str | None = None,
        quiet: bool = False,
        listen_all: bool = False,
    ) -> None:
        self.scenario_path = scenario_path
        self.scenario = load_scenario(scenario_path) if scenario_path else None
        if self.scenario is None:
            from skyhaul.runtime.scenario import default_scenario

            self.scenario = default_scenario()
        self.run_dir = run_dir.resolve()  # children run with cwd=run_dir: every path they get is absolute
        self.redis_url = redis_url if redis_url is not None else os.environ.get("SKYHAUL_REDIS_URL")
        self.quiet = quiet
        self.listen_all = listen_all  # services and relays on every interface, not only loopback
        self.redis: RedisProcess | None = None
        self.specs: list[ProcessSpec] = []
        self.procs: dict[str, subprocess.Popen] = {}
        self.endpoints: Endpoints | None = None
        self._token_file_set = False  # SKYHAUL_TOKEN_FILE set by start() for this process

    def __enter__(self) -> Launcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, ready_timeout: float = 90.0) -> Endpoints:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        try:
            if not self.redis_url:
                self.redis = start_redis_server(data_dir=self.run_dir / "redis", password=generate_password())
                self.redis_url = self.redis.url
            clock_start = time.time()
            self.specs = plan(self.scenario, self.scenario_path, self.run_dir, self.redis_url, clock_start)
            security = auth.run_security_env(self.run_dir)  # token (also <run_dir>/token) + event key
            self._share_token_with_this_process()
            for spec in self.specs:
                spec.env.update(security)
                if self.listen_all:
                    spec.env["SKYHAUL_LISTEN"] = f"0.0.0.0:{spec.port}"
                    if "SKYHAUL_TERMINAL_FORWARDS" in spec.env:
                        spec.env["SKYHAUL_TERMINAL_FORWARDS"] = ",".join(
                            f"0.0.0.0:{item}" for item in spec.env["SKYHAUL_TERMINAL_FORWARDS"].split(",")
                        )
            for spec in self.specs:
                self._spawn(spec)
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        assert self.scenario is not None
        self.endpoints = Endpoints(
            scenario=self.scenario.name,
            scenario_path=str(Path(self.scenario_path).resolve()) if self.scenario_path else "",
            redis_url=self.redis_url,
            run_dir=str(self.run_dir.resolve()),
            clock_start=clock_start,
            speed=self.scenario.speed,
            epoch_unix=self.scenario.epoch_unix,
            services={s.name: s.address for s in self.specs},
            relays={s.name: s.relay_ports for s in self.specs if s.relay_ports},
            pids={name: p.pid for name, p in self.procs.items()},
        )
        # 0600: it holds the Redis URL with the run's password.
        auth.write_secret_file(self.run_dir / "endpoints.json", json.dumps(asdict(self.endpoints), indent=2))
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
        self.procs[spec.name] = subprocess.Popen(
            [sys.executable, "-m", SERVICES[spec.service].module],  # the service's own entry point
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            cwd=self.run_dir,
        )
        log.close()

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.run_dir / "logs" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {s.name: s.address for s in self.specs}
        while pending:
            dead = self.dead()
            if dead:
                name = dead[0]
                raise LaunchError(
                    f"{name} exited with code {self.procs[name].returncode}:\n{self.log_tail(name)}"
                )
            for name, addr in list(pending.items()):
                if check_health(addr, timeout=1.0) == "SERVING":
                    del pending[name]
            if pending and time.monotonic() > deadline:
                states = ", ".join(f"{n}: {check_health(a)}" for n, a in pending.items())
                raise LaunchError(f"not SERVING after {timeout:.0f} s: {states}")
            if pending:
                time.sleep(0.2)

    def stop(self) -> None:
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
        self._unshare_token()
