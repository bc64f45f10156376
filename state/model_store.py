"""Model snapshots in Redis: the latest one, a history, and the trainer's sample.

The trainer saves each snapshot here as well as on the compacted `models`
topic. Readers (the `profile` command, `evaluate`, the demo) take the latest
from here; a restarted trainer resumes from it and from the user sample saved
with it. The history keeps each snapshot's version, time, reason and clusters
(without percentiles) for stability and size-over-time reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import msgpack
import orjson
import redis

from processors.model import ModelSnapshot, parse_snapshot
from state.keys import KeyLayout

HISTORY_LENGTH = 2_000
"""Snapshots kept in the history list (the oldest are trimmed)."""


class ModelStore:
    """Where model snapshots are kept in Redis."""

    def __init__(self, client: redis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys

    def save(self, snapshot: ModelSnapshot, sample: Sequence[tuple[str, Sequence[float]]]) -> None:
        """Store `snapshot` as the latest, append it to the history, keep `sample` with it."""
        summary = snapshot.model_dump(mode="json", exclude={"quantiles"})
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.model, snapshot.to_json())
            pipe.rpush(self.keys.model_history, orjson.dumps(summary))
            pipe.ltrim(self.keys.model_history, -HISTORY_LENGTH, -1)
            pipe.set(
                self.keys.model_sample,
                msgpack.packb([[user_id, list(row)] for user_id, row in sample]),
            )
            pipe.execute()

    def latest(self) -> ModelSnapshot | None:
        """The latest snapshot; `None` when there is none. Raises `SnapshotError` when corrupt."""
        raw = cast(bytes | None, self.client.get(self.keys.model))
        return None if raw is None else parse_snapshot(raw)

    def sample(self) -> list[tuple[str, list[float]]]:
        """The user sample saved with the latest snapshot."""
        raw = cast(bytes | None, self.client.get(self.keys.model_sample))
        if raw is None:
            return []
        return [(str(user_id), list(row)) for user_id, row in msgpack.unpackb(raw)]

    def history(self) -> list[dict[str, Any]]:
        """Every kept snapshot summary, oldest first."""
        raw = cast(list[bytes], self.client.lrange(self.keys.model_history, 0, -1))
        return [orjson.loads(item) for item in raw]
