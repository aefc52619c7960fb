"""`skyhaul up`, `skyhaul serve`, `skyhaul status`: running the system."""

from __future__ import annotations

import argparse
import json
import runpy
import signal
import threading
import time
from pathlib import Path

from skyhaul.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    add_formatter,
    endpoints_file,
    fail,
    print_json,
    running_endpoints,
)
from skyhaul.runtime.services import SERVICES


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="run Redis and every service locally until Ctrl-C")
    add_formatter(
        up,
        """examples:
  skyhaul up                                          the built-in default scenario
  skyhaul up --scenario scenarios/azure-mdc-2020.yaml
  SKYHAUL_REDIS_URL=redis://127.0.0.1:6379/0 skyhaul up   use an existing Redis
""",
    )
    up.add_argument("--scenario", help="scenario YAML (default: the built-in one)")
    up.add_argument("--run-dir", help="where logs and data go (default: runs/<time>)")
    up.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    up.add_argument(
        "--listen-all",
        action="store_true",
        help="listen on every interface (default: 127.0.0.1 only); writes still need the run's token",
    )
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run one service in the foreground (what a container runs)")
    add_formatter(
        serve,
        """examples:
  skyhaul serve orbit
  SKYHAUL_LISTEN=127.0.0.1:6000 SKYHAUL_SCENARIO=s.yaml skyhaul serve links
""",
    )
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.set_defaults(func=cmd_serve)

    status = sub.add_parser("status", help="health of every service")
    add_formatter(
        status,
        """Targets: --target flags, else the running `skyhaul up`, else SKYHAUL_*_ADDR / default ports.
Exit code 0 when every target is SERVING, 1 otherwise.

examples:
  skyhaul status
  skyhaul status --target orbit=127.0.0.1:50051 --target links=127.0.0.1:50052 --json
""",
    )
    status.add_argument("--target", action="append", default=[], metavar="NAME=HOST:PORT")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)


def cmd_serve(args: argparse.Namespace) -> int:
    """Runs the service's own entry point (`python -m skyhaul.NAME`) in this process.

    The module comes from the registry as a string: the CLI never imports a service. The entry
    point reads its settings, serves until SIGTERM/SIGINT, drains and exits with its code.
    """
    try:
        runpy.run_module(SERVICES[args.service].module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from skyhaul.runtime.launcher import Launcher, LaunchError
    from skyhaul.runtime.scenario import ScenarioError

    run_dir = Path(args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    try:
        launcher = Launcher(args.scenario, run_dir, listen_all=args.listen_all)
    except ScenarioError as exc:
        return fail(f"{exc} (nothing was started)", EXIT_USAGE)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console = Console(stderr=False)
    try:
        endpoints = launcher.start()
    except LaunchError as exc:
        return fail(f"start failed: {exc}")
    try:
        from skyhaul.runtime.auth import write_secret_file

        write_secret_file(endpoints_file(), (run_dir / "endpoints.json").read_text())  # 0600: Redis password
        if args.json:
            print(json.dumps({"services": endpoints.services, "redis": endpoints.redis_url}), flush=True)
        else:
            table = Table(title=f"Skyhaul: scenario {endpoints.scenario} (logs in {run_dir})")
            for col in ("service", "address", "pid"):
                table.add_column(col)
            for name, addr in endpoints.services.items():
                table.add_row(name, addr, str(endpoints.pids[name]))
            for name, relays in endpoints.relays.items():
                for port, target in relays.items():
                    table.add_row(f"{name} relay", f"127.0.0.1:{port}", f"-> {target}")
            table.add_row("redis", endpoints.redis_url, "")
            console.print(table)
            console.print("All services SERVING. Ctrl-C stops everything.")
        while not stop.wait(0.5):
            dead = launcher.dead()
            if dead:
                return fail(f"{dead[0]} exited:\n{launcher.log_tail(dead[0])}")
        return EXIT_OK
    finally:
        launcher.stop()
        if running_endpoints() and running_endpoints().get("run_dir") == str(run_dir.resolve()):
            endpoints_file().unlink(missing_ok=True)


def _targets(args: argparse.Namespace) -> dict[str, str]:
    if args.target:
        targets = {}
        for item in args.target:
            name, sep, addr = item.partition("=")
            if not sep or ":" not in addr:
                raise ValueError(f"--target {item!r} is not NAME=HOST:PORT")
            targets[name] = addr
        return targets
    running = running_endpoints()
    if running:
        return dict(running["services"])
    import os

    return {name: os.environ.get(info.addr_var, info.default_address) for name, info in SERVICES.items()}


def cmd_status(args: argparse.Namespace) -> int:
    from skyhaul.runtime.launcher import check_health

    try:
        targets = _targets(args)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    states = {name: check_health(addr) for name, addr in targets.items()}
    if args.json:
        print_json({name: {"address": targets[name], "status": state} for name, state in states.items()})
    else:
        width = max(map(len, states), default=8)
        for name, state in states.items():
            print(f"{name:<{width}}  {targets[name]:<22}  {state}")
    return EXIT_OK if all(s == "SERVING" for s in states.values()) else EXIT_FAILURE
