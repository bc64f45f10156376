"""The read API's queries: one user's labels, segment sizes and members, with asyncio Redis.

A user's keys are found from their canonical partition. Each lookup is one or
two round trips: the labels hash first, the state only when the id turns out
to be merged into another user or when the caller asks for features; on one
Redis they go through a :class:`~state.lane.Lane`. Sizes and member pages span
the partitions.

Example (with a Redis the workers write to)::

    lookups = Lookups(await async_redis_client(settings, 64), settings.key_layout())
    await lookups.user("ann")  # {"user_id": "ann", "segments": [...], ...}
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from processors._core import Classifier as CompiledRules
from processors._core import User
from processors.model import ModelSnapshot, SnapshotError, parse_snapshot
from processors.partitioner import canonical_partition
from state.keys import KeyLayout
from state.lane import Lane

_MAX_ALIAS_HOPS = 8


class CursorError(ValueError):
    """A members cursor that this API did not hand out."""


def encode_cursor(partition: int, scan_cursor: int, skip: int) -> str:
    """An opaque page cursor: the partition whose set is being walked, where SSCAN goes on,
    and how many of its next batch were served.

    >>> decode_cursor(encode_cursor(3, 1234, 7))
    (3, 1234, 7)
    """
    text = f"{partition}.{scan_cursor}.{skip}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int, int]:
    """Inverse of :func:`encode_cursor`; raises :class:`CursorError` for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        partition, scan, skip = (int(part) for part in text.split("."))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError(f"not a cursor of this API: {cursor[:40]!r}") from None
    if partition < 0 or scan < 0 or skip < 0:
        raise CursorError(f"not a cursor of this API: {cursor[:40]!r}")
    return partition, scan, skip


