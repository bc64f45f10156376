"""A batch's messages, decoded in offset order into each owned partition's items.

Tracker events are decoded and judged against their partition's watermark:
undecodable, future and late ones are rejected with a reason (for the
dead-letter topic), and one whose user belongs to another partition is set
aside to be forwarded there. Control commands (advance the watermark, erase
a user) and relays (:mod:`processors.wire`) become the partition step's items;
a relay taken before is skipped.

>>> from confluent_kafka import Message
>>> from processors.watermark import Watermark
>>> owned = {0: PartitionState(0, None, Watermark(3600))}
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

from processors.events import Action, Reason, Rejection, decode_all
from processors.partitioner import canonical_partitions
from processors.wire import (
    ADVANCE_WATERMARK,
    CONTROL_HEADER,
    ERASE,
    RELAY_HEADER,
    REPLAY_HEADER,
    ROUTE,
    Absorb,
    Advance,
    Erase,
    Item,
    Merge,
    advance_until,
    header_map,
    relayed_item,
    source_of,
)
from streams.worker.partitions import PartitionState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PartitionBatch:
    """One partition's share of a batch: its items and the message each came from."""

    last: int
    """The offset of the partition's last message in the batch."""
    items: list[Item] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    marks: list[float] = field(default_factory=list)
    """The partition's watermark after each item."""
    advances: bool = False
    """Whether an advance-watermark command is among the items (every user is swept)."""
    relayed: int = 0
    """Relayed messages taken."""

    def add(self, item: Item, message: Message, watermark: float) -> None:
        """Append `item`, after which the partition's watermark stands at `watermark`."""
        self.items.append(item)
        self.messages.append(message)
        self.marks.append(watermark)

    def user_ids(self) -> set[str]:
        """The users the items name."""
        ids = set()
        for item in self.items:
            match item:
                case Action():
                    ids.add(item.user_id)
                case Merge():
                    ids.add(item.anonymous_id)
                case Absorb():
                    ids.add(item.into)
                case Erase():
                    ids.add(item.user_id)
        return ids


@dataclass(frozen=True, slots=True)
class Misrouted:
    """An event that arrived on another partition than its user's, `to`."""

    message: Message
    user_id: str
    to: int


@dataclass(slots=True)
class DecodedBatch:
    """What a batch's messages hold, partition by partition."""

    partitions: dict[int, PartitionBatch] = field(default_factory=dict)
    rejected: list[tuple[Message, Rejection]] = field(default_factory=list)
    misrouted: list[Misrouted] = field(default_factory=list)
    consumed: int = 0
    live_times: list[float] = field(default_factory=list)
    """Event times of the batch's live (not replayed) events, for the freshness histogram."""


def decode_batch(
    messages: Sequence[Message],
    owned: Mapping[int, PartitionState],
    *,
    partition_count: int,
    max_event_bytes: int,
    not_after: float,
) -> DecodedBatch:
    """Decode `messages` of the `owned` partitions (others were revoked meanwhile), moving
    their watermarks and noting relays taken. Events stamped after `not_after` are future."""
    decoded = DecodedBatch()
    taken: list[tuple[Message, Mapping[str, bytes]]] = []
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error=%r", error.str())
            continue
        decoded.consumed += 1
        if message.partition() in owned:  # else revoked while the batch was in flight
            listed = message.headers()
            taken.append((message, header_map(listed) if listed else _NO_HEADERS))
    results, owners = _decode_events(taken, partition_count, max_event_bytes)
    readers: dict[int, _Reader] = {}
    heard = time.monotonic()
    for index, (message, headers) in enumerate(taken):
        number, offset = message.partition(), message.offset()
        assert number is not None
        assert offset is not None
        reader = readers.get(number)
        if reader is None:
            state = owned[number]
            state.heard = heard
            part = decoded.partitions[number] = PartitionBatch(offset)
            reader = readers[number] = _Reader(state, part, decoded, not_after)
        reader.part.last = offset
        if RELAY_HEADER in headers:
            reader.relay(message, headers, results[index], owners[index], max_event_bytes)
        elif CONTROL_HEADER in headers:
            reader.control(message, headers)
        else:
            result = results[index]
            assert result is not None
            reader.event(message, headers, result, owners[index])
    return decoded


_NO_HEADERS: Mapping[str, bytes] = {}


