"""What a state store keeps and how one batch is committed to it.

A batch's commit is atomic: the touched users' state, their labels and
segment membership, the pipeline counters, and the input offsets the batch
ends at are written together or not at all. A worker that restarts seeks to
the committed offsets, so every event's effect is in the store exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from processors.segments import SegmentChange
from processors.user import UserState


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Input consumed from one partition: from ``start`` (the committed offset) to ``end``.

    ``start`` is ``None`` when nothing was committed for the partition before.
    """

    topic: str
    partition: int
    start: int | None
    end: int


@dataclass(slots=True)
class BatchCommit:
    """Everything one batch writes."""

    users: Mapping[str, UserState]
    changes: Sequence[SegmentChange]
    ranges: Sequence[PartitionRange]
    counters: Mapping[str, int] = field(default_factory=dict)


class PartitionFencedError(RuntimeError):
    """Another worker committed one of the batch's partitions: the batch must be dropped."""


class StateStore(Protocol):
    """The worker's state of record."""

    def load(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        """The stored state of each of ``user_ids`` that has one."""
        ...

    def committed_offsets(self, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        """The next offset to read of each partition, ``None`` where none is committed."""
        ...

    def commit(self, batch: BatchCommit) -> None:
        """Write ``batch`` atomically; raise :class:`PartitionFencedError` if fenced."""
        ...

    def users(self) -> Iterator[tuple[str, UserState]]:
        """Every stored user, in no particular order."""
        ...
