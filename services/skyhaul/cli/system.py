"""`skyhaul up`, `skyhaul serve`, `skyhaul status`: running the system."""

from __future__ import annotations

import argparse
import json
import runpy
import signal
import sys
import threading
import time
from pathlib import Path

from skyhaul.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    JSON_HELP,
    add_formatter,
    fail,
    print_json,
    running_endpoints,
)
from skyhaul.runtime.services import HOSTING_SERVICES, SERVICES


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="run Redis and every service locally until Ctrl-C")
    add_formatter(
        up,
        """examples:
  skyhaul up                                          the built-in default scenario
  skyhaul up --scenario scenarios/azure-mdc-2020.yaml
  SKYHAUL_REDIS_URL=redis://127.0.0.1:6379/0 skyhaul up   use an existing Redis
  skyhaul up --forward 8080=127.0.0.1:9000           your TCP app behind the terminal's link
  sudo skyhaul up --data-plane packet                 every data center in its own network
                                                      namespace; then `skyhaul run -d DC -- CMD`

Each run keeps its state in RUN_DIR/run.json and is listed under $SKYHAUL_STATE_DIR/runs
(default ~/.skyhaul/runs) while it lives: other commands find it there (several live runs: pick
one with `skyhaul --run RUN_DIR ...`). A crashed child is restarted with exponential backoff;
one that keeps crashing stops the run. The same RUN_DIR again continues the same emulated clock.
""",
    )
    up.add_argument("--scenario", help="scenario YAML (default: the built-in one)")
    up.add_argument(
        "--data-plane",
        choices=("relay", "packet"),
        help="relay (TCP relay ports, no privileges) or packet (every IP packet through the link; "
        "root or CAP_NET_ADMIN); default: the scenario's data_plane, else relay",
    )
    up.add_argument(
        "--layout",
        choices=("auto", "per-dc", "shards"),
        default="auto",
        help="processes for the data centers: per-dc (an mdc + terminal each), shards (N pairs, each "
        "hosting a shard), auto (per-dc up to 16 data centers, else shards; docs/running.md)",
    )
    up.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="shards layout with N mdc + terminal pairs (default: min(2 x cores, data centers / 64))",
    )
    up.add_argument("--run-dir", help="where logs, data and run.json go (default: runs/<time>)")
    up.add_argument("--json", action="store_true", help=JSON_HELP)
    up.add_argument(
        "--forward",
        action="append",
        default=[],
        metavar="[DC:]PORT=HOST:PORT",
        help="relay 127.0.0.1:PORT through the data center's terminal to HOST:PORT (repeatable)",
    )
    up.add_argument(
        "--max-restarts",
        type=int,
        default=5,
        metavar="N",
        help="stop the run when a child needs more than N restarts within --restart-window (default 5)",
    )
    up.add_argument("--restart-window", type=float, default=300.0, metavar="S", help="seconds (default 300)")
    up.add_argument(
        "--restart-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="first restart delay; doubles per crash up to 30 s, resets after 60 s up (default 1)",
    )
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
  SKYHAUL_SCENARIO=scenarios/fleet-1000.yaml skyhaul serve mdc --shard 0/4    a quarter of the fleet
  skyhaul serve terminal --data-centers '*'                                  every data center
""",
    )
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.add_argument(
        "--shard",
        metavar="K/N",
        help="mdc/terminal: host shard K of N (0 <= K < N; positions p with p %% N == K); or SKYHAUL_SHARD",
    )
    serve.add_argument(
        "--data-centers", metavar="ID,...|*", help="mdc/terminal: host these data centers (*: every one)"
    )
    serve.set_defaults(func=cmd_serve)

    status = sub.add_parser("status", help="health of every service")
    add_formatter(
        status,
        """Targets: --target flags, else the running `skyhaul up` (--run DIR to pick one), else
SKYHAUL_*_ADDR / default ports. With a run: its restarts and relays too.
Exit code 0 when every target is SERVING, 3 when none answers at all, 1 otherwise.

examples:
  skyhaul status
  skyhaul status --target orbit=127.0.0.1:50051 --target links=127.0.0.1:50052 --json
