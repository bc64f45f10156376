"""Per-partition event-time progress: what counts as late.

A partition's watermark is the largest event time seen on it minus the
allowed lateness, or a floor it was explicitly advanced to, whichever is
later. Events older than the watermark are late. The watermark moves with
each event in offset order, so which events are late depends only on the
partition's contents, never on how they were batched.

>>> clock = Watermark(lateness=3600)
>>> clock.admit(10_000.0), clock.admit(7_000.0), clock.admit(6_000.0)
(True, True, False)
>>> clock.value
6400.0
>>> clock.advance_to(20_000.0)
>>> clock.admit(19_999.0)
False
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class Watermark:
    """Event-time progress of one partition; times are epoch seconds."""

    lateness: float
    max_event_time: float = -math.inf
    floor: float = -math.inf

    @property
    def value(self) -> float:
        """Events older than this are late."""
        return max(self.max_event_time - self.lateness, self.floor)

    def admit(self, moment: float) -> bool:
        """Whether an event at ``moment`` is on time; on-time events move the watermark."""
        if moment < self.value:
            return False
        if moment > self.max_event_time:
            self.max_event_time = moment
        return True

    def advance_to(self, moment: float) -> None:
        """Declare that no event before ``moment`` will come (e.g. at the end of a replay)."""
        self.floor = max(self.floor, moment)
