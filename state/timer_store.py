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
from typing import Any, cast

import redis

from state.keys import KeyLayout

Command = tuple[str | bytes, ...]
"""A Redis command and its arguments, as strings and bytes."""

_COLLECT = """
local watermark, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local shards = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit)
local later = redis.call(
  'ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local found, taken = {#shards < limit and 1 or 0, later[2] or 'inf'}, 0
for _, shard in ipairs(shards) do
  local left = limit - taken
  if left <= 0 then
    found[1] = 0
    break
  end
  local entries = redis.call('ZRANGE', KEYS[1] .. ':' .. shard, 0, left, 'WITHSCORES')
  local head, count, bound = #found, 0, 'inf'
  for i = 1, #entries, 2 do
    local score = tonumber(entries[i + 1])
    if score > watermark or taken >= limit then
      bound = entries[i + 1]
      if score <= watermark then
        found[1] = 0
      end
      break
    end
    found[head + 4 + 2 * count], found[head + 5 + 2 * count] = entries[i], entries[i + 1]
    count, taken = count + 1, taken + 1
  end
  found[head + 1], found[head + 2], found[head + 3] = shard, bound, count
end
return found
"""
"""Up to ARGV[2] timers due by the watermark ARGV[1] from the timer index KEYS[1]: the
shards the index scores by then, earliest first, each read one entry past the room left,
so that a shard not read to its end has an entry left over whose score is its bound.
Answers whether every due timer was read (1 or 0), the earliest index score after the
watermark (`inf`: none), then for each shard read its number, bound (`inf`: none left),
count and `member, score` pairs."""


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
    after: float = -math.inf
    """When `exhausted`, a lower bound of the partition's earliest timer once these are
    taken (`inf`: none left): until its watermark reaches it, nothing there is due."""


class TimerStore:
    """Timers of the topic's partitions under `keys`, spread over `shards` sets per partition."""

    def __init__(self, client: redis.Redis, keys: KeyLayout, shards: int) -> None:
        self.client = client
        self.keys = keys
        self.shards = shards
        self._collect = client.register_script(_COLLECT)

    def due(self, watermarks: Mapping[int, float], limit: int) -> dict[int, DueTimers]:
        """Up to `limit` timers per partition due by its watermark, from the earliest shards
        (a call of the script `_COLLECT` per partition, all in one pipeline); every
        partition asked has an entry, with when its next timer can be due.

        A server that does not know the script yet (it restarted, or a cluster node took a
        slot over) is sent it, and the partitions it refused are asked again.
        """
        asked = [(p, repr(mark)) for p, mark in watermarks.items() if not math.isinf(-mark)]
        with self.client.pipeline(transaction=False) as pipe:
            for partition, watermark in asked:
                # `execute_command`: a cluster pipeline refuses `evalsha()` by name
                index = self.keys.timers(partition)
                pipe.execute_command("EVALSHA", self._collect.sha, 1, index, watermark, limit)  # type: ignore[no-untyped-call]
            replies = pipe.execute(raise_on_error=False)
        found: dict[int, DueTimers] = {}
        for (partition, watermark), reply in zip(asked, replies, strict=True):
            if isinstance(reply, redis.exceptions.NoScriptError):
                reply = self._collect(keys=[self.keys.timers(partition)], args=[watermark, limit])
            elif isinstance(reply, Exception):
                raise reply
            found[partition] = _due_timers(reply)
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


def _scored(entries: Iterable[tuple[str | int, float]]) -> list[str]:
    """ZADD's `score member` arguments for `(member, score)` entries.

    >>> _scored([("ann", 1700000000), (7, 1.5)])
    ['1700000000', 'ann', '1.5', '7']
    """
    return [text for member, score in entries for text in (repr(score), str(member))]


def _due_timers(reply: list[Any]) -> DueTimers:
    """The due timers in a reply of `_COLLECT`.

    >>> reply = [1, b"1700000090", b"7", b"1700000060", 1, b"ann", b"1700000000", b"9", b"inf", 0]
    >>> due = _due_timers(reply)
    >>> due.entries, due.sources, due.bounds, due.exhausted, due.after
    ([(1700000000, 'ann')], {'ann': 7}, {7: 1700000060.0, 9: inf}, True, 1700000060.0)
    """
    found = DueTimers(exhausted=bool(reply[0]))
    at = 2
    while at < len(reply):
        shard, bound, count = int(reply[at]), float(reply[at + 1]), int(reply[at + 2])
        found.bounds[shard] = bound
        for index in range(at + 3, at + 3 + 2 * count, 2):
            user_id = reply[index].decode()
            found.entries.append((int(float(reply[index + 1])), user_id))
            found.sources[user_id] = shard
        at += 3 + 2 * count
    found.entries.sort()
    found.after = min([float(reply[1]), *found.bounds.values()])
    return found
