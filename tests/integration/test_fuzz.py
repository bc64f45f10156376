"""Fuzzed payloads on a real broker: the worker keeps going and dead-letters each bad one.

`FUZZ_EVENTS` sets how many payloads go to the events topic (`make chaos` sends 20,000).
"""

from __future__ import annotations

import os

import pytest
from confluent_kafka import Producer

from processors.events import Action, Reason, decode_event
from tests.fuzz import mutants
from tests.integration.conftest import read_topic, wait_for_events

pytestmark = pytest.mark.integration
EVENTS = int(os.environ.get("FUZZ_EVENTS", "2000"))
REASONS = {value for name, value in vars(Reason).items() if name.isupper()}


def test_every_fuzzed_payload_is_applied_or_dead_lettered_with_its_reason(
    config, start_worker, model
):
    worker = start_worker()
    producer = Producer({"bootstrap.servers": config.kafka_bootstrap, "linger.ms": 20})
    decodable = 0
    for number, raw in enumerate(mutants(seed=11, count=EVENTS)):
        decodable += isinstance(decode_event(raw), Action)
        producer.produce(config.events_topic, raw, key=f"k{number % 97}".encode())
        if number % 5_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    counters = wait_for_events(model, EVENTS, timeout=300)
    assert counters["events"] + counters["duplicates"] + counters["dead_letters"] == EVENTS
    assert counters["events"] > 0
    assert worker.process.poll() is None

    dead = read_topic(config, config.dead_letter_topic)
    assert len(dead) == counters["dead_letters"]
    for message in dead:
        headers = dict(message.headers())
        assert headers["reason"].decode() in REASONS, headers
        assert headers["detail"], headers
        assert headers["source"].startswith(config.events_topic.encode()), headers
    reasons = [dict(message.headers())["reason"].decode() for message in dead]
    # Exactly the payloads the decoder refuses are dead-lettered as bad input; the ones it
    # takes are applied, skipped as duplicates (the mutants reuse message ids) or late.
    assert (
        sum(reason not in (Reason.LATE, Reason.FUTURE) for reason in reasons) == EVENTS - decodable
    )
    assert {Reason.INVALID_JSON, Reason.INVALID_SCHEMA, Reason.MISSING_ID} <= set(reasons)
