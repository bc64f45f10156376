"""Every rules publication, who made it and how, newest first (`KeyLayout.rules_history`).

The rules topic is compacted to the latest publication; this list keeps each one's
version, time, publisher (the admin token's name in the console, `cli:<login>` from
`segstream rules apply`), how it applies and its text, for the console's rules page::

    record(client, keys, Published(4, time.time(), "alice", "reevaluate", text))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, cast

import orjson
import redis
import redis.asyncio as aioredis

from state.keys import KeyLayout

KEPT = 500
"""Publications kept in the list."""

Mode = Literal["as users act", "reevaluate", "backfill"]


@dataclass(frozen=True, slots=True)
class Published:
    """One publication of a rules file.

    >>> entry = Published(3, 1.5, "alice", "reevaluate", "segments: []")
    >>> Published.parse(entry.encode()) == entry
    True
    """

    version: int
    published_at: float
    by: str
    mode: Mode
    text: str

    def encode(self) -> bytes:
        """The entry as stored."""
        return orjson.dumps(asdict(self))

    @classmethod
    def parse(cls, blob: bytes) -> Published:
        """Inverse of :meth:`encode`."""
        return cls(**orjson.loads(blob))


def record(client: redis.Redis, keys: KeyLayout, entry: Published) -> None:
    """Add `entry` to the history."""
    with client.pipeline(transaction=False) as pipe:
        pipe.lpush(keys.rules_history, entry.encode())
        pipe.ltrim(keys.rules_history, 0, KEPT - 1)
        pipe.execute()


async def history(client: aioredis.Redis, keys: KeyLayout, limit: int = KEPT) -> list[Published]:
    """The latest `limit` publications, newest first."""
    found = await client.lrange(keys.rules_history, 0, limit - 1)
    return [Published.parse(blob) for blob in cast(list[bytes], found)]
