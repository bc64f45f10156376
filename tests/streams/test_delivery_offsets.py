"""A destination commits each partition up to its lowest change still open, whatever order
the changes finish in."""

from __future__ import annotations

import random

from streams.deliver.offsets import OpenOffsets


def test_a_partition_commits_up_to_its_lowest_open_change():
    offsets = OpenOffsets()
    for offset in range(5):
        offsets.consumed(0, offset, open_=offset % 2 == 0)  # odd offsets were not taken
    offsets.consumed(1, 7, open_=True)
    assert offsets.to_commit() == {0: 0, 1: 7}
    offsets.finished(0, 2)
    offsets.finished(0, 4)
    assert offsets.to_commit() == {}  # offset 0 is still open
    offsets.finished(0, 0)
    offsets.finished(1, 7)
    assert offsets.to_commit() == {0: 5, 1: 8}
    assert offsets.pending == 0


def test_any_finishing_order_ends_with_every_partition_committed_past_its_last_change():
    rng = random.Random(3)
    offsets = OpenOffsets()
    consumed = [(partition, offset) for partition in range(3) for offset in range(50)]
    for partition, offset in consumed:
        offsets.consumed(partition, offset, open_=True)
    rng.shuffle(consumed)
    committed: dict[int, int] = {}
    for partition, offset in consumed:
        offsets.finished(partition, offset)
        for moved_partition, position in offsets.to_commit().items():
            assert position >= committed.get(moved_partition, 0)  # never backwards
            committed[moved_partition] = position
        still_open = {o for p, o in consumed if p == partition and o in offsets.open[partition]}
        assert committed.get(partition, 0) <= min(still_open, default=50)
    assert committed == {0: 50, 1: 50, 2: 50}
