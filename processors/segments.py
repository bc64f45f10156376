"""Segment membership of one user and the change events it produces.

>>> labels = UserLabels(segments=("Buyers",), version=3)
>>> change = labels.move_to(("Browsers",), user_id="u1", reason="event", event_time=60.0)
>>> change.entered, change.exited, change.version, labels.version
(('Browsers',), ('Buyers',), 4, 4)
>>> labels.move_to(("Browsers",), user_id="u1", reason="event", event_time=61.0) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from processors.profile import CartLine


class ChangeReason:
    """Why a user's segments changed; carried as `reason` on change events."""

    EVENT = "event"
    TIME = "time"
    MERGE = "merge"
    EXPIRED = "expired"
    ERASED = "erased"
    RULES = "rules"
    MODEL = "model"
    DRIFT = "drift"


@dataclass(frozen=True, slots=True)
class SegmentChange:
    """A user entered or left segments, or moved to another cluster.

    `version` grows by one with every change of the same user, so a consumer
    that drops versions it has seen sees every transition exactly once.
    `event_time` is the event time (epoch seconds) the change is as of.
    `cluster` is the user's cluster id after the change (`None` before any
    model), `previous_cluster` the one before, and `model_version` the
    snapshot that placed them. `cart` holds the products in the user's open
    cart when they have one, and `cart_changed_at` when it last changed.
    """

    user_id: str
    entered: tuple[str, ...]
    exited: tuple[str, ...]
    segments: tuple[str, ...]
    version: int
    reason: str
    event_time: float
    cluster: str | None = None
    previous_cluster: str | None = None
    model_version: int | None = None
    cart: tuple[CartLine, ...] = ()
    cart_changed_at: int | None = None
    is_tombstone: bool = False

    @classmethod
    def tombstone(cls, user_id: str, event_time: float) -> SegmentChange:
        """The record after a user's erasure: published with no value, it removes the user from
        a compacted change topic, and a consumer forgets the versions it saw for them.

        >>> SegmentChange.tombstone("u1", 5.0).is_tombstone
        True
        """
        return cls(user_id, (), (), (), 0, ChangeReason.ERASED, event_time, is_tombstone=True)

    def to_json(self, processed_at: float, rules_version: str) -> bytes:
        """The change as published on the change topic."""
        document: dict[str, Any] = {
            "user_id": self.user_id,
            "entered": self.entered,
            "exited": self.exited,
            "segments": self.segments,
            "cluster": self.cluster,
            "previous_cluster": self.previous_cluster,
            "version": self.version,
            "reason": self.reason,
            "event_time": self.event_time,
            "processed_at": processed_at,
            "rules_version": rules_version,
            "model_version": self.model_version,
            "cart": None,
        }
        if self.cart:
            document["cart"] = {
                "products": [
                    {
                        "product_id": line.product or None,
                        "category": line.category or None,
                        "count": line.count,
                        "value": line.value,
                    }
                    for line in self.cart
                ],
                "value": round(sum(line.value for line in self.cart), 2),
                "changed_at": self.cart_changed_at,
            }
        return orjson.dumps(document)


@dataclass(slots=True)
class UserLabels:
    """The segments and cluster one user is in now, and how many changes led here.

    `model_version` is the snapshot the cluster was last assigned with.
    """

    segments: tuple[str, ...] = ()
    version: int = 0
    cluster: str | None = None
    model_version: int | None = None

    def move_to(
        self, segments: tuple[str, ...], *, user_id: str, reason: str, event_time: float
    ) -> SegmentChange | None:
        """Adopt `segments`; return the change, or `None` when nothing moved."""
        if segments == self.segments:
            return None
        return self._change(segments, self.cluster, user_id, reason, event_time)

    def place(
        self, cluster: str, model_version: int, *, user_id: str, reason: str, event_time: float
    ) -> SegmentChange | None:
        """Adopt `cluster` as placed by snapshot `model_version`; the change if it moved.

        >>> labels = UserLabels(segments=("Buyers",))
        >>> labels.place("c2", 7, user_id="u1", reason="event", event_time=1.0).cluster
        'c2'
        >>> labels.place("c2", 8, user_id="u1", reason="event", event_time=2.0) is None
        True
        >>> labels.model_version
        8
        """
        self.model_version = model_version
        if cluster == self.cluster:
            return None
        return self._change(self.segments, cluster, user_id, reason, event_time)

    def clear(self, *, user_id: str, reason: str, event_time: float) -> SegmentChange | None:
        """Leave every segment and the cluster (merged away or expired)."""
        if not self.segments and self.cluster is None:
            return None
        return self._change((), None, user_id, reason, event_time)

    def _change(
        self,
        segments: tuple[str, ...],
        cluster: str | None,
        user_id: str,
        reason: str,
        event_time: float,
    ) -> SegmentChange:
        before, after = set(self.segments), set(segments)
        self.version += 1
        change = SegmentChange(
            user_id=user_id,
            entered=tuple(name for name in segments if name not in before),
            exited=tuple(name for name in self.segments if name not in after),
            segments=segments,
            version=self.version,
            reason=reason,
            event_time=event_time,
            cluster=cluster,
            previous_cluster=self.cluster,
            model_version=self.model_version,
        )
        self.segments = segments
        self.cluster = cluster
        return change
