"""The dead-letter topic read back: each rejected event with why, where it came from and
when, counted by reason, or sent back to the events topic once its producer or the rules
are fixed (`segstream dlq`).

The workers write a dead letter for every event they refuse: the body as it came (the
properties `SEGSTREAM_PII_PROPERTIES` names hashed or dropped), its key, and the headers
`reason`, `detail` and `source` (`topic/partition/offset`).

>>> from confluent_kafka import Message
>>> message = Message(topic="events.dlq", partition=0, offset=7, key=b"u1", value=b"{",
...                   headers=[("reason", b"invalid_json"), ("detail", b"unexpected end"),
...                            ("source", b"events/2/9")], timestamp=(1, 1764979200000))
>>> letter = DeadLetter.of(message)
>>> letter.reason, letter.source, letter.line()["time"]
('invalid_json', 'events/2/9', '2025-12-06T00:00:00Z')
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message, TopicPartition

from processors.wire import header_map
from streams.kafka import reliable_producer, topic_reader
from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused event: its body and key as they came, why it was refused, the message it
    was (`source`), and where and when it was written to the dead-letter topic."""

    body: bytes
    key: bytes | None
    reason: str
    detail: str
    source: str
    partition: int
    offset: int
    time: float

    @classmethod
    def of(cls, message: Message) -> DeadLetter:
        headers = header_map(message.headers())
        text = {name: value.decode(errors="replace") for name, value in headers.items()}
        return cls(
            body=message.value() or b"",
            key=message.key(),
            reason=text.get("reason", "unknown"),
            detail=text.get("detail", ""),
            source=text.get("source", ""),
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            time=message.timestamp()[1] / 1000,
        )

    def line(self) -> dict[str, Any]:
        """The letter as one JSON line holds it: the body as text, or in base64 when it is
        not UTF-8 (`body_base64`)."""
        try:
            body: dict[str, str] = {"body": self.body.decode()}
        except UnicodeDecodeError:
            body = {"body_base64": base64.b64encode(self.body).decode()}
        moment = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        return {
            **body,
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "partition": self.partition,
            "offset": self.offset,
            "time": moment.replace(".000+00:00", "Z").replace("+00:00", "Z"),
        }


def read(
    settings: Settings,
    *,
    since: float | None = None,
    until: float | None = None,
    reason: str | None = None,
    follow: Callable[[], bool] | None = None,
) -> Iterator[DeadLetter]:
    """The dead letters written from `since` (epoch seconds; default: the oldest retained)
    to `until`, of `reason` when given, in each partition's order; then, while `follow()`
    is true, those written later."""
    consumer = topic_reader(settings, f"{settings.group_id}-dlq-reader")
    topic = settings.dead_letter_topic
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        starts = [TopicPartition(topic, number, int((since or 0) * 1000)) for number in partitions]
        found = consumer.offsets_for_times(starts, timeout=10)
        ends = {
            number: consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=10)[1]
            for number in partitions
        }
        assigned = [start for start in found if start.offset >= 0]
        left = {start.partition: start.offset for start in assigned}
        left = {number: offset for number, offset in left.items() if offset < ends[number]}
        consumer.assign(assigned)
        while left or (follow is not None and follow()):
            for message in consumer.consume(500, 0.5):
                if message.error() is not None:
                    continue
                number, offset = message.partition() or 0, message.offset() or 0
                if number in left and offset >= ends[number] - 1:
                    del left[number]
                letter = DeadLetter.of(message)
                if until is not None and letter.time > until:
                    left.pop(number, None)
                    continue
                if reason is None or letter.reason == reason:
                    yield letter
    finally:
        consumer.close()


def stats(letters: Iterator[DeadLetter]) -> Counter[str]:
    """How many letters each reason has."""
    return Counter(letter.reason for letter in letters)


def replay(settings: Settings, letters: Iterator[DeadLetter]) -> int:
    """Send each letter's body back to the events topic under its original key, once; the
    number sent. Raises `RuntimeError` when the broker does not take them all."""
    producer = reliable_producer(settings)
    failed: list[str] = []
    sent = 0
    seen: set[tuple[int, int]] = set()
    for letter in letters:
        if (letter.partition, letter.offset) in seen:
            continue
        seen.add((letter.partition, letter.offset))
        while True:
            try:
                producer.produce(
                    settings.events_topic,
                    key=letter.key,
                    value=letter.body,
                    on_delivery=lambda error, _: failed.append(error.str()) if error else None,
                )
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
        producer.poll(0)
    deadline = time.monotonic() + 60
    while producer.flush(1) and time.monotonic() < deadline:
        pass
    if failed or len(producer):
        raise RuntimeError(f"the broker did not take {len(failed) or len(producer)} events")
    return sent
