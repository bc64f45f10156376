"""The canonical partition of a user id: Kafka's default partitioner for keyed messages.

A user's state is folded by exactly one partition step, so every event of a
user must be read from one partition. Producers partition as they like
(librdkafka's default hashes keys with CRC32, Java clients with murmur2,
others at random), so segstream fixes one: murmur2 of the UTF-8 user id, as
Kafka's Java client computes it and as librdkafka does with
`partitioner=murmur2_random`. Every producer of segstream's uses it, and a
worker forwards an event that arrives on another partition to this one.

>>> murmur2(b"21"), murmur2(b"foobar")
(1173551340, 1357151166)
>>> canonical_partition("alice", 16)
5
"""

from __future__ import annotations

import struct

PRODUCER_PARTITIONER = "murmur2_random"
"""librdkafka's name for this partitioner (keyed messages; unkeyed ones go anywhere)."""

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(key: bytes) -> int:
    """Kafka's murmur2 hash of `key` with its sign bit cleared (Java's `toPositive`).

    Kafka's Java client computes `murmur2(key) & 0x7fffffff`; librdkafka the same.
    """
    length = len(key)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for (k,) in struct.iter_unpack("<I", key[:whole]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail == 3:
        h ^= key[whole + 2] << 16
    if tail >= 2:
        h ^= key[whole + 1] << 8
    if tail >= 1:
        h = ((h ^ key[whole]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h & 0x7FFFFFFF


def canonical_partition(user_id: str, partitions: int) -> int:
    """The partition of `partitions` whose worker owns `user_id`'s state."""
    return murmur2(user_id.encode()) % partitions
