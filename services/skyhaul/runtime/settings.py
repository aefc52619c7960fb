"""Service settings from SKYHAUL_* environment variables (plus the scenario they point at)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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


SHARD_VAR = "SKYHAUL_SHARD"
DATA_CENTERS_VAR = "SKYHAUL_DATA_CENTER_ID"


def parse_shard(value: str, var: str = SHARD_VAR) -> tuple[int, int]:
    """`K/N` (K in 0..N-1): shard K of N. Raises SettingsError naming `var`."""
    index, sep, count = value.strip().partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise SettingsError(
            f"{var}: {value!r} is not K/N with 0 <= K < N (e.g. 0/4 is the first of four shards)"
        )
    return int(index), int(count)


def shard_members(data_center_ids: list[str] | tuple[str, ...], index: int, count: int) -> tuple[str, ...]:
    """The data centers of shard `index` of `count`: those at scenario positions p with p % count == index.

    Round-robin by position, not contiguous ranges: a data center appended to the scenario joins a
    shard without moving any other one, and each shard gets a mix of regions. The launcher, the
    services and the chart all assign with this one rule.
    """
    return tuple(dc for position, dc in enumerate(data_center_ids) if position % count == index)


def hosted_data_centers(env: Mapping[str, str], dc_ids: list[str], scenario_name: str) -> tuple[str, ...]:
    """Which data centers an mdc or terminal process hosts, from SKYHAUL_SHARD / SKYHAUL_DATA_CENTER_ID.

    - `SKYHAUL_SHARD=K/N`: shard K of N (`shard_members`);
    - `SKYHAUL_DATA_CENTER_ID=ID` (today's), `ID1,ID2,...`, or `*` for every data center;
    - neither: the scenario's first data center (today's default).
    """
    shard = env.get(SHARD_VAR, "").strip()
    named = env.get(DATA_CENTERS_VAR, "").strip()
    if shard and named:
        raise SettingsError(f"{SHARD_VAR} and {DATA_CENTERS_VAR} both set: choose the data centers one way")
    if shard:
        index, count = parse_shard(shard)
        members = shard_members(dc_ids, index, count)
        if not members:
            raise SettingsError(
                f"{SHARD_VAR}: shard {index}/{count} of scenario {scenario_name!r} holds no data center "
                f"(it has {len(dc_ids)}); use at most {len(dc_ids)} shards"
            )
        return members
    if named == "*":
        if not dc_ids:
            raise SettingsError(f"{DATA_CENTERS_VAR}: scenario {scenario_name!r} has no data center")
        return tuple(dc_ids)
    chosen = [part.strip() for part in named.split(",") if part.strip()] or dc_ids[:1]
    known = set(dc_ids)
    unknown = [dc for dc in chosen if dc not in known]
    if unknown or not chosen:
        raise SettingsError(
            f"{DATA_CENTERS_VAR}: {', '.join(map(repr, unknown)) or repr(named)} is not a data center "
            f"of scenario {scenario_name!r}"
        )
    if len(set(chosen)) != len(chosen):
        raise SettingsError(f"{DATA_CENTERS_VAR}: a data center is named twice in {named!r}")
    return tuple(chosen)


def parse_dc_forwards(
    value: str, hosted: tuple[str, ...], var: str = "SKYHAUL_TERMINAL_FORWARDS"
) -> dict[str, tuple[Forward, ...]]:
    """`[LISTENHOST:][DC_ID:]LOCALPORT=HOST:PORT,...` per hosted data center (no DC_ID: the only
    hosted one); LISTENHOST as in `parse_forwards`."""
    chosen: dict[str, list[Forward]] = {dc: [] for dc in hosted}
    for item in filter(None, (part.strip() for part in value.split(","))):
        local, sep, target = item.partition("=")
        parts = local.split(":")
        named = [i for i, part in enumerate(parts[:-1]) if part in chosen]
        if named:  # the data center's id, wherever a listen host puts it
            dc_id = parts.pop(named[-1])
        elif len(hosted) == 1:
            dc_id = hosted[0]
        elif len(parts) > 1:
            raise SettingsError(f"{var}: {item!r}: {parts[-2]!r} is not a data center this process hosts")
        else:
            raise SettingsError(f"{var}: {item!r} names no data center; write DC_ID:LOCALPORT=HOST:PORT")
        chosen[dc_id] += parse_forwards(f"{':'.join(parts)}{sep}{target}", var)
    return {dc: tuple(forwards) for dc, forwards in chosen.items()}


def parse_region_addrs(
    value: str, region_ids: list[str], var: str = "SKYHAUL_REGION_ADDRS"
) -> dict[str, str]:
    """`REGION=HOST:PORT,...`: where a multi-data-center terminal sends each home region's sync traffic."""
    addrs = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        region, sep, target = item.partition("=")
        if not sep or region not in region_ids:
            raise SettingsError(f"{var}: {item!r} is not REGION=HOST:PORT with a region of the scenario")
        parse_hostport(target, var)
        addrs[region] = target
    return addrs


