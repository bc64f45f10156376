"""The worker: consume events in batches, update users, publish segment changes.

One loop iteration handles one batch end to end:

1. consume up to `batch_max_events` messages (confluent-kafka `consume`);
2. decode each in offset order; undecodable, future and late events go to the
   dead-letter topic with a reason; an event whose user belongs to another
   partition (see :mod:`processors.partitioner`) is forwarded there, once;
   on-time ones move their partition's watermark;
3. load the batch's users from Redis (one `MGET`), apply each partition's
   actions, evaluate the rules after each event; then place each touched
   user in a cluster of the latest model snapshot (numpy, one matrix per
   partition) and take their feature vector;
4. produce dead letters, forwarded events, segment changes and the feature
   vectors (many per message), and wait for the broker's acks;
5. commit the users, labels, counters, and each partition's offset and
   watermark in one Redis transaction.

Between batches the worker picks up newer rules and model snapshots. A
snapshot that starts a new generation (the trainer re-clustered) re-places
every user the worker owns at once, with reason `model` (or `drift`); one
that only refines centroids applies to each user at their next event.

A crash anywhere before step 5 replays the batch from the committed progress,
which yields the same state and the same change versions again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgpack
import numpy as np
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

from processors.evaluation import Classifier, evaluate, place, vectors
from processors.events import Action, Rejection, decode_event
from processors.model import ClusterAssigner, ModelSnapshot
from processors.partition import Absorb, Advance, Erase, Item, Merge, Relay, run_partition
from processors.partitioner import canonical_partition
from processors.rules import RuleSet, parse_rules
from processors.segments import ChangeReason, SegmentChange
from processors.timers import next_due
from processors.user import UserState
from processors.vectors import FeatureVector, pack_vectors
from processors.watermark import Watermark
from state.keys import KeyLayout
from state.redis_store import RedisStateStore
from state.store import BatchCommit, PartitionCommit, PartitionFencedError, PartitionProgress
from state.timer_store import DueTimers
from streams import metrics
from streams.connectivity import KAFKA, REDIS, Link
from streams.health import Probe
from streams.kafka import batch_consumer, producer_lost, reliable_producer
from streams.models_feed import ModelsFeed
from streams.rules_feed import RulesFeed
from streams.settings import Settings

log = logging.getLogger(__name__)

CONTROL_HEADER = "segstream-control"
"""Header marking a control message on the events topic; its value names the command."""
ADVANCE_WATERMARK = b"advance-watermark"
"""Control command: the JSON body `{"until": epoch_seconds}` advances the partition's watermark."""
ERASE = b"erase"
"""Control command: forget the user the message is keyed by (see `DELETE /v1/users/{id}`)."""
RELAY_HEADER = "segstream-relay"
"""Header of a message the pipeline relays to itself: `merge`, `absorb`, `forward`, `erase`,
or `route` (an event that arrived on another partition than its user's)."""
ROUTE = b"route"
"""Relay kind of an event forwarded to its user's partition; it is judged there as if it had
arrived there (lateness, watermark), with its original headers and body."""
SOURCE_HEADER = "segstream-source"
"""`partition:offset` of the message a relay was caused by; relays apply once per source."""
REPLAY_HEADER = "segstream-replay"
"""Header of an event replayed from history: its partition's watermark keeps to event time."""

VECTORS_PER_MESSAGE = 1_000
"""Feature vectors packed into one message of the features topic."""

LATE = "late"
FUTURE = "future_timestamp"
INVALID_CONTROL = "invalid_control"


class DeliveryError(RuntimeError):
    """The broker did not acknowledge a message the batch produced."""


class PartitionCountError(RuntimeError):
    """The events topic has another partition count than the state was built with."""


_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError)
"""Redis errors that mean "not answering now", as opposed to a mistake in a command."""
_REDIS_TIMEOUT = 30.0
"""Seconds a Redis call may take before the batch is given up and redone."""
_MAX_BACKOFF = 10.0
"""Longest wait between two attempts to reach Redis or the broker, in seconds."""


