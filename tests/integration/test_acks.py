"""A producer the broker fences is replaced, and the next send is acknowledged."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from confluent_kafka import Producer

from streams.kafka import reliable_producer
from streams.services.acks import AckingProducer, NotAcknowledgedError

pytestmark = pytest.mark.integration


def test_a_fenced_producer_is_replaced_and_sends_go_on(config):
    """Fencing is forced the way the broker does it: another producer claims the same
    transactional id. Every producer the factory builds claims it in turn."""
    built = itertools.count(1)

    def make_producer() -> Producer:
        next(built)
        producer = reliable_producer(config, **{"transactional.id": "acks-fencing-test"})
        producer.init_transactions(30)
        producer.begin_transaction()
        return producer

    async def scenario() -> None:
        sending = AckingProducer(make_producer)
        try:
            await sending.send(config.events_topic, [(b"u1", b"before")], timeout=30)
            intruder = reliable_producer(config, **{"transactional.id": "acks-fencing-test"})
            intruder.init_transactions(30)  # fences the producer `sending` holds
            # Kafka 4 answers with INVALID_PRODUCER_EPOCH ("an old epoch"), 3.x with
            # PRODUCER_FENCED ("fences the current one"): either fences for good
            with pytest.raises(NotAcknowledgedError, match=r"the broker refused: .*old epoch"):
                await sending.send(config.events_topic, [(b"u1", b"fenced")], timeout=30)
            await sending.send(config.events_topic, [(b"u1", b"after")], timeout=30)
        finally:
            sending.close()

    asyncio.run(scenario())
    assert next(built) == 3  # the first producer and its replacement
