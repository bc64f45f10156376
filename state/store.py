"""What a state store keeps and how one batch is committed to it.

A batch commits one atomic transaction per partition: the partition's touched
users' state and timers, their labels and segment membership, its counters,
and its progress (the offset the batch ends at and the partition's event-time
watermark) are written together or not at all. A worker that restarts seeks to
the committed offsets and resumes the committed watermarks, so every event's
effect is in the store exactly once and late events are judged the same way
again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from processors._core import SegmentChange, User, Watermark
from state.timer_store import DueTimers


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """Where a partition stands: the next offset to read and its clocks' state.

    `max_event_time` is the newest event time taken; `floor` and `firing_floor` the
    floors of its watermark and firing clock (moved by replays' `--until` and by a
    quiet partition following the wall clock).
    `relayed` maps each partition that relayed messages here to the highest
    `(offset, index)` of its relays applied, so a relayed message produced twice is
    applied once. (Progress written before relays had an index reads an offset alone
    as every relay of that offset applied.)
    `replaying` is whether the partition's latest message was replayed, which
    keeps its clocks on event time when it falls quiet. (Progress written before the
    firing clock had its own floor reads the watermark's floor for it.)

    >>> progress = PartitionProgress(42, 1700.5, -1.0, 1695.0, {3: (17, 1)}, replaying=True)
    >>> progress.encode()
    '42 1700.5 -1.0 {"3":[17,1]} 1 1695.0'
    >>> PartitionProgress.parse(progress.encode()) == progress
    True
    >>> earlier = PartitionProgress.parse('42 1700.5 -1.0 {"3":17} 1')
    >>> earlier.firing_floor, earlier.relayed, earlier.replaying
    (-1.0, {3: (17, 2147483647)}, True)
    """

    offset: int
    max_event_time: float
    floor: float
    firing_floor: float
    relayed: dict[int, tuple[int, int]] = field(default_factory=dict)
    replaying: bool = False

    def encode(self) -> str:
        """The stored form: `offset max_event_time floor relayed-json replaying firing_floor`."""
        marks = {str(p): list(mark) for p, mark in sorted(self.relayed.items())}
        relayed = orjson.dumps(marks).decode()
        return (
            f"{self.offset} {self.max_event_time!r} {self.floor!r} {relayed} "
            f"{self.replaying:d} {self.firing_floor!r}"
        )

    def clock(self, lateness: float, delay: float) -> Watermark:
        """The partition's clocks as committed, with the allowed `lateness` and firing `delay`.

        >>> PartitionProgress(0, 1000.0, -1.0, -1.0).clock(60, 5).firing
        995.0
        """
        return Watermark(lateness, delay, self.max_event_time, self.floor, self.firing_floor)

    @classmethod
    def parse(cls, text: str) -> PartitionProgress:
        """Inverse of :meth:`encode`."""
        offset, max_event_time, floor, relayed, *rest = text.split(" ", 5)
        sources = {int(p): _relayed_mark(mark) for p, mark in orjson.loads(relayed).items()}
        replaying = rest[:1] == ["1"]
        firing_floor = float(rest[1]) if len(rest) > 1 else float(floor)
        return cls(
            int(offset), float(max_event_time), float(floor), firing_floor, sources, replaying
        )


_EVERY_INDEX = 2**31 - 1
"""The index that stands for every relay of an offset (progress written without indexes)."""


def _relayed_mark(mark: int | list[int]) -> tuple[int, int]:
    """A stored `(offset, index)`; a bare offset (the earlier format) covers all its relays."""
    if isinstance(mark, int):
        return mark, _EVERY_INDEX
    offset, index = mark
    return offset, index


@dataclass(slots=True)
class Counters:
    """Pipeline totals a batch adds, committed with its state (the `stats` hash in Redis).

    >>> totals = Counters(events=3, late=1)
    >>> totals += Counters(events=2)
    >>> {name: n for name, n in totals.items() if n}
    {'events': 5, 'late': 1}
    """

    events: int = 0
    """Events applied (first seen, on time)."""
    duplicates: int = 0
    """Events whose `messageId` had been applied before."""
    dead_letters: int = 0
    """Messages sent to the dead-letter topic, `late` ones included."""
    late: int = 0
    """Events older than their partition's watermark."""
    changes: int = 0
    """Segment change events published."""
    users: int = 0
    """Users seen for the first time."""
    expired: int = 0
    """Users dropped after the retention period without events."""
    erased: int = 0
    """Users forgotten on request."""
    relays_sent: int = 0
    """Messages relayed to the events topic (merges, absorbs, forwards, erasures, routes)."""
    relays_applied: int = 0
    """Relayed messages taken (each once)."""
    forwarded: int = 0
    """Events that arrived on another partition than their user's, routed there."""
    timers_fired: int = 0
    """Users' timers that came due."""

    def items(self) -> list[tuple[str, int]]:
        """`(name, amount)` of every counter."""
        return [(name, getattr(self, name)) for name in self.__dataclass_fields__]

    def __iadd__(self, other: Counters) -> Counters:
        for name, amount in other.items():
            setattr(self, name, getattr(self, name) + amount)
        return self


@dataclass(frozen=True, slots=True)
class PartitionCommit:
    """What a batch writes for one partition, from `start` (the committed offset) to
    `progress`, in one transaction of its own.

    `start` is `None` when nothing was committed for the partition before.
    `rows` are the state rows of the partition's users whose state changed;
    `labelled` the users whose labels (segments, cluster, versions or alias)
    moved, whose labels are rewritten; `changes` the segment changes published.
    `new_users` are the users first seen in this batch on this partition, and
    `expired_users` those whose state is to be dropped. `timers` maps users to
    their new timer (`None`: none); `taken` are the due timers the batch read
    from the store and handled. `evaluated`, when given, replaces the segment
    digests every user of the partition is now evaluated with: on the partition's
    first commit, and when a re-evaluation of all its users is done. `values` are,
    per feature a percentile compares, the evaluated users' values
    (`processors.thresholds`).
    """

    partition: int
    start: int | None
    progress: PartitionProgress
    rows: Mapping[str, bytes] = field(default_factory=dict)
    labelled: Mapping[str, User] = field(default_factory=dict)
    changes: Sequence[SegmentChange] = ()
    counters: Counters = field(default_factory=Counters)
    new_users: Sequence[str] = ()
    expired_users: Sequence[str] = ()
    timers: Mapping[str, int | None] = field(default_factory=dict)
    taken: DueTimers | None = None
    evaluated: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    recorded: bool = True
    """Whether the changes count in the activity records (`state.activity`): not when a
    rebuild replays history."""


@dataclass(frozen=True, slots=True)
class BatchCommit:
    """Everything one batch writes: a :class:`PartitionCommit` per partition, each with
    the `rules_version` its users' labels were evaluated with."""

    partitions: Sequence[PartitionCommit]
    rules_version: str = ""

    @property
    def changes(self) -> list[SegmentChange]:
        """The segment changes of every partition."""
        return [change for part in self.partitions for change in part.changes]

    @property
    def counters(self) -> Counters:
        """The totals the batch adds, over its partitions."""
        total = Counters()
        for part in self.partitions:
            total += part.counters
        return total

    @property
    def users(self) -> int:
        """How many users' state rows the batch writes."""
        return sum(len(part.rows) for part in self.partitions)


def no_wait() -> None:
    """A `ready` for :meth:`StateStore.commit` that waits for nothing."""


class StateStore(Protocol):
    """The worker's state of record for one events topic."""

    def rows(self, users: Mapping[int, Iterable[str]]) -> dict[str, bytes]:
        """The state row of each user that has one, from users by partition (see
        :class:`processors._core.User`)."""
        ...

    def progress(self, partitions: Sequence[int]) -> dict[int, PartitionProgress]:
        """The committed progress of each partition that has one."""
        ...

    def claim_partition_count(self, partitions: int) -> int:
        """The topic's partition count the state was built with; `partitions` if none yet."""
        ...

    def users_between(self, partition: int, feature: str, low: float, high: float) -> list[str]:
        """The partition's users whose `feature`, at their latest evaluation, was from `low`
        to `high` (both included)."""
        ...

    def partition_users(self, partition: int) -> Iterator[list[str]]:
        """Every user whose events arrive on the partition, in chunks."""
        ...

    def adopted(self, partitions: Sequence[int]) -> set[int]:
        """The partitions whose users took over the labels of the generation replaced."""
        ...

    def mark_adopted(self, partition: int, replaced: int) -> None:
        """Note that the partition's users took over the labels of generation `replaced`."""
        ...

    def drop_partitions(self, partitions: Sequence[int]) -> int:
        """Delete everything of `partitions` (a generation that was replaced); how many
        keys."""
        ...

    def due_timers(self, watermarks: Mapping[int, float], limit: int) -> dict[int, DueTimers]:
        """Up to `limit` timers per partition due by its watermark, oldest first, and when
        each partition's next timer can be due (every partition asked has an entry)."""
        ...

    def commit(self, batch: BatchCommit, ready: Callable[[], None] = no_wait) -> dict[int, str]:
        """Write each partition of `batch` atomically; the partitions fenced (another worker
        committed them), whose part was dropped, with why.

        `ready` is called once, before anything is written: what must be durable before
        the batch (its change events) is waited for there, while the store has already
        checked where the partitions stand and prepared its writes."""
        ...

    def users(self) -> Iterator[tuple[str, User]]:
        """Every stored user, in no particular order."""
        ...
