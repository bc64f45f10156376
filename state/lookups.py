"""The read API's queries: one user's labels, segment sizes and members, with asyncio Redis.

Each lookup is one or two round trips: the labels hash first, the state
only when the id turns out to be merged into another user or when the caller
asks for features.

Example (with a Redis the workers write to)::

    lookups = Lookups(redis.asyncio.Redis.from_url(url), KeyLayout("seg"))
    await lookups.user("ann")  # {"user_id": "ann", "segments": [...], ...}
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from processors._core import User
from processors.model import ModelSnapshot, SnapshotError, parse_snapshot
from state.keys import KeyLayout

_MAX_ALIAS_HOPS = 8


class CursorError(ValueError):
    """A members cursor that this API did not hand out."""


def encode_cursor(scan_cursor: int, skip: int) -> str:
    """An opaque page cursor: where SSCAN goes on, and how many of its next batch were served.

    >>> decode_cursor(encode_cursor(1234, 7))
    (1234, 7)
    """
    return base64.urlsafe_b64encode(f"{scan_cursor}.{skip}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """Inverse of :func:`encode_cursor`; raises :class:`CursorError` for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        scan, skip = (int(part) for part in text.split("."))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError(f"not a cursor of this API: {cursor[:40]!r}") from None
    if scan < 0 or skip < 0:
        raise CursorError(f"not a cursor of this API: {cursor[:40]!r}")
    return scan, skip


class Lookups:
    """Read-only queries for the HTTP API."""

    def __init__(self, client: aioredis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys

    async def user(self, user_id: str, *, features: bool = False) -> dict[str, Any] | None:
        """The user's labels (and features as of their evaluation), following merged ids.

        `None` when segstream keeps nothing for the id.
        """
        for _ in range(_MAX_ALIAS_HOPS):
            labels = cast(dict[bytes, bytes], await self.client.hgetall(self.keys.labels(user_id)))
            if labels.get(b"alias_of"):
                user_id = labels[b"alias_of"].decode()
                continue
            state = None
            if not labels or features:
                blob = await self.client.get(self.keys.state(user_id))
                state = None if blob is None else User.from_bytes(cast(bytes, blob))
                if state is not None and state.alias_of is not None:
                    user_id = state.alias_of
                    continue
            if not labels and state is None:
                return None
            found = _labels(user_id, labels, state)
            if features and state is not None:
                found["features"] = dict(state.features())
            return found
        return None

    async def sizes(self, keys: list[str]) -> list[int]:
        """SCARD of each set key, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.scard(key)
            return cast(list[int], await pipe.execute())

    async def known_segments(self) -> set[str]:
        """Every segment name that has had a member."""
        names = cast(set[bytes], await self.client.smembers(self.keys.segments))
        return {name.decode() for name in names}

    async def known_clusters(self) -> set[str]:
        """Every cluster id that has had a member."""
        ids = cast(set[bytes], await self.client.smembers(self.keys.clusters))
        return {identifier.decode() for identifier in ids}

    async def members(
        self, key: str, cursor: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        """Up to `limit` members of the set `key` from `cursor` on, and the next page's cursor.

        Built on SSCAN: a member present for the whole walk is served at least
        once; members added or removed meanwhile may or may not be.
        """
        scan, skip = decode_cursor(cursor) if cursor else (0, 0)
        page: list[str] = []
        while True:
            after, batch = await self.client.sscan(key, scan, count=max(limit, 100))
            members = [cast(bytes, member).decode() for member in batch][skip:]
            room = limit - len(page)
            if len(members) > room:
                page += members[:room]
                return page, encode_cursor(scan, skip + room)
            page += members
            scan, skip = int(after), 0
            if scan == 0:
                return page, None
            if len(page) == limit:
                return page, encode_cursor(scan, 0)

    async def model(self) -> ModelSnapshot | None:
        """The latest model snapshot, or `None` before the first (or when it is unreadable)."""
        blob = await self.client.get(self.keys.model)
        if blob is None:
            return None
        try:
            return parse_snapshot(cast(bytes, blob))
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
