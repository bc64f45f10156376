"""Apache Kafka in KRaft mode on loopback: one JVM that is broker and controller.

The embedded broker of `segstream dev up`, `segstream demo`, `segstream bench` and the
integration tests. Its jars come from Maven Central: `make kafka` copies Apache Kafka
:data:`VERSION` and its dependencies into :func:`kafka_libs`, a cache of segstream's
own that every clone and run on the machine reuses. Java 17 or newer runs it.

It is tuned for a small machine (see :data:`JVM_OPTIONS` and :func:`server_properties`):
a fixed 512 MiB heap with the serial collector, and two network and two I/O threads.
Plain clients reach it on one port; with `scram_users` it also listens for SASL/SCRAM
clients on another, those users created when its storage is formatted::

    process, kafka = spawn_kafka(Path("/tmp/k"), {"segstream": "s3cret"})
    wait_until_serving(kafka.bootstrap, process)

>>> lines = server_properties(Path("/k"), 9092, 9093, sasl=9094).splitlines()
>>> [line for line in lines if line.startswith("listeners=")]
['listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_PLAINTEXT://127.0.0.1:9094']
"""

from __future__ import annotations

import base64
import os
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

from streams.tools.embedded.processes import StackError, free_port, stop_process

VERSION = "4.4.0"
"""The Apache Kafka release segstream runs and is tested on; docker-compose.yml, the
Makefile and deploy/kubernetes name the same."""

JVM_OPTIONS = (
    "-Xms512m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
"""A fixed 512 MiB heap (the broker keeps its log in the page cache, not the heap) and the
serial collector: no concurrent GC threads competing with the workers for two cores."""

_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""


def kafka_libs() -> Path:
    """Where `make kafka` puts Apache Kafka's jars: `segstream/apache-kafka-VERSION` under
    `$XDG_CACHE_HOME` (by default `~/.cache`).

    >>> kafka_libs().name
    'apache-kafka-4.4.0'
    """
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "segstream" / f"apache-kafka-{VERSION}"


@dataclass(frozen=True, slots=True)
class ApacheKafka:
    """Where a running broker listens: plain clients, and SASL/SCRAM ones ('' without users)."""

    bootstrap: str
    sasl_bootstrap: str


def server_properties(
    data: Path,
    port: int,
    controller: int,
    *,
    sasl: int | None = None,
    advertised: int | None = None,
) -> str:
    """The broker's configuration: one node, replication factor 1, topics made on demand,
    plain clients on `port` (told to connect to `advertised`, a proxy's port, when given)."""
    listeners = [f"PLAINTEXT://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{controller}"]
    advertised_listeners = [f"PLAINTEXT://127.0.0.1:{advertised or port}"]
    if sasl:
        listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{sasl}")
        advertised_listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{sasl}")
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    scram = [
        f"sasl.enabled.mechanisms={','.join(_MECHANISMS)}",
        *(
            f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config={jaas}"
            for mechanism in _MECHANISMS
        ),
    ]
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised_listeners)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
            + (",SASL_PLAINTEXT:SASL_PLAINTEXT" if sasl else ""),
            *(scram if sasl else []),
            f"log.dirs={data}",
            "num.network.threads=2",
            "num.io.threads=2",
            "background.threads=2",
            "log.cleaner.threads=1",
            "num.recovery.threads.per.data.dir=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.num.partitions=4",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "group.consumer.min.session.timeout.ms=1000",
            "group.consumer.min.heartbeat.interval.ms=500",
            "auto.create.topics.enable=true",
            "num.partitions=1",
            "",
        ]
    )


def spawn_kafka(
    directory: Path,
    scram_users: Mapping[str, str] | None = None,
    *,
    port: int | None = None,
    advertised: int | None = None,
) -> tuple[subprocess.Popen[bytes], ApacheKafka]:
    """Format a broker's storage in `directory` (anew: what an earlier broker left there
    is deleted) and start it in a session of its own (plain clients on `port`, a free one
    by default); it logs to `directory`/broker.log. Returns at once:
    :func:`wait_until_serving` waits until it answers."""
    java, libs = _java(), kafka_libs()
    if not any(libs.glob(f"kafka_2.13-{VERSION}.jar")):
        raise StackError(f"Apache Kafka {VERSION} is not in {libs}: run `make kafka`")
    shutil.rmtree(directory / "data", ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    controller, sasl = free_port(), (free_port() if scram_users else None)
    config = directory / "server.properties"
    config.write_text(
        server_properties(directory / "data", port, controller, sasl=sasl, advertised=advertised)
    )
    (directory / "log4j2.yaml").write_text(_LOG4J2)
    command = [
        java,
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={directory / 'log4j2.yaml'}",
        "-cp",
        f"{libs}/*",
    ]
    users = [
        f"{mechanism}=[name={name},password={password}]"
        for name, password in (scram_users or {}).items()
        for mechanism in _MECHANISMS
    ]
    formatted = subprocess.run(
        [*command, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config)]
        + [argument for user in users for argument in ("--add-scram", user)],
        capture_output=True,
    )
    if formatted.returncode != 0:
        output = (formatted.stdout + formatted.stderr).decode(errors="replace")
        raise StackError(f"formatting Apache Kafka's storage failed:\n{output}")
    with (directory / "broker.log").open("ab") as log:
        process = subprocess.Popen(
            [*command, "kafka.Kafka", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, ApacheKafka(f"127.0.0.1:{port}", f"127.0.0.1:{sasl}" if sasl else "")


def _java() -> str:
    found = shutil.which("java")
    if found is None:
        raise StackError("Apache Kafka needs Java 17 or newer: run `make tools`")
    return found


def _cluster_id() -> str:
    """A random cluster id as Kafka writes one: URL-safe base64 of 16 bytes, never starting
    with `-`, which the storage tool would read as an option.

    >>> len(_cluster_id()), _cluster_id()[0] != "-"
    (22, True)
    """
    while (cluster := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))[0] == "-":
        pass
    return cluster


def wait_until_serving(
    bootstrap: str, process: subprocess.Popen[bytes], timeout: float = 90
) -> None:
    """Wait until the broker at `bootstrap` serves metadata; :class:`StackError` if
    `process` ends first or after `timeout` s."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"Apache Kafka ended at start-up (code {process.returncode})")
        try:
            if admin.list_topics(timeout=1).brokers:
                return
        except KafkaException:
            time.sleep(0.1)
    raise StackError(f"Apache Kafka did not serve metadata at {bootstrap} in {timeout} s")


@contextmanager
def running_kafka(
    directory: Path, *, port: int | None = None, advertised: int | None = None
) -> Iterator[ApacheKafka]:
    """A broker of its own for the duration of a `with` block (plain clients on `port`,
    told to connect to `advertised`), once it serves metadata."""
    process, kafka = spawn_kafka(directory, port=port, advertised=advertised)
    try:
        wait_until_serving(kafka.bootstrap, process)
        yield kafka
    finally:
        stop_process(process)
