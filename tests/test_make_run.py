"""`make run`'s supervisor: every service reaches ready within 60 s and Ctrl-C leaves nothing.

Runs the real supervisor (`python -m callmesh_devstack run`) as a subprocess, on shifted ports so
it can run beside anything else, against the same local PostgreSQL and Kafka the suite uses.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from callmesh_devstack.procs import pid_alive
from callmesh_devstack.runner import SERVICES
from callmesh_devstack.stack import Stack

PORT_OFFSET = 1000  # gRPC 51051-51058, HTTP 10101-10108


class LineReader:
    """Collects a subprocess's output lines on a thread, so the test can wait with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert process.stdout is not None
        stream = process.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line.rstrip("\n"))
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, pattern: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return self.seen
        raise AssertionError(
            f"no line matching {pattern!r} in {timeout}s:\n" + "\n".join(self.seen)
        )


def test_make_run_reaches_all_ready_and_ctrl_c_leaves_nothing(devstack: Stack) -> None:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "callmesh_devstack", "run", f"--port-offset={PORT_OFFSET}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        reader = LineReader(process)
        lines = reader.until(r"all ready in", timeout=60)
        assert time.monotonic() - started < 60
        table = [line for line in lines if "127.0.0.1:" in line and "|" in line]
        pids = {}
        for spec in SERVICES:
            row = next(line for line in table if line.split("|", 1)[1].split()[0] == spec.name)
            cells = row.split("|", 1)[1].split()
            pids[spec.name] = int(cells[1])
            assert cells[2] == f"127.0.0.1:{spec.grpc_port + PORT_OFFSET}"
            assert cells[3] == f"127.0.0.1:{spec.http_port + PORT_OFFSET}"
        assert all(pid_alive(pid) for pid in pids.values())

        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        reader.until(r"nothing left running", timeout=40)
        assert process.wait(timeout=10) == 0
        assert not [name for name, pid in pids.items() if pid_alive(pid)]
        # It reused the suite's PostgreSQL and Kafka, so it must have left them running.
        assert devstack.postgres.is_running() and devstack.kafka.is_running()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
