"""The Kafka topics segstream uses, and their idempotent creation."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.connectivity import KAFKA
from streams.kafka import admin_client
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic's name, partition count and topic-level configuration."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topology(settings: Settings) -> list[TopicSpec]:
    """Every topic segstream reads or writes.

    The features and examples topics have one partition: one trainer learns from
    all of them (a second trainer waits as a standby in the same group).

    >>> [spec.name for spec in topology(Settings(partitions=2))][-4:]
    ['examples', 'models', 'destinations', 'deliveries.dlq']
    """
    return [
        TopicSpec(settings.events_topic, settings.partitions),
        TopicSpec(settings.dead_letter_topic, 1),
        TopicSpec(settings.changes_topic, settings.partitions),
        TopicSpec(settings.rules_topic, 1, {"cleanup.policy": "compact"}),
        TopicSpec(settings.features_topic, 1, {"retention.ms": str(24 * 3_600_000)}),
        TopicSpec(settings.examples_topic, 1, {"retention.ms": str(7 * 24 * 3_600_000)}),
        TopicSpec(settings.models_topic, 1, {"cleanup.policy": "compact"}),
        TopicSpec(settings.destinations_topic, 1, {"cleanup.policy": "compact"}),
        TopicSpec(settings.deliveries_dlq_topic, 1),
    ]


def ensure_topics(
    settings: Settings, timeout: float = 30.0, admin: AdminClient | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = admin or admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [spec for spec in topology(settings) if spec.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [
            NewTopic(spec.name, spec.partitions, settings.replication_factor, config=spec.config)
            for spec in wanted
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    log.info("topics created=%s", ",".join(created) or "-")
    return created


def keep_provisioned(settings: Settings, stop: threading.Event, every: float = 10.0) -> None:
    """Create the topics as soon as the broker answers, then ask it every `every` seconds
    (every second while it does not answer), keeping :data:`~streams.connectivity.KAFKA`
    current. Runs until `stop` is set: start it on a thread of its own.
    """
    admin = admin_client(settings)
    provisioned = False
    while not stop.is_set():
        try:
            if provisioned:
                admin.list_topics(settings.events_topic, timeout=5)
            else:
                ensure_topics(settings, timeout=5, admin=admin)
                provisioned = True
            KAFKA.reached()
        except KafkaException as error:
            KAFKA.lost(str(error.args[0].str() if error.args else error))
        stop.wait(every if KAFKA.up else 1.0)
