"""Apache Kafka from its official jars, one KRaft node (broker + controller).

The jars come from Maven Central through Maven (kafka-pom.xml beside this file) into
a cache shared by every clone (~/.cache/bitex/kafka-<version>/libs). The broker runs
with the machine's JDK; its data and log live under <state dir>/kafka.
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from pathlib import Path

from infra.services import process
from infra.services.base import Service
from infra.services.probes import probe_kafka

KAFKA_VERSION = "3.9.1"
POM = Path(__file__).with_name("kafka-pom.xml")

LOG4J = """\
# Written by BitEx (infra/services/kafka.py). Everything goes to stdout, which the
# runner appends to kafka.log beside this file.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.coordinator.transaction=WARN
"""


def _cluster_id() -> str:
    """A Kafka Uuid string: 16 random bytes, URL-safe base64 without padding."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class Kafka(Service):
    name = "kafka"
    title = "Kafka"
    env_hint = "BITEX_KAFKA_BOOTSTRAP"
    start_timeout = 120.0
    stop_timeout = 60.0

    @property
    def address(self) -> tuple[str, int]:
        return self.settings.kafka_host_port

    @property
    def controller_port(self) -> int:
        return self.address[1] + 1

    @property
    def libs(self) -> Path:
        return self.settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def signature(self) -> str:
        return f"kafka.Kafka {self.properties}"

    def probe(self) -> str:
        host, port = self.address
        brokers = probe_kafka(host, port)
        return f"{brokers} broker(s)"

    def missing_packages(self) -> list[str]:
        missing = []
        if not process.which("java"):
            missing.append("default-jre-headless")
        if not self._libs_ready() and not process.which("mvn"):
            missing.append("maven")
        return missing

    def _libs_ready(self) -> bool:
        return (self.libs / ".complete").exists()

    def _fetch_libs(self) -> None:
        if self._libs_ready():
            return
        if not process.which("mvn"):
            raise process.ServiceError("Kafka's jars are fetched with Maven: install `maven`.")
        process.say(f"fetching Kafka {KAFKA_VERSION} jars from Maven Central into {self.libs} ...")
        work = self.libs.parent / f"tmp-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            shutil.copy(POM, work / "pom.xml")
            process.run_logged(
                [
                    "mvn",
                    "-B",
                    "-q",
                    "-f",
                    str(work / "pom.xml"),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={work / 'libs'}",
                ],
                what="Fetching Kafka's jars with Maven",
                logfile=self.home / "maven.log",
                cwd=work,
            )
            if not any((work / "libs").glob("kafka_2.13-*.jar")):
                raise process.ServiceError("Maven finished but no kafka_2.13 jar was copied.")
            (work / "libs" / ".complete").write_text(f"kafka {KAFKA_VERSION}\n")
            try:
                (work / "libs").rename(self.libs)
            except OSError:
                if not self._libs_ready():  # not just another clone finishing first
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _write_config(self) -> None:
        host = self.bind_host
        port, cport = self.address[1], self.controller_port
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{host}:{cport}",
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
        }
        lines = ["# Written by BitEx (infra/services/kafka.py) on every `make up`."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        self.properties.write_text("\n".join(lines) + "\n")
        (self.home / "log4j.properties").write_text(LOG4J)

    def _java(self, *args: str) -> list[str]:
        java = process.which("java") or "java"
        return [
            java,
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self._fetch_libs()
        self._write_config()
        if not (self.data / "meta.properties").exists():
            process.run_logged(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    _cluster_id(),
                    "-c",
                    str(self.properties),
                ),
                what="Formatting Kafka's storage",
                logfile=self.logfile,
            )

    def command(self) -> list[str]:
        java = self._java("kafka.Kafka", str(self.properties))
        jvm = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
        return [java[0], *jvm, *java[1:]]
