"""The committed stubs are exactly what scripts/gen_protos.py makes from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
GENERATOR = REPO_ROOT / "scripts" / "gen_protos.py"
COMMITTED = REPO_ROOT / "libs" / "protos" / "src" / "callmesh"
# Hand-written files at the top of the package: the generator keeps them, never writes them.
HAND_WRITTEN = {Path("__init__.py"), Path("py.typed")}


def run_generator(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tree(root: Path) -> dict[Path, bytes]:
    return {
        path.relative_to(root): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    result = run_generator(tmp_path)
    assert result.returncode == 0, result.stderr

    fresh = {k: v for k, v in tree(tmp_path / "callmesh").items() if k not in HAND_WRITTEN}
    committed = {k: v for k, v in tree(COMMITTED).items() if k not in HAND_WRITTEN}

    missing = sorted(str(p) for p in fresh.keys() - committed.keys())
    stale = sorted(str(p) for p in committed.keys() - fresh.keys())
    changed = sorted(str(p) for p in fresh.keys() & committed.keys() if fresh[p] != committed[p])
    problems = [
        f"{label}: {', '.join(paths)}"
        for label, paths in (("not committed", missing), ("stale", stale), ("differ", changed))
        if paths
    ]
    assert not problems, (
        "libs/protos/src/callmesh drifted from protos/; run `make protos` and commit the result. "
        + "; ".join(problems)
    )


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_generator(first).returncode == 0
    assert run_generator(second).returncode == 0
    assert tree(first) == tree(second)


def test_regeneration_removes_stale_files_and_keeps_hand_written_ones(tmp_path: Path) -> None:
    package = tmp_path / "callmesh"
    stale_module = package / "retired" / "v1" / "retired_pb2.py"
    stale_module.parent.mkdir(parents=True)
    stale_module.write_text("# generated from a proto that no longer exists\n")
    (package / "old_pb2.py").write_text("# stale top-level module\n")
    top_init = package / "__init__.py"
    top_init.write_text('"""kept as written"""\n')
    (package / "py.typed").write_text("")

    assert run_generator(tmp_path).returncode == 0

    assert not (package / "retired").exists()
    assert not (package / "old_pb2.py").exists()
    assert top_init.read_text() == '"""kept as written"""\n'
    assert (package / "py.typed").exists()
    assert (package / "routing" / "v1" / "routing_pb2_grpc.pyi").is_file()
    assert (package / "routing" / "v1" / "__init__.py").is_file()
    assert (package / "routing" / "__init__.py").is_file()
