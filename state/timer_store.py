"""Users' timers in Redis, per partition: small sharded sorted sets and an index of them.

A partition's timers are spread over `shards` sorted sets (member: user id,
score: the timer's event time in epoch seconds) so each stays small enough
for Redis's compact encoding, about 24 bytes a timer. An index sorted set
scores each shard at most its earliest due time. Reading what is due by a
watermark looks only at shards whose score has passed it; reading a shard
also finds its true earliest time, which the next commit writes back.

Writes are commands for the caller's transaction, so timers commit with the
state and offsets they belong to.

>>> timer_shard("alice", 4096)
3143
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis

from state.keys import KeyLayout

Command = tuple[str | bytes, ...]
"""A Redis command and its arguments, as strings and bytes."""

SHARDS_PER_READ = 128
"""Shards read in one round trip while collecting due timers."""


def timer_shard(user_id: str, shards: int) -> int:
    """The shard of a partition's timers that holds `user_id`'s."""
    return zlib.crc32(user_id.encode()) % shards


@dataclass(slots=True)
class DueTimers:
    """Timers of one partition read as due: `(due, user)` oldest first.

    `sources` maps each user read to the shard they were read from;
    `bounds` maps each shard read to the earliest due time left in it after
    these are taken (`inf`: none). A commit that takes these passes them back.
    """

    entries: list[tuple[int, str]] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    bounds: dict[int, float] = field(default_factory=dict)
    exhausted: bool = True
    """Whether every timer due by the watermark was read (none was left for later)."""


class TimerStore:
    """Timers of the topic's partitions under `keys`, spread over `shards` sets per partition."""

    def __init__(self, client: redis.Redis, keys: KeyLayout, shards: int) -> None:
        self.client = client
        self.keys = keys
        self.shards = shards

    def due(self, watermarks: Mapping[int, float], limit: int) -> dict[int, DueTimers]:
        """Up to `limit` timers per partition due by its watermark, from the earliest shards."""
        candidates = self._candidates(watermarks, limit)
        found: dict[int, DueTimers] = {}
        for partition, shards in candidates.items():
            if shards:
                found[partition] = self._collect(partition, shards, watermarks[partition], limit)
        return found

    def earliest(self, partitions: Sequence[int]) -> dict[int, float]:
        """A lower bound of each partition's earliest timer (`inf` when it has none)."""
        with self.client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.zrange(self.keys.timers(partition), 0, 0, withscores=True)
            firsts = cast(list[list[tuple[bytes, float]]], pipe.execute())
        return {
            partition: first[0][1] if first else math.inf
            for partition, first in zip(partitions, firsts, strict=True)
        }

    def writes(
        self, partition: int, timers: Mapping[str, int | None], taken: DueTimers | None = None
    ) -> list[Command]:
        """The commands that remove `taken` and store the new due times in `timers`, for the
        caller's transaction."""
        index = self.keys.timers(partition)
        commands: list[Command] = []
        removed: dict[int, list[str]] = defaultdict(list)
        if taken is not None:
            emptied = [str(shard) for shard, bound in taken.bounds.items() if math.isinf(bound)]
            if emptied:
                commands.append(("ZREM", index, *emptied))
            bounds = [(s, b) for s, b in taken.bounds.items() if not math.isinf(b)]
            if bounds:
                commands.append(("ZADD", index, *_scored(bounds)))
            for user_id, shard in taken.sources.items():
                rescheduled = timers.get(user_id) is not None
                if not rescheduled or timer_shard(user_id, self.shards) != shard:
                    removed[shard].append(user_id)  # a new due time in place replaces it
        added: dict[int, dict[str, int]] = defaultdict(dict)
        for user_id, due in timers.items():
            shard = timer_shard(user_id, self.shards)
            if due is None:
                removed[shard].append(user_id)
            else:
                added[shard][user_id] = due
        for shard, users in removed.items():
            commands.append(("ZREM", self.keys.timer_shard(partition, shard), *users))
        for shard, dues in added.items():
            commands.append(
                ("ZADD", self.keys.timer_shard(partition, shard), *_scored(dues.items()))
            )
        if added:
            earliest = [(shard, min(dues.values())) for shard, dues in added.items()]
            commands.append(("ZADD", index, "LT", *_scored(earliest)))
        return commands

    def _candidates(self, watermarks: Mapping[int, float], limit: int) -> dict[int, list[int]]:
        """Per partition, the shards that may hold timers due by its watermark, earliest first."""
        partitions = [p for p, watermark in watermarks.items() if not math.isinf(-watermark)]
        with self.client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.zrangebyscore(
                    self.keys.timers(partition),
                    "-inf",
                    watermarks[partition],
                    start=0,
                    num=limit,
                )
            replies = cast(list[list[bytes]], pipe.execute())
        return {
            partition: [int(shard) for shard in shards]
            for partition, shards in zip(partitions, replies, strict=True)
        }

    def _collect(
        self, partition: int, shards: list[int], watermark: float, limit: int
    ) -> DueTimers:
        """Read `shards` in index order until `limit` due timers are found."""
        found = DueTimers(exhausted=len(shards) < limit)
        for start in range(0, len(shards), SHARDS_PER_READ):
            left = limit - len(found.entries)
            if left <= 0:
                found.exhausted = False
                break
            chunk = shards[start : start + SHARDS_PER_READ]
            with self.client.pipeline(transaction=False) as pipe:
                for shard in chunk:
                    pipe.zrange(self.keys.timer_shard(partition, shard), 0, left, withscores=True)
                replies = cast(list[list[tuple[bytes, float]]], pipe.execute())
            for shard, entries in zip(chunk, replies, strict=True):
                _take(found, shard, entries, watermark, limit)
        found.entries.sort()
        return found


def _scored(entries: Iterable[tuple[str | int, float]]) -> list[str]:
    """ZADD's `score member` arguments for `(member, score)` entries.

    >>> _scored([("ann", 1700000000), (7, 1.5)])
    ['1700000000', 'ann', '1.5', '7']
    """
    return [text for member, score in entries for text in (repr(score), str(member))]


def _take(
    found: DueTimers,
    shard: int,
    entries: list[tuple[bytes, float]],
    watermark: float,
    limit: int,
) -> None:
    """Take a shard's due entries while there is room; note the earliest it has left.

    A shard is read one entry past the room left, so when it is not read to
    its end an entry is always left over, and its score is the shard's bound.
    """
    bound = math.inf
    for member, score in entries:
        if score <= watermark and len(found.entries) < limit:
            user_id = member.decode()
            found.entries.append((int(score), user_id))
            found.sources[user_id] = shard
            continue
        bound = score
        if score <= watermark:
            found.exhausted = False
        break
    found.bounds[shard] = bound
