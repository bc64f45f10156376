"""The trainer's feed: each user's latest feature vector, sent once an interval.

A batch's step takes a vector of every user it touched. How many batches a
user's events fall into depends on how fast they arrive, so the worker does
not send every one: it keeps each user's latest vector and sends those held
every `vector_interval_ms` (or sooner, once `limit` users are held). The
trainer then learns from a user's profile about once an interval however the
events were batched, and the features topic carries a vector per user per
interval at most.

A vector taken after the user did something stays a behaviour vector when a
refresh (time moved on) replaces it, with the refresh's newer values.
Vectors are training input: a worker that crashes loses the ones it held,
which the users' next events replace.

>>> from processors._core import FEATURE_NAMES
>>> feed = VectorFeed(interval=1.0, limit=10, started=0.0)
>>> zeros = (0.0,) * len(FEATURE_NAMES)
>>> feed.add([FeatureVector("u1", 60.0, zeros), FeatureVector("u2", 60.0, zeros)])
>>> feed.add([FeatureVector("u1", 90.0, zeros, refresh=True)])
>>> feed.due(now=0.5)
[]
>>> [(v.user_id, v.as_of, v.refresh) for v in feed.due(now=1.0)]
[('u1', 90.0, False), ('u2', 60.0, False)]
>>> feed.due(now=2.5)
[]
"""

from __future__ import annotations

from collections.abc import Iterable

from processors._core import FeatureVector


class VectorFeed:
    """Users' latest feature vectors, due every `interval` s or once `limit` are held."""

    def __init__(self, interval: float, limit: int, started: float) -> None:
        self.interval = interval
        self.limit = limit
        self.sent_at = started
        """When the held vectors were last taken (a monotonic clock's time)."""
        self.latest: dict[str, FeatureVector] = {}

    def add(self, vectors: Iterable[FeatureVector]) -> None:
        """Hold each vector in place of its user's earlier one."""
        latest = self.latest
        for vector in vectors:
            if vector.refresh:
                held = latest.get(vector.user_id)
                if held is not None and not held.refresh:
                    vector = FeatureVector(
                        vector.user_id, vector.as_of, vector.values, computed=vector.computed
                    )
            latest[vector.user_id] = vector

    def due(self, now: float) -> list[FeatureVector]:
        """The held vectors when `interval` s have passed since the last were taken, or
        `limit` are held; none otherwise."""
        if now - self.sent_at < self.interval and len(self.latest) < self.limit:
            return []
        return self.take(now)

    def take(self, now: float) -> list[FeatureVector]:
        """Every held vector, now."""
        taken = list(self.latest.values())
        self.latest.clear()
        self.sent_at = now
        return taken
