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


class ChangeReason:
    """Why a user's segments changed; carried as `reason` on change events."""

    EVENT = "event"
    TIME = "time"
    MERGE = "merge"
    EXPIRED = "expired"
    RULES = "rules"


@dataclass(frozen=True, slots=True)
class SegmentChange:
    """A user entered or left segments.

    `version` grows by one with every change of the same user, so a consumer
    that drops versions it has seen sees every transition exactly once.
    `event_time` is the event time (epoch seconds) the change is as of.
    """

    user_id: str
    entered: tuple[str, ...]
    exited: tuple[str, ...]
    segments: tuple[str, ...]
    version: int
    reason: str
    event_time: float

    def to_json(self, processed_at: float, rules_version: str) -> bytes:
        """The change as published on the change topic."""
        document: dict[str, Any] = {
            "user_id": self.user_id,
            "entered": self.entered,
            "exited": self.exited,
            "segments": self.segments,
            "version": self.version,
            "reason": self.reason,
            "event_time": self.event_time,
            "processed_at": processed_at,
            "rules_version": rules_version,
            "cluster": None,
            "model_version": None,
        }
        return orjson.dumps(document)


@dataclass(slots=True)
class UserLabels:
    """The segments one user is in now, and how many changes led here."""

    segments: tuple[str, ...] = ()
    version: int = 0

    def move_to(
        self, segments: tuple[str, ...], *, user_id: str, reason: str, event_time: float
    ) -> SegmentChange | None:
        """Adopt `segments`; return the change, or `None` when nothing moved."""
        if segments == self.segments:
            return None
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
        )
        self.segments = segments
        return change
