"""Service settings from SKYHAUL_* environment variables (plus the scenario they point at)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from skyhaul.runtime.scenario import Scenario, ScenarioError, scenario_from_env
from skyhaul.runtime.services import SERVICES

# Views of the one registry (runtime/services.py), for the callers that want a plain mapping.
SERVICE_PORTS = {name: info.port for name, info in SERVICES.items()}
ADDR_VARS = {name: info.addr_var for name, info in SERVICES.items()}


class SettingsError(ValueError):
    """A bad environment variable; the message names it."""


@dataclass(frozen=True)
class Forward:
    """One relay of the terminal (SKYHAUL_TERMINAL_FORWARDS): a local port to a host:port beyond
    the satellite link. Not to be confused with `skyhaul k8s forward`'s PortForwardPlan."""

    listen_port: int
    target_host: str
    target_port: int
    # Where the relay listens: loopback unless the forward names a host (issue 16: a relay on
    # 0.0.0.0 let anyone on the network reach the region through it).
    listen_host: str = "127.0.0.1"

    @property
    def target(self) -> str:
        return f"{self.target_host}:{self.target_port}"


def parse_hostport(value: str, var: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f"{var}: {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def parse_forwards(value: str, var: str = "SKYHAUL_TERMINAL_FORWARDS") -> tuple[Forward, ...]:
    """`[LISTENHOST:]LOCALPORT=HOST:PORT,...`: the terminal's relays (listening on 127.0.0.1
    unless LISTENHOST says otherwise, e.g. `0.0.0.0:7001=region:50053`)."""
    forwards = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        local, sep, target = item.partition("=")
        listen_host, colon, local_port = local.rpartition(":")
        if not sep or not local_port.isdigit() or (colon and not listen_host.strip("[]")):
            raise SettingsError(f"{var}: {item!r} is not [LISTENHOST:]LOCALPORT=HOST:PORT")
        host, port = parse_hostport(target, var)
        forwards.append(Forward(int(local_port), host, port, listen_host.strip("[]") or "127.0.0.1"))
    return tuple(forwards)


def _check_security_env(env: Mapping[str, str]) -> None:
    """Token, TLS files and limits are read where they are used; a bad one fails here, at start."""
    from skyhaul.runtime import auth, limits, tls

    try:
        auth.load_token(env)
        tls.tls_files(env)
        limits.Limits.from_env(env)
    except (auth.TokenError, tls.TlsConfigError, limits.LimitConfigError) as exc:
        raise SettingsError(str(exc)) from None


@dataclass(frozen=True)
class Settings:
    service: str
    listen: str
    redis_url: str
    data_dir: Path
    scenario: Scenario
    region_id: str
    data_center_id: str
    peers: Mapping[str, str]  # service name -> host:port
    terminal_forwards: tuple[Forward, ...]
    clock_start: float | None
    log_level: str
    # SCHED_FIFO priority of the terminal's data-plane thread (relay loop or packet engine), opt-in:
    # on a busy machine late wake-ups are what makes a delay's tail (docs/data-plane.md).
    realtime_priority: int | None = None

    def peer(self, service: str) -> str:
        return self.peers[service]

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] = os.environ) -> Settings:
        if service not in SERVICE_PORTS:
            raise SettingsError(f"unknown service {service!r} (one of {', '.join(SERVICE_PORTS)})")
        scenario = scenario_from_env(env)
        # Loopback unless told otherwise: the chart (and `skyhaul up --listen-all`) widen it.
        # The terminal's relays listen on the same host (issue 16: no relay on 0.0.0.0 by default).
        listen = env.get("SKYHAUL_LISTEN", f"127.0.0.1:{SERVICE_PORTS[service]}")
        parse_hostport(listen, "SKYHAUL_LISTEN")
        _check_security_env(env)
        peers = {}
        for name, var in ADDR_VARS.items():
            value = env.get(var, f"127.0.0.1:{SERVICE_PORTS[name]}")
            parse_hostport(value, var)
            peers[name] = value
        region_id = env.get("SKYHAUL_REGION_ID") or scenario.regions[0].id
        if region_id not in {r.id for r in scenario.regions}:
            raise SettingsError(
                f"SKYHAUL_REGION_ID: {region_id!r} is not a region of scenario {scenario.name!r}"
            )
        dc_ids = [d.id for d in scenario.data_centers]
        data_center_id = env.get("SKYHAUL_DATA_CENTER_ID") or (dc_ids[0] if dc_ids else "")
        if service in ("mdc", "terminal") and data_center_id not in dc_ids:
            raise SettingsError(
                f"SKYHAUL_DATA_CENTER_ID: {data_center_id!r} is not a data center of scenario {scenario.name!r}"
            )
        clock_start = env.get("SKYHAUL_CLOCK_START")
        try:
            start = float(clock_start) if clock_start else None
        except ValueError:
            raise SettingsError(
                f"SKYHAUL_CLOCK_START: {clock_start!r} is not a Unix time in seconds"
            ) from None
        level = env.get("SKYHAUL_LOG_LEVEL", "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"SKYHAUL_LOG_LEVEL: {level!r} is not DEBUG, INFO, WARNING or ERROR")
        priority = env.get("SKYHAUL_REALTIME_PRIORITY", "")
        if priority and (not priority.isdigit() or not 1 <= int(priority) <= 99):
            raise SettingsError(
                f"SKYHAUL_REALTIME_PRIORITY: {priority[:40]!r} is not a priority from 1 to 99"
            )
        return cls(
            service=service,
            listen=listen,
            redis_url=env.get("SKYHAUL_REDIS_URL", "redis://127.0.0.1:6379/0"),
            data_dir=Path(env.get("SKYHAUL_DATA_DIR", "./data")),
            scenario=scenario,
            region_id=region_id,
            data_center_id=data_center_id,
            peers=peers,
            terminal_forwards=parse_forwards(env.get("SKYHAUL_TERMINAL_FORWARDS", "")),
            clock_start=start,
            log_level=level,
            realtime_priority=int(priority) if priority else None,
        )


__all__ = ["Settings", "SettingsError", "ScenarioError", "Forward", "SERVICE_PORTS", "parse_forwards"]
