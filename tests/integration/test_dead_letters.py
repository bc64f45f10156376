"""`segstream dlq` on a real broker: refused events read back with why and where, counted
by reason, and sent back once the setting that refused them is fixed; the worker says
once per batch how many it refused and why."""

from __future__ import annotations

import orjson
import pytest

from streams.tools.simulate import KafkaSink
from streams.tools.simulator import SimulatedEvent
from tests.integration.conftest import segstream, wait_for_events

pytestmark = pytest.mark.integration


def event(user: str, number: int, **fields: object) -> SimulatedEvent:
    body = {
        "type": "track",
        "event": "Product Viewed",
        "userId": user,
        "messageId": f"{user}-{number}",
        "timestamp": f"2026-10-01T12:{number:02d}:00Z",
        **fields,
    }
    return SimulatedEvent(0.0, user.encode(), orjson.dumps(body))


def send(config, *events: SimulatedEvent) -> None:
    sink = KafkaSink(config)
    for one in events:
        sink.write(one)
    sink.close()


def test_dead_letters_are_read_counted_and_sent_back(config, start_worker, model, tmp_path):
    strict = config.model_copy(update={"max_event_bytes": 512})
    worker = start_worker(strict)
    send(
        config,
        event("ann", 1),
        event("bob", 2, event="Order Completed", properties={"revenue": -5}),
        event("bob", 3, timestamp="yesterday"),
        event("cat", 4, event=None),
        event("dan", 5, properties={"note": "x" * 600}),
    )
    line = worker.wait_for_log("dead letters ")
    assert "level=INFO" in line
    wait_for_events(model, 1)

    tail = segstream(config, "dlq", "tail")
    assert tail.returncode == 0, tail.stderr
    letters = [orjson.loads(text) for text in tail.stdout.splitlines()]
    assert sorted(letter["reason"] for letter in letters) == [
        "invalid_revenue",
        "invalid_schema",
        "invalid_timestamp",
        "oversized",
    ], letters
    oversized = next(letter for letter in letters if letter["reason"] == "oversized")
    assert orjson.loads(oversized["body"])["userId"] == "dan"
    assert oversized["source"].startswith(f"{config.events_topic}/")
    assert set(oversized) == {"body", "reason", "detail", "source", "partition", "offset", "time"}
    only = segstream(config, "dlq", "tail", "--reason", "oversized")
    assert [orjson.loads(text)["offset"] for text in only.stdout.splitlines()] == [
        oversized["offset"]
    ]
    stats = segstream(config, "dlq", "stats")
    assert stats.stdout.splitlines() == [
        "invalid_revenue\t1",
        "invalid_schema\t1",
        "invalid_timestamp\t1",
        "oversized\t1",
        "total\t4",
    ]
    later = segstream(config, "dlq", "stats", "--since", "2100-01-01T00:00:00Z")
    assert later.stdout.splitlines() == ["total\t0"]

    # the limit raised, the oversized event is sent back once and taken
    worker.stop()
    start_worker(config)
    sent = segstream(config, "dlq", "replay", "--reason", "oversized")
    assert sent.returncode == 0, sent.stderr
    assert "sent 1 dead letters back" in sent.stderr
    wait_for_events(model, 2)
    dan = orjson.loads(segstream(config, "profile", "dan").stdout)
    assert dan["features"]["product_views_30d"] == 1
    assert segstream(config, "dlq", "stats").stdout.splitlines()[-1] == "total\t4"
