"""The worker: consume events in batches, update users, publish segment changes.

One loop iteration handles one batch end to end:

1. consume up to ``batch_max_events`` messages (confluent-kafka ``consume``);
2. decode each; undecodable ones go to the dead-letter topic with a reason;
3. load the batch's users from Redis (one ``MGET``), apply the batch, evaluate rules;
4. produce dead letters and segment changes, and wait for the broker's acks;
5. commit the users, labels, counters and the batch's end offsets in one
   Redis transaction.

A crash anywhere before step 5 replays the batch from the committed offsets,
which yields the same state and the same change versions again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from processors.batch import apply_batch
from processors.events import Action, Rejection, decode_event
from processors.rules import RuleSet, parse_rules
from processors.segments import SegmentChange
from state.keys import KeyLayout
from state.redis_store import RedisStateStore
from state.store import BatchCommit, PartitionFencedError, PartitionRange
from streams import metrics
from streams.kafka import batch_consumer, reliable_producer
from streams.settings import Settings

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """The broker did not acknowledge a message the batch produced."""


def load_rules(settings: Settings) -> RuleSet:
    """The rules in ``settings.rules_file``; raises ``RuleFileError`` when invalid."""
    path = settings.rules_file
    return parse_rules(path.read_text(encoding="utf-8"), source=str(path))


@dataclass(slots=True)
class _Decoded:
    actions: list[Action]
    rejected: list[tuple[Message, Rejection]]
    ranges: dict[int, tuple[int, int]]


class Worker:
    """A member of the workers' consumer group; :meth:`run` until ``stop`` is set."""

    def __init__(self, settings: Settings, rules: RuleSet) -> None:
        self.settings = settings
        self.rules = rules
        self.client = redis.Redis.from_url(settings.redis_url)
        self.store = RedisStateStore(
            self.client, KeyLayout(settings.redis_prefix), settings.group_id
        )
        self.consumer: Consumer = batch_consumer(settings)
        self.producer = reliable_producer(settings)
        self._committed: dict[int, int | None] = {}
        self._delivery_errors: list[str] = []

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set, then leave the group cleanly."""
        topic = self.settings.events_topic
        self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)
        wait = self.settings.batch_max_wait_ms / 1000
        log.info("worker started group=%s topic=%s", self.settings.group_id, topic)
        try:
            while not stop.is_set():
                messages = self.consumer.consume(self.settings.batch_max_events, wait)
                if messages:
                    self.process(messages)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            self.client.close()
            log.info("worker stopped")

    def process(self, messages: Sequence[Message]) -> None:
        """Handle one batch end to end (see the module docstring)."""
        started = time.perf_counter()
        decoded = self._decode(messages)
        if not decoded.ranges:
            return
        users = self.store.load({action.user_id for action in decoded.actions})
        outcome = apply_batch(decoded.actions, users, self.rules)
        self._produce(decoded.rejected, outcome.changes)
        topic = self.settings.events_topic
        ranges = [
            PartitionRange(topic, partition, self._committed.get(partition), end + 1)
            for partition, (_, end) in decoded.ranges.items()
        ]
        commit = BatchCommit(
            users=outcome.users,
            changes=outcome.changes,
            ranges=ranges,
            counters={
                "events": len(decoded.actions),
                "dead_letters": len(decoded.rejected),
                "changes": len(outcome.changes),
                "users": outcome.new_users,
            },
        )
        try:
            self.store.commit(commit)
        except PartitionFencedError as error:
            metrics.FENCED.inc()
            log.warning("batch dropped reason=fenced detail=%r", str(error))
            self._rewind(list(decoded.ranges))
            return
        for consumed in ranges:
            self._committed[consumed.partition] = consumed.end
        metrics.EVENTS_APPLIED.inc(len(decoded.actions))
        metrics.EVENTS_DEAD_LETTERED.inc(len(decoded.rejected))
        metrics.CHANGES.inc(len(outcome.changes))
        metrics.BATCH_EVENTS.observe(len(messages))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        log.debug(
            "batch events=%d dead_letters=%d users=%d changes=%d",
            len(decoded.actions),
            len(decoded.rejected),
            len(outcome.users),
            len(outcome.changes),
        )

    def _decode(self, messages: Sequence[Message]) -> _Decoded:
        actions: list[Action] = []
        rejected: list[tuple[Message, Rejection]] = []
        ranges: dict[int, tuple[int, int]] = {}
        max_bytes = self.settings.max_event_bytes
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error=%r", error.str())
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None
            assert offset is not None
            first, _ = ranges.get(partition, (offset, offset))
            ranges[partition] = (first, offset)
            result = decode_event(message.value() or b"", max_bytes=max_bytes)
            if isinstance(result, Rejection):
                rejected.append((message, result))
            else:
                actions.append(result)
        return _Decoded(actions, rejected, ranges)

    def _produce(
        self, rejected: list[tuple[Message, Rejection]], changes: Sequence[SegmentChange]
    ) -> None:
        producer = self.producer
        for message, rejection in rejected:
            metrics.DEAD_LETTERS.labels(reason=rejection.reason).inc()
            producer.produce(
                self.settings.dead_letter_topic,
                key=message.key(),
                value=message.value(),
                headers=[
                    ("reason", rejection.reason.encode()),
                    ("detail", rejection.detail.encode()),
                    (
                        "source",
                        f"{message.topic()}/{message.partition()}/{message.offset()}".encode(),
                    ),
                ],
                on_delivery=self._delivered,
            )
        processed_at = time.time()
        digest = self.rules.digest
        for change in changes:
            producer.produce(
                self.settings.changes_topic,
                key=change.user_id.encode(),
                value=change.to_json(processed_at, digest),
                on_delivery=self._delivered,
            )
        remaining = producer.flush(30)
        if remaining or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise DeliveryError(f"{remaining} undelivered, errors: {errors[:3]}")

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(error.str())

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = self.store.committed_offsets(
            self.settings.events_topic, [tp.partition for tp in partitions]
        )
        for tp in partitions:
            stored = committed.get(tp.partition)
            tp.offset = OFFSET_BEGINNING if stored is None else stored
            self._committed[tp.partition] = stored
        consumer.assign(partitions)
        log.info("partitions assigned=%s", _describe(partitions, committed))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._committed.pop(tp.partition, None)
        log.info("partitions revoked=%s", ",".join(str(tp.partition) for tp in partitions))

    def _rewind(self, partitions: list[int]) -> None:
        """Seek ``partitions`` back to their committed offsets after a fenced batch."""
        topic = self.settings.events_topic
        committed = self.store.committed_offsets(topic, partitions)
        for partition in partitions:
            if partition not in self._committed:
                continue  # revoked meanwhile
            stored = committed.get(partition)
            self._committed[partition] = stored
            offset = OFFSET_BEGINNING if stored is None else stored
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as error:
                log.warning("seek failed partition=%d error=%r", partition, str(error))


def _describe(partitions: list[TopicPartition], committed: dict[int, int | None]) -> str:
    return ",".join(f"{tp.partition}@{committed.get(tp.partition)}" for tp in partitions)