""",
    )
    status.add_argument("--target", action="append", default=[], metavar="NAME=HOST:PORT")
    status.add_argument("--json", action="store_true", help=JSON_HELP)
    status.set_defaults(func=cmd_status)


def cmd_serve(args: argparse.Namespace) -> int:
    """Runs the service's own entry point (`python -m skyhaul.NAME`) in this process.

    The module comes from the registry as a string: the CLI never imports a service. The entry
    point reads its settings, serves until SIGTERM/SIGINT, drains and exits with its code.
    """
    module = SERVICES[args.service].module
    flags = []
    if args.shard or args.data_centers:
        if args.service not in HOSTING_SERVICES:
            return fail(
                f"--shard and --data-centers are for mdc and terminal, not {args.service}", EXIT_USAGE
            )
        flags = ["--shard", args.shard] if args.shard else ["--data-centers", args.data_centers]
    saved = sys.argv
    sys.argv = [module, *flags]  # what the entry point parses
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    finally:
        sys.argv = saved
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from skyhaul.runtime.launcher import (
        CrashLoop,
        Launcher,
        LaunchError,
        LaunchInterrupted,
        RestartPolicy,
        RunSelectionError,
        register_run,
        unregister_run,
    )
    from skyhaul.runtime.netns import PrivilegeError
    from skyhaul.runtime.packet_mode import PacketModeError
    from skyhaul.runtime.scenario import ScenarioError
    from skyhaul.runtime.settings import SettingsError

    run_dir = Path(args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    stop = threading.Event()
    try:
        policy = RestartPolicy(
            initial_delay_s=args.restart_delay,
            max_delay_s=max(30.0, args.restart_delay),
            max_restarts=args.max_restarts,
            window_s=args.restart_window,
        )
        launcher = Launcher(
            args.scenario,
            run_dir,
            forwards=args.forward,
            restart_policy=policy,
            stop_event=stop,
            data_plane=args.data_plane,
            listen_all=args.listen_all,
            layout=args.layout,
            shards=args.shards,
        )
    except (ScenarioError, SettingsError, ValueError) as exc:
        return fail(f"{exc} (nothing was started)", EXIT_USAGE)
    except (PrivilegeError, PacketModeError) as exc:
        return fail(str(exc), EXIT_USAGE)
    # From here a signal only asks to stop: every phase (startup too) checks the event.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console = Console(stderr=False)
    try:
        register_run(launcher.run_dir)
    except RunSelectionError as exc:
        return fail(f"{exc} (nothing was started)", EXIT_USAGE)
    try:
        try:
            endpoints = launcher.start()
        except LaunchInterrupted as exc:
            return fail(f"{exc}; everything stopped", 130)
        except CrashLoop as exc:
            return fail(f"{exc}\n{exc.log_tail}")
        except (LaunchError, PacketModeError) as exc:
            return fail(f"start failed: {exc}")
        if args.json:
            print(
                json.dumps(
                    {
                        "services": endpoints.services,
                        "redis": endpoints.redis_url,
                        "relays": endpoints.relays,
                        "run_dir": endpoints.run_dir,
                        "layout": endpoints.layout,
                        "hosts": endpoints.hosts,
                        **({"packet": endpoints.packet} if endpoints.packet else {}),
                    }
                ),
                flush=True,
            )
        else:
            table = Table(title=f"Skyhaul: scenario {endpoints.scenario} (logs in {run_dir})")
            for col in ("service", "address", "pid"):
                table.add_column(col)
            for name, addr in endpoints.services.items():
                hosts = endpoints.hosts.get(name, [])
                label = f"{name} ({len(hosts)} data centers)" if len(hosts) > 1 else name
                table.add_row(label, addr, str(endpoints.pids[name]))
            for name, relays in endpoints.relays.items():
                for address, target in relay_lines(relays):
                    table.add_row(f"{name} relay", address, target)
            table.add_row("redis", endpoints.redis_url, "")
            for line in packet_lines(endpoints.packet):
                table.add_row(*line)
            console.print(table)
            console.print(f"Layout: {endpoints.layout} ({len(endpoints.data_centers)} data centers).")
            console.print(f"All services SERVING. Run state: {launcher.state_path}. Ctrl-C stops everything.")
        while not stop.wait(0.5):
            try:
                messages = launcher.supervise()
            except CrashLoop as exc:
                return fail(f"{exc}\n{exc.log_tail}")
            for message in messages:
                print(f"skyhaul: {message}", file=sys.stderr, flush=True)
        return EXIT_OK
    finally:
        launcher.stop()
        unregister_run(launcher.run_dir)


def hosts_text(hosts: list[str], shown: int = 3) -> str:
    """`N data centers: a, b, c, ...` (what a shard process hosts, in one line)."""
    more = ", ..." if len(hosts) > shown else ""
    return f"{len(hosts)} data centers: {', '.join(hosts[:shown])}{more}"


def relay_lines(relays: dict, listed: int = 8) -> list[tuple[str, str]]:
    """(local address, '-> target') rows; a shard's many sync relays as one row per target."""
    if len(relays) <= listed:
        return [(f"127.0.0.1:{port}", f"-> {target}") for port, target in relays.items()]
    by_target: dict[str, list[int]] = {}
    for port, target in relays.items():
        by_target.setdefault(target, []).append(int(port))
    return [
        (f"127.0.0.1 ports {min(ports)}-{max(ports)}", f"{len(ports)} relays -> {target}")
        for target, ports in by_target.items()
    ]


