"""The worker's loop: consume a batch, step each partition, commit, repeat.

One iteration handles one batch end to end:

1. consume the messages that have arrived, up to `batch_max_events`, waiting
   up to `batch_max_wait_ms` for the first (confluent-kafka `consume`);
2. decode them in offset order (:mod:`streams.worker.decoding`): dead letters
   for undecodable, future and late events; events of another partition's
   users set aside to forward there; watermarks moved;
3. load the batch's users from the store (one round trip), step each partition
   (:func:`processors._core.run_partition`, the compiled core, once per
   partition: apply, evaluate, fire timers, place in clusters, take feature
   vectors, and write its change events; two partitions at a time on threads,
   since the step releases the GIL);
4. in partition order, as each partition has stepped and while the next ones
   step, commit it through the :class:`~streams.worker.checkpoint.Checkpoint`:
   produce its changes, dead letters and relays, wait for every ack, then
   commit its users, labels, counters, timers and progress in one fenced
   store transaction of its own;
5. hold the batch's feature vectors in the trainer's feed
   (:mod:`streams.worker.vector_feed`), which sends each user's latest once
   every `vector_interval_ms`.

Between batches the worker picks up newer rules and model snapshots; a
snapshot of a new generation (the trainer re-clustered), or rules published
with `--reevaluate`, relabels every owned user at once
(:mod:`streams.worker.relabel`). A crash anywhere before the store commits
replays the batch from the committed progress, which yields the same state
and the same change versions again. Example::

    Worker(settings, rules, build_parts(settings)).run(stop)
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, cast

import numpy as np
import redis
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from processors._core import FeatureVector, PartitionStep, Relay, Resident, run_partition
from processors.classifier import ChangeReason, Classifier
from processors.events import Projection, Reason
from processors.model import ClusterAssigner, ModelSnapshot
from processors.rules import PREDICTION_PREFIX, RuleSet
from processors.thresholds import indexed_features, indexed_values, moved_ranges
from state.store import BatchCommit, Counters, PartitionCommit, StateStore
from state.timer_store import DueTimers
from streams.connectivity import KAFKA, REDIS, Link
from streams.generations import SWITCH_LAG, Build, publish_switch
from streams.health import Probe
from streams.heap import quiet_collector
from streams.rules_feed import InForce
from streams.settings import Settings
from streams.worker import metrics, outgoing
from streams.worker.adoption import adopt
from streams.worker.checkpoint import Checkpoint, DeliveryError
from streams.worker.decoding import DecodedBatch, PartitionBatch, decode_batch
from streams.worker.outgoing import Outgoing
from streams.worker.partitions import PartitionState
from streams.worker.parts import WorkerParts
from streams.worker.relabel import relabel
from streams.worker.vector_feed import VectorFeed

if TYPE_CHECKING:
    from streams.worker.builder import GenerationBuilder

log = logging.getLogger(__name__)

_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError)
"""Redis errors that mean "not answering now", as opposed to a mistake in a command."""
_MAX_BACKOFF = 10.0
_RELABEL_CHUNK = 1_000
"""Users a relabel reads and commits at a time."""
"""Longest wait between two attempts to reach Redis or the broker, in seconds."""
_READERS_FOLLOW = 5.0
"""Seconds within which every reader reads the generation a switch made current."""
_STEP_THREADS = 2
"""Partitions a batch steps at a time: the core's step runs without the GIL (on a dict of
rows), so a second partition steps on another core while this thread commits the one
before."""
_VECTORS_HELD = 20_000
"""Most users' feature vectors the trainer's feed holds before it sends them early."""


class PartitionCountError(RuntimeError):
    """The events topic has another partition count than the state was built with."""


class Worker:
    """A member of the workers' consumer group; :meth:`run` until `stop` is set."""

    records_activity = True
    """Whether its changes count in the console's activity records (`state.activity`)."""

    def __init__(
        self, settings: Settings, rules: RuleSet, parts: WorkerParts, probe: Probe | None = None
    ) -> None:
        self.settings = settings
        self.parts = parts
        self.store = parts.store
        self.consumer: Consumer = parts.consumer
        self.probe = probe or Probe(stale_after=math.inf)
        self.rules = rules
        self.privacy = settings.privacy()
        self.model: ClusterAssigner | None = None
        self.classifier = Classifier.of(rules, examples=settings.predictions)
        self.owned: dict[int, PartitionState] = {}
        """The partitions assigned to this worker, by number."""
        self.resident: dict[int, Resident] = {}
        """Each owned partition's users kept decoded between its batches."""
        self.added_partitions: list[int] = []
        """Partitions assigned beyond the state's count: the topic grew while running."""
        self.checkpoint = Checkpoint(parts.store, parts.make_producer, self.owned)
        self._stepping = ThreadPoolExecutor(_STEP_THREADS, thread_name_prefix="segstream-step")
        """Steps partitions while this thread handles the output of those stepped before."""
        self.vectors = VectorFeed(
            settings.vector_interval_ms / 1000, _VECTORS_HELD, started=time.monotonic()
        )
        """Users' latest feature vectors, until they go to the trainer."""
        self.partitions = 0
        """The events topic's partition count, checked against the state's at start."""
        self.generation = 0
        """The generation of users' state this worker serves (see `streams.generations`)."""
        self.replaces: int | None = None
        """The generation it replaced, if a switch made it current."""
        self._unadopted: set[int] = set()
        """Partitions taken over whose users have not taken the replaced generation's labels
        (a worker stopped while it switched them)."""
        self.builder: GenerationBuilder | None = None
        """The build of a new generation this worker takes part in, if any."""
        self._switch_checked = 0.0

    def start(self) -> None:
        """Take the rules and model in force, check the partition count, join the group."""
        published = self.parts.rules.catch_up()
        if published is not None:
            self.rules = published.rules
            self._serve(published.generation, published.replaces)
        snapshot = self.parts.models.catch_up()
        if snapshot is not None:
            self.model = ClusterAssigner(snapshot)
            metrics.MODEL_VERSION.set(snapshot.version)
        self.classifier = Classifier.of(self.rules, self.model, examples=self.settings.predictions)
        metrics.RULES.info({"version": self.rules.label})
        self.partitions = self._check_partition_count()
        if self.parts.builds is not None:
            build = self.parts.builds.catch_up()
            if build is not None and build.generation > self.generation:
                self._start_build(build)
        self.consumer.subscribe(
            [self.settings.events_topic], on_assign=self._assigned, on_revoke=self._revoked
        )
        quiet_collector()
        self.probe.ready = True
        log.info(
            "worker started group=%s topic=%s rules=%s model=%s",
            self.settings.group_id,
            self.settings.events_topic,
            self.rules.label,
            self.model.version if self.model else "-",
        )

    def run(self, stop: threading.Event) -> None:
        """Process batches until `stop` is set, then leave the group cleanly."""
        self.start()
        try:
            wait = self.settings.batch_max_wait_ms / 1000
            while not stop.is_set():
                backlog = self.step(wait, stop)
                wait = 0 if backlog else self.settings.batch_max_wait_ms / 1000
        finally:
            self.close()

    def step(self, wait: float, stop: threading.Event) -> bool:
        """One turn of the loop: newer rules and models, then a batch of up to `wait` s.
        Returns whether timers were left for later batches."""
        update = self.parts.rules.poll()
        if update is not None:
            self._switch_rules(update, stop)
        newer = self.parts.models.poll()
        if newer is not None:
            self._switch_model(newer)
        build = self.parts.builds.poll() if self.parts.builds is not None else None
        if build is not None and build.generation > self.generation:
            self._start_build(build)
        if self.builder is not None:
            wait = 0.0 if self._build_step(stop) else wait
        messages = self._arrived(wait)
        if self.added_partitions:
            topic = self.settings.events_topic
            found = len(self.consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            found = max(found, max(self.added_partitions) + 1)
            raise PartitionCountError(_count_mismatch(self.settings, found, self.partitions))
        try:
            backlog = self.process(messages)
        except (*_UNAVAILABLE, DeliveryError) as error:
            self._recover(error, stop)
            return False
        self._feed_trainer(self.vectors.due(time.monotonic()))
        if self.parts.sizes is not None:
            self.parts.sizes.tick(time.time(), self.rules.names, self.generation, self.partitions)
        metrics.LAST_BATCH.set(time.time())
        self.probe.beat()
        return backlog

    def _arrived(self, wait: float) -> list[Message]:
        """The messages that have arrived, up to `batch_max_events`, after waiting up to
        `wait` s for the first: a batch takes what is there instead of waiting to fill, so
        an event waits at most for the batch before its own."""
        first = self.consumer.consume(1, wait)
        rest = self.settings.batch_max_events - 1
        return first + self.consumer.consume(rest, 0) if first and rest else first

    def close(self) -> None:
        """Leave the group and the feeds, deliver what is queued, close the store."""
        if self.builder is not None:
            self.builder.close()
        if self.parts.builds is not None:
            self.parts.builds.close()
        self.parts.rules.close()
        self.parts.models.close()
        self.consumer.close()
        self._feed_trainer(self.vectors.take(time.monotonic()))
        self.checkpoint.close()
        self._stepping.shutdown()
        self.parts.close_store()
        log.info("worker stopped")

    def _start_build(self, build: Build) -> None:
        """Build `build`'s generation beside this one, instead of any earlier build (whose
        keys go, in the background)."""
        assert self.parts.builder is not None  # a worker that follows builds can make them
        assert self.parts.store_of is not None
        if self.builder is not None:
            replaced = self.builder
            replaced.close()
            self.builder = None
            abandoned = self.parts.store_of(replaced.build.generation)
            _in_background(_drop_generation, abandoned, sorted(replaced.owned))
        self.builder = self.parts.builder(self, build)
        log.info("building generation=%d rules=v%d", build.generation, build.version)

    def _build_step(self, stop: threading.Event) -> bool:
        """One batch of the build; whether more of it is waiting. A build that cannot reach
        Redis or the broker goes back to its committed progress, as this worker does."""
        builder = self.builder
        assert builder is not None
        try:
            more = builder.build_step()
            now = time.monotonic()
            if not more and now - self._switch_checked >= 1.0:
                self._switch_checked = now
                if builder.within(SWITCH_LAG):
                    publish_switch(self.settings, builder.build, self.generation)
            return more
        except (*_UNAVAILABLE, DeliveryError) as error:
            self._recover(error, stop)
            builder.rewind()
            return False

    def _serve(self, generation: int, replaces: int | None = None) -> None:
        """Read and write the users' state of `generation` (which replaced `replaces`) from
        now on."""
        self.replaces = replaces
        if generation == self.generation:
            return
        assert self.parts.store_of is not None  # a worker that follows builds can serve them
        self.store = self.parts.store_of(generation)
        self.checkpoint.store = self.store
        self.generation = generation
        metrics.GENERATION.set(generation)
        log.info("serving generation=%d", generation)

    def _resume_adoption(self) -> None:
        """Partitions taken over mid-switch (the worker adopting them stopped): their users
        take over the replaced generation's labels now, before any event of theirs."""
        numbers = sorted(n for n in self._unadopted if n in self.owned)
        self._unadopted.clear()
        if not numbers or self.replaces is None or self.parts.store_of is None:
            return
        previous = self.parts.store_of(self.replaces)
        kept = previous.progress(numbers)
        for number in numbers:
            if number not in kept:  # nothing of it in the replaced generation
                self.store.mark_adopted(number, self.replaces)
        taken = {n: self.owned[n] for n in numbers if n in kept}
        log.info("resuming a switch partitions=%s replaced=%d", sorted(taken), self.replaces)
        adopt(
            taken,
            self.store,
            previous,
            self.replaces,
            self.classifier,
            self.checkpoint,
            self.settings,
            self.probe.beat,
        )
        done = sorted(self.store.adopted(sorted(taken)))
        _in_background(_drop_generation, previous, done)

    def _switch_generation(self, published: InForce, stop: threading.Event) -> bool:
        """Make the build current: let it take this worker's partitions and reach at least
        where this worker is on each, give its users the labels readers have seen
        (:mod:`adoption`), then go on from the build's progress with its rules, its state and
        its timers. Stopped before the build got there, it leaves the switch to the next
        owners of the partitions (see :meth:`_resume_adoption`) and returns false."""
        builder = self.builder
        assert builder is not None
        while not builder.reached(self.owned):
            if stop.is_set():
                return False
            builder.build_step()
        self.builder = None
        adopt(
            builder.owned,
            builder.store,
            self.store,
            self.generation,
            builder.classifier,
            builder.checkpoint,
            self.settings,
            self.probe.beat,
        )
        previous = self.store
        self._serve(published.generation, published.replaces)
        built = builder.owned
        builder.close()
        done = sorted(self.store.adopted(sorted(self.owned)))
        _in_background(_drop_generation, previous, done)
        self.owned.update({n: built[n] for n in self.owned if n in built})
        for number, state in self.owned.items():
            position = TopicPartition(self.settings.events_topic, number, state.seek_to)
            with contextlib.suppress(KafkaException):
                self.consumer.seek(position)
        return True

    def _feed_trainer(self, vectors: list[FeatureVector]) -> None:
        """Send the trainer `vectors`, many to a message; the next commit waits for them."""
        if vectors:
            self.checkpoint.send(outgoing.vector_batches(vectors, self.settings.features_topic))
            metrics.FEATURE_VECTORS.inc(len(vectors))

    def process(self, messages: Sequence[Message]) -> bool:
        """Handle one batch end to end (see the module docstring).

        Besides `messages`, the batch fires the timers due by each owned
        partition's watermark, up to `timers_per_batch`. Returns whether timers
        were left for later batches.
        """
        started = time.perf_counter()
        if self._unadopted:
            self._resume_adoption()
        decoded = decode_batch(
            messages,
            self.owned,
            partition_count=self.partitions,
            max_event_bytes=self.settings.max_event_bytes,
            not_after=time.time() + self.settings.max_future_seconds,
            keep=self._projection(),
        )
        self._follow_wall_clock()
        due = self._due_timers()
        if not decoded.partitions and not due:
            return False
        for number in due:
            if number not in decoded.partitions:
                committed = self.owned[number].committed
                assert committed is not None  # timers are read only where progress was committed
                decoded.partitions[number] = PartitionBatch(number, committed - 1)
        batch = self._step_partitions(decoded, due)
        if not batch.committed:
            self._rewind(list(decoded.partitions))
            return False
        backlog = {number: taken for number, taken in due.items() if not taken.exhausted}
        self._account(decoded, batch, len(messages), backlog, started)
        counters = batch.commit.counters
        if decoded.rejected:
            reasons = Tally(str(rejection.reason) for _, rejection in decoded.rejected)
            log.info(
                "dead letters %s (segstream dlq tail shows them)",
                " ".join(f"{reason}={count}" for reason, count in sorted(reasons.items())),
            )
        log.debug(
            "batch events=%d dead_letters=%d users=%d changes=%d relays=%d timers=%d",
            counters.events,
            counters.dead_letters,
            batch.commit.users,
            counters.changes,
            counters.relays_sent,
            counters.timers_fired,
        )
        return bool(backlog)

    def _account(
        self,
        decoded: DecodedBatch,
        batch: _Stepped,
        size: int,
        backlog: Mapping[int, DueTimers],
        started: float,
    ) -> None:
        """After a batch committed: its feature vectors for the trainer, and its metrics."""
        self.vectors.add(batch.vectors)
        _count_consumed(decoded, size)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self._measure_lag()
        metrics.TIMER_LAG.set(
            max(
                (self.owned[n].clock.firing - taken.entries[-1][0] for n, taken in backlog.items()),
                default=0,
            )
        )

    def _step_partitions(self, decoded: DecodedBatch, due: dict[int, DueTimers]) -> _Stepped:
        """Run each partition's step over its items and due timers, and commit each."""
        members = {
            number: [u for chunk in self.store.partition_users(number) for u in chunk]
            for number, part in decoded.partitions.items()
            if part.advances
        }
        wanted = {
            number: {
                *part.user_ids(),
                *(due[number].sources if number in due else ()),
                *members.get(number, ()),
            }
            for number, part in decoded.partitions.items()
        }
        stored = self.store.rows(wanted)
        stepped_at = time.time()
        parts = list(decoded.partitions.items())
        stepping = [
            self._stepping.submit(
                run_partition,
                part,
                stored,
                self.classifier.core,
                dedup_before=self.owned[number].clock.max_event_time
                - self.settings.dedup_horizon_seconds,
                partition_users=members.get(number, ()),
                retention=self.settings.expiry_seconds,
                due=due[number].entries if number in due else (),
                firing=self.owned[number].clock.firing,
                published=self._published(stepped_at),
                resident=self.resident.get(number),
            )
            for number, part in parts
        ]
        try:
            return self._commit_as_stepped(decoded, parts, stepping, due, stored)
        except BaseException:
            wait(stepping)  # no step outlives its batch
            raise

    def _commit_as_stepped(
        self,
        decoded: DecodedBatch,
        parts: Sequence[tuple[int, PartitionBatch]],
        stepping: Sequence[Future[PartitionStep]],
        due: Mapping[int, DueTimers],
        stored: Mapping[str, bytes],
    ) -> _Stepped:
        """Take each partition's step in order, send its changes and commit it, while the
        partitions after it still step."""
        vectors: list[FeatureVector] = []
        commits: list[PartitionCommit] = []
        committed = True
        received = _received_counters(decoded)
        indexed = indexed_features(self.rules)
        for (number, part), stepped in zip(parts, stepping, strict=True):
            state = self.owned[number]
            taken = due.get(number)
            step = stepped.result()
            _count_loaded(self.resident.get(number))
            self._send_changes(step.messages)
            self._send_examples(step.examples, step.example_count)
            vectors += step.vectors
            relays = [(relay, number, decoded.cause(part, relay.position)) for relay in step.relays]
            counters = received.get(number, Counters())
            counters += Counters(
                events=step.applied,
                duplicates=step.duplicates,
                users=step.new_users,
                timers_fired=step.fired,
                erased=len(step.erased),
                expired=len(step.expired),
                relays_applied=part.relayed,
                changes=len(step.changes),
                relays_sent=len(step.relays),
            )
            timers = {
                user_id: step.users[user_id].due if user_id in step.users else None
                for user_id in [*(taken.sources if taken else ()), *step.timers]
            }
            commit = PartitionCommit(
                number,
                state.committed,
                state.progress(part.last + 1),
                rows=step.rows,
                labelled={user_id: step.users[user_id] for user_id in step.relabelled},
                changes=step.changes,
                counters=counters,
                new_users=[user_id for user_id in step.users if user_id not in stored],
                expired_users=[*step.expired, *step.erased],
                timers=timers,
                taken=taken,
                evaluated=self.rules.segment_digests if state.committed is None else {},
                values=indexed_values(indexed, step.users, step.rows, self.classifier.core),
                recorded=self.records_activity,
            )
            commits.append(commit)
            committed &= self.checkpoint.commit(
                self._outgoing(decoded, relays, number), BatchCommit([commit], self.rules.label)
            )
        return _Stepped(committed, BatchCommit(commits, self.rules.label), vectors)

    def _published(self, stepped_at: float) -> tuple[float, str] | None:
        """What a step's change events say of it: when it was processed, by which rules."""
        return stepped_at, self.rules.label

    def _send_changes(self, messages: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Put a partition's change events (made by its step) on their way while the next
        partitions step; the commit waits for their acks."""
        self.checkpoint.send_keyed(self.settings.changes_topic, messages)

    def _send_examples(self, packed: bytes, count: int) -> None:
        """Put a partition's labelled examples on their way, like its changes: a batch done
        again after a failure produces the same ones, which the trainer takes once."""
        if count:
            self.checkpoint.send(outgoing.examples(packed, self.settings.examples_topic))
            metrics.EXAMPLES.inc(count)

    def _outgoing(
        self,
        decoded: DecodedBatch,
        relays: Sequence[tuple[Relay, int, Message]],
        number: int,
    ) -> list[Outgoing]:
        """Partition `number`'s relays, and the events it forwards and dead letters it
        sends, to produce before its commit."""
        return [
            *outgoing.relays(self.settings.events_topic, relays, decoded.misrouted_from(number)),
            *outgoing.dead_letters(
                decoded.rejected_from(number),
                self.settings.dead_letter_topic,
                self.privacy.scrub_bytes,
            ),
        ]

    def _check_partition_count(self) -> int:
        """The events topic's partition count; raise :class:`PartitionCountError` when the
        stored state was built with another one (it is stored by the first worker)."""
        topic = self.settings.events_topic
        metadata = self.consumer.list_topics(topic, timeout=30).topics[topic]
        if metadata.error is not None:
            raise PartitionCountError(f"cannot read topic {topic!r}: {metadata.error.str()}")
        found = len(metadata.partitions)
        built = self.store.claim_partition_count(found)
        if built != found:
            raise PartitionCountError(_count_mismatch(self.settings, found, built))
        return found

    def _measure_lag(self) -> None:
        """Set each owned partition's lag from the high watermark of the latest fetch."""
        topic = self.settings.events_topic
        for number, state in self.owned.items():
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, number), cached=True
            )
            if high >= 0:
                lag = high - (state.committed or 0)
                metrics.CONSUMER_LAG.labels(partition=str(number)).set(max(lag, 0))

    def _projection(self) -> Projection:
        """What the decoder keeps for the rules in force (every trait with
        `SEGSTREAM_KEEP_TRAITS=all`)."""
        projection = self.rules.projection
        if self.settings.keep_traits == "all":
            return projection._replace(traits=True)
        return projection

    def _follow_wall_clock(self) -> None:
        """Let the clocks of each partition quiet for `idle_watermark_seconds` follow the wall
        clock (the firing clock to it minus the firing delay, the watermark to it minus the
        allowed lateness), unless its latest message was replayed."""
        idle = self.settings.idle_watermark_seconds
        if not idle:
            return
        quiet_since = time.monotonic() - idle
        now = time.time()
        for state in self.owned.values():
            if state.heard <= quiet_since and not state.replaying:
                state.clock.follow_wall_clock(now)

    def _due_timers(self) -> dict[int, DueTimers]:
        """The timers due by each owned partition's firing clock, a share of the batch's budget.

        Only partitions whose firing clock has reached their next timer are asked; one that
        had nothing due notes when its next timer is, and this worker's commits bring that
        forward when they schedule an earlier one.
        """
        clocks = {
            number: state.clock.firing
            for number, state in self.owned.items()
            if state.committed is not None and state.clock.firing >= state.timers_after
        }
        if not clocks:
            return {}
        share = max(1, self.settings.timers_per_batch // len(clocks))
        due = self.store.due_timers(clocks, share)
        for number, taken in due.items():
            if taken.exhausted and not taken.entries:
                self.owned[number].timers_after = taken.after
        return {number: taken for number, taken in due.items() if taken.bounds}

    def _switch_rules(self, published: InForce, stop: threading.Event) -> None:
        """Use the `published` rules from the next batch on: from the generation built for
        them, or with `reevaluate`, re-labelling every owned user now."""
        rules, reevaluate = published.rules, published.reevaluate
        if self.builder is not None and published.generation == self.builder.build.generation:
            if not self._switch_generation(published, stop):
                return
        else:
            self._serve(published.generation, published.replaces)
        self.rules = rules
        self.classifier = Classifier.of(rules, self.model, examples=self.settings.predictions)
        metrics.RULES.info({"version": rules.label})
        log.info("rules switched to=%s reevaluate=%s", rules.label, reevaluate)
        if reevaluate:
            self._relabel(ChangeReason.RULES)

    def _switch_model(self, snapshot: ModelSnapshot) -> None:
        """Place users with `snapshot` from now on; re-place everyone if it re-clustered, or
        if the rules compare a prediction and its coefficients moved."""
        previous = self.model
        before = self.classifier.thresholds
        self.model = ClusterAssigner(snapshot)
        self.classifier = Classifier.of(self.rules, self.model, examples=self.settings.predictions)
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
            return
        after = self.classifier.thresholds
        if self.rules.predictions and (
            _scores_moved(previous.snapshot, snapshot)
            or _of_predictions(before) != _of_predictions(after)
        ):
            self._relabel(ChangeReason.MODEL)  # every user's predictions, or a threshold, moved
            return
        moved = moved_ranges(self.rules, before, after)
        if moved:  # a threshold moved: the users it passed over, found by their values
            self._relabel(ChangeReason.MODEL, partial(self._users_between, moved))

    def _users_between(
        self, moved: Mapping[str, tuple[float, float]], partition: int
    ) -> Iterator[list[str]]:
        """The users of `partition` whose values lie in a `moved` range, once each."""
        chosen: set[str] = set()
        for feature, (low, high) in moved.items():
            chosen.update(self.store.users_between(partition, feature, low, high))
        ordered = sorted(chosen)
        for start in range(0, len(ordered), _RELABEL_CHUNK):
            yield ordered[start : start + _RELABEL_CHUNK]

    def _relabel(
        self, reason: str, users_of: Callable[[int], Iterator[list[str]]] | None = None
    ) -> None:
        relabel(
            self.owned,
            self.store,
            self.classifier,
            self.checkpoint,
            self.settings,
            reason=reason,
            beat=self.probe.beat,
            users_of=users_of,
        )

    def _recover(self, error: Exception, stop: threading.Event) -> None:
        """A batch could not be written because Redis or the broker did not answer.

        Its partitions not committed yet are not, so wait, backing off, until both answer,
        then go back to each partition's committed offset and do the rest again. What it
        produced before failing may come twice: change versions and relay offsets make that
        harmless.
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
                self.parts.ping()
                self.checkpoint.settle(delay)
                self._rewind(list(self.owned))
            except (*_UNAVAILABLE, DeliveryError) as again:
                _link(again).lost(f"{type(again).__name__}: {again}")
                continue
            KAFKA.reached()
            REDIS.reached()
            log.info("resumed from the committed offsets after=%.1fs", time.monotonic() - started)
            self.probe.ready = True
            return

    def _restore(self, numbers: list[int]) -> None:
        """Rebuild the runtime state of `numbers` from their committed progress."""
        progress = self.store.progress(numbers)
        lateness = self.settings.allowed_lateness_seconds
        delay = self.settings.firing_delay_seconds
        for number in numbers:
            state = PartitionState.restore(number, progress.get(number), lateness, delay)
            self.owned[number] = state

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        beyond = [tp.partition for tp in partitions if tp.partition >= self.partitions]
        if beyond:  # partitions were added while the workers ran: refused after the callback
            self.added_partitions = beyond
            return
        delay = 0.5
        while True:
            try:
                self._restore([tp.partition for tp in partitions])
                break
            except _UNAVAILABLE as error:
                REDIS.lost(f"partitions not taken yet ({type(error).__name__}: {error})")
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
        REDIS.reached()
        numbers = [tp.partition for tp in partitions]
        if self.replaces is not None:
            self._unadopted |= set(numbers) - self.store.adopted(numbers)
        for tp in partitions:
            tp.offset = self.owned[tp.partition].seek_to
            self.resident.setdefault(tp.partition, Resident(0))
        self._share_resident()
        consumer.incremental_assign(partitions)
        metrics.PARTITIONS.set(len(self.owned))
        log.info(
            "partitions assigned=%s",
            ",".join(f"{tp.partition}@{tp.offset}" for tp in partitions),
        )

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_unassign(partitions)
        for tp in partitions:
            self.owned.pop(tp.partition, None)
            self.resident.pop(tp.partition, None)
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(str(tp.partition))
        self._share_resident()
        metrics.PARTITIONS.set(len(self.owned))
        log.info("partitions revoked=%s", ",".join(str(tp.partition) for tp in partitions))

    def _share_resident(self) -> None:
        """Split SEGSTREAM_RESIDENT_USERS evenly over the owned partitions."""
        share = self.settings.resident_users // max(1, len(self.resident))
        for resident in self.resident.values():
            resident.set_capacity(share)

    def _rewind(self, numbers: list[int]) -> None:
        """Seek `numbers` back to their committed progress after a batch not committed."""
        owned = [number for number in numbers if number in self.owned]
        self._restore(owned)
        for number in owned:
            position = TopicPartition(
                self.settings.events_topic, number, self.owned[number].seek_to
            )
            try:
                self.consumer.seek(position)
            except KafkaException as error:
                log.warning("seek failed partition=%d error=%r", number, str(error))


def _in_background(work: Callable[..., None], *args: object) -> None:
    threading.Thread(target=work, args=args, daemon=True).start()


def _drop_generation(store: StateStore, partitions: list[int]) -> None:
    """Delete a replaced generation's keys of `partitions` (in the background), once the
    readers have followed the switch."""
    time.sleep(_READERS_FOLLOW)
    try:
        removed = store.drop_partitions(partitions)
    except _UNAVAILABLE as error:
        log.warning("the replaced generation's keys stay: %s", error)
        return
    log.info("replaced generation's keys removed=%d partitions=%s", removed, partitions)


@dataclass(frozen=True, slots=True)
class _Stepped:
    """A stepped batch: whether every partition committed (none was fenced), what they
    committed, and the feature vectors for the trainer."""

    committed: bool
    commit: BatchCommit
    vectors: list[FeatureVector]


def _received_counters(decoded: DecodedBatch) -> dict[int, Counters]:
    """Per partition, the dead letters (late ones among them) and forwards among the
    messages it delivered."""
    counted: dict[int, Counters] = {}
    for message, rejection in decoded.rejected:
        counters = counted.setdefault(cast(int, message.partition()), Counters())
        counters.dead_letters += 1
        counters.late += rejection.reason == Reason.LATE
    for misrouted in decoded.misrouted:
        counters = counted.setdefault(cast(int, misrouted.message.partition()), Counters())
        counters.forwarded += 1
        counters.relays_sent += 1
    return counted


def _count_consumed(decoded: DecodedBatch, size: int) -> None:
    """Add a committed batch to the consumption, dead-letter, freshness and arrival-delay
    metrics."""
    metrics.EVENTS_CONSUMED.inc(decoded.consumed)
    for reason, count in Tally(rejection.reason for _, rejection in decoded.rejected).items():
        metrics.DEAD_LETTERS.labels(reason=reason).inc(count)
    metrics.BATCH_EVENTS.observe(size)
    if decoded.live_times:
        metrics.FRESHNESS.observe_many(time.time() - np.asarray(decoded.live_times))
        metrics.ARRIVAL_DELAY.observe_many(decoded.arrival_delays)


def _count_loaded(resident: Resident | None) -> None:
    """Add the users a partition's step loaded to the metric, by where they came from."""
    if resident is not None:
        kept, decoded = resident.take_counts()
        metrics.USERS_LOADED_RESIDENT.inc(kept)
        metrics.USERS_LOADED_ROW.inc(decoded)


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


def _scores_moved(before: ModelSnapshot, after: ModelSnapshot) -> bool:
    """Whether `after` scores some prediction differently from `before`."""

    def scores(snapshot: ModelSnapshot) -> dict[str, object]:
        return {name: v for name, v in snapshot.scored().items() if name != "version"}

    return scores(before) != scores(after)


def _of_predictions(thresholds: Mapping[str, float]) -> dict[str, float]:
    """The percentile thresholds of predictions among `thresholds`."""
    return {name: v for name, v in thresholds.items() if f"({PREDICTION_PREFIX}" in name}
