"""`segstream deliver`: segment changes sent to webhook destinations, at least once and in
version order per user.

The destinations are the newest file published on the destinations topic
(:mod:`streams.deliver.destinations_feed`), or `SEGSTREAM_DESTINATIONS_FILE` until one
is; a deliverer follows the topic and starts, changes or stops destinations
between batches without a restart. Each destination reads the change topic in
a consumer group of its own (`<group>-deliver-<name>`), so a slow or failing
destination holds back only itself. The changes a destination takes queue by
user: users are delivered concurrently (at
most `SEGSTREAM_DELIVERY_CONCURRENCY` requests in flight), each user's changes
one request after another, in the order of the change topic, which is version
order. A request is retried with exponential backoff and jitter on
connection errors, timeouts, 408, 429 and 5xx, after `Retry-After` when the
receiver gives one; any other answer, or the last attempt failing, sends its
changes to the dead-letter topic with the destination, status and reason, and
delivery goes on. Consuming goes on while users' requests are in flight or
retried, up to 5,000 changes open; each partition's offset is committed up to
its lowest change not yet delivered or dead-lettered
(:mod:`streams.deliver.offsets`), so a deliverer killed resends at most the
changes it had open. Example::

    asyncio.run(deliver(settings, Configured.parse(text, "destinations.yaml"), stop, probe))
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from processors.destinations import Destination, webhook_request
from streams.deliver import metrics
from streams.deliver.destinations_feed import Configured, DestinationsFeed
from streams.deliver.offsets import OpenOffsets
from streams.health import Probe
from streams.kafka import batch_consumer, reliable_producer
from streams.settings import Settings

log = logging.getLogger(__name__)

_RETRYABLE = frozenset({408, 429})
_BATCH = 500
_BATCH_WAIT = 0.02
"""Longest a batch waits to fill, in s: a lone change is on its way within this."""
_MOST_PENDING = 10 * _BATCH
"""Changes consumed and not yet delivered or dead-lettered, at most, per destination."""
_STOP_WAIT = 10.0
"""Seconds requests in flight get to finish when a destination stops."""
_FOLLOW_EVERY = 0.5


@dataclass(frozen=True, slots=True)
class Outcome:
    """How sending one request ended."""

    delivered: bool
    status: int | None
    reason: str


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: seconds, or an HTTP date (a date past
    waits 0); `None` when there is none or it is neither.

    >>> moment = datetime(2015, 10, 21, 7, 28, tzinfo=UTC)
    >>> retry_after("3"), retry_after(None), retry_after("soon")
    (3.0, None, None)
    >>> retry_after("Wed, 21 Oct 2015 07:28:30 GMT", moment)
    30.0
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def backoff(attempt: int, first: float, longest: float) -> float:
    """Seconds before attempt `attempt + 1`: a ceiling that starts at `first` and doubles
    with each attempt up to `longest`, drawn at random between half of it and all of it
    ("equal jitter": retries spread out, and a given number of attempts always spans at
    least half the sum of the ceilings).

    >>> 1.0 <= backoff(3, 0.5, 30) <= 2.0, 15.0 <= backoff(9, 0.5, 30) <= 30.0
    (True, True)
    """
    ceiling = min(longest, first * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class _Answer:
    """One attempt's result: the status (`None`: no answer), why, and `Retry-After`."""

    status: int | None
    reason: str
    retry_after: float | None = None


