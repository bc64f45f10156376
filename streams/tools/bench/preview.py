"""The bench's rules-preview figure: `segstream rules preview` of a tightened threshold
over a store of `preview_users` users.

A run of a million simulated events stores about 15,000 users (the simulation's
users arrive over its 180 days), so the store previewed is made of the
one-worker run's users, their state rows copied under new ids (`<id>~<n>`) to
the partitions those ids belong to, with the run's watermarks::

    fill_preview_store(one, store_settings, users=100_000)
    seconds, previewed = preview_seconds(store_settings)
"""

from __future__ import annotations

import time
from collections import defaultdict

from processors._core import User
from processors.partitioner import canonical_partitions
from processors.rules import parse_rules
from state.redis_store import RedisStateStore
from state.store import BatchCommit, PartitionCommit
from streams.redis_clients import redis_client
from streams.rules_feed import load_rules
from streams.rules_preview import preview_rules
from streams.settings import Settings
from streams.tools.preview_table import tightened_default_rules

_CHUNK = 2_000
"""Users written per transaction."""


def fill_preview_store(source: Settings, target: Settings, users: int) -> int:
    """Write `users` users into `target`'s keys, copied from `source`'s stored users; returns
    how many were written."""
    client = redis_client(source)
    try:
        store = RedisStateStore(client, source.key_layout(), source.group_id)
        partitions = list(range(store.partition_count() or source.partitions))
        progress = store.progress(partitions)
        rows = [
            (user_id, row)
            for partition in partitions
            for chunk in store.partition_users(partition)
            for user_id, row in store.rows({partition: chunk}).items()
        ]
    finally:
        client.close()
    if not rows or not progress:
        return 0
    latest = max(progress.values(), key=lambda found: found.max_event_time)
    rounds = -(-users // len(rows))
    copies = [(f"{user_id}~{n}", row) for n in range(rounds) for user_id, row in rows][:users]
    owners = canonical_partitions([user_id for user_id, _ in copies], len(partitions))
    by_partition: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
    for (user_id, row), partition in zip(copies, owners, strict=True):
        by_partition[partition].append((user_id, row))
    client = redis_client(target)
    try:
        store = RedisStateStore(client, target.key_layout(), target.group_id)
        store.claim_partition_count(len(partitions))
        for partition, found in by_partition.items():
            start = None
            for first in range(0, len(found), _CHUNK):
                chunk = dict(found[first : first + _CHUNK])
                part = PartitionCommit(
                    partition,
                    start,
                    latest,
                    rows=chunk,
                    labelled={user_id: User.from_bytes(row) for user_id, row in chunk.items()},
                    new_users=list(chunk),
                )
                store.commit(BatchCommit([part], "bench"))
                start = latest.offset
    finally:
        client.close()
    return len(copies)


def preview_seconds(settings: Settings) -> tuple[float, int]:
    """Seconds a rules preview of a tightened threshold takes over every stored user, and
    how many users it evaluated."""
    client = redis_client(settings)
    try:
        current = load_rules(settings)
        candidate = parse_rules(tightened_default_rules(), source="tightened")
        started = time.monotonic()
        found = preview_rules(client, settings, current, candidate, examples=5)
        return time.monotonic() - started, int(found["users"])
    finally:
        client.close()
