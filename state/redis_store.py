"""The Redis implementation of :class:`~state.store.StateStore`.

Each partition of a batch is one script call on keys of one hash tag, so it
runs on Redis Cluster as on a single Redis. The script checks the partition's
stored offset first and writes only when it is the one the worker read from,
so a worker that lost a partition in a rebalance cannot overwrite the state
its successor has written; like a transaction, it runs whole, with nothing in
between. One call and one reply per partition: a MULTI/EXEC of the same
commands took three round trips and a reply per command.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import cast

import orjson
import redis

from processors._core import User
from state.keys import KeyLayout
from state.store import BatchCommit, PartitionCommit, PartitionProgress
from state.timer_store import Command, DueTimers, TimerStore

TIMER_SHARDS = 4096
"""Default number of sorted sets each partition's timers are spread over."""

_LOAD_CHUNK = 1_000
_CHUNK = 1_000
"""Keys or members per command in a commit (a script's command takes at most about 8,000
arguments)."""

_COMMIT = """
local stored = redis.call('GET', KEYS[1])
local offset = stored and string.match(stored, '^%d+') or ''
if offset ~= ARGV[1] then
  return offset
end
local i, n = 3, #ARGV
while i <= n do
  local count = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + count))
  i = i + count + 1
end
redis.call('SET', KEYS[1], ARGV[2])
return false
"""
"""A partition's commit: when the offset stored at KEYS[1] is ARGV[1] (empty: none), run
the commands that follow ARGV[2] (each as its argument count, then its arguments) and
store ARGV[2] as the progress; otherwise change nothing and answer the stored offset."""


class EarlierLayoutError(RuntimeError):
    """The store holds keys of the layout before partition hash tags."""


