"""The Redis implementation of :class:`~state.store.StateStore`.

One batch is one ``MULTI``/``EXEC`` transaction. The partitions' offset keys
are ``WATCH``ed and checked first, so a worker that lost a partition in a
rebalance cannot overwrite the state its successor has written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import cast

import orjson
import redis

from processors.user import UserState
from state.keys import KeyLayout
from state.store import BatchCommit, PartitionFencedError

_LOAD_CHUNK = 1_000


class RedisStateStore:
    """State of record in Redis, for the consumer ``group``."""

    def __init__(self, client: redis.Redis, keys: KeyLayout, group: str) -> None:
        self.client = client
        self.keys = keys
        self.group = group

    def load(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        """The stored state of each of ``user_ids`` that has one (one MGET per 1,000)."""
        ids = list(user_ids)
        found: dict[str, UserState] = {}
        for start in range(0, len(ids), _LOAD_CHUNK):
            chunk = ids[start : start + _LOAD_CHUNK]
            blobs = self.client.mget([self.keys.state(user_id) for user_id in chunk])
            for user_id, blob in zip(chunk, blobs, strict=True):
                if blob is not None:
                    found[user_id] = UserState.from_bytes(cast(bytes, blob))
        return found

    def committed_offsets(self, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        """The next offset to read of each partition, ``None`` where none is committed."""
        if not partitions:
            return {}
        keys = [self.keys.offset(self.group, topic, partition) for partition in partitions]
        values = self.client.mget(keys)
        return {
            partition: None if value is None else int(value)
            for partition, value in zip(partitions, values, strict=True)
        }

    def commit(self, batch: BatchCommit) -> None:
        """Write ``batch`` in one transaction, fenced on its partitions' offsets."""
        offset_keys = [self.keys.offset(self.group, r.topic, r.partition) for r in batch.ranges]
        with self.client.pipeline(transaction=True) as pipe:
            try:
                if offset_keys:
                    pipe.watch(*offset_keys)  # type: ignore[no-untyped-call]
                    stored = pipe.mget(offset_keys)
                    for committed, consumed in zip(stored, batch.ranges, strict=True):
                        expected = None if consumed.start is None else str(consumed.start)
                        actual = None if committed is None else cast(bytes, committed).decode()
                        if actual != expected:
                            raise PartitionFencedError(
                                f"{consumed.topic}[{consumed.partition}] is at offset {actual}, "
                                f"this worker expected {expected}"
                            )
                pipe.multi()
                self._write(pipe, batch, offset_keys)
                pipe.execute()
            except redis.WatchError as error:
                raise PartitionFencedError("a partition was committed concurrently") from error

    def _write(
        self, pipe: redis.client.Pipeline, batch: BatchCommit, offset_keys: list[str]
    ) -> None:
        keys = self.keys
        for user_id, user in batch.users.items():
            pipe.set(keys.state(user_id), user.to_bytes())
        for change in batch.changes:
            pipe.hset(
                keys.labels(change.user_id),
                mapping={
                    "segments": orjson.dumps(change.segments),
                    "version": change.version,
                    "event_time": change.event_time,
                },
            )
            for segment in change.entered:
                pipe.sadd(keys.members(segment), change.user_id)
            for segment in change.exited:
                pipe.srem(keys.members(segment), change.user_id)
        entered = {segment for change in batch.changes for segment in change.entered}
        if entered:
            pipe.sadd(keys.segments, *entered)
        for name, amount in batch.counters.items():
            if amount:
                pipe.hincrby(keys.counters, name, amount)
        for key, consumed in zip(offset_keys, batch.ranges, strict=True):
            pipe.set(key, consumed.end)

    def users(self) -> Iterator[tuple[str, UserState]]:
        """Every stored user, scanned in chunks."""
        batch: list[str] = []
        for key in self.client.scan_iter(match=self.keys.state_pattern(), count=_LOAD_CHUNK):
            batch.append(key.decode())
            if len(batch) >= _LOAD_CHUNK:
                yield from self._decode(batch)
                batch = []
        if batch:
            yield from self._decode(batch)

    def _decode(self, state_keys: list[str]) -> Iterator[tuple[str, UserState]]:
        for key, blob in zip(state_keys, self.client.mget(state_keys), strict=True):
            if blob is not None:
                yield self.keys.user_of_state(key), UserState.from_bytes(cast(bytes, blob))
