"""In-memory twins of the worker's parts, for unit tests of its loop without I/O.

:class:`MemoryStore` keeps what the Redis store keeps, with its fencing: a
commit whose partitions' committed offsets moved since the batch began is
refused. :class:`MemoryBroker` holds topics as lists of real
`confluent_kafka.Message` objects; its consumer assigns itself every partition
of the topic it subscribes to (a test can revoke them), and its producer
partitions keyed messages canonically and can be told to fail its next flush.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import redis
from confluent_kafka import KafkaError, Message, TopicPartition

from processors._core import User
from processors.partitioner import canonical_partition
from state.store import BatchCommit, PartitionCommit, PartitionProgress
from state.timer_store import DueTimers


class MemoryStore:
    """The worker's state of record, in dicts."""

    def __init__(self) -> None:
        self.states: dict[str, bytes] = {}
        self.offsets: dict[int, PartitionProgress] = {}
        self.evaluated: dict[int, dict[str, str]] = {}
        self.count: int | None = None
        self.members: dict[str, set[str]] = defaultdict(set)
        self.partition_sets: dict[int, set[str]] = defaultdict(set)
        self.timers: dict[int, dict[str, int]] = defaultdict(dict)
        self.counters: dict[str, int] = defaultdict(int)
        self.fail_next_commit = False
        """Raise a connection error at the next commit, as a Redis that went away would."""
        self.asked: list[dict[int, float]] = []
        """The watermarks of each reading of due timers."""
        self.values: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
        """Per partition and feature, the users' values at their latest evaluation."""

    def rows(self, users: Mapping[int, Iterable[str]]) -> dict[str, bytes]:
        return {u: self.states[u] for ids in users.values() for u in ids if u in self.states}

    def progress(self, partitions: Sequence[int]) -> dict[int, PartitionProgress]:
        return {p: self.offsets[p] for p in partitions if p in self.offsets}

    def adopted(self, partitions: Sequence[int]) -> set[int]:
        return set(partitions)  # one generation: nothing to take over

    def mark_adopted(self, partition: int, replaced: int) -> None:
        pass

    def drop_partitions(self, partitions: Sequence[int]) -> int:
        dropped = [u for p in partitions for u in self.partition_sets.pop(p, set())]
        for user_id in dropped:
            self.states.pop(user_id, None)
        return len(dropped)

    def claim_partition_count(self, partitions: int) -> int:
        if self.count is None:
            self.count = partitions
        return self.count

    def users_between(self, partition: int, feature: str, low: float, high: float) -> list[str]:
        scores = self.values[partition, feature]
        return sorted(user_id for user_id, value in scores.items() if low <= value <= high)

    def partition_users(self, partition: int) -> Iterator[list[str]]:
        users = sorted(self.partition_sets[partition])
        if users:
            yield users

    def due_timers(self, watermarks: Mapping[int, float], limit: int) -> dict[int, DueTimers]:
        self.asked.append(dict(watermarks))
        found = {}
        for partition, watermark in watermarks.items():
            timers = sorted((due, user) for user, due in self.timers[partition].items())
            due = [(moment, user) for moment, user in timers if moment <= watermark][:limit]
            rest = timers[len(due) :]
            after = rest[0][0] if rest else math.inf
            found[partition] = DueTimers(
                entries=due,
                sources={user: 0 for _, user in due},
                bounds={0: after} if due else {},
                exhausted=after > watermark,
                after=after,
            )
        return found

    def commit(
        self, batch: BatchCommit, ready: Callable[[], None] = lambda: None
    ) -> dict[int, str]:
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise redis.ConnectionError("the store went away")
        ready()
        fenced = {}
        for part in batch.partitions:
            stored = self.offsets.get(part.partition)
            offset = None if stored is None else stored.offset
            if offset != part.start:
                fenced[part.partition] = f"at {offset}"
            else:
                self._commit(part)
        return fenced

    def _commit(self, part: PartitionCommit) -> None:
        expired = set(part.expired_users)
        for user_id, row in part.rows.items():
            if user_id not in expired:
                self.states[user_id] = row
        for change in part.changes:
            for segment in change.entered:
                self.members[segment].add(change.user_id)
            for segment in change.exited:
                self.members[segment].discard(change.user_id)
        for name, amount in part.counters.items():
            self.counters[name] += amount
        self.offsets[part.partition] = part.progress
        if part.evaluated:
            self.evaluated[part.partition] = dict(part.evaluated)
        self.partition_sets[part.partition].update(part.new_users)
        self.partition_sets[part.partition].difference_update(part.expired_users)
        for feature, scores in part.values.items():
            self.values[part.partition, feature].update(scores)
        for user_id in part.expired_users:
            self.states.pop(user_id, None)
            for (partition, _), scores in self.values.items():
                if partition == part.partition:
                    scores.pop(user_id, None)
        timers = self.timers[part.partition]
        for user_id in part.taken.sources if part.taken else ():
            timers.pop(user_id, None)
        for user_id, due in part.timers.items():
            if due is None:
                timers.pop(user_id, None)
            else:
                timers[user_id] = due

    def users(self) -> Iterator[tuple[str, User]]:
        for user_id, blob in list(self.states.items()):
            yield user_id, User.from_bytes(blob)


