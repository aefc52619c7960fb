"""The terminal's packet data plane: the packet engine between its data center's two TUN devices.

`skyhaul up --data-plane packet` (runtime/packet_mode.py) makes the namespace and the TUN pair and
tells the terminal their names through the environment; the terminal opens both TUNs, runs one
``PacketEngine`` and feeds it the live route exactly as the relay is fed (``RouteFeed``).

Environment (all optional but the three names, which the launcher sets):

- ``SKYHAUL_DATA_PLANE``: ``relay`` or ``packet`` (default: the scenario's ``data_plane``);
- ``SKYHAUL_PACKET_NAMESPACE``, ``SKYHAUL_PACKET_HOST_TUN``, ``SKYHAUL_PACKET_NAMESPACE_TUN``;
- ``SKYHAUL_PACKET_QUEUE_MS`` / ``SKYHAUL_PACKET_QUEUE_BYTES``: the bottleneck queue (default
  ``packet.DEFAULT_QUEUE_MS`` of the current rate);
- ``SKYHAUL_PACKET_LOSS_PERCENT`` (both directions), ``SKYHAUL_PACKET_UPLINK_LOSS_PERCENT``,
  ``SKYHAUL_PACKET_DOWNLINK_LOSS_PERCENT``: random loss (default ``packet.DEFAULT_LOSS_PERCENT``);
- ``SKYHAUL_PACKET_SEED``: the loss generator's seed (default: derived from the data center id,
  so runs repeat);
- ``SKYHAUL_PACKET_REALTIME_PRIORITY``: SCHED_FIFO priority of the engine thread (default
  ``SKYHAUL_REALTIME_PRIORITY``, the one the relay uses too; unset: normal scheduling).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from skyhaul.runtime.errors import InvalidArgument
from skyhaul.runtime.scenario import DATA_PLANES, Scenario
from skyhaul.runtime.settings import SettingsError
from skyhaul.terminal.packet import DEFAULT_LOSS_PERCENT, DEFAULT_QUEUE_MS, PacketConfig, PacketEngine
from skyhaul.terminal.shaping import EmulatedLink

DATA_PLANE_VAR = "SKYHAUL_DATA_PLANE"


def data_plane_from_env(env: Mapping[str, str], scenario: Scenario) -> str:
    """``relay`` or ``packet``: SKYHAUL_DATA_PLANE when set, else the scenario's."""
    value = env.get(DATA_PLANE_VAR) or scenario.data_plane
    if value not in DATA_PLANES:
        raise SettingsError(f"{DATA_PLANE_VAR}: {value!r} is not one of {', '.join(DATA_PLANES)}")
    return value


@dataclass(frozen=True)
class PacketPlaneSettings:
    namespace: str
    host_tun: str
    namespace_tun: str
    config: PacketConfig

    @classmethod
    def from_env(cls, env: Mapping[str, str], data_center_id: str) -> PacketPlaneSettings:
        names = {}
        for key, var in (
            ("namespace", "SKYHAUL_PACKET_NAMESPACE"),
            ("host_tun", "SKYHAUL_PACKET_HOST_TUN"),
            ("namespace_tun", "SKYHAUL_PACKET_NAMESPACE_TUN"),
        ):
            value = env.get(var, "")
            if not value:
                raise SettingsError(
                    f"{var}: not set; the packet data plane runs under `skyhaul up --data-plane packet`, "
                    "which makes the namespace and TUN devices"
                )
            names[key] = value

        def number(var: str, default: float | None) -> float | None:
            raw = env.get(var, "")
            if not raw:
                return default
            try:
                return float(raw)
            except ValueError:
                raise SettingsError(f"{var}: {raw!r} is not a number") from None

        both = number("SKYHAUL_PACKET_LOSS_PERCENT", DEFAULT_LOSS_PERCENT)
        queue_bytes = number("SKYHAUL_PACKET_QUEUE_BYTES", None)
        priority = number("SKYHAUL_PACKET_REALTIME_PRIORITY", number("SKYHAUL_REALTIME_PRIORITY", None))
        seed = number("SKYHAUL_PACKET_SEED", None)
        try:
            config = PacketConfig(
                queue_ms=number("SKYHAUL_PACKET_QUEUE_MS", DEFAULT_QUEUE_MS),
                queue_bytes=None if queue_bytes is None else int(queue_bytes),
                uplink_loss_percent=number("SKYHAUL_PACKET_UPLINK_LOSS_PERCENT", both),
                downlink_loss_percent=number("SKYHAUL_PACKET_DOWNLINK_LOSS_PERCENT", both),
                seed=zlib.crc32(data_center_id.encode()) if seed is None else int(seed),
                realtime_priority=None if priority is None else int(priority),
            )
        except (ValueError, InvalidArgument) as exc:  # InvalidArgument names the field
            raise SettingsError(f"SKYHAUL_PACKET_*: {exc}") from None
        return cls(config=config, **names)


class PacketPlane:
    """Owns the two TUN fds and the engine of one data center (``start`` / ``stop``)."""

    def __init__(self, settings: PacketPlaneSettings, link: EmulatedLink, data_center_id: str) -> None:
        self.settings = settings
        self.link = link
        self.data_center_id = data_center_id
        self.engine: PacketEngine | None = None
        self._fds: list[int] = []

    def start(self) -> PacketEngine:
        from skyhaul.runtime.netns import open_tun

        host_fd = open_tun(self.settings.host_tun)
        self._fds.append(host_fd)
        namespace_fd = open_tun(self.settings.namespace_tun, namespace=self.settings.namespace)
        self._fds.append(namespace_fd)
        self.engine = PacketEngine(
            namespace_fd,
            host_fd,
            config=self.settings.config,
            link=self.link,
            name=f"packet-{self.data_center_id}",
        ).start()
        return self.engine

    def stop(self) -> None:
        try:
            if self.engine is not None:
                self.engine.stop()
        finally:
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fds.clear()
