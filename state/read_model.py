"""Queries over what the workers wrote: users, segment sizes, pipeline totals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import redis

from state.keys import KeyLayout
from state.redis_store import RedisStateStore


class ReadModel:
    """Read-only views of the segment store."""

    def __init__(self, client: redis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys
        self._store = RedisStateStore(client, keys, group="")

    def user(self, user_id: str) -> dict[str, Any] | None:
        """One user's exported document, or `None` when segstream has not seen them."""
        found = self._store.load([user_id]).get(user_id)
        return None if found is None else found.document(user_id)

    def users(self) -> Iterator[dict[str, Any]]:
        """Every user's exported document, in no particular order."""
        for user_id, user in self._store.users():
            yield user.document(user_id)

    def segment_sizes(self) -> dict[str, int]:
        """Members per segment, for every segment that has had a member."""
        members = cast(set[bytes], self.client.smembers(self.keys.segments))
        names = sorted(name.decode() for name in members)
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.scard(self.keys.members(name))
            sizes = pipe.execute()
        return dict(zip(names, sizes, strict=True))

    def counters(self) -> dict[str, int]:
        """Pipeline totals: `events`, `dead_letters`, `changes` and so on."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.counters))
        return {name.decode(): int(value) for name, value in raw.items()}
