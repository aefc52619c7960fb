"""Generate the Python code of the contract: `python protos/generate.py [OUT_DIR]`.

Pinned grpcio-tools + mypy-protobuf (pyproject's dev extra) make the output reproducible, so the
generated code is committed and tests/unit/test_proto_drift.py fails when it differs from a fresh run.

Besides the Python modules it writes DESCRIPTOR_SET: every file of the contract (and its imports)
as a FileDescriptorSet *with source info*, so server reflection can serve the .proto comments
(the generated modules carry descriptors without them).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent / "services"
PACKAGE_DIR = Path("skyhaul") / "v1"
DESCRIPTOR_SET = "descriptor_set.binpb"  # in PACKAGE_DIR, read by skyhaul.runtime.server


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_dir: Path) -> None:
    target = out_dir / PACKAGE_DIR
    if target.exists():
        for old in target.glob("*_pb2*"):
            old.unlink()
    (target / DESCRIPTOR_SET).unlink(missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    # grpc_tools ships the well-known types (timestamp, duration) next to its module.
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        f"--descriptor_set_out={target / DESCRIPTOR_SET}",
        "--include_source_info",
        "--include_imports",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed: see the message above")
    (target / "__init__.py").write_text(
        '"""Generated from protos/skyhaul/v1 by `make proto`. Do not edit."""\n'
    )


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    if shutil.which("protoc-gen-mypy") is None:
        bin_dir = Path(sys.executable).parent
        if not (bin_dir / "protoc-gen-mypy").exists():
            raise SystemExit("protoc-gen-mypy not found: pip install -e '.[dev]' first")
    generate(out)


if __name__ == "__main__":
    main()
