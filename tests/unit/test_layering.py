"""The house rules, read from the code's own imports (ast): who may import whom in services/skyhaul.

- core (pure physics) imports no runtime, service, cli, contract or wire (grpc, redis, protobuf, v1);
- a service (orbit, links, mdc, region, terminal) imports no other service;
- runtime imports no service;
- cli imports no service's modules (it talks to services over gRPC);
- contract imports no service and no cli.
The generated code in skyhaul.v1 may be imported by everything except core. A module named by a
string (`importlib.import_module("skyhaul.orbit.service")`, or an f-string "skyhaul.{name}...")
is an import too: it is the same dependency, only hidden.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import skyhaul

PACKAGE_DIR = Path(skyhaul.__file__).resolve().parent
SERVICES = frozenset({"orbit", "links", "mdc", "region", "terminal"})
WIRE_LIBRARIES = frozenset({"grpc", "grpc_health", "grpc_reflection", "redis", "google.protobuf"})
BY_NAME = "skyhaul.<service by name>"  # an f-string "skyhaul.{...}": could be any service


def imported_modules(source: str, module: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in `source`, the module `module` (dotted name)."""
    here = module.split(".")
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = here[: len(here) - node.level]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            if target == "skyhaul":  # from skyhaul import links
                found += [(f"skyhaul.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"skyhaul\.\w+\.\w+", node.value) and node.value.split(".")[1] in SERVICES:
                found.append((node.value, node.lineno))
        elif isinstance(node, ast.JoinedStr):
            first = node.values[0] if node.values else None
            if (
                isinstance(first, ast.Constant)
                and first.value == "skyhaul."
                and len(node.values) > 1
                and isinstance(node.values[1], ast.FormattedValue)
            ):
                found.append((BY_NAME, node.lineno))
    return found


def part_of(module: str) -> str | None:
    """The folder of skyhaul a module belongs to (core, runtime, mdc, v1, ...), None outside skyhaul."""
    if module == BY_NAME:
        return BY_NAME
    bits = module.split(".")
    return bits[1] if bits[0] == "skyhaul" and len(bits) > 1 else None


def is_wire(module: str) -> bool:
    return any(module == lib or module.startswith(lib + ".") for lib in WIRE_LIBRARIES)


def why_forbidden(importer: str, module: str) -> str | None:
    """The broken rule if the folder `importer` may not import `module`, else None."""
    target = part_of(module)
    a_service = target in SERVICES or target == BY_NAME
    if target == BY_NAME:
        target = "<chosen by name>"
    if importer == "core":
        if is_wire(module) or target == "v1":
            return "core must know no wire (grpc, redis, protobuf, skyhaul.v1)"
        if a_service or target in ("runtime", "cli", "contract"):
            return f"core must not import {target}"
    elif importer in SERVICES:
        if a_service and target != importer:
            return f"service {importer} imports service {target}"
    elif importer == "runtime":
        if a_service:
            return f"runtime imports service {target}"
    elif importer == "cli":
        if a_service:
            return f"cli imports the internals of service {target}"
    elif importer == "contract":
        if a_service or target == "cli":
            return f"contract imports {target}"
    return None


def violations(package_dir: Path) -> list[str]:
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir)
        if len(rel.parts) < 2 or rel.parts[0] == "v1" or "__pycache__" in rel.parts:
            continue
        module = ".".join(("skyhaul", *rel.with_suffix("").parts))
        source = path.read_text()
        lines = source.splitlines()
        for imported, line in imported_modules(source, module):
            why = why_forbidden(rel.parts[0], imported)
            if why:
                found.append(f"{rel}:{line}: imports {imported} ({why}): {lines[line - 1].strip()}")
    return found


def test_services_skyhaul_keeps_the_house_rules() -> None:
    broken = violations(PACKAGE_DIR)
    assert not broken, "imports that break the layering rules:\n" + "\n".join(broken)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


@pytest.mark.parametrize(
    ("file", "source", "rule"),
    [
        ("core/a.py", "import grpc\n", "core must know no wire"),
        ("core/a.py", "from skyhaul.v1 import orbit_pb2\n", "core must know no wire"),
        ("core/a.py", "from google.protobuf import duration_pb2\n", "core must know no wire"),
        ("core/a.py", "from skyhaul.runtime.clock import to_unix\n", "core must not import runtime"),
        ("core/a.py", "from ..contract import blobs\n", "core must not import contract"),
        (
            "mdc/a.py",
            "from skyhaul.region.blobstore import fsync_dir\n",
            "service mdc imports service region",
        ),
        ("links/a.py", "from ..orbit import codec\n", "service links imports service orbit"),
        ("links/a.py", "from skyhaul import terminal\n", "service links imports service terminal"),
        ("runtime/a.py", "import skyhaul.mdc.service\n", "runtime imports service mdc"),
        ("cli/a.py", "import importlib\nimportlib.import_module('skyhaul.orbit.service')\n", "cli imports"),
        (
            "cli/a.py",
            "import importlib\nm = importlib.import_module(f'skyhaul.{name}.service')\n",
            "cli imports",
        ),
        ("contract/a.py", "from skyhaul.region import blobstore\n", "contract imports region"),
        ("contract/a.py", "from skyhaul.cli.common import fail\n", "contract imports cli"),
    ],
)
def test_each_rule_names_the_file_line_and_import(tmp_path: Path, file: str, source: str, rule: str) -> None:
    package = write_package(tmp_path / "skyhaul", {file: "# first line\n" + source})
    (broken,) = violations(package)
    assert broken.startswith(f"{file}:{source.count(chr(10)) + 1}: imports ")
    assert rule in broken


def test_allowed_imports_pass(tmp_path: Path) -> None:
    package = write_package(
        tmp_path / "skyhaul",
        {
            "core/a.py": "import numpy as np\nfrom skyhaul.core.frames import gmst\nfrom . import b\n",
            "mdc/a.py": "from skyhaul.mdc.outbox import Outbox\nfrom skyhaul.contract.blobs import validate_blob_name\n"
            "from skyhaul.runtime.durable import fsync_dir\nfrom skyhaul.v1 import mdc_pb2\nimport grpc\n",
            "runtime/a.py": "from skyhaul.v1 import common_pb2\nfrom skyhaul.core.ground import Terminal\n",
            "cli/a.py": "from skyhaul.v1 import orbit_pb2_grpc\nfrom skyhaul.contract.orbit_codec import from_bytes\n",
            "contract/a.py": "from skyhaul.core.passes import Pass\nfrom skyhaul.runtime.clock import to_unix\n",
            "v1/orbit_pb2.py": "from skyhaul.orbit import anything\n",  # generated code is not checked
        },
    )
    assert violations(package) == []
