"""Convert a store written with the earlier key layout (no partition hash tags) in place.

The earlier layout kept a user's keys as `seg:s:<user>` and `seg:u:<user>`,
membership as one set per segment, totals as one hash, and progress and timers
under `seg:o:…`, `seg:pu:…` and `seg:t:…` with the topic and partition spelt
out. Each key moves to its partition's tag (a user's partition is their
canonical partition under the stored partition count); membership sets are
split by partition; the totals go to partition 0's hash, since the pipeline's
totals are the sum over partitions; the model's keys move under the tag
`{model}`. It runs on one Redis (the earlier layout
could not run on a cluster), while no worker runs; the earlier totals move
last, so a conversion cut short is finished by running it again. Example::

    moved = migrate(redis.Redis.from_url(url), KeyLayout("seg", "events"))
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import cast

import redis

from processors.partitioner import canonical_partitions
from state.keys import KeyLayout

_CHUNK = 1_000


class MigrationError(RuntimeError):
    """The store cannot be converted as it is."""


def migrate(client: redis.Redis, keys: KeyLayout) -> int:
    """Move every key of the earlier layout under `keys` to the tagged layout; how many keys
    were moved. A store already converted (or empty) is left as it is, with 0."""
    earlier = [
        cast(bytes, key).decode()
        for key in client.scan_iter(match=f"{keys.prefix}:*", count=_CHUNK)
        if not cast(bytes, key).startswith(f"{keys.prefix}:{{".encode())
    ]
    if keys.earlier_counters not in earlier:
        return 0
    stored = client.get(keys.partition_count)
    if stored is None:
        raise MigrationError(f"{keys.partition_count} is missing: the store has no partition count")
    partitions = int(cast(bytes, stored))
    moved = 0
    prefix = f"{keys.prefix}:"
    users: dict[str, list[str]] = defaultdict(list)
    sets: list[tuple[str, Callable[[int], str], Callable[[int], str]]] = []
    for key in earlier:
        kind, _, rest = key[len(prefix) :].partition(":")
        if kind in ("s", "u"):
            users[kind].append(rest)
        elif kind == "m":
            sets.append((key, _tagged(keys.members, rest), keys.segments))
        elif kind == "cm":
            sets.append((key, _tagged(keys.cluster_members, rest), keys.clusters))
        elif kind == "model":
            client.rename(key, keys.model + key[len(keys.prefix) + len(":model") :])
            moved += 1
        elif kind in ("o", "pu", "t"):
            target = _partition_key(keys, kind, rest)
            if target is not None:
                client.rename(key, target)
                moved += 1
    for kind, ids in users.items():
        place = keys.state if kind == "s" else keys.labels
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            owners = canonical_partitions(chunk, partitions)
            with client.pipeline(transaction=False) as pipe:
                for user_id, partition in zip(chunk, owners, strict=True):
                    pipe.rename(f"{prefix}{kind}:{user_id}", place(partition, user_id))
                pipe.execute()
            moved += len(chunk)
    for key, tagged, names in sets:
        _split(client, key, tagged, names, partitions)
        moved += 1
    client.delete(f"{prefix}segments", f"{prefix}clusters")
    client.rename(keys.earlier_counters, keys.counters(0))
    return moved + 1


def _tagged(place: Callable[[int, str], str], name: str) -> Callable[[int], str]:
    return lambda partition: place(partition, name)


def _partition_key(keys: KeyLayout, kind: str, rest: str) -> str | None:
    """The tagged key of an earlier progress, partition-users or timer key of the topic
    (`None`: another topic's)."""
    if kind == "o":
        group, topic, partition = rest.rsplit(":", 2)
        return keys.offset(int(partition), group) if topic == keys.topic else None
    topic, _, where = rest.partition(":")
    if topic != keys.topic:
        return None
    if kind == "pu":
        return keys.partition_users(int(where))
    partition, _, shard = where.partition(":")
    return keys.timer_shard(int(partition), int(shard)) if shard else keys.timers(int(partition))


def _split(
    client: redis.Redis,
    key: str,
    tagged: Callable[[int], str],
    names: Callable[[int], str],
    partitions: int,
) -> None:
    """Spread the members of the set `key` over the partitions' sets; list the set's name in
    each partition's `names` set that got members."""
    name = key.split(":", 2)[2]
    members = [cast(bytes, m).decode() for m in client.sscan_iter(key, count=_CHUNK)]
    by_partition: dict[int, list[str]] = defaultdict(list)
    for member, partition in zip(members, canonical_partitions(members, partitions), strict=True):
        by_partition[partition].append(member)
    with client.pipeline(transaction=True) as pipe:
        for partition, found in by_partition.items():
            for start in range(0, len(found), _CHUNK):
                pipe.sadd(tagged(partition), *found[start : start + _CHUNK])
            pipe.sadd(names(partition), name)
        pipe.delete(key)
        pipe.execute()
