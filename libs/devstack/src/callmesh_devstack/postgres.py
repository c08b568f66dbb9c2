"""A private PostgreSQL cluster under `.local/postgres`, on its own port (default 55432).

It never touches a cluster the machine already runs: its own data directory, its own Unix socket
directory and a non-default port. `initdb` refuses to run as root, so as root the server programs
run as the `postgres` system user (created by Debian's postgresql package).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout
from .procs import DevstackError, pid_alive, port_open, read_pid, tail, wait_until

DEFAULT_PORT = 55432
DATABASE = "callmesh"
ROLE = "callmesh"
SYSTEM_USER = "postgres"


def _bindir() -> Path:
    """The newest Debian PostgreSQL server installation (initdb, pg_ctl, postgres)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise DevstackError("PostgreSQL server binaries not found; run `make setup`")


@dataclass
class LocalPostgres:
    layout: Layout
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, layout: Layout) -> LocalPostgres:
        return cls(layout, int(os.environ.get("CALLMESH_DEVSTACK_PG_PORT", DEFAULT_PORT)))

    @property
    def base(self) -> Path:
        # Resolved: when the checkout is not reachable by the server's user, `.local/postgres`
        # is a symlink to a directory it can reach (see `_place_base`).
        return (self.layout.local / "postgres").resolve()

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "run"

    @property
    def logfile(self) -> Path:
        return self.base / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{ROLE}@{self.host}:{self.port}/{DATABASE}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{SYSTEM_USER}@{self.host}:{self.port}/postgres"

    # -- helpers -------------------------------------------------------------------------
    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", SYSTEM_USER, "--", *argv]
        return argv

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(
            self._as_server_user(argv), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise DevstackError(f"{what} failed: {' | '.join(detail)}")

    def _server_pid(self) -> int | None:
        pid = read_pid(self.data / "postmaster.pid")
        return pid if pid is not None and pid_alive(pid) else None

    # -- lifecycle -----------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._server_pid() is not None and port_open(self.host, self.port)

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def init(self) -> None:
        if self.initialised():
            return
        self.layout.ensure()
        self._place_base()
        self.data.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, SYSTEM_USER, SYSTEM_USER)
            for path in (self.data, self.socket_dir):
                shutil.chown(path, SYSTEM_USER, SYSTEM_USER)
        self.data.chmod(0o700)
        self._run(
            [
                str(_bindir() / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SYSTEM_USER,
                # Local development only: trust on loopback. Production points at a managed
                # PostgreSQL through CALLMESH_PG_DSN with real credentials.
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            "initdb",
        )

    def _place_base(self) -> None:
        """As root, the server runs as `postgres`, which must be able to reach its directory.

        A checkout under a private home (e.g. /root) is not reachable, so the cluster then lives
        in /var/tmp under a name derived from the checkout, and `.local/postgres` points there.
        """
        link = self.layout.local / "postgres"
        if os.geteuid() != 0 or link.exists():
            return
        reachable = subprocess.run(
            ["runuser", "-u", SYSTEM_USER, "--", "test", "-x", str(self.layout.local)],
            check=False,
        )
        if reachable.returncode == 0:
            return
        digest = hashlib.sha256(str(self.layout.root).encode()).hexdigest()[:12]
        elsewhere = Path("/var/tmp") / f"callmesh-{digest}" / "postgres"
        elsewhere.mkdir(parents=True, exist_ok=True)
        link.symlink_to(elsewhere, target_is_directory=True)

    def start(self, timeout: float = 30.0) -> bool:
        """Start the cluster unless it is already up. True when this call started it."""
        if self.is_running():
            return False
        if port_open(self.host, self.port):
            raise DevstackError(
                f"port {self.port} is taken by another server; set CALLMESH_DEVSTACK_PG_PORT"
            )
        self.init()
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host} "
            "-c max_connections=300 -c shared_buffers=128MB -c fsync=on "
            "-c log_min_messages=warning"
        )
        self._run(
            [
                str(_bindir() / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.logfile),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            f"starting PostgreSQL (log: {self.logfile})",
        )
        wait_until(lambda: port_open(self.host, self.port), timeout, "PostgreSQL to listen")
        self._ensure_database()
        self._link_log()
        return True

    def _link_log(self) -> None:
        link = self.layout.logs / "postgres.log"
        if not link.exists() and not link.is_symlink():
            link.symlink_to(self.logfile)

    def _ensure_database(self) -> None:
        psql = shutil.which("psql") or str(_bindir() / "psql")
        base = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port)]
        script = (
            f"SELECT 'CREATE ROLE {ROLE} LOGIN CREATEDB' "
            f"WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')\\gexec\n"
            f"SELECT 'CREATE DATABASE {DATABASE} OWNER {ROLE}' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec\n"
        )
        result = subprocess.run(
            [*base, "-U", SYSTEM_USER, "-d", "postgres"],
            input=script,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DevstackError(f"creating the callmesh database failed: {result.stderr.strip()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self._server_pid() is None:
            return
        self._run(
            [
                str(_bindir() / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            "stopping PostgreSQL",
        )

    def describe_failure(self) -> str:
        return tail(self.logfile)
