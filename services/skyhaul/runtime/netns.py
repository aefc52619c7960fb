"""Network namespaces for the packet data plane: one per data center, wired as a real site is.

Each data center gets:

- a network namespace (``ip netns`` compatible, so ``ip netns exec NAME cmd`` runs a command in it);
- a **TUN pair**: ``<dc>n`` inside the namespace, ``<dc>h`` on the host. The namespace's only route
  to the regions' subnet goes through its TUN; the host TUN carries the stable *region address*
  (198.18.0.1 by default) and the route back to the data center's subnet. Nothing moves between
  the two until a packet engine (``skyhaul.terminal.packet``) reads one TUN and writes the other;
- a **control veth pair** on its own /31, unshaped: a process inside reaches host services (Redis,
  gRPC) at the host end's address, as a site's management network would.

Addresses come only from 198.18.0.0/15 (RFC 2544, reserved for network benchmarks), so they never
collide with the host's networks: data subnet 198.18.<index>.0/29 (the data center is .2), control
198.19.<index>.0/31 (host .0, namespace .1), regions 198.18.0.0/24. No NAT, no iptables, no qdisc.

Every namespace and device a :class:`PacketNetwork` makes is recorded in a state file under
``state_dir`` together with the owning pid; :func:`cleanup_stale` (run by ``PacketNetwork`` on
start) removes what a dead owner left behind, so a crashed launcher costs nothing at the next start.
It never touches objects of a live owner (other runs, other test sessions on the same machine).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import struct
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument

DEFAULT_STATE_DIR = Path("/run/skyhaul/netns")
REGION_ADDRESS = "198.18.0.1"
REGION_SUBNET = "198.18.0.0/24"
DEFAULT_MTU = 1500
MAX_INDEX = 255

_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21  # creating a named namespace bind-mounts it under /run/netns


class PrivilegeError(FailedPrecondition):
    """Packet mode needs privileges this process does not have."""


def missing_privileges() -> list[str]:
    """Capabilities packet mode needs and this process lacks (empty: all there)."""
    if os.geteuid() == 0:
        effective = _effective_capabilities()
        if effective is None:
            return []
    else:
        effective = _effective_capabilities() or 0
    needed = {"CAP_NET_ADMIN": _CAP_NET_ADMIN, "CAP_SYS_ADMIN": _CAP_SYS_ADMIN}
    return [name for name, bit in needed.items() if not effective & (1 << bit)]


def require_privileges() -> None:
    """Raise :class:`PrivilegeError` with one line naming what is missing, before anything is made."""
    missing = missing_privileges()
    if missing or not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        what = " and ".join(missing) if missing else "read/write access to /dev/net/tun"
        raise PrivilegeError(
            f"packet data plane needs root or {what} (network namespaces, TUN devices); "
            "`data_plane: relay` works without it"
        )


def _effective_capabilities() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class Addressing:
    """The addresses of one data center's namespace (all from 198.18.0.0/15)."""

    index: int
    region_address: str  # on the host TUN: where the region side is reached through the link
    region_subnet: str  # the namespace routes this subnet (and only this) through its TUN
    data_subnet: str  # the data center's side of the link; the host routes it through the host TUN
    data_address: str  # on the namespace TUN
    control_host: str  # host end of the control veth: host services (Redis, gRPC) listen here
    control_namespace: str  # namespace end of the control veth
    control_prefix: int = 31

    @classmethod
    def for_index(cls, index: int, region_address: str = REGION_ADDRESS) -> Addressing:
        if not isinstance(index, int) or not 1 <= index <= MAX_INDEX:
            raise InvalidArgument(f"index: {index!r} must be an integer in 1..{MAX_INDEX}")
        region = ipaddress.ip_address(region_address)
        if region not in ipaddress.ip_network(REGION_SUBNET):
            raise InvalidArgument(f"region_address: {region_address!r} is not in {REGION_SUBNET}")
        return cls(
            index=index,
            region_address=str(region),
            region_subnet=REGION_SUBNET,
            data_subnet=f"198.18.{index}.0/29",
            data_address=f"198.18.{index}.2",
            control_host=f"198.19.{index}.0",
            control_namespace=f"198.19.{index}.1",
        )


@dataclass(frozen=True)
class DataCenterNetns:
    """One data center's namespace and devices, as made by :meth:`PacketNetwork.create`."""

    data_center: str
    namespace: str
    host_tun: str
    namespace_tun: str
    host_veth: str
    namespace_veth: str
    mtu: int
    addressing: Addressing

    def exec_args(self, *command: str) -> list[str]:
        """argv that runs ``command`` inside the namespace (``ip netns exec``)."""
        return ["ip", "netns", "exec", self.namespace, *command]

    def open_tuns(self) -> tuple[int, int]:
        """Open both TUN queues: ``(host_fd, namespace_fd)``, non-blocking, owned by the caller."""
        host_fd = open_tun(self.host_tun)
        try:
            return host_fd, open_tun(self.namespace_tun, namespace=self.namespace)
        except BaseException:
            os.close(host_fd)
            raise


