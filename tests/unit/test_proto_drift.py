"""The committed generated code must be exactly what `make proto` produces from protos/."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "services" / "skyhaul" / "v1"


def test_generated_code_matches_protos(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
    )
    fresh = tmp_path / "skyhaul" / "v1"
    fresh_names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    committed_names = sorted(p.name for p in COMMITTED.iterdir() if p.is_file())
    assert fresh_names == committed_names, "generated file set differs: run `make proto` and commit"
    _, mismatch, errors = filecmp.cmpfiles(fresh, COMMITTED, fresh_names, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated code {mismatch + errors}: run `make proto` and commit"
    )


def test_every_service_of_the_contract_exists():
    from skyhaul.v1 import links_pb2, mdc_pb2, orbit_pb2, region_pb2, terminal_pb2

    names = {
        s.full_name
        for m in (orbit_pb2, links_pb2, mdc_pb2, region_pb2, terminal_pb2)
        for s in m.DESCRIPTOR.services_by_name.values()
    }
    assert names == {
        "skyhaul.v1.OrbitService",
        "skyhaul.v1.LinkService",
        "skyhaul.v1.ModularDataCenterService",
        "skyhaul.v1.CloudRegionService",
        "skyhaul.v1.TerminalService",
    }


def test_enums_start_with_unspecified_zero():
    from skyhaul.v1 import (
        common_pb2,
        events_pb2,
        links_pb2,
        mdc_pb2,
        orbit_pb2,
        region_pb2,
        route_pb2,
        terminal_pb2,
    )

    for module in (
        common_pb2,
        events_pb2,
        links_pb2,
        mdc_pb2,
        orbit_pb2,
        region_pb2,
        route_pb2,
        terminal_pb2,
    ):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            zero = enum.values_by_number[0]
            assert zero.name.endswith("_UNSPECIFIED"), f"{enum.full_name} zero value is {zero.name}"


def test_descriptor_set_carries_the_proto_comments():
    """Reflection serves these descriptors, so grpcurl/grpcui show the .proto's comments."""
    from google.protobuf import descriptor_pb2

    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(
        (COMMITTED / "descriptor_set.binpb").read_bytes()
    )
    files = {f.name: f for f in descriptor_set.file}
    for name in (ROOT / "protos" / "skyhaul" / "v1").glob("*.proto"):
        assert f"skyhaul/v1/{name.name}" in files
    route = files["skyhaul/v1/route.proto"]
    comments = [loc.leading_comments + loc.trailing_comments for loc in route.source_code_info.location]
    assert any("Read this, not NaN" in c for c in comments)