def packet_lines(packet: dict | None) -> list[tuple[str, str, str]]:
    """(what, address, note) rows about packet mode, for `up` and `status` (none in relay mode)."""
    if not packet:
        return []
    rows = [
        (f"region {name}", address, "stable address (packet mode)")
        for name, address in packet["regions"].items()
    ]
    for name, dc in packet["data_centers"].items():
        rows.append(
            (f"data center {name}", dc["address"], f"netns {dc['namespace']}: skyhaul run -d {name} -- CMD")
        )
    return rows


def _targets(args: argparse.Namespace) -> tuple[dict[str, str], dict | None]:
    """Name -> address to check, and the run state they come from (None without a run)."""
    if args.target:
        targets = {}
        for item in args.target:
            name, sep, addr = item.partition("=")
            if not sep or ":" not in addr:
                raise ValueError(f"--target {item!r} is not NAME=HOST:PORT")
            targets[name] = addr
        return targets, None
    running = running_endpoints()
    if running:
        return dict(running["services"]), running
    import os

    return {
        name: os.environ.get(info.addr_var, info.default_address) for name, info in SERVICES.items()
    }, None


def cmd_status(args: argparse.Namespace) -> int:
    from skyhaul.runtime.launcher import REDIS_LABEL, check_health, check_redis

    try:
        targets, run = _targets(args)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    states = {name: check_health(addr) for name, addr in targets.items()}
    restarts = (run or {}).get("restarts", {})
    relays = (run or {}).get("relays", {})
    hosts = (run or {}).get("hosts", {})
    if run and REDIS_LABEL in restarts:  # a Redis that `skyhaul up` started and supervises
        targets[REDIS_LABEL] = run["redis_url"]
        states[REDIS_LABEL] = check_redis(run["redis_url"])
    if args.json:
        report = {}
        for name, state in states.items():
            entry = {"address": targets[name], "status": state}
            if run:
                entry["restarts"] = restarts.get(name, 0)
            if name in relays:
                entry["relays"] = relays[name]
            if name in hosts:
                entry["hosts"] = hosts[name]
            report[name] = entry
        packet = (run or {}).get("packet")
        if packet:
            report["data_plane"] = {"mode": "packet", **packet}
        print_json(report)
    else:
        width = max(map(len, states), default=8)
        for name, state in states.items():
            restarted = f"  restarts={restarts[name]}" if restarts.get(name) else ""
            print(f"{name:<{width}}  {targets[name]:<22}  {state}{restarted}")
            if len(hosts.get(name, [])) > 1:
                print(f"{'':<{width}}  hosts {hosts_text(hosts[name], shown=5)}")
            for address, target in relay_lines(relays.get(name, {})):
                print(f"{'':<{width}}  relay {address} {target}")
        for what, address, note in packet_lines((run or {}).get("packet")):
            print(f"{what}: {address}  ({note})")
        if run:
            print(f"run: {run['run_dir']} (layout: {run.get('layout', 'per-dc')})")
    if all(s == "SERVING" for s in states.values()):
        return EXIT_OK
    if all(s.startswith("UNREACHABLE") for s in states.values()):
        return fail("no service answers; is `skyhaul up` running?", EXIT_UNAVAILABLE)
    return EXIT_FAILURE
