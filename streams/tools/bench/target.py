"""Where the bench runs: the embedded stack it starts, or the user's own Kafka and Redis.

On the user's infrastructure (`segstream bench --kafka BOOTSTRAP --redis URL`, with the
`SEGSTREAM_KAFKA_*` security settings and `SEGSTREAM_REDIS_CLUSTER` as for the worker),
every topic, consumer group and Redis key of the run starts with the run's own
prefix, and all of them are removed when it ends, however it ends::

    with bench_target(config, scratch) as target:
        settings = target.settings(redis_prefix=f"{target.run}b1", ...)
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis
from confluent_kafka import KafkaException

from streams.kafka import admin_client, offered_group_protocols
from streams.redis_clients import redis_client
from streams.settings import Settings
from streams.tools.embedded import apache_kafka, running_stack
from streams.tools.redis_cluster import running_redis_cluster

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """The broker and Redis of one bench run, named for the report, and the run's prefix."""

    base: Settings
    """Settings every measurement starts from: where the broker and Redis are, how to
    reach them."""
    run: str
    """What every topic, group and key of the run starts with."""
    broker: str
    redis: str

    def settings(self, **fields: Any) -> Settings:
        """The base settings with `fields` changed."""
        return self.base.model_copy(update=fields)


@contextlib.contextmanager
def bench_target(
    scratch: Path,
    *,
    kafka: str | None = None,
    redis_url: str | None = None,
    redis_cluster: bool = False,
) -> Iterator[Target]:
    """The user's Kafka at `kafka` and Redis at `redis_url` (both or neither), or, without
    them, the embedded stack started in `scratch` (with a Redis Cluster of three masters
    when `redis_cluster`)."""
    run = f"bench{uuid.uuid4().hex[:6]}"
    if kafka is None or redis_url is None:
        if kafka is not None or redis_url is not None:
            raise ValueError("--kafka and --redis go together")
        with running_stack(scratch / "stack") as stack, contextlib.ExitStack() as cluster:
            url = stack.redis_url
            if redis_cluster:
                url = cluster.enter_context(running_redis_cluster(scratch / "cluster")).url
            base = Settings(
                kafka_bootstrap=stack.kafka_bootstrap,
                redis_url=url,
                redis_cluster=redis_cluster,
                kafka_security_protocol="PLAINTEXT",
            )
            yield Target(
                base,
                run,
                f"Apache Kafka {apache_kafka.VERSION} (embedded, KRaft, one node)",
                _describe_redis(base, "embedded"),
            )
        return
    base = Settings(kafka_bootstrap=kafka, redis_url=redis_url)
    target = Target(base, run, _describe_kafka(base), _describe_redis(base, "yours"))
    try:
        yield target
    finally:
        remove_run(target)


def _describe_kafka(settings: Settings) -> str:
    """The cluster as the Kafka protocol describes it: id, brokers and the group protocols
    its coordinator offers (`consumer` from Apache Kafka 4.0 on). Brokers do not report
    their release over the protocol."""
    admin = admin_client(settings)
    cluster = admin.describe_cluster(request_timeout=30).result()
    offered = ",".join(offered_group_protocols(settings)) or "unknown"
    return (
        f"Kafka cluster {cluster.cluster_id} at {settings.kafka_bootstrap}, "
        f"{len(cluster.nodes)} broker{'s' if len(cluster.nodes) != 1 else ''}, "
        f"group protocols {offered}"
    )


def _describe_redis(settings: Settings, whose: str) -> str:
    """``Redis 7.0.15 (embedded, one node)``: the version a node reports, and the shape."""
    client = redis_client(settings)
    try:
        info = client.info("server")
        version = info.get("redis_version") or next(
            (node["redis_version"] for node in info.values() if isinstance(node, dict)), "?"
        )
    finally:
        client.close()
    shape = "cluster" if settings.redis_cluster else "one node"
    return f"Redis {version} ({whose}, {shape})"


def remove_run(target: Target) -> None:
    """Delete the run's topics and consumer groups from the broker and its keys from Redis."""
    settings = target.base
    admin = admin_client(settings)
    try:
        topics = [
            name for name in admin.list_topics(timeout=30).topics if name.startswith(target.run)
        ]
        if topics:
            for future in admin.delete_topics(topics, request_timeout=30).values():
                future.result()
        groups = [
            group.group_id
            for group in admin.list_consumer_groups(request_timeout=30).result().valid
            if group.group_id.startswith(target.run)
        ]
        if groups:
            for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
                with contextlib.suppress(KafkaException):  # a group still emptying
                    future.result()
    except KafkaException as error:
        log.warning("the bench's topics were not all removed: %s", error)
    removed = 0
    for node in redis_nodes(settings):
        try:
            batch: list[bytes] = []
            for key in node.scan_iter(match=f"{target.run}*", count=1_000):
                batch.append(key)
                if len(batch) == 1_000:
                    removed += node.unlink(*batch)
                    batch.clear()
            if batch:
                removed += node.unlink(*batch)
        finally:
            node.close()
    log.info("bench run %s removed: %d topics, %d Redis keys", target.run, len(topics), removed)


def redis_nodes(settings: Settings) -> list[redis.Redis]:
    """A client of each node of the store, with its credentials: the one Redis, or every
    master of the cluster."""
    client = redis_client(settings)
    if not settings.redis_cluster:
        return [client]
    masters = cast(Any, client).get_primaries()
    return [cast(redis.Redis, node.redis_connection) for node in masters]