class RedisStateStore:
    """State of record in Redis (a single node or a cluster), for the consumer `group`."""

    def __init__(
        self, client: redis.Redis, keys: KeyLayout, group: str, timer_shards: int = TIMER_SHARDS
    ) -> None:
        self.client = client
        self.keys = keys
        self.group = group
        self.timers = TimerStore(client, keys, timer_shards)
        self._commit_script = client.register_script(_COMMIT)

    def rows(self, users: Mapping[int, Iterable[str]]) -> dict[str, bytes]:
        """The state row of each user that has one, from users by partition (one round trip,
        an MGET per 1,000 users)."""
        chunks = []
        for partition, user_ids in users.items():
            ids = list(user_ids)
            chunks += [
                (partition, ids[start : start + _LOAD_CHUNK])
                for start in range(0, len(ids), _LOAD_CHUNK)
            ]
        if not chunks:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for partition, chunk in chunks:
                # A cluster pipeline refuses `mget()` without looking at the keys; these share
                # the partition's slot, so the command itself is taken.
                pipe.execute_command(  # type: ignore[no-untyped-call]
                    "MGET", *(self.keys.state(partition, user_id) for user_id in chunk)
                )
            replies = cast(list[list[bytes | None]], pipe.execute())
        return {
            user_id: blob
            for (_, chunk), blobs in zip(chunks, replies, strict=True)
            for user_id, blob in zip(chunk, blobs, strict=True)
            if blob is not None
        }

    def progress(self, partitions: Sequence[int]) -> dict[int, PartitionProgress]:
        """The committed progress of each partition that has one."""
        if not partitions:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.get(self.keys.offset(partition, self.group))
            values = cast(list[bytes | None], pipe.execute())
        return {
            partition: PartitionProgress.parse(value.decode())
            for partition, value in zip(partitions, values, strict=True)
            if value is not None
        }

    def claim_partition_count(self, partitions: int) -> int:
        """The topic's partition count the state was built with; `partitions` if none yet.

        Raises :class:`EarlierLayoutError` when the store was written with the
        layout before partition hash tags.
        """
        if self.client.exists(self.keys.earlier_counters):
            raise EarlierLayoutError(
                f"the store holds keys of the earlier layout ({self.keys.earlier_counters} "
                "and keys without partition tags): convert it with `segstream migrate`"
            )
        key = self.keys.partition_count
        self.client.set(key, partitions, nx=True)
        return int(cast(bytes, self.client.get(key)))

    def partition_count(self) -> int:
        """The topic's partition count the state was built with; 0 before any worker ran."""
        found = self.client.get(self.keys.partition_count)
        return 0 if found is None else int(cast(bytes, found))

    def partition_users(self, partition: int) -> Iterator[list[str]]:
        """Every user whose events arrive on the partition, in chunks of about 1,000."""
        key = self.keys.partition_users(partition)
        chunk: list[str] = []
        for member in self.client.sscan_iter(key, count=_LOAD_CHUNK):
            chunk.append(cast(bytes, member).decode())
            if len(chunk) >= _LOAD_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def due_timers(self, watermarks: Mapping[int, float], limit: int) -> dict[int, DueTimers]:
        """Up to `limit` timers per partition due by its watermark, oldest first."""
        return self.timers.due(watermarks, limit)

    def commit(self, batch: BatchCommit) -> dict[int, str]:
        """Write each partition of `batch` in a transaction of its own, fenced on the
        partition's offset; the partitions fenced, with why (their part is dropped)."""
        fenced: dict[int, str] = {}
        for part in batch.partitions:
            refused = self._commit_partition(part, batch.rules_version)
            if refused is not None:
                fenced[part.partition] = refused
        return fenced

    def _commit_partition(self, part: PartitionCommit, rules_version: str) -> str | None:
        """Commit one partition's part; why it was fenced, `None` when it was committed."""
        expected = "" if part.start is None else str(part.start)
        arguments: list[str | bytes] = [expected, part.progress.encode()]
        for command in self._writes(part, rules_version):
            arguments.append(str(len(command)))
            arguments.extend(command)
        stored = self._commit_script(
            keys=[self.keys.offset(part.partition, self.group)], args=arguments
        )
        if stored is None:
            return None
        return f"at offset {stored.decode() or None}, this worker expected {part.start}"

    def _writes(self, part: PartitionCommit, rules_version: str) -> list[Command]:
        """The commands that write one partition's part, all on keys of its hash tag."""
        keys, partition = self.keys, part.partition
        commands: list[Command] = []
        expired = set(part.expired_users)
        states = [
            item
            for user_id, row in part.rows.items()
            if user_id not in expired
            for item in (keys.state(partition, user_id), row)
        ]
        for start in range(0, len(states), 2 * _CHUNK):
            commands.append(("MSET", *states[start : start + 2 * _CHUNK]))
        for user_id, user in part.labelled.items():
            commands.append(
                (
                    "HSET",
                    keys.labels(partition, user_id),
                    "segments",
                    orjson.dumps(user.segments),
                    "cluster",
                    user.cluster or "",
                    "version",
                    str(user.version),
                    "model_version",
                    str(user.model_version or ""),
                    "event_time",
                    repr(user.as_of),
                    "rules_version",
                    rules_version,
                    "alias_of",
                    user.alias_of or "",
                )
            )
        sets = _SetChanges()
        for change in part.changes:
            for segment in change.entered:
                sets.add(keys.members(partition, segment), change.user_id)
            for segment in change.exited:
                sets.remove(keys.members(partition, segment), change.user_id)
            if change.cluster != change.previous_cluster:
                if change.previous_cluster is not None:
                    sets.remove(
                        keys.cluster_members(partition, change.previous_cluster), change.user_id
                    )
                if change.cluster is not None:
                    sets.add(keys.cluster_members(partition, change.cluster), change.user_id)
        for change in part.changes:
            for segment in change.entered:
                sets.add(keys.segments(partition), segment)
            if change.cluster is not None:
                sets.add(keys.clusters(partition), change.cluster)
        index = keys.partition_users(partition)
        for user_id in part.new_users:
            sets.add(index, user_id)
        for user_id in part.expired_users:
            sets.remove(index, user_id)
        commands += sets.commands()
        commands += [
            ("HINCRBY", keys.counters(partition), name, str(amount))
            for name, amount in part.counters.items()
            if amount
        ]
        gone = [
            key for user_id in part.expired_users for key in _user_keys(keys, partition, user_id)
        ]
        for start in range(0, len(gone), _CHUNK):
            commands.append(("DEL", *gone[start : start + _CHUNK]))
        if part.timers or part.taken:
            commands += self.timers.writes(partition, part.timers, part.taken)
        if part.evaluated:
            commands.append(("DEL", keys.evaluated(partition)))
            digests = [item for pair in part.evaluated.items() for item in pair]
            commands.append(("HSET", keys.evaluated(partition), *digests))
        return commands

    def users(self) -> Iterator[tuple[str, User]]:
        """Every stored user, a partition at a time, in chunks."""
        for partition in range(self.partition_count()):
            for chunk in self.partition_users(partition):
                for user_id, blob in self.rows({partition: chunk}).items():
                    yield user_id, User.from_bytes(blob)


def _user_keys(keys: KeyLayout, partition: int, user_id: str) -> tuple[str, str]:
    """A user's state and labels keys."""
    return keys.state(partition, user_id), keys.labels(partition, user_id)


class _SetChanges:
    """Members added to and removed from sets, in order, as a few SADD and SREM commands:
    for each set and member only the last change counts.

    >>> changes = _SetChanges()
    >>> changes.add("vip", "ann"); changes.add("vip", "bob"); changes.remove("vip", "ann")
    >>> changes.commands()
    [('SADD', 'vip', 'bob'), ('SREM', 'vip', 'ann')]
    """

    def __init__(self) -> None:
        self.last: dict[str, dict[str, bool]] = {}

    def add(self, key: str, member: str) -> None:
        self.last.setdefault(key, {})[member] = True

    def remove(self, key: str, member: str) -> None:
        self.last.setdefault(key, {})[member] = False

    def commands(self) -> list[Command]:
        """SADD and SREM commands of up to `_CHUNK` members each."""
        found: list[Command] = []
        for key, members in self.last.items():
            for verb, present in (("SADD", True), ("SREM", False)):
                chosen = [member for member, there in members.items() if there is present]
                for start in range(0, len(chosen), _CHUNK):
                    found.append((verb, key, *chosen[start : start + _CHUNK]))
        return found
