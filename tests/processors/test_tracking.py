"""Tracking API bodies to events-topic messages, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from processors.events import Action, decode_event
from processors.tracking import CallError, decode_calls

RECEIVED = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)


def ids():
    counter = iter(range(1_000))
    return lambda: f"api-{next(counter)}"


def test_a_batch_shares_its_context_and_sent_at_and_every_event_decodes():
    body = orjson.dumps(
        {
            "batch": [
                {
                    "type": "track",
                    "userId": 42,
                    "event": "Order Completed",
                    "properties": {"revenue": 10},
                    "timestamp": "2026-11-01T11:59:00Z",
                    "context": {"locale": "de-DE"},
                },
                {"type": "page", "anonymousId": "a1", "messageId": "given"},
            ],
            "context": {"device": {"type": "Mobile"}, "locale": "en-US"},
            "sentAt": "2026-11-01T11:59:30Z",
        }
    )
    order, page = decode_calls(body, "batch", RECEIVED, ids())
    assert (order.key, page.key) == (b"42", b"a1")
    first, second = orjson.loads(order.value), orjson.loads(page.value)
    assert first["context"] == {"device": {"type": "Mobile"}, "locale": "de-DE"}
    assert first["messageId"] == "api-0"
    assert second["messageId"] == "given"
    assert first["timestamp"] == "2026-11-01T11:59:30.000Z"  # 30 s of client clock skew
    assert first["originalTimestamp"] == "2026-11-01T11:59:00Z"
    assert second["timestamp"] == second["receivedAt"] == "2026-11-01T12:00:00.000Z"
    for event in (order, page):
        assert isinstance(decode_event(event.value), Action)


def test_the_path_decides_the_type_of_a_single_call():
    [event] = decode_calls(
        b'{"type": "page", "userId": "u", "event": "x"}', "track", RECEIVED, ids()
    )
    assert event.type == "track"
    assert orjson.loads(event.value)["type"] == "track"


@pytest.mark.parametrize(
    ("body", "endpoint", "message"),
    [
        (b"{", "track", "invalid JSON"),
        (b"[]", "track", "expected a JSON object"),
        (b'{"userId": ""}', "page", "neither userId nor anonymousId"),
        (b'{"userId": true}', "page", "neither userId nor anonymousId"),
        (b'{"batch": {}}', "batch", "batch: expected a list"),
        (b'{"batch": [1]}', "batch", "batch[0]: expected an object"),
        (b'{"batch": [{"userId": "u"}]}', "batch", "batch[0]: type: expected one of"),
        (b'{"userId": "u"}', "buy", "unknown call /v1/buy"),
    ],
)
def test_unusable_calls_name_the_problem(body, endpoint, message):
    with pytest.raises(CallError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_calls(body, endpoint, RECEIVED, ids())


def test_each_event_of_a_batch_has_the_per_event_limit():
    body = orjson.dumps({"batch": [{"type": "page", "userId": "u", "name": "x" * 2_000}]})
    with pytest.raises(CallError, match=r"batch\[0\]: event is \d+ bytes, over the limit of 1000"):
        decode_calls(body, "batch", RECEIVED, ids(), max_event_bytes=1_000)
