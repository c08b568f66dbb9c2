"""`python -m callmesh_devstack up|down|status|run`."""

from __future__ import annotations

import argparse
import sys
import time

from .procs import DevstackError
from .stack import Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callmesh_devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start local PostgreSQL and Kafka (reused when already up)")
    sub.add_parser("down", help="stop local PostgreSQL and Kafka")
    sub.add_parser("status", help="show what is running")
    run = sub.add_parser("run", help="start the stack and every service; Ctrl-C stops all")
    run.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help="shift every service port by N (to run beside another copy)",
    )
    run.add_argument("--ready-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    stack = Stack.from_env()
    try:
        if args.command == "up":
            started = time.monotonic()
            stack.up()
            print(f"postgres: {stack.postgres.dsn}")
            print(f"kafka:    {stack.kafka.bootstrap}")
            print(f"ready in {time.monotonic() - started:.1f}s (logs in {stack.layout.logs})")
        elif args.command == "down":
            stack.down()
            print("stopped")
        elif args.command == "status":
            print(
                f"postgres {'up' if stack.postgres.is_running() else 'down'}  {stack.postgres.dsn}"
            )
            print(
                f"kafka    {'up' if stack.kafka.is_running() else 'down'}  {stack.kafka.bootstrap}"
            )
        elif args.command == "run":
            from .runner import run_platform

            return run_platform(
                stack, port_offset=args.port_offset, ready_timeout=args.ready_timeout
            )
    except DevstackError as exc:
        print(f"callmesh_devstack: {exc}", file=sys.stderr)
        return 1
    return 0