@dataclass
class MemoryBroker:
    """Topics of `partitions` partitions each, created on first use."""

    partitions: int = 4
    topics: dict[str, list[list[Message]]] = field(default_factory=dict)

    def topic(self, name: str, partitions: int | None = None) -> list[list[Message]]:
        if name not in self.topics:
            self.topics[name] = [[] for _ in range(partitions or self.partitions)]
        return self.topics[name]

    def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int = -1,
        headers: Sequence[tuple[str, Any]] | None = None,
    ) -> Message:
        """Put a message on a topic, as a producer would (canonically when `partition` is -1)."""
        log = self.topic(topic)
        if partition < 0:
            partition = canonical_partition((key or b"").decode(), len(log)) if key else 0
        message = Message(
            topic=topic,
            partition=partition,
            offset=len(log[partition]),
            key=key,
            value=value,
            headers=list(headers) if headers else None,
        )
        log[partition].append(message)
        return message

    def messages(self, topic: str) -> list[Message]:
        """Every message on `topic`, partition by partition."""
        return [message for partition in self.topic(topic) for message in partition]


class MemoryConsumer:
    """Reads the subscribed topic's partitions; assigns them all at the first `consume`."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.topic = ""
        self.positions: dict[int, int] = {}
        self.on_assign: Callable[..., None] = lambda *_: None
        self.on_revoke: Callable[..., None] = lambda *_: None
        self.pending_assignment = False

    def subscribe(
        self, topics: list[str], on_assign: Callable[..., None], on_revoke: Callable[..., None]
    ) -> None:
        self.topic = topics[0]
        self.on_assign, self.on_revoke = on_assign, on_revoke
        self.pending_assignment = True

    def list_topics(self, topic: str, timeout: float = 0) -> SimpleNamespace:
        partitions = dict(enumerate(self.broker.topic(topic)))
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=partitions, error=None)})

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            assert tp.partition not in self.positions, f"{tp.partition} is assigned already"
            self.positions[tp.partition] = max(tp.offset, 0)

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop(tp.partition)

    def revoke(self, numbers: list[int]) -> None:
        """Take `numbers` away, as a rebalance would."""
        self.on_revoke(self, [TopicPartition(self.topic, n) for n in numbers])

    def seek(self, tp: TopicPartition) -> None:
        self.positions[tp.partition] = max(tp.offset, 0)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if self.pending_assignment:
            self.pending_assignment = False
            count = len(self.broker.topic(self.topic))
            self.on_assign(self, [TopicPartition(self.topic, n) for n in range(count)])
        taken: list[Message] = []
        log = self.broker.topic(self.topic)
        for number in sorted(self.positions):
            start = self.positions[number]
            chunk = log[number][start : start + num_messages - len(taken)]
            taken += chunk
            self.positions[number] = start + len(chunk)
        return taken

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float = 0, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.broker.topic(tp.topic)[tp.partition])

    def close(self) -> None:
        self.positions.clear()


class MemoryProducer:
    """Produces onto the broker at `flush`; `fail_next_flush` leaves that flush undelivered."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.queued: list[tuple[dict[str, Any], Callable[..., None] | None]] = []
        self.fail_next_flush = False

    def produce(self, topic: str, **message: Any) -> None:
        on_delivery = message.pop("on_delivery", None)
        self.queued.append(({"topic": topic, **message}, on_delivery))

    def flush(self, timeout: float = -1) -> int:
        queued, self.queued = self.queued, []
        if self.fail_next_flush:
            self.fail_next_flush = False
            for _message, on_delivery in queued:
                if on_delivery is not None:
                    on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)
            return 0
        for message, on_delivery in queued:
            topic = message.pop("topic")
            produced = self.broker.append(topic, message.pop("value", None), **message)
            if on_delivery is not None:
                on_delivery(None, produced)
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0


class MemoryFeed:
    """A feed whose publications a test hands it: `publish(x)`, then the next `poll` has it."""

    def __init__(self, initial: object = None) -> None:
        self.initial = initial
        self.published: list[object] = []

    def publish(self, value: object) -> None:
        self.published.append(value)

    def catch_up(self, timeout: float = 10.0) -> object:
        return self.initial

    def poll(self) -> object:
        return self.published.pop() if self.published else None

    def close(self) -> None:
        pass
