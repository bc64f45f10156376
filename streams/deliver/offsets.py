"""Which offsets of the change topic a destination may commit while its changes are
delivered out of offset order (users concurrently).

An offset stays open from when it is consumed until its change is delivered or
dead-lettered; a partition commits up to its lowest open offset, or past the
last one consumed when none is open. So a deliverer killed resends what was
open, and nothing it did not finish is skipped.

>>> offsets = OpenOffsets()
>>> for offset, taken in ((10, True), (11, True), (12, False)):
...     offsets.consumed(0, offset, open_=taken)
>>> offsets.finished(0, 11)
>>> offsets.to_commit()
{0: 10}
>>> offsets.finished(0, 10)
>>> offsets.to_commit(), offsets.to_commit(), offsets.pending
({0: 13}, {}, 0)
"""

from __future__ import annotations


class OpenOffsets:
    """Per partition: offsets consumed and not finished, the end consumed, and what was
    last handed out to commit."""

    def __init__(self) -> None:
        self.open: dict[int, set[int]] = {}
        self.end: dict[int, int] = {}
        self.committed: dict[int, int] = {}

    def consumed(self, partition: int, offset: int, *, open_: bool) -> None:
        """`offset` was consumed; `open_` when its change is still to be delivered."""
        self.end[partition] = max(self.end.get(partition, 0), offset + 1)
        if open_:
            self.open.setdefault(partition, set()).add(offset)

    def finished(self, partition: int, offset: int) -> None:
        """The change at `offset` was delivered or dead-lettered."""
        self.open.get(partition, set()).discard(offset)

    @property
    def pending(self) -> int:
        """Changes consumed and not finished."""
        return sum(len(offsets) for offsets in self.open.values())

    def to_commit(self) -> dict[int, int]:
        """The offsets to commit that moved since the last call, by partition."""
        moved = {}
        for partition, end in self.end.items():
            open_ = self.open.get(partition)
            position = min(open_) if open_ else end
            if position != self.committed.get(partition):
                moved[partition] = position
        self.committed.update(moved)
        return moved
