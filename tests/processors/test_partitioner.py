"""The canonical partitioner against Kafka's own murmur2 test vectors."""

from __future__ import annotations

import pytest

from processors.partitioner import canonical_partition, murmur2

# Kafka's UtilsTest.testMurmur2: Utils.murmur2 of each string, a signed Java int.
KAFKA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize(("key", "java"), KAFKA_VECTORS.items())
def test_murmur2_is_kafkas(key, java):
    assert murmur2(key.encode()) == java & 0x7FFFFFFF


def test_partitions_spread_and_stay_in_range():
    counts = [0] * 8
    for index in range(8_000):
        partition = canonical_partition(f"user-{index}", 8)
        counts[partition] += 1
    assert min(counts) > 800
    assert canonical_partition("", 3) == murmur2(b"") % 3
    assert canonical_partition("zoë", 5) == murmur2("zoë".encode()) % 5
