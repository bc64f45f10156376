"""The one module that knows confluent-kafka's configuration.

Everything else in :mod:`streams` asks it for a consumer, a producer or an
admin client built from :class:`~streams.settings.Settings`.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from streams.settings import Settings


def _common(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap}


def batch_consumer(settings: Settings, **overrides: Any) -> Consumer:
    """A consumer in the workers' group; offsets live with the state, not in Kafka."""
    config = {
        **_common(settings),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 5),
        "max.poll.interval.ms": max(60_000, settings.session_timeout_ms * 10),
        "fetch.wait.max.ms": min(settings.batch_max_wait_ms, 500),
        "queued.min.messages": max(10_000, settings.batch_max_events * 2),
        **overrides,
    }
    return Consumer(config)


def reliable_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer that batches for up to 5 ms and waits for every replica."""
    config = {
        **_common(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "none",
        "queue.buffering.max.messages": 1_000_000,
        **overrides,
    }
    return Producer(config)


def admin_client(settings: Settings) -> AdminClient:
    """An admin client for provisioning topics."""
    return AdminClient(_common(settings))