def _decode_events(
    taken: Sequence[tuple[Message, Mapping[str, bytes]]], partition_count: int, max_bytes: int
) -> tuple[list[Action | Rejection | None], list[int]]:
    """The tracker events among `taken` (plain or routed) decoded, and the partitions their
    users belong to (-1: rejected), found in one call of the core each; by position, `None`
    where a message is not a tracker event."""
    positions = [
        index
        for index, (_, headers) in enumerate(taken)
        if not headers
        or (headers.get(RELAY_HEADER, ROUTE) == ROUTE and CONTROL_HEADER not in headers)
    ]
    raws = [taken[index][0].value() or b"" for index in positions]
    results: list[Action | Rejection | None] = [None] * len(taken)
    owners = [-1] * len(taken)
    actions: list[int] = []
    for index, result in zip(positions, decode_all(raws, max_bytes=max_bytes), strict=True):
        results[index] = result
        if isinstance(result, Action):
            actions.append(index)
    users = [results[index].user_id for index in actions]  # type: ignore[union-attr]
    for index, owner in zip(actions, canonical_partitions(users, partition_count), strict=True):
        owners[index] = owner
    return results, owners


@dataclass(slots=True)
class _Reader:
    """Takes one partition's messages into its share of the batch."""

    state: PartitionState
    part: PartitionBatch
    decoded: DecodedBatch
    not_after: float

    def event(
        self,
        message: Message,
        headers: Mapping[str, bytes],
        result: Action | Rejection,
        owner: int,
    ) -> None:
        """A tracker event that arrived here: taken, rejected, or set aside to forward."""
        state = self.state
        if owner != state.number and isinstance(result, Action):
            self.decoded.misrouted.append(Misrouted(message, result.user_id, owner))
            return
        replaying = state.replaying = REPLAY_HEADER in headers
        clock = state.clock
        if isinstance(result, Action):
            moment = result.timestamp
            if moment > self.not_after:
                result = Rejection(Reason.FUTURE, f"timestamp {moment:.0f} is in the future")
            elif not clock.admit(moment):
                result = Rejection(
                    Reason.LATE,
                    f"event time {moment:.3f} is before the watermark {clock.value:.3f}",
                )
            else:
                self.part.add(result, message, clock.value)
                if not replaying:
                    self.decoded.live_times.append(moment)
                return
        self.decoded.rejected.append((message, result))

    def relay(
        self,
        message: Message,
        headers: Mapping[str, bytes],
        event: Action | Rejection | None,
        owner: int,
        max_bytes: int,
    ) -> None:
        """A message the pipeline relayed here: taken once, or rejected without its source;
        `event` is a routed event's decoding, and `owner` its user's partition."""
        source = source_of(headers)
        if source is None:
            unsourced = "a relayed message without its source offset"
            self.decoded.rejected.append((message, Rejection(Reason.INVALID_CONTROL, unsourced)))
            return
        if not self.state.first_relay(source):
            return  # taken before: produced again by a batch that was redone
        self.part.relayed += 1
        if event is not None:
            self.event(message, headers, event, owner)
            return
        key = (message.key() or b"").decode()
        kind = headers[RELAY_HEADER]
        item = relayed_item(kind, key, message.value() or b"", max_bytes=max_bytes)
        if isinstance(item, Rejection):
            self.decoded.rejected.append((message, item))
        else:
            self.part.add(item, message, self.state.clock.value)

    def control(self, message: Message, headers: Mapping[str, bytes]) -> None:
        """An erase or advance-watermark command."""
        command = headers[CONTROL_HEADER]
        if command == ERASE:
            user_id = (message.key() or b"").decode(errors="replace")
            if user_id:
                self.part.add(Erase(user_id), message, self.state.clock.value)
            else:
                reason = Rejection(
                    Reason.INVALID_CONTROL, "an erase command is keyed by the user id"
                )
                self.decoded.rejected.append((message, reason))
            return
        until = advance_until(message.value())
        if command != ADVANCE_WATERMARK or until is None:
            reason = Rejection(Reason.INVALID_CONTROL, 'expected {"until": seconds}')
            self.decoded.rejected.append((message, reason))
            return
        self.state.clock.advance_to(until)
        self.part.advances = True
        self.part.add(Advance(until), message, self.state.clock.value)
