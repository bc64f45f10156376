"""Queries over what the workers wrote: users, segment sizes, pipeline totals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import redis

from processors._core import User
from state.keys import KeyLayout
from state.redis_store import RedisStateStore

_MAX_ALIAS_HOPS = 8


class ReadModel:
    """Read-only views of the segment store."""

    def __init__(self, client: redis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys
        self._store = RedisStateStore(client, keys, group="")

    def user(self, user_id: str) -> dict[str, Any] | None:
        """One user's exported document, or `None` when segstream has not seen them.

        An id merged into another user (by `identify` or `alias`) gives that user.
        """
        for _ in range(_MAX_ALIAS_HOPS):
            row = self._store.rows([user_id]).get(user_id)
            if row is None:
                return None
            found = User.from_bytes(row)
            if found.alias_of is None:
                return found.document(user_id)
            user_id = found.alias_of
        return None

    def users(self) -> Iterator[dict[str, Any]]:
        """Every user's exported document, in no particular order; merged ids are left out.

        The export leaves out `version`: how many transitions a user went through
        can depend on when a merged id's history arrived, while what they are
        (features, segments, as of when) does not.
        """
        for user_id, user in self._store.users():
            if user.alias_of is None:
                document = user.document(user_id)
                del document["version"]
                yield document

    def segment_sizes(self) -> dict[str, int]:
        """Members per segment, for every segment that has had a member."""
        members = cast(set[bytes], self.client.smembers(self.keys.segments))
        names = sorted(name.decode() for name in members)
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.scard(self.keys.members(name))
            sizes = pipe.execute()
        return dict(zip(names, sizes, strict=True))

    def cluster_sizes(self) -> dict[str, int]:
        """Members per cluster id (`cold-start` included), for every cluster that has had one."""
        members = cast(set[bytes], self.client.smembers(self.keys.clusters))
        ids = sorted(identifier.decode() for identifier in members)
        with self.client.pipeline(transaction=False) as pipe:
            for identifier in ids:
                pipe.scard(self.keys.cluster_members(identifier))
            sizes = pipe.execute()
        return {identifier: size for identifier, size in zip(ids, sizes, strict=True) if size}

    def counters(self) -> dict[str, int]:
        """Pipeline totals: `events`, `dead_letters`, `changes` and so on."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.counters))
        return {name.decode(): int(value) for name, value in raw.items()}