def open_tun(ifname: str, *, namespace: str | None = None, persist: bool | None = None) -> int:
    """Attach to the TUN device ``ifname`` (created if missing) in ``namespace`` (None: this one).

    Returns a non-blocking fd that reads and writes bare IP packets (IFF_NO_PI). ``persist``
    True/False sets or clears TUNSETPERSIST (the device outlives the fd); None leaves it.
    """
    if namespace is None:
        return _open_tun_here(ifname, persist)
    # setns(CLONE_NEWNET) applies to the calling thread only; a short-lived thread keeps every
    # other thread (and the fd's later users) in the host namespace.
    result: dict[str, object] = {}

    def attach() -> None:
        try:
            from pyroute2 import netns as pyroute_netns

            pyroute_netns.setns(namespace, flags=0)
            result["fd"] = _open_tun_here(ifname, persist)
        except BaseException as error:  # handed to the caller's thread
            result["error"] = error

    worker = threading.Thread(target=attach, name=f"tun-open-{ifname}")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return int(result["fd"])  # type: ignore[arg-type]


def _open_tun_here(ifname: str, persist: bool | None) -> int:
    if not ifname or len(ifname.encode()) > 15:
        raise InvalidArgument(f"ifname: {ifname!r} must be 1..15 bytes")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", ifname.encode(), _IFF_TUN | _IFF_NO_PI))
        if persist is not None:
            fcntl.ioctl(fd, _TUNSETPERSIST, int(persist))
    except BaseException:
        os.close(fd)
        raise
    return fd


class PacketNetwork:
    """Makes and removes the namespaces of one run. Use as a context manager, or call ``close``.

    ``prefix`` names every object (``<prefix>-<dc>`` namespaces, ``<prefix><index><kind>`` links,
    at most 15 bytes); by default a fresh random one, so concurrent runs never collide.
    """

    def __init__(self, *, state_dir: Path | str = DEFAULT_STATE_DIR, prefix: str | None = None) -> None:
        require_privileges()
        prefix = prefix or f"sk{secrets.token_hex(3)}"
        if not prefix.isalnum() or not 2 <= len(prefix) <= 9:
            raise InvalidArgument(f"prefix: {prefix!r} must be 2..9 letters or digits")
        self.prefix = prefix
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.state_dir / f"{prefix}.json"
        if self.state_file.exists():
            raise InvalidArgument(f"prefix: {prefix!r} is in use ({self.state_file} exists)")
        cleanup_stale(self.state_dir)
        self.data_centers: dict[str, DataCenterNetns] = {}
        self._made: dict[str, list[str]] = {"namespaces": [], "links": []}
        self._lock = threading.Lock()

    def __enter__(self) -> PacketNetwork:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create(self, data_center: str, index: int, *, mtu: int = DEFAULT_MTU) -> DataCenterNetns:
        """Make ``data_center``'s namespace, TUN pair and control veth; on any failure, remove
        whatever this call made and re-raise."""
        from pyroute2 import IPRoute, NetNS
        from pyroute2 import netns as pyroute_netns

        if not isinstance(data_center, str) or not data_center:
            raise InvalidArgument(f"data_center: {data_center!r} must be a non-empty name")
        if data_center in self.data_centers:
            raise InvalidArgument(f"data_center: {data_center!r} already has a namespace in this run")
        if any(dc.addressing.index == index for dc in self.data_centers.values()):
            raise InvalidArgument(f"index: {index!r} is already used in this run")
        if not isinstance(mtu, int) or not 576 <= mtu <= 65535:
            raise InvalidArgument(f"mtu: {mtu!r} must be an integer in 576..65535")
        addressing = Addressing.for_index(index)
        base = f"{self.prefix}{index}"
        dc = DataCenterNetns(
            data_center=data_center,
            namespace=f"{self.prefix}-{_safe(data_center)}",
            host_tun=f"{base}th",
            namespace_tun=f"{base}tn",
            host_veth=f"{base}vh",
            namespace_veth=f"{base}vn",
            mtu=mtu,
            addressing=addressing,
        )
        try:
            self._record(namespace=dc.namespace)
            pyroute_netns.create(dc.namespace)
            for tun in (dc.host_tun, dc.namespace_tun):
                self._record(link=tun)
                os.close(open_tun(tun, persist=True))
            with IPRoute() as host:
                self._record(link=dc.host_veth)
                host.link("add", ifname=dc.host_veth, kind="veth", peer=dc.namespace_veth)
                for moved in (dc.namespace_tun, dc.namespace_veth):
                    host.link("set", index=_index(host, moved), net_ns_fd=dc.namespace)
                tun = _index(host, dc.host_tun)
                host.link("set", index=tun, mtu=mtu, state="up")
                host.addr("add", index=tun, address=addressing.region_address, prefixlen=32)
                host.route("add", dst=addressing.data_subnet, oif=tun, prefsrc=addressing.region_address)
                veth = _index(host, dc.host_veth)
                host.addr("add", index=veth, address=addressing.control_host, prefixlen=31)
                host.link("set", index=veth, state="up")
            with NetNS(dc.namespace, flags=0) as inside:
                inside.link("set", index=_index(inside, "lo"), state="up")
                tun = _index(inside, dc.namespace_tun)
                inside.link("set", index=tun, mtu=mtu, state="up")
                inside.addr("add", index=tun, address=addressing.data_address, prefixlen=32)
                subnet = addressing.region_subnet
                inside.route("add", dst=subnet, oif=tun, prefsrc=addressing.data_address)
                veth = _index(inside, dc.namespace_veth)
                inside.addr("add", index=veth, address=addressing.control_namespace, prefixlen=31)
                inside.link("set", index=veth, state="up")
        except BaseException:
            _remove(namespaces=[dc.namespace], links=[dc.host_tun, dc.namespace_tun, dc.host_veth])
            self._forget(dc)
            raise
        self.data_centers[data_center] = dc
        return dc

    def destroy(self, data_center: str) -> None:
        dc = self.data_centers.pop(data_center, None)
        if dc is None:
            raise InvalidArgument(f"data_center: {data_center!r} has no namespace in this run")
        _remove(namespaces=[dc.namespace], links=[dc.host_tun, dc.host_veth])
        self._forget(dc)

    def close(self) -> None:
        """Remove every namespace and device this run made, and its state file."""
        with self._lock:
            made = {key: list(values) for key, values in self._made.items()}
        _remove(**made)
        self.data_centers.clear()
        self._made = {"namespaces": [], "links": []}
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    # The state file is written BEFORE an object is made, so a crash between the two leaves at
    # worst a name that no longer exists, which cleanup ignores.
    def _record(self, *, namespace: str | None = None, link: str | None = None) -> None:
        with self._lock:
            if namespace:
                self._made["namespaces"].append(namespace)
            if link:
                self._made["links"].append(link)
            self._write_state()

    def _forget(self, dc: DataCenterNetns) -> None:
        with self._lock:
            self._made["namespaces"] = [n for n in self._made["namespaces"] if n != dc.namespace]
            names = {dc.host_tun, dc.namespace_tun, dc.host_veth}
            self._made["links"] = [n for n in self._made["links"] if n not in names]
            self._write_state()

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "start_time": _start_time(os.getpid()), **self._made}
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state))
        temporary.replace(self.state_file)

    def describe(self) -> list[dict[str, object]]:
        return [asdict(dc) for dc in self.data_centers.values()]


