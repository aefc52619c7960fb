"""`skyhaul up --data-plane packet`: the launcher's packet-mode part (docs/data-plane.md).

What changes against relay mode, per run:

- privileges are checked before anything is made (:func:`PacketMode.prepare`);
- every data center gets its namespace, TUN pair and control veth (``runtime/netns.py``);
- each region listens on its stable *region address* (198.18.0.1, .2, … in scenario order), which
  the data centers reach only through their TUN and so through the terminal's packet engine, and
  which the host (CLI, links, a user's own ``iperf3 -s``) reaches directly;
- each terminal runs the packet engine between its data center's TUNs (no relay port) and serves
  its gRPC on the host end of the control veth;
- each mdc runs inside its namespace (``ip netns exec``), serves its gRPC on the namespace end of
  the control veth (where the CLI reaches it), reaches Redis and its terminal over the control veth
  (unshaped, like a site's management network) and syncs to ``<region address>:<region port>``:
  real end-to-end TCP through the emulated link;
- Redis additionally listens on every control veth's host end;
- everything made is removed by :meth:`PacketMode.close`, and by the next run's stale cleanup if
  the launcher died first.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from skyhaul.runtime.netns import (
    DEFAULT_STATE_DIR,
    MAX_INDEX,
    REGION_SUBNET,
    DataCenterNetns,
    PacketNetwork,
    require_privileges,
)
from skyhaul.runtime.scenario import DATA_PLANES, Scenario

if TYPE_CHECKING:
    from skyhaul.runtime.launcher import ProcessSpec

NETNS_STATE_DIR_VAR = "SKYHAUL_NETNS_STATE_DIR"
DATA_SUPERNET = ipaddress.ip_network("198.18.0.0/16")  # netns.Addressing: 198.18.<i>.0/29
CONTROL_SUPERNET = ipaddress.ip_network("198.19.0.0/16")  # netns.Addressing: 198.19.<i>.0/31


class PacketModeError(RuntimeError):
    """Packet mode cannot run as asked (one line saying why)."""


def region_addresses(scenario: Scenario) -> dict[str, str]:
    """Each region's stable address: 198.18.0.1, 198.18.0.2, … in scenario order."""
    if len(scenario.regions) > 250:
        raise PacketModeError(f"packet mode supports at most 250 regions ({REGION_SUBNET})")
    return {region.id: f"198.18.0.{k + 1}" for k, region in enumerate(scenario.regions)}


def resolve_data_plane(scenario: Scenario, override: str | None) -> str:
    plane = override or scenario.data_plane
    if plane not in DATA_PLANES:
        raise PacketModeError(f"data plane {plane!r} is not one of {', '.join(DATA_PLANES)}")
    return plane


