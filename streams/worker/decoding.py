"""A batch's messages, read in offset order into each owned partition's items.

The compiled core reads the batch in one call (:func:`processors._core.read_messages`):
tracker events are decoded (a large batch's on two threads, without the GIL) and judged
in order against their partition's watermark, so
undecodable, future and late ones are rejected with a reason (for the dead-letter
topic), and one whose user belongs to another partition is set aside to be
forwarded there. Control commands (advance the watermark, erase a user) and
relays (:mod:`processors.wire`) are handed back to :class:`_Special` here, in
their place in the order, and become the partition step's items; a relay taken
before is skipped.

>>> from confluent_kafka import Message
>>> from processors._core import Watermark
>>> owned = {0: PartitionState(0, None, Watermark(3600, 5))}
>>> event = b'{"type": "page", "userId": "alice", "timestamp": "2026-11-01T10:00:00Z"}'
>>> decoded = decode_batch([Message(topic="events", partition=0, offset=7, value=event)],
...                        owned, partition_count=16, max_event_bytes=32_768, not_after=2e9)
>>> [(m.user_id, m.to) for m in decoded.misrouted]
[('alice', 5)]
>>> decoded.partitions[0].last
7
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message

from processors._core import PartitionBatch, read_messages
from processors.events import NOTHING, Projection, Reason, Rejection
from processors.wire import (
    ADVANCE_WATERMARK,
    CONTROL_HEADER,
    ERASE,
    RELAY_HEADER,
    ROUTE,
    Advance,
    Erase,
    advance_until,
    header_map,
    relayed_item,
    source_of,
)
from streams.worker.partitions import PartitionState

__all__ = ["DecodedBatch", "Misrouted", "PartitionBatch", "decode_batch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Misrouted:
    """An event that arrived on another partition than its user's, `to`."""

    message: Message
    user_id: str
    to: int


@dataclass(slots=True)
class DecodedBatch:
    """What a batch's messages hold, partition by partition."""

    messages: Sequence[Message] = ()
    """The batch's messages; a partition's items name theirs by position."""
    partitions: dict[int, PartitionBatch] = field(default_factory=dict)
    rejected: list[tuple[Message, Rejection]] = field(default_factory=list)
    misrouted: list[Misrouted] = field(default_factory=list)
    consumed: int = 0
    live_times: list[float] = field(default_factory=list)
    """Event times of the batch's live (not replayed) events, for the freshness histogram."""
    arrival_delays: list[float] = field(default_factory=list)
    """How far each was behind its partition's newest event time as it arrived, in s."""

    def cause(self, part: PartitionBatch, index: int) -> Message:
        """The message item `index` of `part` came from."""
        return self.messages[part.position(index)]

    def misrouted_from(self, number: int) -> list[Misrouted]:
        """The events to forward that partition `number` delivered."""
        return [event for event in self.misrouted if _partition_of(event.message) == number]

    def rejected_from(self, number: int) -> list[tuple[Message, Rejection]]:
        """The messages partition `number` delivered that go to the dead-letter topic."""
        return [rejected for rejected in self.rejected if _partition_of(rejected[0]) == number]


def decode_batch(
    messages: Sequence[Message],
    owned: Mapping[int, PartitionState],
    *,
    partition_count: int,
    max_event_bytes: int,
    not_after: float,
    keep: Projection = NOTHING,
) -> DecodedBatch:
    """Decode `messages` of the `owned` partitions (others were revoked meanwhile), moving
    their watermarks and noting relays taken. Events stamped after `not_after` are future;
    `keep` is what the decoder keeps beyond the built-in features."""
    read = read_messages(
        messages,
        {number: state.clock for number, state in owned.items()},
        _Special(owned, max_event_bytes, keep),
        partition_count=partition_count,
        max_bytes=max_event_bytes,
        not_after=not_after,
        keep=keep,
    )
    for message in read.errors:
        error = message.error()
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consume error=%r", error.str())
    heard = time.monotonic()
    for number, part in read.partitions.items():
        state = owned[number]
        state.heard = heard
        if part.replaying is not None:
            state.replaying = part.replaying
    return DecodedBatch(
        messages,
        read.partitions,
        read.rejected,
        [Misrouted(message, user_id, to) for message, user_id, to in read.misrouted],
        read.consumed,
        read.live_times,
        read.arrival_delays,
    )


@dataclass(slots=True)
class _Special:
    """Takes the relays and control commands of a batch into their partitions' items."""

    owned: Mapping[int, PartitionState]
    max_bytes: int
    keep: Projection

    def __call__(self, message: Message, part: PartitionBatch, position: int) -> bool | Rejection:
        """Add what `message` (at batch `position`) carries to `part`; for a routed event,
        whether it is to be judged as an event here; a `Rejection` to refuse it."""
        headers = header_map(message.headers())
        state = self.owned[_partition_of(message)]
        if RELAY_HEADER in headers:
            return self._relay(message, headers, state, part, position)
        return self._control(message, headers, state, part, position)

    def _relay(
        self,
        message: Message,
        headers: Mapping[str, bytes],
        state: PartitionState,
        part: PartitionBatch,
        position: int,
    ) -> bool | Rejection:
        """A message the pipeline relayed here: taken once, or rejected without its source."""
        source = source_of(headers)
        if source is None:
            return Rejection(Reason.INVALID_CONTROL, "a relayed message without its source offset")
        if not state.first_relay(source):
            return False  # taken before: produced again by a batch that was redone
        part.relayed += 1
        kind = headers[RELAY_HEADER]
        if kind == ROUTE:
            return True
        key = (message.key() or b"").decode()
        body = message.value() or b""
        item = relayed_item(kind, key, body, max_bytes=self.max_bytes, keep=self.keep)
        if isinstance(item, Rejection):
            return item
        part.add(item, position, state.clock.firing)
        return False

    def _control(
        self,
        message: Message,
        headers: Mapping[str, bytes],
        state: PartitionState,
        part: PartitionBatch,
        position: int,
    ) -> bool | Rejection:
        """An erase or advance-watermark command."""
        command = headers[CONTROL_HEADER]
        if command == ERASE:
            user_id = (message.key() or b"").decode(errors="replace")
            if not user_id:
                return Rejection(Reason.INVALID_CONTROL, "an erase command is keyed by the user id")
            part.add(Erase(user_id), position, state.clock.firing)
            return False
        until = advance_until(message.value())
        if command != ADVANCE_WATERMARK or until is None:
            return Rejection(Reason.INVALID_CONTROL, 'expected {"until": seconds}')
        state.clock.advance_to(until)
        part.advances = True
        part.add(Advance(until), position, state.clock.firing)
        return False


def _partition_of(message: Message) -> int:
    """The partition `message` came from."""
    number = message.partition()
    assert number is not None
    return number