def load_rules(settings: Settings) -> RuleSet:
    """The rules in `settings.rules_file`; raises `RuleFileError` when invalid."""
    path = settings.rules_file
    return parse_rules(path.read_text(encoding="utf-8"), source=str(path))


@dataclass(slots=True)
class _PartitionBatch:
    """One partition's share of a batch: its items and the message each came from."""

    last: int
    items: list[Item] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    marks: list[float] = field(default_factory=list)
    advances: bool = False
    relayed: int = 0

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
class _Misrouted:
    """An event that arrived on `source` but belongs to `user_id`, whose partition is `to`."""

    message: Message
    user_id: str
    to: int


@dataclass(slots=True)
class _Decoded:
    partitions: dict[int, _PartitionBatch]
    rejected: list[tuple[Message, Rejection]]
    misrouted: list[_Misrouted] = field(default_factory=list)
    consumed: int = 0
    live_times: list[float] = field(default_factory=list)
    """Event times of the batch's live (not replayed) events, for the freshness histogram."""


class Worker:
    """A member of the workers' consumer group; :meth:`run` until `stop` is set."""

    def __init__(self, settings: Settings, rules: RuleSet, probe: Probe | None = None) -> None:
        self.settings = settings
        self.probe = probe or Probe(stale_after=math.inf)
        self.rules = rules
        self.privacy = settings.privacy()
        self.model: ClusterAssigner | None = None
        self.classifier = Classifier.of(rules)
        self.client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=_REDIS_TIMEOUT
        )
        self.store = RedisStateStore(
            self.client, KeyLayout(settings.redis_prefix), settings.group_id, settings.timer_shards
        )
        self.consumer: Consumer = batch_consumer(settings)
        self.producer = reliable_producer(settings)
        self._committed: dict[int, int | None] = {}
        self._clocks: dict[int, Watermark] = {}
        self._relayed: dict[int, dict[int, int]] = {}
        self._replaying: dict[int, bool] = {}
        self._heard: dict[int, float] = {}
        self._delivery_errors: list[str] = []
        self._producer_failed = False
        self.partitions = 0
        """The events topic's partition count, checked against the state's at start."""

    def run(self, stop: threading.Event) -> None:
        """Process batches until `stop` is set, then leave the group cleanly."""
        topic = self.settings.events_topic
        feed = RulesFeed(self.settings)
        published = feed.catch_up()
        if published is not None:
            self.rules = published[0]
        models = ModelsFeed(self.settings)
        snapshot = models.catch_up()
        if snapshot is not None:
            self.model = ClusterAssigner(snapshot)
            metrics.MODEL_VERSION.set(snapshot.version)
        self.classifier = Classifier.of(self.rules, self.model)
        metrics.RULES.info({"version": self.rules.label})
        self.partitions = self._check_partition_count()
        self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)
        self.probe.ready = True
        wait = self.settings.batch_max_wait_ms / 1000
        log.info(
            "worker started group=%s topic=%s rules=%s model=%s",
            self.settings.group_id,
            topic,
            self.rules.label,
            self.model.version if self.model else "-",
        )
        try:
            while not stop.is_set():
                update = feed.poll()
                if update is not None:
                    self._switch_rules(*update)
                newer = models.poll()
                if newer is not None:
                    self._switch_model(newer)
                messages = self.consumer.consume(self.settings.batch_max_events, wait)
                try:
                    backlog = self.process(messages)
                except (*_UNAVAILABLE, DeliveryError) as error:
                    self._recover(error, stop)
                    continue
                metrics.LAST_BATCH.set(time.time())
                self.probe.beat()
                wait = 0 if backlog else self.settings.batch_max_wait_ms / 1000
        finally:
            feed.close()
            models.close()
            self.consumer.close()
            self.producer.flush(10)
            self.client.close()
            log.info("worker stopped")

    def _check_partition_count(self) -> int:
        """The events topic's partition count; raise :class:`PartitionCountError` when the
        stored state was built with another one (it is stored by the first worker)."""
        topic = self.settings.events_topic
        metadata = self.consumer.list_topics(topic, timeout=30).topics[topic]
        if metadata.error is not None:
            raise PartitionCountError(f"cannot read topic {topic!r}: {metadata.error.str()}")
        found = len(metadata.partitions)
        built = self.store.claim_partition_count(topic, found)
        if built != found:
            raise PartitionCountError(_count_mismatch(self.settings, found, built))
        return found

    def process(self, messages: Sequence[Message]) -> bool:
        """Handle one batch end to end (see the module docstring).

        Besides `messages`, the batch fires the timers due by each owned
        partition's watermark, up to `timers_per_batch`. Returns whether timers
        were left for later batches.
        """
        started = time.perf_counter()
        decoded = self._decode(messages)
        self._follow_wall_clock()
        due = self._due_timers()
        if not decoded.partitions and not due:
            return False
        topic = self.settings.events_topic
        for partition in due:
            if partition not in decoded.partitions:
                committed = self._committed[partition]
                assert committed is not None  # timers are read only where progress was committed
                decoded.partitions[partition] = _PartitionBatch(committed - 1)
        members = {
            partition: [u for chunk in self.store.partition_users(topic, partition) for u in chunk]
            for partition, part in decoded.partitions.items()
            if part.advances
        }
        wanted = set().union(*(part.user_ids() for part in decoded.partitions.values()))
        wanted.update(user_id for taken in due.values() for user_id in taken.sources)
        stored = self.store.load(wanted.union(*members.values()))
        users: dict[str, UserState] = {}
        changes: list[SegmentChange] = []
        relays: list[tuple[Relay, int, Message]] = []
        found: list[FeatureVector] = []
        placed: list[str] = []
        commits = []
        applied = duplicates = new_users = fired = erased = 0
        for partition, part in decoded.partitions.items():
            clock = self._clocks[partition]
            taken = due.get(partition)
            step = run_partition(
                part.items,
                stored,
                self.classifier,
                dedup_before=clock.max_event_time - self.settings.dedup_horizon_seconds,
                partition_users=members.get(partition, ()),
                retention=self.settings.retention_days * 86_400,
                marks=part.marks,
                due=taken.entries if taken else (),
                watermark=clock.value,
            )
            users.update(step.users)
            changes += step.changes
            found += step.vectors
            placed += step.placed
            relays += [(relay, partition, part.messages[relay.position]) for relay in step.relays]
            applied += step.applied
            duplicates += step.duplicates
            new_users += step.new_users
            fired += step.fired
            erased += len(step.erased)
            fresh = [user_id for user_id in step.users if user_id not in stored]
            progress = PartitionProgress(
                part.last + 1,
                clock.max_event_time,
                clock.floor,
                dict(self._relayed[partition]),
                self._replaying[partition],
            )
            timers = {
                user_id: step.users[user_id].due if user_id in step.users else None
                for user_id in [*(taken.sources if taken else ()), *step.timers]
            }
            commits.append(
                PartitionCommit(
                    topic,
                    partition,
                    self._committed.get(partition),
                    progress,
                    fresh,
                    [*step.expired, *step.erased],
                    timers,
                    taken,
                )
            )
        produced = time.perf_counter()
        self._produce(decoded.rejected, changes, relays, found, decoded.misrouted)
        metrics.KAFKA_WRITE_SECONDS.observe(time.perf_counter() - produced)
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
                "expired": sum(len(c.expired_users) for c in commits) - erased,
                "erased": erased,
                "relays_sent": len(relays) + len(decoded.misrouted),
                "forwarded": len(decoded.misrouted),
                "relays_applied": sum(part.relayed for part in decoded.partitions.values()),
                "timers_fired": fired,
            },
            rules_version=self.rules.label,
            placed=placed,
        )
        written = time.perf_counter()
        try:
            self.store.commit(commit)
        except PartitionFencedError as error:
            metrics.FENCED.inc()
            log.warning("batch dropped reason=fenced detail=%r", str(error))
            self._rewind(list(decoded.partitions))
            return False
        metrics.REDIS_WRITE_SECONDS.observe(time.perf_counter() - written)
        for consumed in commits:
            self._committed[consumed.partition] = consumed.progress.offset
        _count(decoded, changes, applied, duplicates)
        metrics.FEATURE_VECTORS.inc(len(found))
        metrics.EVENTS_FORWARDED.inc(len(decoded.misrouted))
        metrics.TIMERS_FIRED.inc(fired)
        metrics.ERASURES.inc(erased)
        metrics.BATCH_EVENTS.observe(len(messages))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self._measure_lag()
        backlog = {p: taken for p, taken in due.items() if not taken.exhausted}
        metrics.TIMER_LAG.set(
            max(
                (self._clocks[p].value - taken.entries[-1][0] for p, taken in backlog.items()),
                default=0,
            )
        )
        log.debug(
            "batch events=%d dead_letters=%d users=%d changes=%d relays=%d timers=%d",
            applied,
            len(decoded.rejected),
            len(users),
            len(changes),
            len(relays),
            fired,
        )
        return bool(backlog)

    def _measure_lag(self) -> None:
        """Set each owned partition's lag from the high watermark of the latest fetch."""
        topic = self.settings.events_topic
        for partition, committed in self._committed.items():
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high >= 0:
                lag = high - (committed or 0)
                metrics.CONSUMER_LAG.labels(partition=str(partition)).set(max(lag, 0))

    def _follow_wall_clock(self) -> None:
        """Move the watermark of each partition quiet for `idle_watermark_seconds` to the wall
        clock minus the allowed lateness, unless its latest message was replayed."""
        idle = self.settings.idle_watermark_seconds
        if not idle:
            return
        quiet_since = time.monotonic() - idle
        now = time.time() - self.settings.allowed_lateness_seconds
        for partition, clock in self._clocks.items():
            if self._heard[partition] <= quiet_since and not self._replaying[partition]:
                clock.advance_to(now)

    def _due_timers(self) -> dict[int, DueTimers]:
        """The timers due by each owned partition's watermark, a share of the batch's budget."""
        watermarks = {
            partition: self._clocks[partition].value
            for partition, committed in self._committed.items()
            if committed is not None
        }
        if not watermarks:
            return {}
        share = max(1, self.settings.timers_per_batch // len(watermarks))
        due = self.store.due_timers(self.settings.events_topic, watermarks, share)
        return {partition: taken for partition, taken in due.items() if taken.bounds}

    def _switch_rules(self, rules: RuleSet, reevaluate: bool) -> None:
        """Use `rules` from the next batch on; with `reevaluate`, re-label every owned user now."""
        self.rules = rules
        self.classifier = Classifier.of(rules, self.model)
        metrics.RULES.info({"version": rules.label})
        log.info("rules switched to=%s reevaluate=%s", rules.label, reevaluate)
        if reevaluate:
            self._relabel(ChangeReason.RULES)

    def _switch_model(self, snapshot: ModelSnapshot) -> None:
        """Place users with `snapshot` from now on; re-place everyone if it re-clustered."""
        previous = self.model
        self.model = ClusterAssigner(snapshot)
        self.classifier = Classifier.of(self.rules, self.model)
        metrics.MODEL_VERSION.set(snapshot.version)
        log.info(
            "model switched to=%d generation=%d reason=%s clusters=%d",
            snapshot.version,
            snapshot.generation,
            snapshot.reason,
            len(snapshot.clusters),
        )
        if previous is None or previous.snapshot.generation != snapshot.generation:
            self._relabel(ChangeReason.DRIFT if snapshot.reason == "drift" else ChangeReason.MODEL)

    def _relabel(self, reason: str) -> None:
        """Re-evaluate, re-place and re-time every user of the owned partitions, a chunk at a time.

        Each chunk's commit rewrites its partition's progress unchanged, so it is
        fenced like a batch: a partition that moved to another worker is left alone.
        """
        topic = self.settings.events_topic
        retention = self.settings.retention_days * 86_400
        relabelled = 0
        for partition, committed in list(self._committed.items()):
            if committed is None:
                continue
            progress = PartitionProgress(
                committed,
                self._clocks[partition].max_event_time,
                self._clocks[partition].floor,
                dict(self._relayed[partition]),
                self._replaying[partition],
            )
            for chunk in self.store.partition_users(topic, partition):
                users = self.store.load(chunk)
                active = [(u, state) for u, state in users.items() if state.alias_of is None]
                changes = evaluate(active, self.classifier, reason=reason)
                timers = {}
                for user_id, state in active:
                    due = next_due(state, self.classifier, retention=retention)
                    if due != state.due:
                        state.due = timers[user_id] = due
                fence = PartitionCommit(topic, partition, committed, progress, timers=timers)
                if self.model is not None:
                    changes += place(active, vectors(active), self.model, reason=reason)
                self._produce([], changes, [], [])
                try:
                    self.store.commit(
                        BatchCommit(
                            users=users,
                            changes=changes,
                            partitions=[fence],
                            counters={"changes": len(changes)},
                            rules_version=self.rules.label,
                            placed=[u for u, _ in active] if self.model is not None else [],
                        )
                    )
                except PartitionFencedError:
                    log.warning("relabel skipped partition=%d reason=fenced", partition)
                    break
                _count_changes(changes)
                self.probe.beat()
                relabelled += len(active)
        log.info("users relabelled=%d reason=%s", relabelled, reason)

    def _decode(self, messages: Sequence[Message]) -> _Decoded:
        decoded = _Decoded({}, [])
        not_after = time.time() + self.settings.max_future_seconds
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error=%r", error.str())
                continue
            decoded.consumed += 1
            partition, offset = message.partition(), message.offset()
            assert partition is not None
            assert offset is not None
            clock = self._clocks.get(partition)
            if clock is None:
                continue  # revoked while the batch was in flight
            part = decoded.partitions.get(partition)
            if part is None:
                part = decoded.partitions[partition] = _PartitionBatch(offset)
            part.last = offset
            headers = _headers(message)
            self._heard[partition] = time.monotonic()
            if RELAY_HEADER in headers:
                fresh = self._first_relay(partition, headers)
                if isinstance(fresh, Rejection):
                    decoded.rejected.append((message, fresh))
                    continue
                if not fresh:
                    continue  # applied before: produced again by a batch that was redone
                part.relayed += 1
                if headers[RELAY_HEADER] == ROUTE:
                    self._event(partition, message, headers, part, decoded, not_after)
                else:
                    item = self._relayed_item(message, headers)
                    if isinstance(item, Rejection):
                        decoded.rejected.append((message, item))
                    else:
                        part.add(item, message, clock.value)
                continue
            if headers.get(CONTROL_HEADER) == ERASE:
                user_id = (message.key() or b"").decode(errors="replace")
                if user_id:
                    part.add(Erase(user_id), message, clock.value)
                else:
                    reason = Rejection(INVALID_CONTROL, "an erase command is keyed by the user id")
                    decoded.rejected.append((message, reason))
                continue
            if CONTROL_HEADER in headers:
                until = _advance_until(message.value())
                if headers[CONTROL_HEADER] != ADVANCE_WATERMARK or until is None:
                    reason = Rejection(INVALID_CONTROL, 'expected {"until": seconds}')
                    decoded.rejected.append((message, reason))
                else:
                    clock.advance_to(until)
                    part.advances = True
                    part.add(Advance(until), message, clock.value)
                continue
            self._event(partition, message, headers, part, decoded, not_after)
        return decoded

    def _event(
        self,
        partition: int,
        message: Message,
        headers: dict[str, bytes],
        part: _PartitionBatch,
        decoded: _Decoded,
        not_after: float,
    ) -> None:
        """Take a tracker event that arrived on `partition`, or forward it to its user's."""
        result = decode_event(message.value() or b"", max_bytes=self.settings.max_event_bytes)
        if isinstance(result, Action):
            owner = canonical_partition(result.user_id, self.partitions)
            if owner != partition:
                decoded.misrouted.append(_Misrouted(message, result.user_id, owner))
                return
        replaying = self._replaying[partition] = REPLAY_HEADER in headers
        clock = self._clocks[partition]
        if isinstance(result, Action):
            if result.timestamp > not_after:
                result = Rejection(FUTURE, f"timestamp {result.timestamp:.0f} is in the future")
            elif not clock.admit(result.timestamp):
                result = Rejection(
                    LATE,
                    f"event time {result.timestamp:.3f} is before the watermark {clock.value:.3f}",
                )
        if isinstance(result, Rejection):
            decoded.rejected.append((message, result))
            return
        part.add(result, message, clock.value)
        if not replaying:
            decoded.live_times.append(result.timestamp)

    def _first_relay(self, partition: int, headers: dict[str, bytes]) -> bool | Rejection:
        """Whether a relayed message is new here (not applied before), and note it applied."""
        try:
            source, offset = (int(part) for part in headers[SOURCE_HEADER].split(b":"))
        except (KeyError, ValueError):
            return Rejection(INVALID_CONTROL, "a relayed message without its source offset")
        relayed = self._relayed[partition]
        if offset <= relayed.get(source, -1):
            return False
        relayed[source] = offset
        return True

    def _relayed_item(self, message: Message, headers: dict[str, bytes]) -> Item | Rejection:
        """The item a relayed merge, absorb, erase or forward carries."""
        key = (message.key() or b"").decode()
        body = message.value() or b""
        kind = headers[RELAY_HEADER]
        if kind == b"erase":
            return Erase(key, follow=body == b"follow")
        if kind == b"merge":
            return Merge(anonymous_id=key, into=body.decode())
        if kind == b"absorb":
            source_id, state = msgpack.unpackb(body)
            return Absorb(source_id=source_id, into=key, state=state)
        action = decode_event(body, max_bytes=self.settings.max_event_bytes)
        if isinstance(action, Action):
            action.user_id = key  # forwarded to the user the id it was sent under belongs to
        return action

    def _produce(
        self,
        rejected: list[tuple[Message, Rejection]],
        changes: Sequence[SegmentChange],
        relays: Sequence[tuple[Relay, int, Message]],
        found: Sequence[FeatureVector],
        misrouted: Sequence[_Misrouted] = (),
    ) -> None:
        producer = self.producer
        for relay in _relay_messages(relays, misrouted):
            producer.produce(
                self.settings.events_topic,
                key=relay.key,
                value=relay.value,
                headers=relay.headers(),
                partition=relay.partition,
                on_delivery=self._delivered,
            )
        for message, rejection in rejected:
            source = f"{message.topic()}/{message.partition()}/{message.offset()}"
            producer.produce(
                self.settings.dead_letter_topic,
                key=message.key(),
                value=self.privacy.scrub_bytes(message.value() or b""),
                headers=[
                    ("reason", rejection.reason.encode()),
                    ("detail", rejection.detail.encode()),
                    ("source", source.encode()),
                ],
                on_delivery=self._delivered,
            )
        processed_at = time.time()
        digest = self.rules.label
        for change in changes:
            producer.produce(
                self.settings.changes_topic,
                key=change.user_id.encode(),
                value=None if change.is_tombstone else change.to_json(processed_at, digest),
                on_delivery=self._delivered,
            )
        for start in range(0, len(found), VECTORS_PER_MESSAGE):
            producer.produce(
                self.settings.features_topic,
                value=pack_vectors(found[start : start + VECTORS_PER_MESSAGE]),
                on_delivery=self._delivered,
            )
        try:
            remaining = producer.flush(30)
        except KafkaException as error:  # a fatal error is raised from flush()
            self._producer_failed = producer_lost(error.args[0])
            raise DeliveryError(str(error)) from error
        if remaining or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise DeliveryError(f"{remaining} undelivered, errors: {errors[:3]}")

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(error.str())
            if producer_lost(error):
                self._producer_failed = True

    def _recover(self, error: Exception, stop: threading.Event) -> None:
        """A batch could not be written because Redis or the broker did not answer.

        Nothing of it was committed, so wait, backing off, until both answer, then go
        back to the committed offsets and do the batch again. What it produced before
        failing may come twice: change versions and relay offsets make that harmless.
        """
        cause = "kafka" if isinstance(error, DeliveryError) else "redis"
        metrics.BATCHES_RETRIED.labels(cause=cause).inc()
        self.probe.ready = False
        _link(error).lost(f"batch not committed, waiting ({type(error).__name__}: {error})")
        started = time.monotonic()
        delay = 0.5
        while not stop.is_set():
            log.debug("batch retry cause=%s retry_in=%.1fs", cause, delay)
            stop.wait(delay)
            delay = min(delay * 2, _MAX_BACKOFF)
            try:
                self.client.ping()
                if self._producer_failed:
                    log.warning("the broker failed the producer for good; starting a new one")
                    self.producer = reliable_producer(self.settings)
                    self._producer_failed = False
                try:
                    unsent = self.producer.flush(delay)
                except KafkaException as failure:
                    self._producer_failed = producer_lost(failure.args[0])
                    raise DeliveryError(str(failure)) from failure
                if unsent or self._delivery_errors:
                    self._delivery_errors.clear()
                    raise DeliveryError("the broker has not acknowledged the batch's messages")
                self._rewind(list(self._committed))
            except (*_UNAVAILABLE, DeliveryError) as again:
                _link(again).lost(f"{type(again).__name__}: {again}")
                continue
            KAFKA.reached()
            REDIS.reached()
            log.info("resumed from the committed offsets after=%.1fs", time.monotonic() - started)
            self.probe.ready = True
            return

    def _restore(self, partitions: list[int]) -> dict[int, PartitionProgress]:
        progress = self.store.progress(self.settings.events_topic, partitions)
        lateness = self.settings.allowed_lateness_seconds
        for partition in partitions:
            found = progress.get(partition)
            self._committed[partition] = None if found is None else found.offset
            self._relayed[partition] = {} if found is None else dict(found.relayed)
            self._replaying[partition] = found is not None and found.replaying
            self._heard[partition] = time.monotonic()
            self._clocks[partition] = (
                Watermark(lateness)
                if found is None
                else Watermark(lateness, found.max_event_time, found.floor)
            )
        return progress

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        beyond = [tp.partition for tp in partitions if tp.partition >= self.partitions]
        if beyond:
            raise PartitionCountError(
                _count_mismatch(self.settings, max(beyond) + 1, self.partitions)
            )
        delay = 0.5
        while True:
            try:
                progress = self._restore([tp.partition for tp in partitions])
                break
            except _UNAVAILABLE as error:
                REDIS.lost(f"partitions not taken yet ({type(error).__name__}: {error})")
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
        REDIS.reached()
        for tp in partitions:
            found = progress.get(tp.partition)
            tp.offset = OFFSET_BEGINNING if found is None else found.offset
        consumer.assign(partitions)
        metrics.PARTITIONS.set(len(self._committed))
        log.info(
            "partitions assigned=%s",
            ",".join(f"{tp.partition}@{tp.offset}" for tp in partitions),
        )

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._committed.pop(tp.partition, None)
            self._clocks.pop(tp.partition, None)
            self._relayed.pop(tp.partition, None)
            self._replaying.pop(tp.partition, None)
            self._heard.pop(tp.partition, None)
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(str(tp.partition))
        metrics.PARTITIONS.set(len(self._committed))
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


def _count(
    decoded: _Decoded, changes: Sequence[SegmentChange], applied: int, duplicates: int
) -> None:
    """Add a committed batch to the event, dead-letter, transition and freshness metrics."""
    metrics.EVENTS_CONSUMED.inc(decoded.consumed)
    metrics.EVENTS_PROCESSED.inc(applied)
    metrics.EVENTS_DUPLICATE.inc(duplicates)
    for reason, count in Counter(rejection.reason for _, rejection in decoded.rejected).items():
        metrics.DEAD_LETTERS.labels(reason=reason).inc(count)
    _count_changes(changes)
    if decoded.live_times:
        metrics.FRESHNESS.observe_many(time.time() - np.asarray(decoded.live_times))


def _count_changes(changes: Sequence[SegmentChange]) -> None:
    """Add published changes to the change and transition metrics."""
    metrics.CHANGES.inc(len(changes))
    moves: Counter[tuple[str, str]] = Counter()
    cluster_moves: Counter[tuple[str, str]] = Counter()
    for change in changes:
        moves.update((segment, "entered") for segment in change.entered)
        moves.update((segment, "exited") for segment in change.exited)
        if change.cluster != change.previous_cluster:
            if change.cluster is not None:
                cluster_moves[change.cluster, "entered"] += 1
            if change.previous_cluster is not None:
                cluster_moves[change.previous_cluster, "exited"] += 1
    for (segment, direction), count in moves.items():
        metrics.TRANSITIONS.labels(segment=segment, direction=direction).inc(count)
    for (cluster, direction), count in cluster_moves.items():
        metrics.CLUSTER_TRANSITIONS.labels(cluster=cluster, direction=direction).inc(count)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A message relayed to the events topic, caused by `source`:`offset`."""

    source: int
    offset: int
    key: bytes
    value: bytes | None
    kind: bytes
    partition: int = -1
    """Where it goes; -1: the key's canonical partition (the producer's partitioner)."""
    kept: tuple[tuple[str, bytes], ...] = ()
    """Headers of the original message that travel with it."""

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """Its headers: the kept ones, its kind, and its cause."""
        cause = f"{self.source}:{self.offset}".encode()
        return [*self.kept, (RELAY_HEADER, self.kind), (SOURCE_HEADER, cause)]


def _relay_messages(
    relays: Sequence[tuple[Relay, int, Message]], misrouted: Sequence[_Misrouted]
) -> list[_Outgoing]:
    """What a batch relays to the events topic, in the order of the offsets that caused it:
    a partition applies one source's relays in that order, and takes a relay caused below
    an offset it has applied for a copy it has seen."""
    outgoing = []
    for event in misrouted:
        cause = event.message
        outgoing.append(
            _Outgoing(
                cause.partition() or 0,
                cause.offset() or 0,
                event.user_id.encode(),
                cause.value(),
                ROUTE,
                event.to,
                tuple(_headers(cause).items()),
            )
        )
    for relay, source, cause in relays:
        body = relay.body
        if relay.kind == "forward":
            body = cause.value() or b""
        elif relay.kind == "absorb":
            body = msgpack.packb([(cause.key() or b"").decode(), relay.body])
        outgoing.append(
            _Outgoing(source, cause.offset() or 0, relay.key.encode(), body, relay.kind.encode())
        )
    return sorted(outgoing, key=lambda message: (message.source, message.offset))


def _link(error: Exception) -> Link:
    """The dependency an error of a batch's commit says is missing."""
    return KAFKA if isinstance(error, DeliveryError) else REDIS


def _count_mismatch(settings: Settings, found: int, built: int) -> str:
    """What to say when the events topic has `found` partitions and the state `built`."""
    return (
        f"the events topic {settings.events_topic!r} has {found} partitions, but the state under "
        f"SEGSTREAM_REDIS_PREFIX={settings.redis_prefix!r} was built with {built}: every user's "
        f"state belongs to one partition, so it cannot be read under another count. Either give "
        f"the topic back its {built} partitions (a new topic of that name), or build the state "
        f"anew for {found}: a new SEGSTREAM_REDIS_PREFIX and SEGSTREAM_GROUP_ID, then "
        f"`segstream replay` of your event history"
    )


def _headers(message: Message) -> dict[str, bytes]:
    headers = message.headers() or []
    found = {}
    for header in headers:
        if isinstance(header, tuple):
            value = header[1] or b""
            found[str(header[0])] = value.encode() if isinstance(value, str) else bytes(value)
    return found


def _advance_until(body: bytes | None) -> float | None:
    """The `until` of an advance-watermark command, or `None` when the body is not one."""
    try:
        until = orjson.loads(body or b"")["until"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return float(until) if isinstance(until, int | float) and not isinstance(until, bool) else None