class PacketMode:
    """The namespaces and address plan of one packet-mode run. Make it with :meth:`prepare`."""

    def __init__(self, scenario: Scenario, state_dir: Path) -> None:
        if len(scenario.data_centers) > 255:
            raise PacketModeError("packet mode supports at most 255 data centers (one /29 each)")
        self.scenario = scenario
        self.state_dir = state_dir
        self.regions = region_addresses(scenario)
        self.network: PacketNetwork | None = None

    @classmethod
    def prepare(cls, scenario: Scenario, data_plane: str | None) -> PacketMode | None:
        """None in relay mode; in packet mode, checks privileges first (PrivilegeError: one line,
        nothing made) and returns the plan; :meth:`create` makes the devices."""
        if resolve_data_plane(scenario, data_plane) != "packet":
            return None
        require_privileges()
        state_dir = Path(os.environ.get(NETNS_STATE_DIR_VAR) or DEFAULT_STATE_DIR)
        return cls(scenario, state_dir)

    # ------------------------------------------------------------------ devices

    def create(self) -> None:
        """Make every data center's namespace and devices (stale ones of dead runs go first)."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        self.network = PacketNetwork(state_dir=self.state_dir)
        try:
            used = _used_indices()
            for dc in self.scenario.data_centers:
                made = self._create(dc.id, used)
                extra = [
                    address for address in self.regions.values() if address != made.addressing.region_address
                ]
                if extra:  # more regions: their addresses on this host TUN too (removed with it)
                    with IPRoute() as host:
                        tun = host.link_lookup(ifname=made.host_tun)[0]
                        for address in extra:
                            host.addr("add", index=tun, address=address, prefixlen=32)
        except (OSError, NetlinkError) as exc:  # NetlinkError is an OSError in some pyroute2 versions
            self.close()
            raise PacketModeError(f"cannot make the data centers' namespaces and devices: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _create(self, dc_id: str, used: set[int]) -> DataCenterNetns:
        """The data center's namespace on the lowest subnet index no other run on this machine uses
        (another run, or a test session, may take one between the look and the make: then the next)."""
        from pyroute2.netlink.exceptions import NetlinkError

        assert self.network is not None
        for index in range(1, MAX_INDEX + 1):
            if index in used:
                continue
            used.add(index)
            try:
                return self.network.create(dc_id, index)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
        raise PacketModeError("no free 198.18.<i>.0/29 subnet left for another data center on this machine")

    def close(self) -> None:
        if self.network is not None:
            self.network.close()
            self.network = None

    def data_center(self, dc_id: str) -> DataCenterNetns:
        assert self.network is not None, "create() first"
        return self.network.data_centers[dc_id]

    # ------------------------------------------------------------------ the plan

    def redis_binds(self) -> list[str]:
        """Addresses the launcher's Redis must listen on besides loopback (each control veth's host end)."""
        assert self.network is not None, "create() first"
        return [dc.addressing.control_host for dc in self.network.data_centers.values()]

    def expose_redis(self, redis_url: str, own: bool) -> None:
        """Let the data centers reach Redis over their control veths (CONFIG SET bind, Redis >= 7)."""
        if not own:
            raise PacketModeError(
                "packet mode runs its own Redis (the data centers reach it over their control "
                "network); unset SKYHAUL_REDIS_URL"
            )
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            client.config_set("bind", " ".join(["127.0.0.1", *self.redis_binds()]))
            # Protected mode refuses every non-loopback client; bound only to loopback and this
            # run's control veths (reachable from its own namespaces alone), it protects nothing.
            client.config_set("protected-mode", "no")
        except redis.exceptions.RedisError as exc:
            raise PacketModeError(f"cannot make Redis listen on the control network: {exc}") from None
        finally:
            client.close()

    def adapt(self, specs: list[ProcessSpec]) -> None:
        """Rewrite relay mode's plan (every service on 127.0.0.1, relay ports) into packet mode's."""
        by_name = {spec.name: spec for spec in specs}
        region_ports = {}
        for spec in specs:
            if spec.service == "region":
                region_id = spec.env["SKYHAUL_REGION_ID"]
                spec.host = self.regions[region_id]
                region_ports[region_id] = spec.port
                _listen(spec)
        first_region = next(iter(region_ports))
        for spec in specs:  # the common default (the mdc gets its home region's below)
            spec.env["SKYHAUL_REGION_ADDR"] = f"{self.regions[first_region]}:{region_ports[first_region]}"
        terminals = {}
        for spec in specs:
            if spec.service != "terminal":
                continue
            dc = self.data_center(spec.env["SKYHAUL_DATA_CENTER_ID"])
            spec.host = dc.addressing.control_host
            spec.relay_ports = {}
            spec.env.pop("SKYHAUL_TERMINAL_FORWARDS", None)
            spec.env.update(
                {
                    "SKYHAUL_DATA_PLANE": "packet",
                    "SKYHAUL_PACKET_NAMESPACE": dc.namespace,
                    "SKYHAUL_PACKET_HOST_TUN": dc.host_tun,
                    "SKYHAUL_PACKET_NAMESPACE_TUN": dc.namespace_tun,
                }
            )
            _listen(spec)
            terminals[dc.data_center] = spec
        for spec in specs:
            if spec.service != "mdc":
                continue
            dc = self.data_center(spec.env["SKYHAUL_DATA_CENTER_ID"])
            home = self.scenario.data_center(dc.data_center).home_region
            spec.host = dc.addressing.control_namespace
            spec.argv_prefix = dc.exec_args()
            spec.env.update(
                {
                    "SKYHAUL_DATA_PLANE": "packet",
                    "SKYHAUL_REGION_ADDR": f"{self.regions[home]}:{region_ports[home]}",
                    "SKYHAUL_TERMINAL_ADDR": terminals[dc.data_center].address,
                    "SKYHAUL_REDIS_URL": _with_host(
                        spec.env["SKYHAUL_REDIS_URL"], dc.addressing.control_host
                    ),
                }
            )
            _listen(spec)
        assert set(by_name) == {spec.name for spec in specs}

    def describe(self) -> dict[str, Any]:
        """What the run state (run.json) says about packet mode (read by `skyhaul run` and `skyhaul status`)."""
        assert self.network is not None, "create() first"
        return {
            "owner_pid": os.getpid(),
            "regions": dict(self.regions),
            "data_centers": {
                dc.data_center: {
                    "namespace": dc.namespace,
                    "address": dc.addressing.data_address,
                    "control_address": dc.addressing.control_namespace,
                    "host_control_address": dc.addressing.control_host,
                }
                for dc in self.network.data_centers.values()
            },
        }


def _used_indices() -> set[int]:
    """Subnet indices in use on this host: 198.19.<i>.0 addresses and 198.18.<i>.0/29 routes."""
    from pyroute2 import IPRoute

    used = set()
    with IPRoute() as host:
        for message in host.get_addr(family=socket.AF_INET):
            address = ipaddress.ip_address(message.get_attr("IFA_ADDRESS"))
            if address in CONTROL_SUPERNET:
                used.add(address.packed[2])
        for message in host.get_routes(family=socket.AF_INET):
            destination = message.get_attr("RTA_DST")
            if destination and ipaddress.ip_address(destination) in DATA_SUPERNET:
                used.add(ipaddress.ip_address(destination).packed[2])
    return used


def _listen(spec: ProcessSpec) -> None:
    spec.env["SKYHAUL_LISTEN"] = spec.address


def _with_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if parts.username or parts.password:
        netloc = f"{parts.netloc.rpartition('@')[0]}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


__all__ = ["NETNS_STATE_DIR_VAR", "PacketMode", "PacketModeError", "region_addresses", "resolve_data_plane"]
