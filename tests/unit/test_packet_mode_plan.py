"""Packet mode without root: the scenario field, the terminal's settings and TerminalService over a
packet engine (SOCK_SEQPACKET pairs stand in for the TUNs, as in test_packet_engine), and the
launcher's packet-mode plan."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import pytest
from support.storage import clock_for, make_settings, write_scenario

from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument
from skyhaul.runtime.netns import Addressing, DataCenterNetns
from skyhaul.runtime.packet_mode import PacketMode, PacketModeError, region_addresses, resolve_data_plane
from skyhaul.runtime.scenario import DEFAULT_SCENARIO, ScenarioError, default_scenario, parse_scenario
from skyhaul.runtime.settings import SettingsError
from skyhaul.terminal.packet import DEFAULT_LOSS_PERCENT, PacketConfig, PacketEngine
from skyhaul.terminal.packet_plane import PacketPlaneSettings, data_plane_from_env
from skyhaul.terminal.relay import TerminalRelay
from skyhaul.terminal.service import RouteFeed, TerminalServicer
from skyhaul.terminal.shaping import EmulatedLink, LinkProfile
from skyhaul.v1 import terminal_pb2

# --- the scenario field and the terminal's settings ---------------------------------------------


def test_data_plane_defaults_to_relay_and_takes_packet():
    assert default_scenario().data_plane == "relay"
    assert parse_scenario({**DEFAULT_SCENARIO, "data_plane": "packet"}).data_plane == "packet"
    with pytest.raises(ScenarioError, match=r"^data_plane: 'netem' is not one of relay, packet"):
        parse_scenario({**DEFAULT_SCENARIO, "data_plane": "netem"})


def test_the_flag_wins_over_the_scenario():
    packet = parse_scenario({**DEFAULT_SCENARIO, "data_plane": "packet"})
    assert resolve_data_plane(packet, None) == "packet"
    assert resolve_data_plane(packet, "relay") == "relay"
    assert resolve_data_plane(default_scenario(), "packet") == "packet"
    assert PacketMode.prepare(packet, "relay") is None  # relay: no privileges asked for
    assert data_plane_from_env({}, packet) == "packet"
    assert data_plane_from_env({"SKYHAUL_DATA_PLANE": "relay"}, packet) == "relay"
    with pytest.raises(SettingsError, match="SKYHAUL_DATA_PLANE"):
        data_plane_from_env({"SKYHAUL_DATA_PLANE": "tun"}, packet)


NAMES = {
    "SKYHAUL_PACKET_NAMESPACE": "sk0-dc",
    "SKYHAUL_PACKET_HOST_TUN": "sk01th",
    "SKYHAUL_PACKET_NAMESPACE_TUN": "sk01tn",
}


def test_packet_settings_read_queue_loss_and_seed_and_name_bad_variables():
    settings = PacketPlaneSettings.from_env(NAMES, "mdc-a")
    assert (
        settings.config.uplink_loss_percent == settings.config.downlink_loss_percent == DEFAULT_LOSS_PERCENT
    )
    assert settings.config.seed == PacketPlaneSettings.from_env(NAMES, "mdc-a").config.seed
    assert settings.config.seed != PacketPlaneSettings.from_env(NAMES, "mdc-b").config.seed
    tuned = PacketPlaneSettings.from_env(
        {**NAMES, "SKYHAUL_PACKET_LOSS_PERCENT": "0", "SKYHAUL_PACKET_DOWNLINK_LOSS_PERCENT": "3"}, "mdc-a"
    )
    assert (tuned.config.uplink_loss_percent, tuned.config.downlink_loss_percent) == (0.0, 3.0)
    for env, variable in (
        ({"SKYHAUL_PACKET_NAMESPACE": "x"}, "SKYHAUL_PACKET_HOST_TUN"),
        ({**NAMES, "SKYHAUL_PACKET_LOSS_PERCENT": "lots"}, "SKYHAUL_PACKET_LOSS_PERCENT"),
        ({**NAMES, "SKYHAUL_PACKET_LOSS_PERCENT": "101"}, "uplink_loss_percent"),
        ({**NAMES, "SKYHAUL_PACKET_QUEUE_MS": "0"}, "queue_ms"),
    ):
        with pytest.raises(SettingsError, match=variable):
            PacketPlaneSettings.from_env(env, "mdc-a")


# --- TerminalService over a packet engine ---------------------------------------------------------


@pytest.fixture
def servicer(tmp_path: Path):
    """(packet-mode servicer, namespace side, host side, relay-mode servicer)."""
    scenario = write_scenario(tmp_path / "s.yaml")
    settings = make_settings("terminal", scenario, tmp_path)
    link = EmulatedLink(clock=time.time)
    feed = RouteFeed(settings, clock_for(settings), link)
    namespace_side, namespace_tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    host_side, host_tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (namespace_tun, host_tun):
        end.setblocking(False)
    engine = PacketEngine(
        namespace_tun.fileno(),
        host_tun.fileno(),
        config=PacketConfig(uplink_loss_percent=0.0, downlink_loss_percent=0.0),
        link=link,
    )
    engine.set_route(LinkProfile.constant(0.002, uplink_bps=10e6, downlink_bps=50e6))
    relay_link = EmulatedLink(clock=time.time)
    relay_mode = TerminalServicer(
        settings.data_center_id,
        TerminalRelay(relay_link),
        relay_link,
        RouteFeed(settings, clock_for(settings), relay_link),
    )
    with engine:
        yield (
            TerminalServicer(settings.data_center_id, TerminalRelay(link), link, feed, engine),
            namespace_side,
            host_side,
            relay_mode,
        )
    for end in (namespace_side, namespace_tun, host_side, host_tun):
        end.close()


def _passes(sender: socket.socket, receiver: socket.socket, packet: bytes) -> bool:
    sender.send(packet)
    ready, _, _ = select.select([receiver], [], [], 1.0)
    return bool(ready) and receiver.recv(70000) == packet


async def test_get_stats_counts_packets_per_direction(servicer):
    service, namespace_side, host_side, _ = servicer
    for number in range(5):
        assert _passes(namespace_side, host_side, b"up%d" % number + bytes(96))
    assert _passes(host_side, namespace_side, b"down" + bytes(196))
    stats = await service.GetStats(terminal_pb2.GetStatsRequest(), None)
    assert stats.data_plane == "packet" and stats.link_up
    assert (stats.uplink.packets, stats.uplink.bytes_delivered) == (5, 5 * 99)
    assert (stats.downlink.packets, stats.downlink.bytes_delivered) == (1, 200)
    assert stats.uplink.current_rate_mbps == 10.0 and stats.downlink.current_rate_mbps == 50.0
    assert stats.uplink.current_delay_ms == pytest.approx(2.0)
    assert stats.uplink.drops_outage == stats.uplink.drops_random == 0


async def test_overrides_reach_the_engine_outage_drops_and_loss_override(servicer):
    service, namespace_side, host_side, _ = servicer
    reply = await service.SetOverrides(
        terminal_pb2.SetOverridesRequest(forced_outage=True, duration={"seconds": 30}), None
    )
    assert reply.overrides.forced_outage
    assert not _passes(namespace_side, host_side, b"lost")
    stats = await service.GetStats(terminal_pb2.GetStatsRequest(), None)
    assert stats.uplink.drops_outage == 1 and not stats.link_up
    await service.ClearOverrides(terminal_pb2.ClearOverridesRequest(), None)
    reply = await service.SetOverrides(terminal_pb2.SetOverridesRequest(loss_percent=100.0), None)
    assert reply.overrides.HasField("loss_percent") and reply.overrides.loss_percent == 100.0
    assert not _passes(namespace_side, host_side, b"lost too")
    stats = await service.GetStats(terminal_pb2.GetStatsRequest(), None)
    assert stats.uplink.drops_random == 1 and stats.uplink.loss_percent == 100.0
    reply = await service.SetOverrides(terminal_pb2.SetOverridesRequest(loss_percent=-1), None)
    assert not reply.overrides.HasField("loss_percent")
    assert _passes(namespace_side, host_side, b"through again")


async def test_bad_loss_override_changes_nothing_and_relay_mode_refuses_it(servicer):
    service, _, _, relay_mode = servicer
    for bad in (101.0, float("nan")):
        with pytest.raises(InvalidArgument, match="loss_percent"):
            await service.SetOverrides(terminal_pb2.SetOverridesRequest(loss_percent=bad), None)
    assert service.engine.loss_override() == ({}, None)
    with pytest.raises(FailedPrecondition, match="packet data plane"):
        await relay_mode.SetOverrides(terminal_pb2.SetOverridesRequest(loss_percent=1.0), None)
    stats = await relay_mode.GetStats(terminal_pb2.GetStatsRequest(), None)
    assert stats.data_plane == "relay"


# --- the launcher's plan --------------------------------------------------------------------------


def test_the_plan_puts_regions_on_their_address_and_the_mdc_in_its_namespace(tmp_path):
    from skyhaul.runtime.launcher import plan

    scenario = parse_scenario(
        {**DEFAULT_SCENARIO, "regions": [{"id": "westus2"}, {"id": "eastus"}]}
        | {
            "data_centers": [
                {"id": "mdc-kodiak", "home_region": "eastus", "location": {"lat": 57.79, "lon": -152.4}}
            ]
        }
    )
    assert region_addresses(scenario) == {"westus2": "198.18.0.1", "eastus": "198.18.0.2"}
    mode = PacketMode(scenario, tmp_path)

    class Made:  # what PacketNetwork.create made (the real one needs root)
        data_centers = {
            "mdc-kodiak": DataCenterNetns(
                "mdc-kodiak",
                "skab-mdc-kodiak",
                "skab3th",
                "skab3tn",
                "skab3vh",
                "skab3vn",
                1500,
                Addressing.for_index(3),
            )
        }

    mode.network = Made()  # type: ignore[assignment]
    specs = plan(scenario, None, tmp_path, "redis://127.0.0.1:6400/0", 0.0)
    mode.adapt(specs)
    by_name = {spec.name: spec for spec in specs}
    east, terminal, mdc = by_name["region-eastus"], by_name["terminal-mdc-kodiak"], by_name["mdc-kodiak"]
    assert east.address == f"198.18.0.2:{east.port}" == east.env["SKYHAUL_LISTEN"]
    assert by_name["region-westus2"].host == "198.18.0.1"
    assert terminal.address == f"198.19.3.0:{terminal.port}" and terminal.relay_ports == {}
    assert "SKYHAUL_TERMINAL_FORWARDS" not in terminal.env
    assert terminal.env["SKYHAUL_PACKET_NAMESPACE"] == "skab-mdc-kodiak"
    assert terminal.env["SKYHAUL_PACKET_HOST_TUN"] == "skab3th"
    assert mdc.argv_prefix == ["ip", "netns", "exec", "skab-mdc-kodiak"]
    assert mdc.address == f"198.19.3.1:{mdc.port}"
    assert mdc.env["SKYHAUL_REGION_ADDR"] == f"198.18.0.2:{east.port}"  # its home region, through the link
    assert mdc.env["SKYHAUL_TERMINAL_ADDR"] == terminal.address
    assert mdc.env["SKYHAUL_REDIS_URL"] == "redis://198.19.3.0:6400/0"
    assert by_name["links"].address.startswith("127.0.0.1:")
    with pytest.raises(PacketModeError, match="SKYHAUL_REDIS_URL"):
        mode.expose_redis("redis://127.0.0.1:6379/0", own=False)
