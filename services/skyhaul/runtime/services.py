"""The one registry of Skyhaul's services, and the one way to run one of them.

Everything that needs a service's name, default port or address variable reads it here: the
settings, `skyhaul serve`, the launcher, `skyhaul k8s forward --all` (and a chart test checks
helm/skyhaul/values.yaml against it, since YAML cannot import Python). Each service is reached by
its module name as a string, so nothing outside the service imports its internals: the launcher
spawns `python -m skyhaul.NAME`, `skyhaul serve NAME` runs the same module in its own process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry itself imports nothing, so settings.py can import it
    import asyncio

    from skyhaul.runtime.clock import EmulationClock
    from skyhaul.runtime.server import ServiceApp
    from skyhaul.runtime.settings import Settings


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    module: str  # what `python -m` runs: the service package, whose __main__ calls serve_service
    port: int  # default gRPC port (docs/conventions.md), also the chart's
    addr_var: str  # environment variable other processes read its address from

    @property
    def default_address(self) -> str:
        return f"127.0.0.1:{self.port}"


# The port map, written once. `module` is a plain string: the runtime never imports a service.
SERVICES: dict[str, ServiceInfo] = {
    info.name: info
    for info in (
        ServiceInfo("orbit", "skyhaul.orbit", 50051, "SKYHAUL_ORBIT_ADDR"),
        ServiceInfo("links", "skyhaul.links", 50052, "SKYHAUL_LINKS_ADDR"),
        ServiceInfo("region", "skyhaul.region", 50053, "SKYHAUL_REGION_ADDR"),
        ServiceInfo("mdc", "skyhaul.mdc", 50054, "SKYHAUL_MDC_ADDR"),
        ServiceInfo("terminal", "skyhaul.terminal", 50055, "SKYHAUL_TERMINAL_ADDR"),
    )
}


HOSTING_SERVICES = ("mdc", "terminal")  # the services that host data centers, one or a set


def hosting_arguments(name: str, argv: list[str]) -> dict[str, str]:
    """The environment a hosting service's flags stand for: `--shard K/N` (SKYHAUL_SHARD) and
    `--data-centers ID,...|*` (SKYHAUL_DATA_CENTER_ID). Raises SystemExit(2) on bad flags."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"skyhaul serve {name}")
    if name in HOSTING_SERVICES:
        parser.add_argument(
            "--shard",
            metavar="K/N",
            help="host shard K of N (0 <= K < N): the data centers at scenario positions p with p %% N == K",
        )
        parser.add_argument("--data-centers", metavar="ID,...|*", help="host these data centers (*: all)")
    args = parser.parse_args(argv)
    env = {}
    if getattr(args, "shard", None):
        env["SKYHAUL_SHARD"] = args.shard
    if getattr(args, "data_centers", None):
        env["SKYHAUL_DATA_CENTER_ID"] = args.data_centers
    return env


def serve_service(
    name: str,
    build: Callable[[Settings, EmulationClock], ServiceApp],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    argv: list[str] | None = None,
) -> int:
    """Run one service until SIGTERM/SIGINT (what every service's `__main__` calls).

    `argv` (default: the command line) may choose the hosted data centers of an mdc or terminal
    (`--shard K/N`, `--data-centers`); they override the environment's SKYHAUL_SHARD /
    SKYHAUL_DATA_CENTER_ID. Reads its settings from the environment (a bad variable: one line on stderr, exit code 2),
    sets up logging and tracing, builds the app on the emulation clock and serves it with the
    runtime's runner, which drains before returning. A service may bring its own event loop (the
    terminal's has precise timers).
    """
    import asyncio
    import os
    import sys

    from skyhaul.runtime.logs import setup_logging
    from skyhaul.runtime.scenario import ScenarioError
    from skyhaul.runtime.settings import Settings, SettingsError

    flags = hosting_arguments(name, sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    if flags:
        env.pop("SKYHAUL_SHARD", None)
        env.pop("SKYHAUL_DATA_CENTER_ID", None)
        env.update(flags)
    try:
        settings = Settings.from_env(name, env)
    except (ScenarioError, SettingsError) as exc:
        print(f"skyhaul: {exc}", file=sys.stderr)
        return 2
    setup_logging(name, settings.log_level)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            runner.run(_serve(name, build, settings))
        except SettingsError as exc:  # a setting only the service itself can judge (e.g. its data plane)
            print(f"skyhaul: {exc}", file=sys.stderr)
            return 2
    return 0


async def _serve(name: str, build, settings: Settings) -> None:
    from skyhaul.runtime.context import make_clock
    from skyhaul.runtime.server import run_until_signalled
    from skyhaul.runtime.telemetry import setup_telemetry

    telemetry = setup_telemetry(name)
    try:
        clock = await make_clock(settings)
        await run_until_signalled(build(settings, clock), settings)
    finally:
        telemetry.shutdown()


__all__ = ["HOSTING_SERVICES", "SERVICES", "ServiceInfo", "hosting_arguments", "serve_service"]
