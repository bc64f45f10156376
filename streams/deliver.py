"""`segstream deliver`: segment changes sent to webhook destinations, at least once and in
version order per user.

Each destination reads the change topic in a consumer group of its own
(`<group>-deliver-<name>`), so a slow or failing destination holds back only
itself. Of a consumed batch, the changes a destination takes are grouped by
user: users are delivered concurrently (at most `SEGSTREAM_DELIVERY_CONCURRENCY`
requests in flight), each user's changes one request after another, in the
order of the change topic, which is version order. A request is retried with
exponential backoff and full jitter on connection errors, timeouts, 408, 429
and 5xx, after `Retry-After` when the receiver gives one; any other answer, or
the last attempt failing, sends its changes to the dead-letter topic with the
destination, status and reason, and delivery goes on. The batch's offsets are
committed once each of its changes was delivered or dead-lettered, so a
deliverer killed resends at most the batch it had in flight. Example::

    asyncio.run(deliver(settings, destinations, stop))
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from confluent_kafka import Consumer, Message, TopicPartition

from processors.destinations import Destination, webhook_request
from streams import delivery_metrics as metrics
from streams.kafka import batch_consumer, reliable_producer
from streams.settings import Settings

log = logging.getLogger(__name__)

_RETRYABLE = frozenset({408, 429})
_FIRST_BACKOFF = 0.5
_LONGEST_BACKOFF = 30.0
_BATCH = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """How sending one request ended."""

    delivered: bool
    status: int | None
    reason: str


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header of seconds (an HTTP date is not honoured).

    >>> retry_after("3"), retry_after(None), retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    (3.0, None, None)
    """
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def backoff(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: full jitter under an exponential ceiling."""
    return random.uniform(0, min(_LONGEST_BACKOFF, _FIRST_BACKOFF * 2 ** (attempt - 1)))


async def send(
    session: aiohttp.ClientSession,
    destination: Destination,
    secret: str,
    changes: Sequence[dict[str, Any]],
) -> Outcome:
    """Send `changes` in one signed request, retrying as the module docstring says."""
    status: int | None = None
    reason = ""
    name = destination.name
    for attempt in range(1, destination.max_attempts + 1):
        headers, body = webhook_request(destination, changes, datetime.now(UTC), secret)
        wait = None
        metrics.SENT.labels(name).inc()
        try:
            async with session.post(
                str(destination.url),
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=destination.timeout),
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    return Outcome(True, status, "delivered")
                reason = f"answered {status}"
                if status not in _RETRYABLE and status < 500:
                    return Outcome(False, status, reason)
                wait = retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as error:
            status, reason = None, f"{type(error).__name__}: {error}"
        if attempt < destination.max_attempts:
            metrics.RETRIED.labels(name).inc()
            await asyncio.sleep(wait if wait is not None else backoff(attempt))
    return Outcome(False, status, f"{reason} ({destination.max_attempts} attempts)")


class DestinationDelivery:
    """One destination's consumer, sender and dead letters."""

    def __init__(self, settings: Settings, destination: Destination, secret: str) -> None:
        self.settings = settings
        self.destination = destination
        self.secret = secret
        self.consumer: Consumer = batch_consumer(
            settings, **{"group.id": f"{settings.group_id}-deliver-{destination.name}"}
        )
        self.consumer.subscribe([settings.changes_topic])
        self.producer = reliable_producer(settings)
        self.slots = asyncio.Semaphore(settings.delivery_concurrency)

    async def run(self, stop: threading.Event) -> None:
        """Deliver batch after batch until `stop` is set."""
        async with aiohttp.ClientSession() as session:
            try:
                while not stop.is_set():
                    messages = await asyncio.to_thread(self.consumer.consume, _BATCH, 0.5)
                    if messages:
                        await self.deliver_batch(session, messages)
            finally:
                self.producer.flush(10)
                await asyncio.to_thread(self.consumer.close)

    async def deliver_batch(self, session: aiohttp.ClientSession, messages: list[Message]) -> None:
        """Deliver or dead-letter every change of `messages` the destination takes, then
        commit their offsets."""
        requests: dict[str, list[list[dict[str, Any]]]] = {}
        taken: list[dict[str, Any]] = []
        for message in messages:
            value = message.value()
            if message.error() is not None or value is None:
                continue  # an erasure's tombstone follows its `exited` change, delivered
            change = orjson.loads(value)
            if self.destination.matches(change):
                taken.append(change)
        size = self.destination.batch
        if size == 1:
            for change in taken:
                requests.setdefault(str(change["user_id"]), []).append([change])
        else:
            requests[""] = [taken[start : start + size] for start in range(0, len(taken), size)]
        await asyncio.gather(*(self._in_order(session, chain) for chain in requests.values()))
        await asyncio.to_thread(self.producer.flush, 30)
        ends = {
            message.partition(): (message.offset() or 0) + 1
            for message in messages
            if message.error() is None
        }
        offsets = [
            TopicPartition(self.settings.changes_topic, partition, end)
            for partition, end in ends.items()
            if partition is not None
        ]
        if offsets:
            await asyncio.to_thread(self.consumer.commit, offsets=offsets, asynchronous=False)

    async def _in_order(
        self, session: aiohttp.ClientSession, chain: list[list[dict[str, Any]]]
    ) -> None:
        name = self.destination.name
        for changes in chain:
            async with self.slots:
                metrics.IN_FLIGHT.labels(name).inc()
                try:
                    outcome = await send(session, self.destination, self.secret, changes)
                finally:
                    metrics.IN_FLIGHT.labels(name).dec()
            if outcome.delivered:
                metrics.DELIVERED.labels(name).inc(len(changes))
                now = time.time()
                for change in changes:
                    metrics.LATENCY.labels(name).observe(now - change.get("processed_at", now))
            else:
                self._dead_letter(changes, outcome)

    def _dead_letter(self, changes: list[dict[str, Any]], outcome: Outcome) -> None:
        status = str(outcome.status or "")
        metrics.DEAD_LETTERED.labels(self.destination.name, status or "none").inc(len(changes))
        log.warning(
            "delivery dead-lettered destination=%s status=%s reason=%r",
            self.destination.name,
            outcome.status,
            outcome.reason,
        )
        for change in changes:
            self.producer.produce(
                self.settings.deliveries_dlq_topic,
                key=str(change["user_id"]).encode(),
                value=orjson.dumps(change),
                headers=[
                    ("destination", self.destination.name.encode()),
                    ("status", status.encode()),
                    ("reason", outcome.reason.encode()),
                ],
            )


async def deliver(
    settings: Settings, destinations: Sequence[Destination], stop: threading.Event
) -> None:
    """Run every destination's delivery until `stop` is set."""
    deliveries = [
        DestinationDelivery(settings, destination, destination.signing_secret())
        for destination in destinations
    ]
    log.info("deliverer started destinations=%s", ",".join(d.name for d in destinations))
    await asyncio.gather(*(delivery.run(stop) for delivery in deliveries))
    log.info("deliverer stopped")
