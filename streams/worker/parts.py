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
from typing import TYPE_CHECKING, Protocol, TypeVar

from confluent_kafka import Consumer, Producer

from processors.model import ModelSnapshot
from state.activity import SizeRecorder
from state.redis_store import RedisStateStore
from state.store import StateStore
from streams.generations import Build, BuildFeed
from streams.kafka import batch_consumer, group_protocol, reliable_producer, set_group_session
from streams.redis_clients import redis_client
from streams.rules_feed import InForce, RulesFeed
from streams.settings import Settings
from streams.worker.models_feed import ModelsFeed

if TYPE_CHECKING:
    from streams.worker.builder import GenerationBuilder
    from streams.worker.loop import Worker

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
    rules: Feed[InForce]
    """Published rules, with whether to re-evaluate every user at once and the generation
    that serves them."""
    models: Feed[ModelSnapshot]
    ping: Callable[[], object]
    """Raises Redis's connection errors while the store does not answer."""
    close_store: Callable[[], None] = lambda: None
    builds: Feed[Build] | None = None
    """Builds of new generations to take part in (`None`: this worker builds none)."""
    builder: Callable[[Worker, Build], GenerationBuilder] | None = None
    """What builds a generation beside the live worker."""
    store_of: Callable[[int], StateStore] | None = None
    """The store of another generation, on the same connection (`None`: only the first)."""
    sizes: SizeRecorder | None = None
    """What samples the segments' sizes once a minute for the console (`None`: nothing)."""


def build_parts(settings: Settings) -> WorkerParts:
    """Redis, the consumer in the workers' group (on the group protocol that pauses least
    on this broker), an idempotent producer and the feeds."""
    client = redis_client(settings, socket_connect_timeout=5, socket_timeout=REDIS_TIMEOUT)
    layout = settings.key_layout()
    store = RedisStateStore(
        client, layout, settings.group_id, settings.timer_shards, settings.user_changes_kept
    )
    protocol = group_protocol(settings)
    if protocol == "consumer":
        set_group_session(settings)
    log.info("group protocol=%s", protocol)
    from streams.worker.builder import GenerationBuilder  # it is a Worker: built after loop

    def builder(live: Worker, build: Build) -> GenerationBuilder:
        return GenerationBuilder(live, build, build_generation_parts(settings, build.generation))

    return WorkerParts(
        store=store,
        consumer=batch_consumer(settings, protocol),
        make_producer=lambda: checkpoint_producer(settings),
        rules=RulesFeed(settings),
        models=ModelsFeed(settings),
        ping=client.ping,
        close_store=client.close,
        builds=BuildFeed(settings),
        builder=builder,
        store_of=lambda generation: RedisStateStore(
            client, layout.of_generation(generation), settings.group_id, settings.timer_shards
        ),
        sizes=SizeRecorder(client, layout),
    )


def checkpoint_producer(settings: Settings) -> Producer:
    """A worker's producer: only a failed delivery calls back (the checkpoint keeps
    the errors, and a flush tells what is still undelivered), none per message sent."""
    return reliable_producer(settings, **{"delivery.report.only.error": True})


def build_generation_parts(settings: Settings, generation: int) -> WorkerParts:
    """What a worker's build of `generation` works with: the generation's keys in the same
    Redis, a consumer of its own that joins no group (it takes the live worker's
    partitions by hand) and a producer; it follows no feed."""
    client = redis_client(settings, socket_connect_timeout=5, socket_timeout=REDIS_TIMEOUT)
    layout = settings.key_layout().of_generation(generation)
    store = RedisStateStore(client, layout, settings.group_id, settings.timer_shards)
    return WorkerParts(
        store=store,
        consumer=batch_consumer(
            settings, None, **{"group.id": f"{settings.group_id}-g{generation}"}
        ),
        make_producer=lambda: checkpoint_producer(settings),
        rules=_Nothing(),
        models=_Nothing(),
        ping=client.ping,
        close_store=client.close,
    )


class _Nothing:
    """A feed on which nothing is published: a build's rules and model are not its own
    to follow."""

    def catch_up(self, timeout: float = 10.0) -> None:
        """Nothing."""

    def poll(self) -> None:
        """Nothing."""

    def close(self) -> None:
        """Nothing to leave."""
