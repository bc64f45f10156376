"""Following a one-partition compacted topic whose latest valid value is in force.

The rules, destinations and models topics work this way: a command publishes
one value under the topic's key (:func:`publish`; the rules topic has a second
key, for the generation being built); a process reads the
topic from its start when it begins (:meth:`CompactedFeed.catch_up`), then
picks up newer publications between batches (:meth:`CompactedFeed.poll`).
Each subclass decides in :meth:`CompactedFeed.accept` whether a value is newer
and valid; one that is not is refused there and what is in force stays.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from streams.kafka import reliable_producer, topic_reader
from streams.settings import Settings

T = TypeVar("T")


def publish(settings: Settings, topic: str, key: bytes, value: bytes, what: str) -> None:
    """Write `value` under `key` and wait until every replica has it; raises `RuntimeError`
    naming `what` when the broker does not take it within 30 s."""
    producer = reliable_producer(settings)
    errors: list[str] = []
    producer.produce(
        topic,
        key=key,
        value=value,
        on_delivery=lambda error, _: errors.append(error.str()) if error else None,
    )
    if producer.flush(30) or errors:
        raise RuntimeError(f"the broker did not take {what}: {errors or 'timeout'}")


class CompactedFeed(Generic[T]):
    """Reads `topic` (partition 0) from its beginning, without committing offsets; the
    values under `key` only, when one is given."""

    def __init__(self, settings: Settings, topic: str, key: bytes | None = None) -> None:
        self.topic = topic
        self.key = key
        name = topic if key is None else f"{topic}-{key.decode()}"
        self.consumer = topic_reader(settings, f"{settings.group_id}-{name}")
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])

    def _wanted(self, message: Message) -> bool:
        return message.error() is None and (self.key is None or message.key() == self.key)

    def accept(self, value: bytes) -> T | None:
        """What `value` publishes, if it is valid and newer than what is in force."""
        raise NotImplementedError

    def catch_up(self, timeout: float = 10.0) -> T | None:
        """The newest valid publication already on the topic; `None` if there is none."""
        low, high = self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, 0), timeout=timeout
        )
        newest: T | None = None
        deadline = time.monotonic() + timeout
        position = low - 1
        while high > low and position < high - 1 and time.monotonic() < deadline:
            for message in self.consumer.consume(100, 0.5):
                if message.error() is None:
                    position = max(position, message.offset() or 0)
                if self._wanted(message):
                    newest = self.accept(message.value() or b"") or newest
        return newest

    def poll(self) -> T | None:
        """The newest valid publication since the last call, without waiting."""
        found: T | None = None
        for message in self.consumer.consume(100, 0):
            if self._wanted(message):
                found = self.accept(message.value() or b"") or found
        return found

    def close(self) -> None:
        """Leave the topic."""
        self.consumer.close()
