"""The `skyhaul` command: run the system, drive it, read what it does.

Every command module exposes register(subparsers); this file only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "skyhaul.cli.system",
    "skyhaul.cli.scenarios",
    "skyhaul.cli.k8s",
    "skyhaul.cli.orbit",
    "skyhaul.cli.links",
    "skyhaul.cli.terminal",
    "skyhaul.cli.data",
    "skyhaul.cli.demo",
    "skyhaul.cli.report",
)

DESCRIPTION = """\
Skyhaul emulates a satellite-backed cloud backbone: modular data centers reaching cloud regions
over a LEO/MEO constellation, with Starlink's 15-second scheduler, link-state events and a TCP
data plane that applies the live route's delay, rate and outages.

Start here:
  skyhaul up --scenario scenarios/azure-mdc-2020.yaml   run everything locally
  skyhaul status                                          health of every service
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyhaul", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
