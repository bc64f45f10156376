"""What a batch produces: relays, dead letters, segment changes, labelled examples and
feature vectors.

Each is an :class:`Outgoing` message; the checkpoint produces them all and
waits for the broker before it commits the batch.

>>> from processors.events import Rejection
>>> from confluent_kafka import Message
>>> bad = Message(topic="events", partition=2, offset=9, key=b"u1", value=b"{")
>>> [letter] = dead_letters([(bad, Rejection("invalid_json", "unexpected end"))], "events.dlq")
>>> letter.topic, letter.key, dict(letter.headers)["source"]
('events.dlq', b'u1', b'events/2/9')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Message

from processors._core import FeatureVector, Relay, SegmentChange, change_messages
from processors.events import Rejection
from processors.vectors import pack_vectors
from processors.wire import Headers, RelayMessage, header_map, in_cause_order
from streams.worker.decoding import Misrouted

VECTORS_PER_MESSAGE = 1_000
"""Feature vectors packed into one message of the features topic."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to produce; `partition` -1 lets the producer's partitioner choose."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    partition: int = -1


def relays(
    topic: str,
    caused: Sequence[tuple[Relay, int, Message]],
    misrouted: Sequence[Misrouted],
) -> list[Outgoing]:
    """The partition steps' relays (each with its source partition and the message that
    caused it) and the events forwarded to their users' partitions, in cause order."""
    messages = [
        RelayMessage.of(
            relay,
            source=source,
            offset=cause.offset() or 0,
            cause_key=cause.key(),
            cause_value=cause.value(),
        )
        for relay, source, cause in caused
    ]
    messages += [
        RelayMessage.route(
            event.user_id,
            event.to,
            source=event.message.partition() or 0,
            offset=event.message.offset() or 0,
            value=event.message.value(),
            headers=header_map(event.message.headers()),
        )
        for event in misrouted
    ]
    return [
        Outgoing(topic, message.key, message.value, message.headers(), message.partition)
        for message in in_cause_order(messages)
    ]


def dead_letters(
    rejected: Sequence[tuple[Message, Rejection]],
    topic: str,
    scrub: Callable[[bytes], bytes] = bytes,
) -> list[Outgoing]:
    """Each rejected message, its personal data scrubbed, with why and where it came from."""
    letters = []
    for message, rejection in rejected:
        source = f"{message.topic()}/{message.partition()}/{message.offset()}"
        headers: Headers = [
            ("reason", rejection.reason.encode()),
            ("detail", rejection.detail.encode()),
            ("source", source.encode()),
        ]
        letters.append(Outgoing(topic, message.key(), scrub(message.value() or b""), headers))
    return letters


def change_events(
    changes: Sequence[SegmentChange], topic: str, processed_at: float, rules_version: str
) -> list[Outgoing]:
    """The change events, keyed by user; an erasure's is a tombstone (no value)."""
    return [
        Outgoing(topic, key, value)
        for key, value in change_messages(changes, processed_at, rules_version)
    ]


def examples(packed: bytes, topic: str) -> list[Outgoing]:
    """A partition step's labelled examples, packed as one message by the core (none when
    it has none)."""
    return [Outgoing(topic, None, packed)] if packed else []


def vector_batches(found: Sequence[FeatureVector], topic: str) -> list[Outgoing]:
    """The feature vectors, packed many to a message."""
    return [
        Outgoing(topic, None, pack_vectors(found[start : start + VECTORS_PER_MESSAGE]))
        for start in range(0, len(found), VECTORS_PER_MESSAGE)
    ]
