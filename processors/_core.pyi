"""Types of segstream's compiled core (processors/core, Rust, bound with PyO3)."""

def murmur2(key: bytes) -> int:
    """Kafka's murmur2 of `key`, sign bit cleared."""

def canonical_partitions(user_ids: list[str], partitions: int) -> list[int]:
    """The canonical partition of each of `user_ids` among `partitions`, in one call."""