async def _attempt(
    session: aiohttp.ClientSession,
    destination: Destination,
    headers: dict[str, str],
    body: bytes,
    slots: asyncio.Semaphore,
) -> _Answer:
    """Send one request while holding one of the destination's `slots`."""
    name = destination.name
    async with slots:
        metrics.SENT.labels(name).inc()
        metrics.IN_FLIGHT.labels(name).inc()
        try:
            async with session.post(
                str(destination.url),
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=destination.timeout),
            ) as response:
                return _Answer(
                    response.status,
                    f"answered {response.status}",
                    retry_after(response.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            return _Answer(None, f"{type(error).__name__}: {error}")
        finally:
            metrics.IN_FLIGHT.labels(name).dec()


async def send(
    session: aiohttp.ClientSession,
    destination: Destination,
    secret: str,
    changes: Sequence[dict[str, Any]],
    settings: Settings,
    slots: asyncio.Semaphore,
) -> Outcome:
    """Send `changes` in one signed request, retrying as the module docstring says; a
    request holds one of `slots` while in flight, not while it waits to be retried."""
    answer = _Answer(None, "")
    for attempt in range(1, destination.max_attempts + 1):
        headers, body = webhook_request(destination, changes, datetime.now(UTC), secret)
        answer = await _attempt(session, destination, headers, body, slots)
        status = answer.status
        if status is not None and 200 <= status < 300:
            return Outcome(True, status, "delivered")
        if status is not None and status not in _RETRYABLE and status < 500:
            return Outcome(False, status, answer.reason)
        if attempt < destination.max_attempts:
            metrics.RETRIED.labels(destination.name).inc()
            wait = answer.retry_after
            if wait is None:
                wait = backoff(
                    attempt,
                    settings.delivery_backoff_seconds,
                    settings.delivery_backoff_max_seconds,
                )
            await asyncio.sleep(wait)
    return Outcome(False, answer.status, f"{answer.reason} ({destination.max_attempts} attempts)")


@dataclass(frozen=True, slots=True)
class _Request:
    """Changes to send in one request, where they are on the change topic, and the
    destination settings and secret in force when they were consumed."""

    changes: list[dict[str, Any]]
    offsets: list[tuple[int, int]]
    destination: Destination
    secret: str


class DestinationDelivery:
    """One destination's consumer, sender and dead letters; `reconfigure` changes its
    filters, address or secret for the changes consumed from then on.

    Each user's changes wait in a queue of their own, sent one request after another
    by a task of their own, while consuming goes on: a user whose requests are retried
    holds back only their own later changes, up to `_MOST_PENDING` changes open in all.
    """

    def __init__(self, settings: Settings, destination: Destination, secret: str) -> None:
        self.settings = settings
        self.destination = destination
        self.secret = secret
        self.consumer: Consumer = batch_consumer(
            settings, None, **{"group.id": f"{settings.group_id}-deliver-{destination.name}"}
        )
        self.joined_at = self._ends_if_new() if destination.start == "latest" else {}
        self.consumer.subscribe([settings.changes_topic], on_assign=self._on_assign)
        self.producer = reliable_producer(settings)
        self.slots = asyncio.Semaphore(settings.delivery_concurrency)
        self.stopping = threading.Event()
        self.offsets = OpenOffsets()
        self.queues: dict[str, deque[_Request]] = {}
        self.chains: dict[str, asyncio.Task[None]] = {}
        self.dead_letters_unflushed = False
        self.failure: BaseException | None = None

    def _ends_if_new(self) -> dict[int, int]:
        """For `start: latest`: per partition of the change topic this destination has no
        committed offset in, its end now, where delivery begins (an end taken when the
        partition is assigned would skip the changes published while the deliverer joined)."""
        topic = self.settings.changes_topic
        listed = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        partitions = [TopicPartition(topic, number) for number in sorted(listed)]
        return {
            found.partition: self.consumer.get_watermark_offsets(found, timeout=10)[1]
            for found in self.consumer.committed(partitions, timeout=10)
            if found.offset < 0
        }

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Begin where :meth:`_ends_if_new` said, in partitions still without a committed
        offset; elsewhere at the committed offset (or the oldest change)."""
        new = [found for found in partitions if found.partition in self.joined_at]
        if new:
            for found in consumer.committed(new, timeout=10):
                start = self.joined_at.pop(found.partition)
                if found.offset < 0:
                    self.joined_at[found.partition] = start
                    next(p for p in partitions if p.partition == found.partition).offset = start
        consumer.assign(partitions)

    def reconfigure(self, destination: Destination, secret: str) -> None:
        """Deliver the changes consumed from now on with `destination`'s settings and
        `secret`."""
        self.destination = destination
        self.secret = secret

    async def run(self) -> None:
        """Deliver until `stopping` is set; then give requests in flight a few seconds, and
        commit what was finished."""
        async with aiohttp.ClientSession() as session:
            try:
                while not self.stopping.is_set():
                    if self.failure is not None:
                        raise self.failure
                    if self.offsets.pending >= _MOST_PENDING:
                        await asyncio.sleep(_BATCH_WAIT)
                    else:
                        self._schedule(session, await asyncio.to_thread(self._consume))
                    await self._commit()
            finally:
                if self.chains:
                    await asyncio.wait(list(self.chains.values()), timeout=_STOP_WAIT)
                for chain in list(self.chains.values()):
                    chain.cancel()
                await self._commit()
                await asyncio.to_thread(self.producer.flush, 10)
                await asyncio.to_thread(self.consumer.close)

    def _consume(self) -> list[Message]:
        """The next batch, and the backlog behind it (from the watermarks of the last fetch)."""
        messages = self.consumer.consume(_BATCH, _BATCH_WAIT)
        backlog = 0
        for position in self.consumer.position(self.consumer.assignment()):
            if position.offset < 0:
                continue
            _, high = self.consumer.get_watermark_offsets(position, cached=True)
            backlog += max(0, high - position.offset)
        metrics.BACKLOG.labels(self.destination.name).set(backlog)
        return messages

    def _schedule(self, session: aiohttp.ClientSession, messages: list[Message]) -> None:
        """Queue every change of `messages` the destination takes behind its user's earlier
        ones (all in one queue when the destination batches)."""
        destination, secret = self.destination, self.secret
        taken: list[tuple[dict[str, Any], tuple[int, int]]] = []
        for message in messages:
            partition, offset = message.partition(), message.offset()
            if message.error() is not None or partition is None or offset is None:
                continue
            value = message.value()
            # an erasure's tombstone (no value) follows its `exited` change
            change = orjson.loads(value) if value is not None else None
            matched = change is not None and destination.matches(change)
            self.offsets.consumed(partition, offset, open_=matched)
            if change is not None and matched:
                taken.append((change, (partition, offset)))
        size = destination.batch
        for start in range(0, len(taken), size):
            part = taken[start : start + size]
            key = str(part[0][0]["user_id"]) if size == 1 else ""
            request = _Request([c for c, _ in part], [at for _, at in part], destination, secret)
            self.queues.setdefault(key, deque()).append(request)
            if key not in self.chains:
                self.chains[key] = asyncio.create_task(self._drain(session, key))

    async def _drain(self, session: aiohttp.ClientSession, key: str) -> None:
        """Send the requests queued under `key`, one after another, until none is left."""
        queue = self.queues[key]
        try:
            while queue:
                request = queue[0]
                outcome = await send(
                    session,
                    request.destination,
                    request.secret,
                    request.changes,
                    self.settings,
                    self.slots,
                )
                self._record(request, outcome)
                queue.popleft()
                for partition, offset in request.offsets:
                    self.offsets.finished(partition, offset)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the run loop raises it: the deliverer stops
            self.failure = error
        finally:
            del self.chains[key]
            if not queue:
                del self.queues[key]

    def _record(self, request: _Request, outcome: Outcome) -> None:
        """Count a delivered request, or dead-letter its changes."""
        name = request.destination.name
        if outcome.delivered:
            metrics.DELIVERED.labels(name).inc(len(request.changes))
            now = time.time()
            for change in request.changes:
                metrics.LATENCY.labels(name).observe(now - change.get("processed_at", now))
        else:
            self._dead_letter(name, request.changes, outcome)

    async def _commit(self) -> None:
        """Commit each partition up to its lowest open offset, once the dead letters before
        it are on the broker; a failed commit (the group moved the partitions on) only means
        changes are delivered again, so it is logged and tried again."""
        moved = self.offsets.to_commit()
        if not moved:
            return
        if self.dead_letters_unflushed:  # the dead letters of `moved` were produced by now
            self.dead_letters_unflushed = False
            if await asyncio.to_thread(self.producer.flush, 30):
                self.dead_letters_unflushed = True
                self.offsets.committed.clear()
                return
        offsets = [
            TopicPartition(self.settings.changes_topic, partition, position)
            for partition, position in moved.items()
        ]
        try:
            await asyncio.to_thread(self.consumer.commit, offsets=offsets, asynchronous=False)
        except KafkaException as error:
            self.offsets.committed.clear()
            log.warning(
                "offsets not committed, these changes may be delivered again "
                "destination=%s error=%s",
                self.destination.name,
                error,
            )

    def _dead_letter(self, name: str, changes: list[dict[str, Any]], outcome: Outcome) -> None:
        status = str(outcome.status or "")
        metrics.DEAD_LETTERED.labels(name, status or "none").inc(len(changes))
        log.warning(
            "delivery dead-lettered destination=%s status=%s reason=%r",
            name,
            outcome.status,
            outcome.reason,
        )
        for change in changes:
            self.producer.produce(
                self.settings.deliveries_dlq_topic,
                key=str(change["user_id"]).encode(),
                value=orjson.dumps(change),
                headers=[
                    ("destination", name.encode()),
                    ("status", status.encode()),
                    ("reason", outcome.reason.encode()),
                ],
            )
        self.dead_letters_unflushed = True


class Deliverer:
    """The deliveries of the destinations in force, started, reconfigured and stopped as
    publications arrive."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.running: dict[str, DestinationDelivery] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def adopt(self, configured: Configured) -> None:
        """Put `configured` in force: new destinations start, changed ones apply to the
        changes consumed from now on, and those no longer named stop (see `run`)."""
        wanted = configured.by_name()
        for name in [name for name in self.running if name not in wanted]:
            self.running.pop(name).stopping.set()
        for name, (destination, secret) in wanted.items():
            if name in self.running:
                self.running[name].reconfigure(destination, secret)
                continue
            delivery = DestinationDelivery(self.settings, destination, secret)
            self.running[name] = delivery
            self.tasks.add(asyncio.create_task(delivery.run(), name=f"deliver-{name}"))
        log.info(
            "destinations in force source=%s names=%s",
            configured.source,
            ",".join(wanted) or "-",
        )

    def check(self) -> None:
        """Raise the error of any delivery that failed."""
        for task in [task for task in self.tasks if task.done()]:
            self.tasks.discard(task)
            task.result()

    async def close(self) -> None:
        """Stop every delivery after its batch."""
        for delivery in self.running.values():
            delivery.stopping.set()
        await asyncio.gather(*self.tasks)


async def deliver(
    settings: Settings, fallback: Configured | None, stop: threading.Event, probe: Probe
) -> None:
    """Deliver to the destinations in force until `stop` is set: the newest published, else
    `fallback` (from `SEGSTREAM_DESTINATIONS_FILE`). `probe` is ready once the destinations
    topic is read, and live while this loop comes round."""
    feed = DestinationsFeed(settings)
    deliverer = Deliverer(settings)
    try:
        configured = await asyncio.to_thread(feed.catch_up) or fallback
        if configured is None:
            log.warning(
                "no destinations yet: waiting for `segstream destinations apply` "
                "(or set SEGSTREAM_DESTINATIONS_FILE)"
            )
        else:
            deliverer.adopt(configured)
        probe.ready = True
        while not stop.is_set():
            probe.beat()
            await asyncio.sleep(_FOLLOW_EVERY)
            deliverer.check()
            published = await asyncio.to_thread(feed.poll)
            if published is not None:
                deliverer.adopt(published)
    finally:
        await deliverer.close()
        feed.close()
    log.info("deliverer stopped")
