"""Generate the Python protobuf/gRPC modules and mypy stubs for ``proto/befriend/v1``.

Used by setup.py at build time and by ``make check-proto`` (``python proto/codegen.py --check``),
which fails when the committed generated code is stale.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "befriend" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        raise SystemExit(f"codegen: {name} not found (install mypy-protobuf)")
    return found


def generate(out_root: Path) -> list[Path]:
    """Run protoc over every .proto in befriend/v1, writing under ``out_root/befriend/v1``."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    (out_root / "befriend" / "v1").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out=quiet:{out_root}",
        f"--mypy_grpc_out=quiet:{out_root}",
        *protos,
    ]
    # protoc resolves relative paths against the cwd.
    cwd = Path.cwd()
    try:
        import os

        os.chdir(PROTO_ROOT)
        if protoc.main(args) != 0:
            raise SystemExit("codegen: protoc failed")
    finally:
        os.chdir(cwd)
    return sorted(
        p for p in (out_root / "befriend" / "v1").iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    )


def check() -> int:
    """Return 0 when the generated files in the tree equal a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        current = {p.name: p for p in PACKAGE_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        stale = sorted(
            name
            for name in fresh.keys() | current.keys()
            if name not in fresh
            or name not in current
            or not filecmp.cmp(fresh[name], current[name], shallow=False)
        )
    if stale:
        print("generated code is stale; run `make proto`:", *stale, sep="\n  ")
        return 1
    print(f"generated code is current ({len(fresh)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    ns = parser.parse_args()
    if ns.check:
        return check()
    for path in generate(PROTO_ROOT):
        print(path.relative_to(PROTO_ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
