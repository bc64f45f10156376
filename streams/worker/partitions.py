"""An owned partition's runtime state, created on assignment and dropped whole on revocation.

>>> progress = PartitionProgress(42, 1_000.0, -1.0, -1.0, {1: (7, 0)})
>>> state = PartitionState.restore(3, progress, lateness=60, delay=5)
>>> state.committed, state.clock.value, state.clock.firing, state.seek_to
(42, 940.0, 995.0, 42)
>>> [state.first_relay(source) for source in [(1, 7, 0), (1, 7, 1), (1, 8, 0), (2, 0, 0)]]
[False, True, True, True]
>>> state.progress(50).encode()
'50 1000.0 -1.0 {"1":[8,0],"2":[0,0]} 0 -1.0'
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING

from processors._core import Watermark
from processors.wire import Source
from state.store import PartitionProgress


@dataclass(slots=True)
class PartitionState:
    """What the worker knows of partition `number` between batches.

    `committed` is the next offset the store has committed for it (`None`: none
    yet); `clock` its watermark and firing clock; `relayed` the highest (offset, index) of
    each source partition whose relays were taken here; `replaying` whether its
    latest event was replayed; `heard` when (monotonic seconds) its latest
    message came; `timers_after` a lower bound of its earliest timer in the store
    (`-inf`: unknown). All but `heard` are rebuilt from the store's progress after
    a batch that was not committed.
    """

    number: int
    committed: int | None
    clock: Watermark
    relayed: dict[int, tuple[int, int]] = field(default_factory=dict)
    replaying: bool = False
    heard: float = field(default_factory=time.monotonic)
    timers_after: float = -math.inf

    def scheduled(self, timers: Mapping[str, int | None]) -> None:
        """Note timers committed for the partition's users (`None`: dropped): an earlier
        one brings `timers_after` forward."""
        earliest = min((due for due in timers.values() if due is not None), default=math.inf)
        self.timers_after = min(self.timers_after, earliest)

    @classmethod
    def restore(
        cls, number: int, progress: PartitionProgress | None, lateness: float, delay: float
    ) -> PartitionState:
        """The state of a partition taken over from its committed `progress` (`None`: new),
        with the allowed `lateness` and firing `delay`."""
        if progress is None:
            return cls(number, None, Watermark(lateness, delay))
        clock = progress.clock(lateness, delay)
        return cls(number, progress.offset, clock, dict(progress.relayed), progress.replaying)

    @property
    def seek_to(self) -> int:
        """Where to read from: the committed offset, or the partition's beginning."""
        return OFFSET_BEGINNING if self.committed is None else self.committed

    def first_relay(self, source: Source) -> bool:
        """Whether the relay from `source` (partition, offset, index) is new here; notes it
        taken.

        A source's relays arrive in the order of the offsets that caused them (and of
        their index within one cause), so one at or below a relay taken before is a
        copy (a redone batch produced it again).
        """
        partition, offset, index = source
        if (offset, index) <= self.relayed.get(partition, (-1, -1)):
            return False
        self.relayed[partition] = (offset, index)
        return True

    def progress(self, offset: int) -> PartitionProgress:
        """The progress to commit once everything before `offset` is applied."""
        clock = self.clock
        return PartitionProgress(
            offset,
            clock.max_event_time,
            clock.floor,
            clock.firing_floor,
            dict(self.relayed),
            self.replaying,
        )
