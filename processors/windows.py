"""Sliding event-time windows over sparse buckets of integer counters.

A :class:`SlidingCounts` keeps one small vector of counters per bucket of
`width` seconds that has seen an event. A window of `n` buckets as of time
`t` sums the `n` buckets ending with the one that holds `t`: it covers
between `(n - 1) * width` and `n * width` seconds back from `t`. Adding
is commutative, so the counters do not depend on the order events arrive in.

>>> counts = SlidingCounts(width=3600, span=24)
>>> counts.add(10 * 3600 + 5, slot=0)
>>> counts.add(12 * 3600 + 9, slot=1, amount=2)
>>> counts.window(as_of=12 * 3600 + 60, buckets=2)
[0, 2]
>>> counts.window(as_of=12 * 3600 + 60, buckets=3)
[1, 2]
>>> counts.prune(as_of=40 * 3600)
>>> counts.buckets
{}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class SlidingCounts:
    """Counters per bucket of `width` seconds; windows read up to `span` buckets.

    `buckets` maps a bucket index (`floor(time / width)`) to its counters,
    one per slot; a vector grows as higher slots are used.
    """

    width: int
    span: int
    buckets: dict[int, list[int]] = field(default_factory=dict)
    _sums: dict[tuple[int, int], tuple[int, list[int]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Running sums per (buckets, skip) window: the last bucket index they end at, and totals."""

    def add(self, moment: float, slot: int, amount: int = 1) -> None:
        """Add `amount` to counter `slot` of the bucket holding `moment`."""
        index = int(moment // self.width)
        vector = self.buckets.setdefault(index, [])
        _grow(vector, slot + 1)
        vector[slot] += amount
        for (buckets, _), (last, totals) in self._sums.items():
            if last - buckets < index <= last:
                _grow(totals, slot + 1)
                totals[slot] += amount

    def window(self, as_of: float, buckets: int, *, skip: int = 0) -> list[int]:
        """Counters summed over `buckets` buckets ending `skip` buckets before `as_of`'s.

        Kept as running sums that slide forward with `as_of`, so reading a
        window again later costs only the buckets that entered or left it.
        """
        last = int(as_of // self.width) - skip
        cached = self._sums.get((buckets, skip))
        if cached is not None and cached[0] <= last < cached[0] + buckets:
            previous, totals = cached
            for index in range(previous - buckets + 1, last - buckets + 1):
                _subtract(totals, self.buckets.get(index))
            for index in range(previous + 1, last + 1):
                _accumulate(totals, self.buckets.get(index))
        else:
            totals = []
            for index, vector in self.buckets.items():
                if last - buckets < index <= last:
                    _accumulate(totals, vector)
        self._sums[(buckets, skip)] = (last, totals)
        return list(totals)

    def active(self, as_of: float, buckets: int, *, skip: int = 0) -> int:
        """How many of those buckets have any counter above zero."""
        last = int(as_of // self.width) - skip
        return sum(1 for i, v in self.buckets.items() if last - buckets < i <= last and any(v))

    def changes_at(
        self, as_of: float, buckets: int, *, skip: int = 0, slot: int | None = None
    ) -> float:
        """The first time after `as_of` at which :meth:`window` (with `buckets` and `skip`)
        changes with no new counts: a bucket holding counts (in `slot`, or any) slides
        out of it, or, with `skip`, into it. `inf` when none will.

        >>> counts = SlidingCounts(width=60, span=10)
        >>> counts.add(125, slot=0)
        >>> counts.changes_at(130, buckets=3), counts.changes_at(130, buckets=3, skip=2)
        (300, 240)
        """
        first = int(as_of // self.width) + 1  # the next bucket boundary, as a bucket index
        earliest = math.inf
        for index, vector in self.buckets.items():
            leaves = index + skip + buckets
            if leaves < first or leaves >= earliest:
                continue
            if not (any(vector) if slot is None else _at(vector, slot)):
                continue
            enters = index + skip
            earliest = enters if skip and enters >= first else leaves
        return earliest * self.width

    def prune(self, as_of: float) -> None:
        """Drop the buckets no window as of `as_of` or later can reach."""
        oldest = int(as_of // self.width) - self.span
        for index in [index for index in self.buckets if index <= oldest]:
            del self.buckets[index]
        self._sums = {
            (buckets, skip): (last, totals)
            for (buckets, skip), (last, totals) in self._sums.items()
            if last - buckets >= oldest  # the window holds no dropped bucket
        }

    def merge(self, other: SlidingCounts) -> None:
        """Add every counter of `other` (same width) into this one."""
        for index, vector in other.buckets.items():
            for slot, value in enumerate(vector):
                if value:
                    self.add(index * self.width, slot, value)

    def to_row(self) -> list[list[int]]:
        """Canonical plain form: `[index, *counters]` sorted by index, trailing zeros cut."""
        rows = []
        for index in sorted(self.buckets):
            vector = self.buckets[index]
            end = len(vector)
            while end and not vector[end - 1]:
                end -= 1
            if end:
                rows.append([index, *vector[:end]])
        return rows

    def load_row(self, rows: list[list[int]]) -> None:
        """Inverse of :meth:`to_row`."""
        self.buckets = {row[0]: row[1:] for row in rows}
        self._sums = {}


def _at(vector: list[int], slot: int) -> int:
    return vector[slot] if slot < len(vector) else 0


def _grow(vector: list[int], size: int) -> None:
    if len(vector) < size:
        vector.extend([0] * (size - len(vector)))


def _accumulate(totals: list[int], vector: list[int] | None) -> None:
    if vector:
        _grow(totals, len(vector))
        for slot, value in enumerate(vector):
            totals[slot] += value


def _subtract(totals: list[int], vector: list[int] | None) -> None:
    if vector:
        for slot, value in enumerate(vector):
            totals[slot] -= value


@dataclass(slots=True)
class Sessions:
    """Session windows: runs of events with gaps shorter than `gap` seconds.

    Each session is `[start, end, events, flags]`; `flags` is an OR of the
    bits passed to :meth:`add`. Inserting an event extends, creates or joins
    sessions, so the result does not depend on arrival order.

    >>> sessions = Sessions(gap=1800)
    >>> [sessions.add(moment) for moment in (0, 600, 5000, 2000)]
    [True, False, True, False]
    >>> sessions.items
    [[0, 2000, 3, 0], [5000, 5000, 1, 0]]
    >>> sessions.add(3500)
    True
    >>> sessions.items
    [[0, 5000, 5, 0]]
    """

    gap: int
    items: list[list[int]] = field(default_factory=list)

    def add(self, moment: float, flags: int = 0, events: int = 1) -> bool:
        """Insert one event (or a whole session's worth, for merging); whether the sessions'
        starts changed (a new session, sessions joined, or one starting earlier)."""
        return self.insert(int(moment), int(moment), events, flags)

    def insert(self, start: int, end: int, events: int, flags: int) -> bool:
        """Insert a session `[start, end]`, joining every session it comes within `gap` of;
        whether the sessions' starts changed."""
        kept = []
        joined: list[int] = []
        for session in self.items:
            if session[0] - self.gap < end and start < session[1] + self.gap:
                joined.append(session[0])
                start = min(start, session[0])
                end = max(end, session[1])
                events += session[2]
                flags |= session[3]
            else:
                kept.append(session)
        kept.append([start, end, events, flags])
        kept.sort()
        self.items = kept
        return joined != [start]

    def merge(self, other: Sessions) -> None:
        """Insert every session of `other`."""
        for start, end, events, flags in other.items:
            self.insert(start, end, events, flags)

    def prune(self, before: float) -> None:
        """Drop sessions that ended more than `gap` before `before`; none can join them."""
        self.items = [s for s in self.items if s[1] + self.gap >= before]
