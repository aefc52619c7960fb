"""`skyhaul run`: an unmodified command inside a data center's network namespace (packet mode)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from typing import Any

from skyhaul.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_formatter, fail, running_endpoints

EXIT_NOT_FOUND = 127  # what a shell returns for a command it cannot find


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="run a command inside a data center's network namespace (packet mode)",
    )
    add_formatter(
        run,
        """Needs `skyhaul up --data-plane packet` running (and root, as `ip netns exec` does). The
command's only route to the regions goes through the emulated link; its exit code is passed through.

examples:
  skyhaul run -d mdc-kodiak -- ping -c 5 $(skyhaul run --print-address westus2)
  iperf3 -s -B 198.18.0.1 &  skyhaul run -d mdc-kodiak -- iperf3 -c 198.18.0.1 -C bbr
  skyhaul run -d mdc-kodiak -- bash          a shell inside the data center
  skyhaul run --print-address westus2        the region's stable address
""",
    )
    run.add_argument("-d", "--data-center", help="the data center whose namespace runs the command")
    run.add_argument("--print-address", metavar="REGION", help="print REGION's stable address and exit")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    run.set_defaults(func=cmd_run)


def _packet(running: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """The running system's packet-mode description, or why there is none."""
    if not running:
        return None, "no system running: start one with `skyhaul up --data-plane packet`"
    packet = running.get("packet")
    if not packet:
        return (
            None,
            "the running system uses the relay data plane: start it with `skyhaul up --data-plane packet`",
        )
    owner = packet.get("owner_pid")
    if not isinstance(owner, int) or not os.path.exists(f"/proc/{owner}"):
        return None, "no system running (the last `skyhaul up --data-plane packet` is gone)"
    return packet, None


def _namespace_exists(name: str) -> bool:
    return os.path.exists(os.path.join("/run/netns", name))


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.print_address is None and not args.data_center:
        return fail("give --data-center ID -- COMMAND [ARGS...], or --print-address REGION", EXIT_USAGE)
    if args.print_address is not None and (args.data_center or command):
        return fail("--print-address takes no --data-center and no command", EXIT_USAGE)
    if args.data_center and not command:
        return fail(
            "no command: give one after --, e.g. `skyhaul run -d DC -- ping REGION_ADDRESS`", EXIT_USAGE
        )
    packet, why = _packet(running_endpoints())
    if packet is None:
        return fail(why or "no system running", EXIT_FAILURE)
    if args.print_address is not None:
        regions = packet["regions"]
        if args.print_address not in regions:
            return fail(f"unknown region {args.print_address!r} (regions: {', '.join(regions)})", EXIT_USAGE)
        print(regions[args.print_address])
        return EXIT_OK
    data_centers = packet["data_centers"]
    if args.data_center not in data_centers:
        return fail(
            f"unknown data center {args.data_center!r} (data centers: {', '.join(data_centers)})", EXIT_USAGE
        )
    namespace = data_centers[args.data_center]["namespace"]
    if not _namespace_exists(namespace):
        return fail(
            f"the namespace {namespace} of {args.data_center} is gone; is `skyhaul up` still running?"
        )
    program = shutil.which(command[0])
    if program is None:
        return fail(f"command not found: {command[0]}", EXIT_NOT_FOUND)
    if shutil.which("ip") is None:
        return fail("`ip` (iproute2) is not on PATH; it enters the namespace", EXIT_FAILURE)
    if os.geteuid() != 0:
        return fail("entering a network namespace needs root (run as root or with sudo)", EXIT_FAILURE)
    try:
        # `ip netns exec` also gives the command the namespace's /sys and /etc/netns files.
        code = subprocess.run(["ip", "netns", "exec", namespace, program, *command[1:]]).returncode
    except KeyboardInterrupt:
        return 130
    return code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it
