"""The Redis implementation of :class:`~state.store.StateStore`.

One batch is one `MULTI`/`EXEC` transaction. The partitions' offset keys
are `WATCH`ed and checked first, so a worker that lost a partition in a
rebalance cannot overwrite the state its successor has written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import cast

import orjson
import redis

from processors._core import User
from state.keys import KeyLayout
from state.store import BatchCommit, PartitionFencedError, PartitionProgress
from state.timer_store import DueTimers, TimerStore

TIMER_SHARDS = 4096
"""Default number of sorted sets each partition's timers are spread over."""

_LOAD_CHUNK = 1_000


class RedisStateStore:
    """State of record in Redis, for the consumer `group`."""

    def __init__(
        self, client: redis.Redis, keys: KeyLayout, group: str, timer_shards: int = TIMER_SHARDS
    ) -> None:
        self.client = client
        self.keys = keys
        self.group = group
        self.timers = TimerStore(client, keys, timer_shards)

    def rows(self, user_ids: Iterable[str]) -> dict[str, bytes]:
        """The state row of each of `user_ids` that has one (one MGET per 1,000)."""
        ids = list(user_ids)
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), _LOAD_CHUNK):
            chunk = ids[start : start + _LOAD_CHUNK]
            blobs = self.client.mget([self.keys.state(user_id) for user_id in chunk])
            for user_id, blob in zip(chunk, blobs, strict=True):
                if blob is not None:
                    found[user_id] = cast(bytes, blob)
        return found

    def progress(self, topic: str, partitions: Sequence[int]) -> dict[int, PartitionProgress]:
        """The committed progress of each partition that has one."""
        if not partitions:
            return {}
        keys = [self.keys.offset(self.group, topic, partition) for partition in partitions]
        values = cast(list[bytes | None], self.client.mget(keys))
        return {
            partition: PartitionProgress.parse(value.decode())
            for partition, value in zip(partitions, values, strict=True)
            if value is not None
        }

    def claim_partition_count(self, topic: str, partitions: int) -> int:
        """The partition count of `topic` the state was built with; `partitions` if none yet."""
        key = self.keys.partition_count(topic)
        self.client.set(key, partitions, nx=True)
        return int(cast(bytes, self.client.get(key)))

    def partition_users(self, topic: str, partition: int) -> Iterator[list[str]]:
        """Every user whose events arrive on the partition, in chunks of about 1,000."""
        key = self.keys.partition_users(topic, partition)
        chunk: list[str] = []
        for member in self.client.sscan_iter(key, count=_LOAD_CHUNK):
            chunk.append(cast(bytes, member).decode())
            if len(chunk) >= _LOAD_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def due_timers(
        self, topic: str, watermarks: Mapping[int, float], limit: int
    ) -> dict[int, DueTimers]:
        """Up to `limit` timers per partition due by its watermark, oldest first."""
        return self.timers.due(topic, watermarks, limit)

    def commit(self, batch: BatchCommit) -> None:
        """Write `batch` in one transaction, fenced on its partitions' offsets."""
        keys = [self.keys.offset(self.group, p.topic, p.partition) for p in batch.partitions]
        with self.client.pipeline(transaction=True) as pipe:
            try:
                if keys:
                    pipe.watch(*keys)  # type: ignore[no-untyped-call]
                    stored = cast(list[bytes | None], pipe.mget(keys))
                    for value, consumed in zip(stored, batch.partitions, strict=True):
                        actual = None if value is None else PartitionProgress.parse(value.decode())
                        offset = None if actual is None else actual.offset
                        if offset != consumed.start:
                            raise PartitionFencedError(
                                f"{consumed.topic}[{consumed.partition}] is at offset {offset}, "
                                f"this worker expected {consumed.start}"
                            )
                pipe.multi()
                self._write(pipe, batch, keys)
                pipe.execute()
            except redis.WatchError as error:
                raise PartitionFencedError("a partition was committed concurrently") from error

    def _write(
        self, pipe: redis.client.Pipeline, batch: BatchCommit, offset_keys: list[str]
    ) -> None:
        keys = self.keys
        expired = {user_id for p in batch.partitions for user_id in p.expired_users}
        states = {
            keys.state(user_id): row
            for user_id, row in batch.rows.items()
            if user_id not in expired
        }
        if states:
            pipe.mset(states)  # one command for the batch's users
        for user_id, user in batch.labelled.items():
            pipe.hset(
                keys.labels(user_id),
                mapping={
                    "segments": orjson.dumps(user.segments),
                    "cluster": user.cluster or "",
                    "version": user.version,
                    "model_version": user.model_version or "",
                    "event_time": user.as_of,
                    "rules_version": batch.rules_version,
                    "alias_of": user.alias_of or "",
                },
            )
        for change in batch.changes:
            for segment in change.entered:
                pipe.sadd(keys.members(segment), change.user_id)
            for segment in change.exited:
                pipe.srem(keys.members(segment), change.user_id)
            if change.cluster != change.previous_cluster:
                if change.previous_cluster is not None:
                    pipe.srem(keys.cluster_members(change.previous_cluster), change.user_id)
                if change.cluster is not None:
                    pipe.sadd(keys.cluster_members(change.cluster), change.user_id)
        entered = {segment for change in batch.changes for segment in change.entered}
        if entered:
            pipe.sadd(keys.segments, *entered)
        clusters = {change.cluster for change in batch.changes if change.cluster is not None}
        if clusters:
            pipe.sadd(keys.clusters, *clusters)
        for name, amount in batch.counters.items():
            if amount:
                pipe.hincrby(keys.counters, name, amount)
        for key, consumed in zip(offset_keys, batch.partitions, strict=True):
            pipe.set(key, consumed.progress.encode())
            index = keys.partition_users(consumed.topic, consumed.partition)
            if consumed.new_users:
                pipe.sadd(index, *consumed.new_users)
            if consumed.expired_users:
                pipe.srem(index, *consumed.expired_users)
                pipe.delete(*(keys.state(user_id) for user_id in consumed.expired_users))
                pipe.delete(*(keys.labels(user_id) for user_id in consumed.expired_users))
            if consumed.timers or consumed.taken:
                self.timers.write(
                    pipe, consumed.topic, consumed.partition, consumed.timers, consumed.taken
                )

    def users(self) -> Iterator[tuple[str, User]]:
        """Every stored user, scanned in chunks."""
        batch: list[str] = []
        for key in self.client.scan_iter(match=self.keys.state_pattern(), count=_LOAD_CHUNK):
            batch.append(key.decode())
            if len(batch) >= _LOAD_CHUNK:
                yield from self._decode(batch)
                batch = []
        if batch:
            yield from self._decode(batch)

    def _decode(self, state_keys: list[str]) -> Iterator[tuple[str, User]]:
        for key, blob in zip(state_keys, self.client.mget(state_keys), strict=True):
            if blob is not None:
                yield self.keys.user_of_state(key), User.from_bytes(cast(bytes, blob))
