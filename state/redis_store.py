"""The Redis implementation of :class:`~state.store.StateStore`.

A batch is committed in `MULTI`/`EXEC` transactions whose partitions' offset
keys are `WATCH`ed and checked first, so a worker that lost a partition in a
rebalance cannot overwrite the state its successor has written. On a single
Redis the partitions of a quiet batch share one transaction (three round trips
for the batch), and a partition with many rows gets one of its own, so that one
`EXEC` never holds Redis long; on a Redis Cluster each partition is a
transaction of its own, on keys of its hash tag. Inside, a partition's state
rows are one `MSET`, and a set's members gained and lost one `SADD` and one
`SREM`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import cast

import redis
from redis.cluster import RedisCluster

from processors._core import FEATURE_NAMES, User, pack_labels
from state.activity import USER_LOG_LENGTH, activity_writes
from state.keys import KeyLayout
from state.store import BatchCommit, PartitionCommit, PartitionProgress, no_wait
from state.timer_store import Command, DueTimers, TimerStore
from state.transactions import Packed, Write, fenced_transaction

TIMER_SHARDS = 4096
"""Default number of sorted sets each partition's timers are spread over."""

_LOAD_CHUNK = 1_000
_SHARED_TRANSACTION_ROWS = 2_000
"""Most state rows partitions sharing a transaction write together (on a single Redis)."""


class EarlierLayoutError(RuntimeError):
    """The store holds keys of the layout before partition hash tags."""


