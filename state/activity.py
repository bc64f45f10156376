"""What happened to segments and users, kept in Redis for the console.

Three records, all written by the workers and read by `segstream api`:

- **Moves**: per partition, how many users entered and left each segment and cluster
  since the store began (a hash of counters, `KeyLayout.moves`), written in the same
  transaction as the membership they count.
- **Change logs**: per partition and segment (or cluster) the latest
  `SEGMENT_LOG_LENGTH` entries and exits, and per user the latest `USER_LOG_LENGTH`
  changes, newest first, also in the batch's transaction. An erased or expired user's
  log goes with their state.
- **Size history**: once a minute one worker (the first to claim the minute) samples
  every segment's and cluster's size and the moves' totals; the last `MINUTES` samples
  and one an hour for `HOURS` hours are kept.

These keys belong to no generation: a rebuild (`rules apply --backfill`) replays
history without adding to them, and they outlive the switch. Example::

    commands = activity_writes(keys, 3, step.changes, expired=[])
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import redis
import redis.asyncio as aioredis

from processors._core import SegmentChange, pack_activity
from state.keys import KeyLayout
from state.transactions import Packed

log = logging.getLogger(__name__)

USER_LOG_LENGTH = 50
"""Changes kept per user by default (`SEGSTREAM_USER_CHANGES_KEPT`)."""
SEGMENT_LOG_LENGTH = 100
"""Entries and exits kept per segment (and cluster) and partition."""
MINUTES = 24 * 60
"""Minute samples kept: the last day."""
HOURS = 30 * 24
"""Hour samples kept: the last 30 days."""
_CLAIM_SECONDS = 3 * 3600


def activity_writes(
    keys: KeyLayout,
    partition: int,
    changes: Sequence[SegmentChange],
    expired: Sequence[str],
    user_changes_kept: int = USER_LOG_LENGTH,
) -> Packed:
    """The commands that count and log one partition's `changes` (each user's latest
    `user_changes_kept`), and drop the logs of its `expired` (and erased) users, packed by
    the core (:func:`processors._core.pack_activity` says what each is).

    >>> from processors._core import SegmentChange
    >>> erased = SegmentChange.tombstone("ann", 60.0)  # a tombstone moves nothing
    >>> for command in activity_writes(KeyLayout(), 0, [erased], ["ann"]).commands():
    ...     print(command)
    ('DEL', b'seg:a:{events.0}:hu:ann')
    """
    data, count = pack_activity(
        {
            "moves": keys.moves(partition),
            "segment_log": keys.segment_log(partition, ""),
            "cluster_log": keys.cluster_log(partition, ""),
            "user_log": keys.user_log(partition, ""),
        },
        changes,
        expired,
        user_changes_kept,
        SEGMENT_LOG_LENGTH,
    )
    return Packed(data, count)


@dataclass(frozen=True, slots=True)
class SizeSample:
    """Sizes at one `time` (epoch s): per segment and cluster, and the moves' totals so far
    (`+name` entries and `-name` exits; clusters as `@id`).

    >>> sample = SizeSample(120.0, {"VIP": 3}, {"c1": 5}, {"+VIP": 4, "-VIP": 1})
    >>> SizeSample.parse(sample.encode()) == sample
    True
    """

    time: float
    segments: Mapping[str, int]
    clusters: Mapping[str, int] = field(default_factory=dict)
    moves: Mapping[str, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The sample as stored."""
        return orjson.dumps(
            {
                "time": self.time,
                "segments": self.segments,
                "clusters": self.clusters,
                "moves": self.moves,
            }
        )

    @classmethod
    def parse(cls, blob: bytes) -> SizeSample:
        """Inverse of :meth:`encode`."""
        body = orjson.loads(blob)
        return cls(
            float(body["time"]), body["segments"], body.get("clusters", {}), body.get("moves", {})
        )

    def size(self, name: str) -> int | None:
        """The size of a segment, or of a cluster given as `@id`; `None`: not sampled."""
        if name.startswith("@"):
            return self.clusters.get(name[1:])
        return self.segments.get(name)


