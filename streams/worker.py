"""The worker: consume events in batches, update users, publish segment changes.

One loop iteration handles one batch end to end:

1. consume up to `batch_max_events` messages (confluent-kafka `consume`);
2. decode each in offset order; undecodable, future and late events go to the
   dead-letter topic with a reason; on-time ones move their partition's watermark;
3. load the batch's users from Redis (one `MGET`), apply each partition's
   actions, evaluate the rules;
4. produce dead letters and segment changes, and wait for the broker's acks;
5. commit the users, labels, counters, and each partition's offset and
   watermark in one Redis transaction.

A crash anywhere before step 5 replays the batch from the committed progress,
which yields the same state and the same change versions again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from processors.batch import apply_batch, evaluate
from processors.events import Action, Rejection, decode_event
from processors.rules import RuleSet, parse_rules
from processors.segments import ChangeReason, SegmentChange
from processors.user import UserState
from processors.watermark import Watermark
from state.keys import KeyLayout
from state.redis_store import RedisStateStore
from state.store import BatchCommit, PartitionCommit, PartitionFencedError, PartitionProgress
from streams import metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

CONTROL_HEADER = "segstream-control"
"""Header marking a control message on the events topic; its value names the command."""
ADVANCE_WATERMARK = b"advance-watermark"
"""Control command: the JSON body `{"until": epoch_seconds}` advances the partition's watermark."""

LATE = "late"
FUTURE = "future_timestamp"
INVALID_CONTROL = "invalid_control"


class DeliveryError(RuntimeError):
    """The broker did not acknowledge a message the batch produced."""


def load_rules(settings: Settings) -> RuleSet:
    """The rules in `settings.rules_file`; raises `RuleFileError` when invalid."""
    path = settings.rules_file
    return parse_rules(path.read_text(encoding="utf-8"), source=str(path))


@dataclass(slots=True)
class _PartitionBatch:
    """One partition's share of a batch."""

    first: int
    last: int
    actions: list[Action] = field(default_factory=list)
    advance_to: float | None = None


@dataclass(slots=True)
class _Decoded:
    partitions: dict[int, _PartitionBatch]
    rejected: list[tuple[Message, Rejection]]


