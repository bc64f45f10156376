"""The canonical partition of a user id: Kafka's default partitioner for keyed messages.

A user's state is folded by exactly one partition step, so every event of a
user must be read from one partition. Producers partition as they like
(librdkafka's default hashes keys with CRC32, Java clients with murmur2,
others at random), so segstream fixes one: murmur2 of the UTF-8 user id, as
Kafka's Java client computes it and as librdkafka does with
`partitioner=murmur2_random`. Every producer of segstream's uses it, and a
worker forwards an event that arrives on another partition to this one. The
hash is computed by the compiled core (`processors/core/src/partitioner.rs`),
for a whole batch of ids at once.

>>> murmur2(b"21"), murmur2(b"foobar")
(1173551340, 1357151166)
>>> canonical_partitions(["alice", "bob"], 16)
[5, 14]
"""

from __future__ import annotations

from processors._core import canonical_partitions, murmur2

PRODUCER_PARTITIONER = "murmur2_random"
"""librdkafka's name for this partitioner (keyed messages; unkeyed ones go anywhere)."""

__all__ = ["PRODUCER_PARTITIONER", "canonical_partition", "canonical_partitions", "murmur2"]


def canonical_partition(user_id: str, partitions: int) -> int:
    """The partition of `partitions` whose worker owns `user_id`'s state (one id; a batch
    of ids is one call of :func:`canonical_partitions`)."""
    return canonical_partitions([user_id], partitions)[0]
