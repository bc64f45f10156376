"""A batch's messages read at once, as its events are decoded on two threads, read as they
do one message at a time."""

from __future__ import annotations

import orjson
from confluent_kafka import Message

from processors._core import Watermark
from streams.worker.decoding import DecodedBatch, decode_batch
from streams.worker.partitions import PartitionState

_START = 1_793_000_000.0


def _messages(count: int) -> list[Message]:
    """Events of a few users, with malformed, late, future and misrouted ones among them."""
    messages = []
    for offset in range(count):
        at = _START + offset - (4_000 if offset % 97 == 0 else 0)  # late past the hour
        if offset % 89 == 0:
            at += 10_000_000  # in the future
        event = {
            "type": "track",
            "event": "Product Viewed",
            "userId": f"user-{offset % 13}",
            "timestamp": at,
            "messageId": f"m{offset}",
            "properties": {"price": offset % 50, "category": "books"},
        }
        value = orjson.dumps(event)
        if offset % 53 == 0:
            value = value[:-3]  # cut short: not JSON
        if offset % 71 == 0:
            value = orjson.dumps({**event, "type": "unknown"})
        messages.append(Message(topic="events", partition=0, offset=offset, value=value))
    return messages


def _read(batches: list[list[Message]]) -> list[tuple[object, ...]]:
    """What each of `batches`, read in turn against one partition's clock, yields."""
    owned = {0: PartitionState(0, None, Watermark(3_600, 5))}
    read: list[tuple[object, ...]] = []
    for batch in batches:
        decoded: DecodedBatch = decode_batch(
            batch, owned, partition_count=2, max_event_bytes=32_768, not_after=_START + 1e6
        )
        read += [("rejected", m.offset(), str(r.reason), r.detail) for m, r in decoded.rejected]
        read += [("misrouted", m.message.offset(), m.user_id, m.to) for m in decoded.misrouted]
        if 0 in decoded.partitions:
            part = decoded.partitions[0]
            read += [("part", part.last, len(part), sorted(part.user_ids()))]
        read += [("live", round(moment, 3)) for moment in decoded.live_times]
    read.append(("clock", owned[0].clock.value, owned[0].clock.firing))
    return read


def test_a_batch_read_at_once_reads_as_its_messages_one_at_a_time() -> None:
    messages = _messages(1_500)
    at_once = _read([messages])
    one_at_a_time = _read([[message] for message in messages])
    for kind in ("rejected", "misrouted", "live", "clock"):
        found = [entry for entry in at_once if entry[0] == kind]
        assert found, kind
        assert found == [entry for entry in one_at_a_time if entry[0] == kind]
    [(_, last, items, users)] = [e for e in at_once if e[0] == "part"]
    parts = [e for e in one_at_a_time if e[0] == "part"]
    assert last == parts[-1][1] == 1_499
    assert items == sum(entry[2] for entry in parts)
    assert users == sorted({user for entry in parts for user in entry[3]})