@dataclass(frozen=True)
class Settings:
    service: str
    listen: str
    redis_url: str
    data_dir: Path
    scenario: Scenario
    region_id: str
    data_center_id: str  # the first hosted data center (the only one in today's one-per-process mode)
    peers: Mapping[str, str]  # service name -> host:port
    terminal_forwards: tuple[Forward, ...]  # of the first hosted data center (see dc_forwards)
    clock_start: float | None
    log_level: str
    # SCHED_FIFO priority of the terminal's data-plane thread (relay loop or packet engine), opt-in:
    # on a busy machine late wake-ups are what makes a delay's tail (docs/data-plane.md).
    realtime_priority: int | None = None
    data_center_ids: tuple[str, ...] = ()  # every data center this mdc/terminal process hosts
    region_addrs: Mapping[str, str] = field(
        default_factory=dict
    )  # region id -> host:port (SKYHAUL_REGION_ADDRS)
    relay_base_port: int = 0  # multi-data-center terminal: the sync relay of hosted data center j is base + j
    region_relay: str = ""  # multi-data-center mdc: HOST:BASE; data center j syncs through HOST:(BASE + j)
    dc_forwards: Mapping[str, tuple[Forward, ...]] = field(default_factory=dict)  # hosted id -> relays

    @property
    def multi(self) -> bool:
        """Hosts more than one data center (or was asked to host a set: shard, list, `*`)."""
        return len(self.data_center_ids) > 1

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
        if service in ("mdc", "terminal"):
            hosted = hosted_data_centers(env, dc_ids, scenario.name)
        else:
            hosted = tuple(dc_ids[:1])
        data_center_id = hosted[0] if hosted else ""
        region_addrs = parse_region_addrs(
            env.get("SKYHAUL_REGION_ADDRS", ""), [r.id for r in scenario.regions]
        )
        relay_base = env.get("SKYHAUL_RELAY_BASE_PORT", "0").strip() or "0"
        if not relay_base.isdigit() or int(relay_base) + len(hosted) - 1 > 65535:
            raise SettingsError(
                f"SKYHAUL_RELAY_BASE_PORT: {relay_base!r} is not a port with room for {len(hosted)} relays"
            )
        dc_forwards = parse_dc_forwards(env.get("SKYHAUL_TERMINAL_FORWARDS", ""), hosted) if hosted else {}
        if service == "terminal" and len(hosted) > 1 and not int(relay_base):
            raise SettingsError(
                f"SKYHAUL_RELAY_BASE_PORT is needed to host {len(hosted)} data centers: the sync relay of the "
                "j-th hosted data center listens on that port + j"
            )
        region_relay = env.get("SKYHAUL_REGION_RELAY", "").strip()
        if region_relay:
            parse_hostport(region_relay, "SKYHAUL_REGION_RELAY")
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
            terminal_forwards=dc_forwards.get(data_center_id, ())
            if hosted
            else parse_forwards(env.get("SKYHAUL_TERMINAL_FORWARDS", "")),
            clock_start=start,
            log_level=level,
            realtime_priority=int(priority) if priority else None,
            data_center_ids=hosted,
            region_addrs=region_addrs,
            relay_base_port=int(relay_base),
            region_relay=region_relay,
            dc_forwards=dc_forwards,
        )


__all__ = [
    "Settings",
    "SettingsError",
    "ScenarioError",
    "Forward",
    "SERVICE_PORTS",
    "parse_forwards",
    "parse_shard",
    "shard_members",
    "hosted_data_centers",
]
