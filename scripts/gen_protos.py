"""Regenerate the Python stubs in libs/protos/src/callmesh/ from protos/.

Runs protoc (from grpcio-tools) with the plain Python, gRPC and mypy-protobuf generators over
every .proto under protos/, after removing what an earlier run generated, and writes an
``__init__.py`` into every generated package so ``from callmesh.routing.v1 import routing_pb2``
works. The output depends only on protos/ and the locked tool versions, so a test can
regenerate into a temporary directory (``--out``) and compare byte for byte.

Usage: .venv/bin/python scripts/gen_protos.py [--out DIR]   (``make protos`` runs it)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
DEFAULT_OUT = REPO_ROOT / "libs" / "protos" / "src"
TOP_PACKAGE = "callmesh"
TOP_INIT_TEXT = '"""Generated callmesh contracts (see protos/)."""\n'
PACKAGE_INIT_TEXT = '"""Generated from protos/ by scripts/gen_protos.py; do not edit."""\n'
# Hand-written files at the top of the package that regeneration must keep.
KEPT_TOP_FILES = frozenset({"__init__.py", "py.typed"})


def find_protos(proto_root: Path) -> list[Path]:
    # Sorted so protoc sees the files in the same order on every machine.
    return sorted(proto_root.rglob("*.proto"))


def remove_generated(package_dir: Path) -> None:
    """Delete everything an earlier run produced, keeping the hand-written top files."""
    if not package_dir.is_dir():
        return
    for entry in sorted(package_dir.iterdir()):
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.name not in KEPT_TOP_FILES:
            entry.unlink()


def plugin_path(name: str) -> Path:
    # mypy-protobuf installs its protoc plugins next to the interpreter (.venv/bin).
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"gen_protos: {path} not found; run `make setup` to install mypy-protobuf")
    return path


def run_protoc(protos: list[Path], out_dir: Path) -> None:
    # Imported here so `--help` works without grpcio-tools installed.
    import grpc_tools  # type: ignore[import-untyped]  # grpcio-tools ships no types
    from grpc_tools import protoc

    well_known_types = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known_types}",
        f"--plugin=protoc-gen-mypy={plugin_path('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_path('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        # mypy-protobuf otherwise prints a line per file written.
        "--mypy_opt=quiet",
        "--mypy_grpc_opt=quiet",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    status = protoc.main(args)
    if status != 0:
        raise SystemExit(f"gen_protos: protoc failed with status {status}")


def write_package_inits(package_dir: Path) -> list[Path]:
    """Make every generated directory a regular package (mypy and importers need it)."""
    written = []
    top_init = package_dir / "__init__.py"
    if not top_init.exists():
        top_init.write_text(TOP_INIT_TEXT)
        written.append(top_init)
    for directory in sorted(p for p in package_dir.rglob("*") if p.is_dir()):
        init = directory / "__init__.py"
        init.write_text(PACKAGE_INIT_TEXT)
        written.append(init)
    return written


def generate(out_dir: Path) -> list[Path]:
    """Regenerate all stubs under ``out_dir/callmesh``; return the files it holds afterwards."""
    protos = find_protos(PROTO_ROOT)
    if not protos:
        raise SystemExit(f"gen_protos: no .proto files under {PROTO_ROOT}")
    package_dir = out_dir / TOP_PACKAGE
    remove_generated(package_dir)
    package_dir.mkdir(parents=True, exist_ok=True)
    run_protoc(protos, out_dir)
    write_package_inits(package_dir)
    # protoc also writes grpc modules for files without services; they are kept so every proto
    # has the same set of modules and imports never depend on whether a file grew a service.
    return sorted(p for p in package_dir.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="source root to write into (the `callmesh` package goes below it); "
        f"default {DEFAULT_OUT.relative_to(REPO_ROOT)}",
    )
    options = parser.parse_args(argv)
    files = generate(options.out.resolve())
    print(f"gen_protos: {len(files)} files under {options.out / TOP_PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
