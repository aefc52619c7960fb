"""`skyhaul scenarios`, `skyhaul scenario check|schema`: the shipped scenarios and the file format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skyhaul.cli.common import EXIT_OK, EXIT_USAGE, JSON_HELP, add_formatter, fail, print_json
from skyhaul.cli.scenario import add_fleet_command

SHIPPED_DIR = Path(__file__).resolve().parents[3] / "scenarios"


def shipped_scenarios() -> list[Path]:
    return sorted(SHIPPED_DIR.glob("*.yaml"))


def register(sub: argparse._SubParsersAction) -> None:
    listing = sub.add_parser("scenarios", help="list the shipped scenarios, one line each")
    add_formatter(
        listing,
        """examples:
  skyhaul scenarios
  skyhaul scenarios --json
""",
    )
    listing.add_argument("--json", action="store_true", help=JSON_HELP)
    listing.set_defaults(func=cmd_scenarios)

    scenario = sub.add_parser(
        "scenario", help="check a scenario file, print the scenario JSON Schema, or generate a fleet"
    )
    scenario_sub = scenario.add_subparsers(dest="scenario_command", metavar="ACTION", required=True)
    check = scenario_sub.add_parser(
        "check", help="validate scenario files as `skyhaul up` would (exit 2 if bad)"
    )
    add_formatter(
        check,
        """examples:
  skyhaul scenario check scenarios/kuiper-aws.yaml
  skyhaul scenario check scenarios/*.yaml
""",
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=cmd_check)
    schema = scenario_sub.add_parser("schema", help="print the scenario file's JSON Schema (for editors)")
    add_formatter(
        schema,
        """The schema is generated from the same definition the validator uses; the repository keeps a
copy in docs/scenario.schema.json. Point your editor at it, e.g. with the YAML language server:
  # yaml-language-server: $schema=../docs/scenario.schema.json

examples:
  skyhaul scenario schema
  skyhaul scenario schema -o docs/scenario.schema.json
""",
    )
    schema.add_argument("-o", "--output", help="write to this file instead of stdout")
    schema.set_defaults(func=cmd_schema)
    add_fleet_command(scenario_sub)


def cmd_scenarios(args: argparse.Namespace) -> int:
    from skyhaul.runtime.scenario import ScenarioError, load_scenario

    rows = []
    for path in shipped_scenarios():
        try:
            s = load_scenario(path)
        except ScenarioError as exc:
            rows.append({"file": str(path.relative_to(SHIPPED_DIR.parent)), "error": str(exc)})
            continue
        dcs = ", ".join(d.id for d in s.data_centers[:3]) + (" ..." if len(s.data_centers) > 3 else "")
        rows.append(
            {
                "file": str(path.relative_to(SHIPPED_DIR.parent)),
                "name": s.name,
                "constellation": s.constellation.label,
                "data_centers": [d.id for d in s.data_centers],
                "regions": [r.id for r in s.regions],
                "summary": f"{s.constellation.label}, {dcs} -> {', '.join(r.id for r in s.regions)}",
            }
        )
    if args.json:
        print_json(rows)
        return EXIT_OK
    width = max((len(r["file"]) for r in rows), default=10)
    for row in rows:
        print(f"{row['file']:<{width}}  {row.get('summary') or 'INVALID: ' + row['error']}")
    return EXIT_OK if all("error" not in r for r in rows) else EXIT_USAGE


def cmd_check(args: argparse.Namespace) -> int:
    from skyhaul.runtime.scenario import ScenarioError, load_scenario

    code = EXIT_OK
    for name in args.files:
        try:
            s = load_scenario(name)
        except ScenarioError as exc:
            code = fail(str(exc), EXIT_USAGE)
            continue
        print(f"{name}: ok ({s.name}: {len(s.regions)} regions, {len(s.data_centers)} data centers)")
    return code


def cmd_schema(args: argparse.Namespace) -> int:
    from skyhaul.runtime.scenario import scenario_schema_json

    text = scenario_schema_json()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK
