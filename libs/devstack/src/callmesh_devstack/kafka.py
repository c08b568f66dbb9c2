"""A private single-node Apache Kafka 4.x broker (KRaft, no ZooKeeper) under `.local/kafka`.

`make setup` copies the broker jars from Maven Central into `.local/kafka/libs-<version>/`.
Here we write a config for our own ports (broker 19092, controller 19093 by default), format the
storage once with a cluster id, and run `kafka.Kafka` as a detached Java process.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout
from .procs import DevstackError, pid_alive, port_open, read_pid, tail, terminate, wait_until

DEFAULT_PORT = 19092

_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=%d{ISO8601} %p %c{1}: %m%n
log4j.logger.org.apache.kafka=WARN
log4j.logger.kafka.coordinator=WARN
log4j.logger.state.change.logger=WARN
"""


def _broker_properties(data: Path, port: int, controller_port: int) -> str:
    return f"""\
# Written by callmesh_devstack; edits are overwritten on the next start.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
"""


@dataclass
class LocalKafka:
    layout: Layout
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, layout: Layout) -> LocalKafka:
        return cls(layout, int(os.environ.get("CALLMESH_DEVSTACK_KAFKA_PORT", DEFAULT_PORT)))

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def base(self) -> Path:
        return self.layout.local / "kafka"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def pidfile(self) -> Path:
        return self.layout.run / "kafka.pid"

    @property
    def logfile(self) -> Path:
        return self.layout.logs / "kafka.log"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def libs(self) -> Path:
        complete = sorted(self.base.glob("libs-*/.complete"))
        if not complete:
            raise DevstackError("Kafka broker jars are missing from .local/kafka; run `make setup`")
        return complete[-1].parent

    def _java(self) -> str:
        java = shutil.which("java")
        if not java:
            raise DevstackError("java not found; Kafka 4.x needs Java 17+")
        return java

    def _classpath(self) -> str:
        return f"{self.libs()}/*"

    def _pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid is not None and pid_alive(pid) else None

    def is_running(self) -> bool:
        return self._pid() is not None and port_open(self.host, self.port)

    def _write_config(self) -> Path:
        config_dir = self.base / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "log4j.properties").write_text(_LOG4J)
        config = config_dir / "server.properties"
        config.write_text(_broker_properties(self.data, self.port, self.controller_port))
        return config

    def _format_once(self, config: Path) -> None:
        if (self.data / "meta.properties").is_file():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [
                self._java(),
                "-cp",
                self._classpath(),
                f"-Dlog4j.configuration=file:{config.parent / 'log4j.properties'}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
                "--standalone",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DevstackError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")

    def start(self, timeout: float = 60.0) -> bool:
        """Start the broker unless it is already up. True when this call started it."""
        if self.is_running():
            self._wait_ready(timeout)
            return False
        for port in (self.port, self.controller_port):
            if port_open(self.host, port):
                raise DevstackError(
                    f"port {port} is taken by another server; set CALLMESH_DEVSTACK_KAFKA_PORT"
                )
        self.layout.ensure()
        config = self._write_config()
        self._format_once(config)
        with self.logfile.open("ab") as log:
            process = subprocess.Popen(
                [
                    self._java(),
                    "-Xms256m",
                    "-Xmx768m",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j.configuration=file:{config.parent / 'log4j.properties'}",
                    "-cp",
                    self._classpath(),
                    "kafka.Kafka",
                    str(config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pidfile.write_text(f"{process.pid}\n")
        try:
            wait_until(
                lambda: process.poll() is not None or port_open(self.host, self.port),
                timeout,
                "the Kafka broker to listen",
            )
            if process.poll() is not None:
                raise DevstackError(
                    f"Kafka exited with {process.returncode}:\n{tail(self.logfile)}"
                )
            self._wait_ready(timeout)
        except DevstackError:
            self.stop()
            raise
        return True

    def _wait_ready(self, timeout: float) -> None:
        """The listener opens before the broker can serve metadata; ask it for real."""
        error: list[BaseException] = []

        async def probe() -> None:
            from aiokafka.admin import AIOKafkaAdminClient

            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
                try:
                    await admin.start()
                    await admin.list_topics()
                    return
                except Exception:
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.3)
                finally:
                    await admin.close()

        def run() -> None:
            try:
                asyncio.run(probe())
            except BaseException as exc:  # reported to the caller's thread below
                error.append(exc)

        # Our caller may already be inside an event loop (a pytest-asyncio fixture).
        thread = threading.Thread(target=run, name="kafka-ready-probe")
        thread.start()
        thread.join()
        if error:
            raise DevstackError(f"Kafka did not become ready: {error[0]!r}")

    def stop(self, timeout: float = 30.0) -> None:
        pid = self._pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return
        # SIGTERM triggers Kafka's controlled shutdown; it flushes logs and exits.
        terminate(pid, timeout)
        self.pidfile.unlink(missing_ok=True)

    def describe_failure(self) -> str:
        return tail(self.logfile)