class SizeRecorder:
    """A worker's sampler of the size history: :meth:`tick` after every batch."""

    def __init__(self, client: redis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys
        self.minute = 0
        """The last minute this worker tried to sample."""

    def tick(self, now: float, segments: Sequence[str], generation: int, partitions: int) -> None:
        """Sample the minute holding `now` unless another worker has (or this one tried)."""
        minute = int(now // 60)
        if minute == self.minute or not partitions:
            return
        self.minute = minute
        try:
            if not self.client.set(
                self.keys.size_sampled(str(minute)), 1, nx=True, ex=_CLAIM_SECONDS
            ):
                return
            sample = self.sample(minute * 60.0, segments, generation, partitions)
            hour = self.client.set(
                self.keys.size_sampled(f"h{minute // 60}"), 1, nx=True, ex=_CLAIM_SECONDS
            )
            with self.client.pipeline(transaction=False) as pipe:
                for resolution, kept, due in (("m", MINUTES, True), ("h", HOURS, bool(hour))):
                    if due:
                        pipe.lpush(self.keys.size_series(resolution), sample.encode())
                        pipe.ltrim(self.keys.size_series(resolution), 0, kept - 1)
                pipe.execute()
        except redis.RedisError as error:
            log.warning("sizes of minute %d not sampled: %s", minute, error)

    def sample(
        self, at: float, segments: Sequence[str], generation: int, partitions: int
    ) -> SizeSample:
        """Every segment's and cluster's size and the moves' totals now, under the keys of
        `generation`."""
        keys = self.keys.of_generation(generation)
        numbers = range(partitions)
        with self.client.pipeline(transaction=False) as pipe:
            for number in numbers:
                pipe.smembers(keys.clusters(number))
                pipe.hgetall(self.keys.moves(number))
            found: list[Any] = pipe.execute()
        clusters = sorted({c.decode() for members in found[0::2] for c in members})
        moves: dict[str, int] = {}
        for counts in found[1::2]:
            for name, count in counts.items():
                moves[name.decode()] = moves.get(name.decode(), 0) + int(count)
        with self.client.pipeline(transaction=False) as pipe:
            for segment in segments:
                for number in numbers:
                    pipe.scard(keys.members(number, segment))
            for cluster in clusters:
                for number in numbers:
                    pipe.scard(keys.cluster_members(number, cluster))
            cards = cast(list[int], pipe.execute())
        sums = [sum(cards[i : i + partitions]) for i in range(0, len(cards), partitions)]
        return SizeSample(
            at,
            dict(zip(segments, sums[: len(segments)], strict=True)),
            dict(zip(clusters, sums[len(segments) :], strict=True)),
            moves,
        )


@dataclass(frozen=True, slots=True)
class LoggedMove:
    """One entry to (`+`) or exit from (`-`) a segment or cluster."""

    time: float
    user_id: str
    direction: str
    reason: str


@dataclass(frozen=True, slots=True)
class LoggedChange:
    """One of a user's changes, as their log keeps it."""

    time: float
    entered: list[str]
    exited: list[str]
    cluster: str | None
    previous_cluster: str | None
    reason: str
    version: int


class ActivityReads:
    """The console's reads of the activity records, on the API's Redis client."""

    def __init__(self, client: aioredis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys

    async def moves(self, partitions: int) -> dict[str, int]:
        """The moves' totals now, over the partitions."""
        async with self.client.pipeline(transaction=False) as pipe:
            for number in range(partitions):
                pipe.hgetall(self.keys.moves(number))
            found = cast(list[dict[bytes, bytes]], await pipe.execute())
        totals: dict[str, int] = {}
        for counts in found:
            for name, count in counts.items():
                totals[name.decode()] = totals.get(name.decode(), 0) + int(count)
        return totals

    async def series(self, resolution: str, limit: int) -> list[SizeSample]:
        """The newest `limit` samples of a resolution (`m` or `h`), oldest first."""
        found = await self.client.lrange(self.keys.size_series(resolution), 0, limit - 1)
        return [SizeSample.parse(blob) for blob in reversed(cast(list[bytes], found))]

    async def latest_moves(self, name: str, partitions: int, limit: int) -> list[LoggedMove]:
        """The latest `limit` entries and exits of a segment, or of a cluster given as
        `@id`, newest first (by event time, then user id)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for number in range(partitions):
                key = (
                    self.keys.cluster_log(number, name[1:])
                    if name.startswith("@")
                    else self.keys.segment_log(number, name)
                )
                pipe.lrange(key, 0, limit - 1)
            found = cast(list[list[bytes]], await pipe.execute())
        moves = [LoggedMove(*orjson.loads(blob)) for entries in found for blob in entries]
        moves.sort(key=lambda move: (-move.time, move.user_id))
        return moves[:limit]

    async def user_changes(self, partition: int, user_id: str) -> list[LoggedChange]:
        """The user's latest changes, newest first."""
        found = await self.client.lrange(self.keys.user_log(partition, user_id), 0, -1)
        return [LoggedChange(*orjson.loads(blob)) for blob in cast(list[bytes], found)]


def moved_since(
    samples: Sequence[SizeSample], now: Mapping[str, int], name: str, seconds: float, at: float
) -> tuple[int, int]:
    """Entries and exits of `name` (a segment, or a cluster as `@id`) in the `seconds` before
    `at`: the totals `now` less those of the newest sample at least that old, or all of them
    while no sample is that old (the totals began with the store).

    >>> old = SizeSample(0.0, {}, {}, {"+VIP": 4, "-VIP": 1})
    >>> moved_since([old], {"+VIP": 10, "-VIP": 3}, "VIP", 3600, 3600.0)
    (6, 2)
    >>> moved_since([old], {"+VIP": 10, "-VIP": 3}, "VIP", 3600, 60.0)
    (10, 3)
    """
    before = [sample for sample in samples if sample.time <= at - seconds]
    then = before[-1].moves if before else {}
    entered = now.get(f"+{name}", 0) - then.get(f"+{name}", 0)
    left = now.get(f"-{name}", 0) - then.get(f"-{name}", 0)
    return entered, left
