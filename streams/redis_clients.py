"""Clients of the segment store: one Redis, or a Redis Cluster found from one seed node.

`SEGSTREAM_REDIS_CLUSTER` says which; a seed that is not what the setting says
fails at start-up naming the setting, rather than later with `MOVED` or
`CROSSSLOT` errors. Example::

    client = redis_client(settings)  # redis.Redis or redis.cluster.RedisCluster
    store = RedisStateStore(client, settings.key_layout(), settings.group_id)
"""

from __future__ import annotations

import contextlib
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from processors.rules import RuleSet
from state.keys import KeyLayout
from state.read_model import ReadModel
from streams.settings import ENV_PREFIX, Settings, SettingsError


class CommandPacker:
    """Packs each command into the Redis protocol with one call of `hiredis.pack_command`.

    redis-py's own packer runs a Python encoder over every argument first, about a
    tenth of a worker's time (a batch's commit sends a few arguments per event). The
    arguments segstream sends are bytes, text and numbers already, which hiredis takes
    as they are; anything else (a bool, None) raises :class:`redis.DataError`, as with
    redis-py's packer.

    >>> CommandPacker().pack("HSET", "k", b"v", 2, 0.5)
    [b'*5\\r\\n$4\\r\\nHSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nv\\r\\n$1\\r\\n2\\r\\n$3\\r\\n0.5\\r\\n']
    """

    def pack(self, *args: Any) -> list[bytes]:
        verb = args[0]
        spaced = (isinstance(verb, str) and " " in verb) or (
            isinstance(verb, bytes) and b" " in verb
        )
        if spaced:
            args = (*verb.split(), *args[1:])  # "CLIENT SETINFO", as redis-py sends it
        try:
            return [hiredis.pack_command(args)]
        except TypeError as error:
            raise redis.DataError(str(error)) from None


_PACKER = CommandPacker()


def redis_client(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the segment store; `options` go to the client (timeouts).

    Raises :class:`SettingsError` when `SEGSTREAM_REDIS_URL` names a plain Redis
    and `SEGSTREAM_REDIS_CLUSTER` is true, or a cluster node and it is false;
    :class:`redis.ConnectionError` when no node of a cluster answers (a client of
    one Redis connects when first used).
    """
    if settings.redis_cluster:
        try:
            cluster = RedisCluster.from_url(settings.redis_url, command_packer=_PACKER, **options)
        except RedisClusterException as error:
            if _NOT_CLUSTER in str(error):
                raise _not_a_cluster(settings) from None
            raise redis.ConnectionError(f"no node of the Redis Cluster answers: {error}") from None
        # A cluster client answers the same commands; pipelines route them by slot.
        return cast(redis.Redis, cluster)
    client = redis.Redis.from_url(settings.redis_url, command_packer=_PACKER, **options)
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except redis.ConnectionError:
        return client  # unreachable for now: callers wait for it
    if enabled:
        raise SettingsError(
            f"{ENV_PREFIX}REDIS_URL ({_where(settings)}) is a node of a Redis Cluster: set "
            f"{ENV_PREFIX}REDIS_CLUSTER=true"
        )
    return client


def read_model(
    settings: Settings, rules: RuleSet | None = None, keys: KeyLayout | None = None
) -> ReadModel:
    """The read model (users, segments, counters) of the configured Redis, in the
    generation at `keys` (the first by default); documents show the computed traits `rules`
    name."""
    return ReadModel(redis_client(settings), keys or settings.key_layout(), rules)


def async_redis_client(settings: Settings, connections: int) -> aioredis.Redis:
    """An asyncio client of the segment store with at most `connections` connections (per
    node of a cluster); the seed is checked like :func:`redis_client`, at once when it
    answers (the client connects when first used)."""
    with contextlib.suppress(redis.ConnectionError):
        redis_client(settings).close()
    if settings.redis_cluster:
        cluster = AsyncRedisCluster.from_url(settings.redis_url, max_connections=connections)
        return cast(aioredis.Redis, cluster)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=connections, timeout=5
    )
    return aioredis.Redis(connection_pool=pool)


STORE_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, RedisClusterException)
"""What the clients raise while the store does not answer (a cluster client, when it cannot
reach any node, raises :class:`RedisClusterException`)."""

_NOT_CLUSTER = "Cluster mode is not enabled"
"""How redis-py says a seed is a plain Redis."""


def _not_a_cluster(settings: Settings) -> SettingsError:
    return SettingsError(
        f"{ENV_PREFIX}REDIS_CLUSTER=true, but {ENV_PREFIX}REDIS_URL ({_where(settings)}) is a "
        f"Redis without cluster mode: name a node of the cluster, or set "
        f"{ENV_PREFIX}REDIS_CLUSTER=false"
    )


def _where(settings: Settings) -> str:
    """The host and port of the Redis URL, without credentials."""
    parts = urlsplit(settings.redis_url)
    return f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else settings.redis_url
