"""Where local state lives. Everything is under `<repo>/.local/` (git-ignored)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def find_repo_root(start: Path | None = None) -> Path:
    """The directory holding the workspace's root pyproject.toml and Makefile.

    `CALLMESH_REPO_ROOT` wins so that a test can point a second checkout elsewhere.
    """
    env = os.environ.get("CALLMESH_REPO_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Makefile").is_file() and (candidate / "libs" / "devstack").is_dir():
            return candidate
    # Fall back to this file's location inside the workspace (libs/devstack/src/callmesh_devstack).
    return Path(__file__).resolve().parents[4]


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def local(self) -> Path:
        return self.root / ".local"

    @property
    def logs(self) -> Path:
        return self.local / "logs"

    @property
    def run(self) -> Path:
        return self.local / "run"

    def ensure(self) -> None:
        for path in (self.local, self.logs, self.run):
            path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def discover(cls) -> Layout:
        return cls(find_repo_root())
