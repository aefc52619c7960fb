"""The `skyhaul` command: run the system, drive it, read what it does.

Every command module exposes register(subparsers); this file only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterator

import skyhaul
from skyhaul.cli.common import EXIT_CODES_HELP, EXIT_USAGE, JSON_HELP

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
    "skyhaul.cli.run",
    "skyhaul.cli.calibrate",
)

DESCRIPTION = """\
Skyhaul emulates a satellite-backed cloud backbone: modular data centers reaching cloud regions
over a LEO/MEO constellation, with Starlink's 15-second scheduler, link-state events and a TCP
data plane that applies the live route's delay, rate and outages.

Start here:
  skyhaul up --scenario scenarios/azure-mdc-2020.yaml   run everything locally
  skyhaul status                                          health of every service
"""


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and every subcommand's parser below it, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from all_parsers(child)


def _house_style(parser: argparse.ArgumentParser) -> None:
    """What every command's --help says the same way: the exit codes, and what --json does."""
    for each in all_parsers(parser):
        for action in each._actions:
            if "--json" in action.option_strings and not action.help:
                action.help = JSON_HELP
        if EXIT_CODES_HELP not in (each.epilog or ""):
            each.epilog = f"{each.epilog.rstrip()}\n\n{EXIT_CODES_HELP}" if each.epilog else EXIT_CODES_HELP
            each.formatter_class = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyhaul", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"skyhaul {skyhaul.__version__}")
    parser.add_argument(
        "--run",
        metavar="DIR",
        help="talk to the `skyhaul up` running in DIR (its run dir; also SKYHAUL_RUN). "
        "Default: the one live run under SKYHAUL_STATE_DIR",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _house_style(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run:
        os.environ["SKYHAUL_RUN"] = args.run  # read by cli/common.running_endpoints
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
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