class Worker:
    """A member of the workers' consumer group; :meth:`run` until `stop` is set."""

    def __init__(self, settings: Settings, rules: RuleSet) -> None:
        from streams.kafka import batch_consumer, reliable_producer

        self.settings = settings
        self.rules = rules
        self.client = redis.Redis.from_url(settings.redis_url)
        self.store = RedisStateStore(
            self.client, KeyLayout(settings.redis_prefix), settings.group_id
        )
        self.consumer: Consumer = batch_consumer(settings)
        self.producer = reliable_producer(settings)
        self._committed: dict[int, int | None] = {}
        self._clocks: dict[int, Watermark] = {}
        self._delivery_errors: list[str] = []

    def run(self, stop: threading.Event) -> None:
        """Process batches until `stop` is set, then leave the group cleanly."""
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
        if not decoded.partitions:
            return
        wanted = {a.user_id for part in decoded.partitions.values() for a in part.actions}
        stored = self.store.load(wanted)
        users: dict[str, UserState] = {}
        changes: list[SegmentChange] = []
        commits = []
        applied = duplicates = new_users = 0
        topic = self.settings.events_topic
        for partition, part in decoded.partitions.items():
            clock = self._clocks[partition]
            horizon = clock.max_event_time - self.settings.dedup_horizon_seconds
            outcome = apply_batch(part.actions, stored, self.rules, watermark=horizon)
            users.update(outcome.users)
            changes += outcome.changes
            applied += len(part.actions) - outcome.duplicates
            duplicates += outcome.duplicates
            new_users += outcome.new_users
            fresh = [u for u in outcome.users if u not in stored]
            if part.advance_to is not None:
                changes += self._sweep(partition, part.advance_to, users, fresh)
            progress = PartitionProgress(part.last + 1, clock.max_event_time, clock.floor)
            commits.append(
                PartitionCommit(topic, partition, self._committed.get(partition), progress, fresh)
            )
        self._produce(decoded.rejected, changes)
        commit = BatchCommit(
            users=users,
            changes=changes,
            partitions=commits,
            counters={
                "events": applied,
                "duplicates": duplicates,
                "dead_letters": len(decoded.rejected),
                "late": sum(1 for _, r in decoded.rejected if r.reason == LATE),
                "changes": len(changes),
                "users": new_users,
            },
        )
        try:
            self.store.commit(commit)
        except PartitionFencedError as error:
            metrics.FENCED.inc()
            log.warning("batch dropped reason=fenced detail=%r", str(error))
            self._rewind(list(decoded.partitions))
            return
        for consumed in commits:
            self._committed[consumed.partition] = consumed.progress.offset
        metrics.EVENTS_APPLIED.inc(applied)
        metrics.EVENTS_DEAD_LETTERED.inc(len(decoded.rejected))
        metrics.CHANGES.inc(len(changes))
        metrics.BATCH_EVENTS.observe(len(messages))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        log.debug(
            "batch events=%d dead_letters=%d users=%d changes=%d",
            applied,
            len(decoded.rejected),
            len(users),
            len(changes),
        )

    def _decode(self, messages: Sequence[Message]) -> _Decoded:
        partitions: dict[int, _PartitionBatch] = {}
        rejected: list[tuple[Message, Rejection]] = []
        max_bytes = self.settings.max_event_bytes
        not_after = time.time() + self.settings.max_future_seconds
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error=%r", error.str())
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None
            assert offset is not None
            clock = self._clocks.get(partition)
            if clock is None:
                continue  # revoked while the batch was in flight
            part = partitions.get(partition)
            if part is None:
                part = partitions[partition] = _PartitionBatch(offset, offset)
            part.last = offset
            if _is_control(message):
                until = _advance_until(message.value())
                if until is None:
                    rejected.append(
                        (message, Rejection(INVALID_CONTROL, 'expected {"until": seconds}'))
                    )
                else:
                    clock.advance_to(until)
                    part.advance_to = max(part.advance_to or until, until)
                continue
            result: Action | Rejection = decode_event(message.value() or b"", max_bytes=max_bytes)
            if isinstance(result, Action):
                if result.timestamp > not_after:
                    result = Rejection(FUTURE, f"timestamp {result.timestamp:.0f} is in the future")
                elif not clock.admit(result.timestamp):
                    result = Rejection(
                        LATE,
                        f"event time {result.timestamp:.3f} is before the watermark "
                        f"{clock.value:.3f}",
                    )
            if isinstance(result, Rejection):
                rejected.append((message, result))
            else:
                part.actions.append(result)
        return _Decoded(partitions, rejected)

    def _sweep(
        self, partition: int, until: float, users: dict[str, UserState], fresh: list[str]
    ) -> list[SegmentChange]:
        """Re-evaluate every user of `partition`, stored or `fresh` in this batch, as of `until`."""
        changes: list[SegmentChange] = []
        topic = self.settings.events_topic
        for chunk in [*self.store.partition_users(topic, partition), fresh]:
            missing = [user_id for user_id in chunk if user_id not in users]
            users.update(self.store.load(missing))
            chosen = [(user_id, users[user_id]) for user_id in chunk if user_id in users]
            changes += evaluate(chosen, self.rules, reason=ChangeReason.TIME, as_of=until)
        return changes

    def _produce(
        self, rejected: list[tuple[Message, Rejection]], changes: Sequence[SegmentChange]
    ) -> None:
        producer = self.producer
        for message, rejection in rejected:
            metrics.DEAD_LETTERS.labels(reason=rejection.reason).inc()
            source = f"{message.topic()}/{message.partition()}/{message.offset()}"
            producer.produce(
                self.settings.dead_letter_topic,
                key=message.key(),
                value=message.value(),
                headers=[
                    ("reason", rejection.reason.encode()),
                    ("detail", rejection.detail.encode()),
                    ("source", source.encode()),
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

    def _restore(self, partitions: list[int]) -> dict[int, PartitionProgress]:
        progress = self.store.progress(self.settings.events_topic, partitions)
        lateness = self.settings.allowed_lateness_seconds
        for partition in partitions:
            found = progress.get(partition)
            self._committed[partition] = None if found is None else found.offset
            self._clocks[partition] = (
                Watermark(lateness)
                if found is None
                else Watermark(lateness, found.max_event_time, found.floor)
            )
        return progress

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        progress = self._restore([tp.partition for tp in partitions])
        for tp in partitions:
            found = progress.get(tp.partition)
            tp.offset = OFFSET_BEGINNING if found is None else found.offset
        consumer.assign(partitions)
        log.info(
            "partitions assigned=%s",
            ",".join(f"{tp.partition}@{tp.offset}" for tp in partitions),
        )

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._committed.pop(tp.partition, None)
            self._clocks.pop(tp.partition, None)
        log.info("partitions revoked=%s", ",".join(str(tp.partition) for tp in partitions))

    def _rewind(self, partitions: list[int]) -> None:
        """Seek `partitions` back to their committed progress after a fenced batch."""
        topic = self.settings.events_topic
        owned = [partition for partition in partitions if partition in self._committed]
        progress = self._restore(owned)
        for partition in owned:
            found = progress.get(partition)
            offset = OFFSET_BEGINNING if found is None else found.offset
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as error:
                log.warning("seek failed partition=%d error=%r", partition, str(error))


def _is_control(message: Message) -> bool:
    headers = message.headers() or []
    return any(header[0] == CONTROL_HEADER for header in headers if isinstance(header, tuple))


def _advance_until(body: bytes | None) -> float | None:
    """The `until` of an advance-watermark command, or `None` when the body is not one."""
    try:
        until = orjson.loads(body or b"")["until"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return float(until) if isinstance(until, int | float) and not isinstance(until, bool) else None
