"""Bring the local PostgreSQL and Kafka up or down together."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .kafka import LocalKafka
from .layout import Layout
from .postgres import LocalPostgres


@dataclass
class Stack:
    layout: Layout
    postgres: LocalPostgres
    kafka: LocalKafka
    started: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls, layout: Layout | None = None) -> Stack:
        layout = layout or Layout.discover()
        return cls(layout, LocalPostgres.from_env(layout), LocalKafka.from_env(layout))

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Two test runs or `make run` starting at once must not both launch a server."""
        self.layout.ensure()
        with (self.layout.run / "devstack.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def up(self) -> None:
        """Start whatever is not running yet; remember what this call started."""
        with self._exclusive():
            try:
                if self.postgres.start():
                    self.started.append("postgres")
                if self.kafka.start():
                    self.started.append("kafka")
            except BaseException:
                # Leave nothing half-started behind a failed start.
                if "postgres" in self.started:
                    self.postgres.stop()
                self.started.clear()
                raise

    def down(self, only_started: bool = False) -> None:
        with self._exclusive():
            if not only_started or "kafka" in self.started:
                self.kafka.stop()
            if not only_started or "postgres" in self.started:
                self.postgres.stop()
            self.started.clear()

    def env(self) -> dict[str, str]:
        """The CALLMESH_* variables that point a service at this stack."""
        return {
            "CALLMESH_POSTGRES_DSN": self.postgres.dsn,
            "CALLMESH_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
        }
