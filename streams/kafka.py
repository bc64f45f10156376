"""The one module that knows confluent-kafka's configuration.

Everything else in :mod:`streams` asks it for a consumer, a producer or an
admin client built from :class:`~streams.settings.Settings`.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in its __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from processors.partitioner import PRODUCER_PARTITIONER
from streams.connectivity import LIBRDKAFKA_LOG, kafka_error
from streams.settings import Settings

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)


def _common(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": LIBRDKAFKA_LOG,
        "error_cb": kafka_error,
        **security_config(settings),
    }


def security_config(settings: Settings) -> dict[str, Any]:
    """librdkafka's TLS and SASL properties for the `SEGSTREAM_KAFKA_*` security settings.

    >>> security_config(Settings())
    {}
    >>> config = security_config(Settings(kafka_security_protocol="SASL_SSL",
    ...     kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="seg",
    ...     kafka_sasl_password="secret"))
    >>> config["security.protocol"], config["sasl.mechanism"], config["sasl.password"]
    ('SASL_SSL', 'SCRAM-SHA-512', 'secret')
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security.protocol": protocol}
    if protocol.startswith("SASL"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    files = {
        "ssl.ca.location": settings.kafka_ssl_ca_location,
        "ssl.certificate.location": settings.kafka_ssl_certificate_location,
        "ssl.key.location": settings.kafka_ssl_key_location,
    }
    config.update({name: str(path) for name, path in files.items() if path is not None})
    return config


def faust_broker(settings: Settings) -> dict[str, Any]:
    """Faust app options for the brokers, security and group timing of `settings`.

    >>> options = faust_broker(Settings(kafka_bootstrap="a:1,b:2", session_timeout_ms=6_000))
    >>> options["broker"], options["broker_session_timeout"], options["broker_heartbeat_interval"]
    (['kafka://a:1', 'kafka://b:2'], 6.0, 2.0)
    """
    session = settings.session_timeout_ms / 1000
    return {
        "broker": [f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        "broker_credentials": faust_credentials(settings),
        "broker_session_timeout": session,
        "broker_heartbeat_interval": min(3.0, session / 3),
    }


def faust_credentials(settings: Settings) -> faust.auth.Credentials | None:
    """The same security settings for Faust's (aiokafka's) clients; `None` for PLAINTEXT."""
    import faust  # the trainer's and the baseline's dependency only: load late

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        ca = settings.kafka_ssl_ca_location
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
        if settings.kafka_ssl_certificate_location and settings.kafka_ssl_key_location:
            context.load_cert_chain(
                settings.kafka_ssl_certificate_location, settings.kafka_ssl_key_location
            )
    if protocol == "SSL":
        assert context is not None
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


def topic_reader(settings: Settings, group_id: str) -> Consumer:
    """A consumer for partitions it assigns itself: it commits nothing and joins no group."""
    return Consumer(
        {**_common(settings), "group.id": group_id, "enable.auto.commit": False, "log_level": 3}
    )


FETCH_WAIT_MS = 50
"""Longest the broker holds a worker's fetch while it has nothing new, in ms. Kafka
answers as soon as data arrives, so under load this only spares empty fetch round trips
on a quiet partition."""


def batch_consumer(
    settings: Settings, protocol: GroupProtocol | None = None, **overrides: Any
) -> Consumer:
    """A consumer in the workers' group; offsets live with the state, not in Kafka.

    With `protocol` `consumer` it uses KIP-848's protocol (its session timeout is the
    group's configuration: :func:`set_group_session`); with `classic`, the classic one with
    the cooperative-sticky assignor. Either assigns incrementally: the rebalance callbacks
    name only the partitions that move, and call `incremental_assign`. Without
    `protocol`, the classic protocol with librdkafka's eager assignors.

    It keeps up to 100,000 messages a partition fetched ahead (librdkafka caps the
    queue at `queued.max.messages.kbytes`, 64 MiB): with 10,000 a worker waited on
    fetches for a third of a 300,000-event backlog (17,400 events/s; 31,000 with
    100,000).
    """
    session = settings.session_timeout_ms
    group: dict[str, Any] = {"group.protocol": "consumer"}
    if protocol != "consumer":
        group = {"session.timeout.ms": session, "heartbeat.interval.ms": max(500, session // 5)}
    if protocol == "classic":
        group["partition.assignment.strategy"] = "cooperative-sticky"
    config = {
        **_common(settings),
        **group,
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "max.poll.interval.ms": max(60_000, session * 10),
        "fetch.wait.max.ms": FETCH_WAIT_MS,
        "queued.min.messages": max(100_000, settings.batch_max_events * 2),
        **overrides,
    }
    return Consumer(config)


GroupProtocol = Literal["consumer", "classic"]
_OFFERED = "group.coordinator.rebalance.protocols"


def group_protocol(settings: Settings) -> GroupProtocol:
    """The workers' group protocol: `SEGSTREAM_GROUP_PROTOCOL`, or with `auto` `consumer`
    where the broker offers it (Apache Kafka 4.0 and later) and `classic` where it does
    not, or where that cannot be read."""
    if settings.group_protocol != "auto":
        return settings.group_protocol
    return "consumer" if "consumer" in offered_group_protocols(settings) else "classic"


def offered_group_protocols(settings: Settings) -> list[str]:
    """The group protocols the broker's coordinator offers (its
    `group.coordinator.rebalance.protocols`); none where that cannot be read."""
    admin = admin_client(settings)
    try:
        cluster = admin.describe_cluster(request_timeout=10).result()
        broker = ConfigResource(ResourceType.BROKER, str(cluster.nodes[0].id))
        offered = admin.describe_configs([broker], request_timeout=10)[broker].result()
    except KafkaException as error:
        log.warning("the broker's %s is unknown (%s)", _OFFERED, error)
        return []
    entry = offered.get(_OFFERED)
    return str(entry.value).split(",") if entry is not None and entry.value else []


def set_group_session(settings: Settings) -> None:
    """Under KIP-848 the session timeout and heartbeat interval are the group's own
    configuration, not the consumer's: set them to `SEGSTREAM_SESSION_TIMEOUT_MS` and a
    fifth of it. A broker that refuses (a value under its
    `group.consumer.min.session.timeout.ms`, or no ALTER_CONFIGS right on the group) keeps
    its defaults (45 s), and a warning says so."""
    session = settings.session_timeout_ms
    wanted = {
        "consumer.session.timeout.ms": session,
        "consumer.heartbeat.interval.ms": max(500, session // 5),
    }
    resource = ConfigResource(
        ResourceType.GROUP,
        settings.group_id,
        incremental_configs=[
            ConfigEntry(name, str(value), incremental_operation=AlterConfigOpType.SET)
            for name, value in wanted.items()
        ],
    )
    admin = admin_client(settings)
    try:
        admin.incremental_alter_configs([resource], request_timeout=10)[resource].result()
    except KafkaException as error:
        log.warning(
            "group session timeout left to the broker (%s); a dead worker's partitions move "
            "after the broker's group.consumer.session.timeout.ms",
            error,
        )


def reliable_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer that batches for up to 5 ms and waits for every replica.

    Keyed messages go to the key's canonical partition (:mod:`processors.partitioner`).
    """
    config = {
        **_common(settings),
        "partitioner": PRODUCER_PARTITIONER,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "none",
        "queue.buffering.max.messages": 1_000_000,
        **overrides,
    }
    return Producer(config)


_PRODUCER_LOST = frozenset(
    {
        KafkaError._FATAL,
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    }
)


def producer_lost(error: KafkaError) -> bool:
    """Whether `error` means the producer can send nothing more and must be replaced.

    librdkafka marks only some of these fatal; a broker that fenced the producer's id
    (after a freeze, for example) fails every later message with the same error.

    >>> producer_lost(KafkaError(KafkaError.PRODUCER_FENCED))
    True
    >>> producer_lost(KafkaError(KafkaError._MSG_TIMED_OUT))
    False
    """
    return error.fatal() or error.code() in _PRODUCER_LOST


def admin_client(settings: Settings) -> AdminClient:
    """An admin client for provisioning topics."""
    return AdminClient(_common(settings))


def answering(settings: Settings, timeout: float = 10.0) -> None:
    """Return once a broker answers; raise :class:`KafkaException` (a transport failure)
    when none does within `timeout` seconds, so that a command fails in seconds rather
    than when its first message times out."""
    admin_client(settings).list_topics(timeout=timeout)
