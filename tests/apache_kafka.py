"""Apache Kafka 3.9 in KRaft mode on loopback: one process that is broker and controller.

Its jars come from Maven Central (`make kafka`: tests/kafka/pom.xml, copied into
tests/kafka/libs). It listens for plain clients and, with SASL/SCRAM, for the
users in `scram_users`, created when its storage is formatted::

    with running_apache_kafka(tmp_path, {"segstream": "s3cret"}) as kafka:
        AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=10)

>>> lines = server_properties(Path("/k"), 9092, 9093, 9094).splitlines()
>>> [line for line in lines if line.startswith("listeners=")]
['listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_PLAINTEXT://127.0.0.1:9094']
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.tools.embedded import free_port, stop_process

LIBS = Path(__file__).parent / "kafka" / "libs"
"""Where `make kafka` put the broker's jars."""
VERSION = "3.9.1"
_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_LOG4J = """log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


@dataclass(frozen=True)
class ApacheKafka:
    """A running broker: where plain and SASL/SCRAM clients reach it, and its process."""

    bootstrap: str
    sasl_bootstrap: str
    pid: int


def server_properties(data: Path, port: int, controller: int, sasl: int) -> str:
    """The broker's configuration: one node, replication factor 1, topics made on demand."""
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},"
            f"SASL_PLAINTEXT://127.0.0.1:{sasl}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map="
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            f"sasl.enabled.mechanisms={','.join(_MECHANISMS)}",
            *(
                f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config={jaas}"
                for mechanism in _MECHANISMS
            ),
            f"log.dirs={data}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "num.partitions=1",
            "",
        ]
    )


@contextmanager
def running_apache_kafka(
    directory: Path,
    scram_users: Mapping[str, str] | None = None,
    *,
    port: int | None = None,
    timeout: float = 90,
) -> Iterator[ApacheKafka]:
    """Format storage in `directory`, start the broker (plain clients on `port`, a free
    one by default), wait until it serves metadata; stop it on exit."""
    java = shutil.which("java")
    if java is None or not any(LIBS.glob(f"kafka_2.13-{VERSION}.jar")):
        raise RuntimeError(f"Apache Kafka {VERSION} is not installed: run `make kafka`")
    directory.mkdir(parents=True, exist_ok=True)
    port, controller, sasl = port or free_port(), free_port(), free_port()
    config = directory / "server.properties"
    config.write_text(server_properties(directory / "data", port, controller, sasl))
    (directory / "log4j.properties").write_text(_LOG4J)
    command = [
        java,
        "-Xmx768m",
        f"-Dlog4j.configuration=file:{directory / 'log4j.properties'}",
        "-cp",
        f"{LIBS}/*",
    ]
    cluster = _cluster_id()
    users = [
        f"{mechanism}=[name={name},password={password}]"
        for name, password in (scram_users or {}).items()
        for mechanism in _MECHANISMS
    ]
    formatted = subprocess.run(
        [*command, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(config)]
        + [argument for user in users for argument in ("--add-scram", user)],
        capture_output=True,
    )
    if formatted.returncode != 0:
        output = (formatted.stdout + formatted.stderr).decode(errors="replace")
        raise RuntimeError(f"formatting Apache Kafka's storage failed:\n{output}")
    with (directory / "broker.log").open("wb") as log:
        process = subprocess.Popen(
            [*command, "kafka.Kafka", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    kafka = ApacheKafka(f"127.0.0.1:{port}", f"127.0.0.1:{sasl}", process.pid)
    try:
        _wait_until_serving(kafka.bootstrap, process, timeout)
        yield kafka
    finally:
        stop_process(process)


def _cluster_id() -> str:
    """A random cluster id as Kafka writes one: URL-safe base64 of 16 bytes, never starting
    with `-`, which the storage tool would read as an option.

    >>> len(_cluster_id()), _cluster_id()[0] != "-"
    (22, True)
    """
    while (cluster := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))[0] == "-":
        pass
    return cluster


def _wait_until_serving(bootstrap: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Apache Kafka ended at start-up (code {process.returncode})")
        try:
            if admin.list_topics(timeout=2).brokers:
                return
        except KafkaException:
            time.sleep(0.5)
    raise TimeoutError(f"Apache Kafka did not serve metadata at {bootstrap} in {timeout} s")
