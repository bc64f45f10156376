"""What a worker works with, built from settings: the store, the consumer, the producer and
the feeds of rules and models.

The worker takes these as arguments, so its unit tests give it in-memory twins
(`tests/memory.py`) and drive its loop without a broker or Redis. Example::

    Worker(settings, rules, build_parts(settings)).run(stop)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from confluent_kafka import Consumer, Producer

from processors.model import ModelSnapshot
from processors.rules import RuleSet
from state.redis_store import RedisStateStore
from state.store import StateStore
from streams.kafka import batch_consumer, group_protocol, reliable_producer, set_group_session
from streams.redis_clients import redis_client
from streams.rules_feed import RulesFeed
from streams.settings import Settings
from streams.worker.models_feed import ModelsFeed

T = TypeVar("T", covariant=True)

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 30.0
"""Seconds a Redis call may take before the batch is given up and redone."""


class Feed(Protocol[T]):
    """A compacted topic whose latest valid publication is in force (rules, models)."""

    def catch_up(self, timeout: float = 10.0) -> T | None:
        """The newest publication already there."""
        ...

    def poll(self) -> T | None:
        """The newest publication since the last call, without waiting."""
        ...

    def close(self) -> None:
        """Stop following."""
        ...


@dataclass(slots=True)
class WorkerParts:
    """The store and clients one worker uses."""

    store: StateStore
    consumer: Consumer
    make_producer: Callable[[], Producer]
    rules: Feed[tuple[RuleSet, bool]]
    """Published rules, with whether to re-evaluate every user at once."""
    models: Feed[ModelSnapshot]
    ping: Callable[[], object]
    """Raises Redis's connection errors while the store does not answer."""
    close_store: Callable[[], None] = lambda: None


def build_parts(settings: Settings) -> WorkerParts:
    """Redis, the consumer in the workers' group (on the group protocol that pauses least
    on this broker), an idempotent producer and the feeds."""
    client = redis_client(settings, socket_connect_timeout=5, socket_timeout=REDIS_TIMEOUT)
    store = RedisStateStore(client, settings.key_layout(), settings.group_id, settings.timer_shards)
    protocol = group_protocol(settings)
    if protocol == "consumer":
        set_group_session(settings)
    log.info("group protocol=%s", protocol)
    return WorkerParts(
        store=store,
        consumer=batch_consumer(settings, protocol),
        make_producer=lambda: reliable_producer(settings),
        rules=RulesFeed(settings),
        models=ModelsFeed(settings),
        ping=client.ping,
        close_store=client.close,
    )