def glob_escape(text: str) -> str:
    """`text` matched literally in a Redis glob pattern.

    >>> print(glob_escape("seg:{events*1}:[x]"))
    seg:{events\\*1}:\\[x\\]
    """
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStateStore:
    """State of record in Redis (a single node or a cluster), for the consumer `group`."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeyLayout,
        group: str,
        timer_shards: int = TIMER_SHARDS,
        user_changes_kept: int = USER_LOG_LENGTH,
    ) -> None:
        self.client = client
        self.keys = keys
        self.group = group
        self.user_changes_kept = user_changes_kept
        self.timers = TimerStore(client, keys, timer_shards)

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

    def adopted(self, partitions: Sequence[int]) -> set[int]:
        """The partitions whose users took over the labels of the generation replaced."""
        if not partitions:
            return set()
        with self.client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.exists(self.keys.adopted(partition))
            found = pipe.execute()
        return {p for p, present in zip(partitions, found, strict=True) if present}

    def mark_adopted(self, partition: int, replaced: int) -> None:
        """Note that the partition's users took over the labels of generation `replaced`."""
        self.client.set(self.keys.adopted(partition), replaced)

    def drop_partitions(self, partitions: Sequence[int]) -> int:
        """Delete every key of `partitions` under this layout (a generation that was
        replaced), a thousand at a time; returns how many."""
        removed = 0
        for partition in partitions:
            pattern = glob_escape(self.keys.tag(partition)) + ":*"
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=pattern, count=_LOAD_CHUNK):
                batch.append(key)
                if len(batch) >= _LOAD_CHUNK:
                    removed += int(self.client.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(self.client.unlink(*batch))
        return removed

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

    def users_between(self, partition: int, feature: str, low: float, high: float) -> list[str]:
        """The partition's users whose `feature`, at their latest evaluation, was from `low`
        to `high` (both included)."""
        found = self.client.zrangebyscore(self.keys.values(partition, feature), low, high)
        return [member.decode() for member in cast(list[bytes], found)]

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
        """Up to `limit` timers per partition due by its watermark, oldest first, and when
        each partition's next timer can be due (every partition asked has an entry)."""
        return self.timers.due(watermarks, limit)

    def commit(self, batch: BatchCommit, ready: Callable[[], None] = no_wait) -> dict[int, str]:
        """Write the partitions of `batch` in transactions fenced on their offsets; the
        partitions fenced, with why (their part is dropped). `ready` runs once, before the
        first `EXEC`: after its offsets are watched and checked and its commands queued."""
        fenced: dict[int, str] = {}
        waiting = [ready]
        for parts in self._transactions(batch.partitions):
            fenced |= self._commit_together(parts, batch.rules_version, waiting)
        return fenced

    def _transactions(self, parts: Sequence[PartitionCommit]) -> list[list[PartitionCommit]]:
        """`parts` grouped into transactions: on a cluster one a partition (its keys share a
        slot), else in order while their rows add up to `_SHARED_TRANSACTION_ROWS`."""
        if isinstance(self.client, RedisCluster):
            return [[part] for part in parts]
        groups: list[list[PartitionCommit]] = []
        rows = 0
        for part in parts:
            if not groups or rows + len(part.rows) > _SHARED_TRANSACTION_ROWS:
                groups.append([])
                rows = 0
            groups[-1].append(part)
            rows += len(part.rows)
        return groups

    def _commit_together(
        self, parts: list[PartitionCommit], rules_version: str, waiting: list[Callable[[], None]]
    ) -> dict[int, str]:
        """Commit `parts` in one transaction, after calling what is left in `waiting`; the
        partitions fenced, with why.

        When a watched offset moved before `EXEC`, each partition is tried alone again,
        which tells the partition that moved (committed concurrently) from the others.
        """
        offsets = [self.keys.offset(part.partition, self.group) for part in parts]
        fenced: dict[int, str] = {}
        with fenced_transaction(self.client) as transaction:
            values = transaction.watch(offsets)
            writing: list[PartitionCommit] = []
            for part, value in zip(parts, values, strict=True):
                offset = None if value is None else PartitionProgress.parse(value.decode()).offset
                if offset == part.start:
                    writing.append(part)
                else:
                    expected = part.start
                    fenced[part.partition] = f"at offset {offset}, this worker expected {expected}"
            if not writing:
                return fenced
            commands: list[Write] = []
            for part in writing:
                commands += self._writes(part, rules_version)
                commands.append(
                    ("SET", self.keys.offset(part.partition, self.group), part.progress.encode())
                )
            while waiting:
                waiting.pop()()
            if transaction.execute(commands):
                return fenced
        if len(parts) == 1:
            return {parts[0].partition: "committed concurrently"}
        for part in writing:
            fenced |= self._commit_together([part], rules_version, waiting)
        return fenced

    def _writes(self, part: PartitionCommit, rules_version: str) -> list[Write]:
        """The commands that write one partition's part, all on keys of its hash tag."""
        keys, partition = self.keys, part.partition
        commands: list[Write] = []
        expired = set(part.expired_users)
        rows = [
            item
            for user_id, row in part.rows.items()
            if user_id not in expired
            for item in (keys.state(partition, user_id), row)
        ]
        if rows:  # one command for the partition's users (one slot: see `rows`)
            commands.append(("MSET", *rows))
        for feature, scores in part.values.items():
            scored = [
                item
                for user_id, value in scores.items()
                if user_id not in expired
                for item in (repr(value), user_id)
            ]
            if scored:
                commands.append(("ZADD", keys.values(partition, feature), *scored))
        if part.labelled:
            labels = pack_labels(keys.labels(partition, ""), part.labelled, rules_version)
            commands.append(Packed(*labels))
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
        if part.expired_users:
            commands += [
                ("ZREM", keys.values(partition, feature), *part.expired_users)
                for feature in dict.fromkeys([*FEATURE_NAMES, *part.values])
            ]
            gone = (_user_keys(keys, partition, user_id) for user_id in part.expired_users)
            commands.append(("DEL", *(key for pair in gone for key in pair)))
        if part.recorded:
            commands.append(
                activity_writes(
                    keys, partition, part.changes, part.expired_users, self.user_changes_kept
                )
            )
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
        """One SADD and one SREM a set, for the members it gains and loses."""
        found: list[Command] = []
        for key, members in self.last.items():
            for verb, present in (("SADD", True), ("SREM", False)):
                chosen = [member for member, there in members.items() if there is present]
                if chosen:
                    found.append((verb, key, *chosen))
        return found