def cleanup_stale(state_dir: Path | str = DEFAULT_STATE_DIR) -> list[str]:
    """Remove namespaces and links recorded by owners that are no longer running; returns the
    state files cleaned. A live owner's objects are left alone."""
    cleaned = []
    directory = Path(state_dir)
    if not directory.is_dir():
        return cleaned
    for state_file in sorted(directory.glob("*.json")):
        try:
            state = json.loads(state_file.read_text())
            pid = int(state["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: not ours to guess about
        if _alive(pid, state.get("start_time")):
            continue
        _remove(namespaces=list(state.get("namespaces", [])), links=list(state.get("links", [])))
        with contextlib.suppress(FileNotFoundError):
            state_file.unlink()
        cleaned.append(str(state_file))
    return cleaned


def _alive(pid: int, start_time: object) -> bool:
    current = _start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time  # a reused pid is a different owner


def _start_time(pid: int) -> str | None:
    try:
        # Field 22 of /proc/PID/stat, after the parenthesised command name.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _remove(*, namespaces: list[str], links: list[str]) -> None:
    """Best effort: deleting a namespace takes its devices with it (the veth's host end too)."""
    from pyroute2 import IPRoute
    from pyroute2 import netns as pyroute_netns

    existing = set(pyroute_netns.listnetns())
    for name in namespaces:
        if name in existing:
            with contextlib.suppress(OSError):
                pyroute_netns.remove(name)
    with IPRoute() as host:
        for name in links:
            found = host.link_lookup(ifname=name)
            for index in found:
                with contextlib.suppress(Exception):
                    host.link("del", index=index)
    # A persistent TUN that never left the host namespace (a crash mid-create) needs TUNSETPERSIST 0.
    for name in links:
        if name.endswith(("th", "tn")):
            with IPRoute() as host:
                if not host.link_lookup(ifname=name):
                    continue
            with contextlib.suppress(OSError):
                os.close(open_tun(name, persist=False))


def _index(ipr: object, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)  # type: ignore[attr-defined]
    if not found:
        raise FailedPrecondition(f"link {ifname!r} vanished while being set up")
    return int(found[0])


def _safe(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return cleaned[:200]
