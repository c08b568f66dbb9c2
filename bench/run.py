"""`make bench`: run every benchmark script in bench/ (or the ones named) one after another.

Each benchmark is a standalone script that prints `name: value unit` lines, so figures can be
grepped and compared between runs. They run in separate processes so one benchmark's warm
caches, threads or memory do not skew the next. `make bench BENCH="sip_parse routing_plan"`
runs a subset.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name != "run.py" and not p.name.startswith("_"))


def main(argv: list[str]) -> int:
    wanted = set(" ".join(argv).split())
    scripts = [p for p in discover() if not wanted or p.stem in wanted]
    unknown = wanted - {p.stem for p in discover()}
    if unknown:
        print(f"bench: unknown benchmark(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    failed = []
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script)], check=False)
        print(f"bench_{script.stem}_wall: {time.monotonic() - started:.1f} s", flush=True)
        if result.returncode != 0:
            failed.append(script.stem)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