class Lookups:
    """Read-only queries for the HTTP API."""

    def __init__(self, client: aioredis.Redis, keys: KeyLayout, lane: Lane | None = None) -> None:
        self.client = client
        self.keys = keys
        self.lane = lane
        """Where a user's labels and state are read, when not through `client` (one Redis)."""
        self._partitions = 0
        """The events topic's partition count, once a worker stored it (it never changes)."""

    async def partitions(self) -> int:
        """The partition count the state was built with; 0 before any worker ran."""
        if not self._partitions:
            found = await self.client.get(self.keys.partition_count)
            self._partitions = 0 if found is None else int(cast(bytes, found))
        return self._partitions

    async def user(
        self, user_id: str, *, features: bool = False, classifier: CompiledRules | None = None
    ) -> dict[str, Any] | None:
        """The user's labels (and features as of their evaluation, traits, and the computed
        traits and predictions as `classifier` has them), following merged ids.

        `None` when segstream keeps nothing for the id.
        """
        partitions = await self.partitions()
        if not partitions:
            return None
        for _ in range(_MAX_ALIAS_HOPS):
            partition = canonical_partition(user_id, partitions)
            labels = await self._hgetall(self.keys.labels(partition, user_id))
            if labels.get(b"alias_of"):
                user_id = labels[b"alias_of"].decode()
                continue
            state = None
            if not labels or features:
                blob = await self._get(self.keys.state(partition, user_id))
                state = None if blob is None else User.from_bytes(blob)
                if state is not None and state.alias_of is not None:
                    user_id = state.alias_of
                    continue
            if not labels and state is None:
                return None
            found = _labels(user_id, labels, state)
            if features and state is not None:
                found["features"] = dict(state.features())
                found["traits"] = dict(state.traits())
                found["computed"] = {} if classifier is None else state.computed(classifier)
                found["predictions"] = None if classifier is None else state.predictions(classifier)
            return found
        return None

    async def _hgetall(self, key: str) -> dict[bytes, bytes]:
        if self.lane is not None:
            return await self.lane.hgetall(key)
        return cast(dict[bytes, bytes], await self.client.hgetall(key))

    async def _get(self, key: str) -> bytes | None:
        if self.lane is not None:
            return await self.lane.get(key)
        return cast(bytes | None, await self.client.get(key))

    async def sizes(self, set_keys: Sequence[Callable[[int], str]]) -> list[int]:
        """Members of each set, summed over the partitions' sets (`set_keys` name them by
        partition), in one round trip."""
        partitions = range(await self.partitions())
        async with self.client.pipeline(transaction=False) as pipe:
            for set_key in set_keys:
                for partition in partitions:
                    pipe.scard(set_key(partition))
            cards = cast(list[int], await pipe.execute())
        width = len(partitions)
        return [sum(cards[i * width : (i + 1) * width]) for i in range(len(set_keys))]

    async def evaluated(self) -> list[dict[str, str]]:
        """Per partition, the digest each segment was last evaluated with for all its users
        (empty: nothing recorded, as for a partition without users), in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for partition in range(await self.partitions()):
                pipe.hgetall(self.keys.evaluated(partition))
            found = cast(list[dict[bytes, bytes]], await pipe.execute())
        return [{k.decode(): v.decode() for k, v in record.items()} for record in found]

    async def known_segments(self) -> set[str]:
        """Every segment name that has had a member."""
        return await self._union(self.keys.segments)

    async def known_clusters(self) -> set[str]:
        """Every cluster id that has had a member."""
        return await self._union(self.keys.clusters)

    async def _union(self, set_key: Callable[[int], str]) -> set[str]:
        async with self.client.pipeline(transaction=False) as pipe:
            for partition in range(await self.partitions()):
                pipe.smembers(set_key(partition))
            listed = cast(list[set[bytes]], await pipe.execute())
        return {member.decode() for members in listed for member in members}

    async def members(
        self, set_key: Callable[[int], str], cursor: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        """Up to `limit` members of the partitions' sets (`set_key` names them by partition)
        from `cursor` on, and the next page's cursor (`None`: the last page).

        Walks the partitions in order, each with SSCAN: a member present for the
        whole walk is served at least once, and exactly once while the sets do not
        change (SSCAN repeats members only when a set is resized); members added or
        removed meanwhile may or may not be. Pages hold `limit` members but the last.
        """
        partition, scan, skip = decode_cursor(cursor) if cursor else (0, 0, 0)
        partitions = await self.partitions()
        page: list[str] = []
        while partition < partitions:
            after, batch = await self.client.sscan(set_key(partition), scan, count=max(limit, 100))
            members = [cast(bytes, member).decode() for member in batch][skip:]
            room = limit - len(page)
            if len(members) > room:
                page += members[:room]
                return page, encode_cursor(partition, scan, skip + room)
            page += members
            scan, skip = int(after), 0
            if scan == 0:
                partition += 1
            if len(page) == limit:
                more = partition < partitions
                return page, encode_cursor(partition, scan, 0) if more else None
        return page, None

    async def model(self) -> ModelSnapshot | None:
        """The latest model snapshot, or `None` before the first (or when it is unreadable)."""
        blob = await self._get(self.keys.model)
        if blob is None:
            return None
        try:
            return parse_snapshot(blob)
        except SnapshotError:
            return None


def _labels(user_id: str, labels: dict[bytes, bytes], state: User | None) -> dict[str, Any]:
    if labels:
        return {
            "user_id": user_id,
            "segments": orjson.loads(labels.get(b"segments", b"[]")),
            "cluster": labels.get(b"cluster", b"").decode() or None,
            "version": int(labels.get(b"version", b"0")),
            "model_version": int(labels[b"model_version"])
            if labels.get(b"model_version")
            else None,
            "rules_version": labels.get(b"rules_version", b"").decode() or None,
            "event_time": float(labels.get(b"event_time", b"0")),
        }
    assert state is not None
    return {
        "user_id": user_id,
        "segments": list(state.segments),
        "cluster": state.cluster,
        "version": state.version,
        "model_version": state.model_version,
        "rules_version": None,
        "event_time": state.as_of,
    }
