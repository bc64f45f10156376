"""The commit of a batch (or of a relabelling chunk): one object, four steps.

:meth:`Checkpoint.commit`:

1. produce every outgoing message and wait for the broker to acknowledge all;
2. commit the store transactions, one per partition, each fenced on its partition's
   committed offset: the store checks the offsets and prepares its writes while the
   broker acknowledges, and writes once it has;
3. advance the committed offset of each partition committed;
4. record the commit in the metrics.

A failure in step 1 or 2 (the broker or Redis not answering) leaves the
partitions not yet written uncommitted: the caller waits
(:meth:`Checkpoint.settle`) and redoes them from their committed offsets,
producing the same messages again, which change versions and relay offsets
make harmless. A fenced partition (another worker
took it) is dropped.

Example (the worker's batch path)::

    if not checkpoint.commit(outgoing, BatchCommit(partitions, rules_version)):
        rewind(partitions)  # a partition was fenced
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from processors._core import SegmentChange, tally_moves
from state.store import BatchCommit, StateStore
from streams.kafka import producer_lost
from streams.worker import metrics
from streams.worker.outgoing import Outgoing
from streams.worker.partitions import PartitionState

log = logging.getLogger(__name__)

_FLUSH_SECONDS = 30.0
"""Longest wait for the broker to acknowledge a batch's messages."""


class DeliveryError(RuntimeError):
    """The broker did not acknowledge a message the batch produced."""


class Checkpoint:
    """Commits batches to `store` for the `owned` partitions, producing with a producer from
    `make_producer` (a new one when the broker has failed the current one for good)."""

    def __init__(
        self,
        store: StateStore,
        make_producer: Callable[[], Producer],
        owned: Mapping[int, PartitionState],
    ) -> None:
        self.store = store
        self.make_producer = make_producer
        self.producer = make_producer()
        self.owned = owned
        self._errors: list[str] = []
        self._producer_failed = False

    def commit(self, outgoing: Sequence[Outgoing], batch: BatchCommit) -> bool:
        """Commit `batch` after producing `outgoing`; `False` when a partition was fenced
        (the others are committed).

        Raises :class:`DeliveryError` or Redis's connection errors when the broker or
        Redis did not answer; partitions whose transaction had not run then are not
        committed, and the caller rereads every partition's committed progress.
        """
        # 1. Produce, and wait for the broker's acknowledgements: once the store is ready
        # to write (it checks the offsets and prepares its writes in the meantime).
        started = time.perf_counter()
        self._produce(outgoing)
        acknowledged: list[float] = []

        def acknowledge() -> None:
            self._flush(_FLUSH_SECONDS)
            acknowledged.append(time.perf_counter())

        # 2. Commit the store transactions, fenced on the partitions' offsets.
        fenced = self.store.commit(batch, acknowledge)
        if not acknowledged:  # every partition fenced: nothing written, still delivered
            acknowledge()
        produced = acknowledged[0]
        for partition, reason in fenced.items():
            metrics.FENCED.inc()
            log.warning("partition dropped partition=%d reason=fenced detail=%r", partition, reason)
        # 3. Advance the committed progress.
        committed = [part for part in batch.partitions if part.partition not in fenced]
        for part in committed:
            state = self.owned.get(part.partition)
            if state is not None:
                state.committed = part.progress.offset
                state.scheduled(part.timers)
        # 4. Record it.
        metrics.KAFKA_WRITE_SECONDS.observe(produced - started)
        metrics.REDIS_WRITE_SECONDS.observe(time.perf_counter() - produced)
        counters = BatchCommit(committed).counters
        metrics.EVENTS_PROCESSED.inc(counters.events)
        metrics.EVENTS_DUPLICATE.inc(counters.duplicates)
        metrics.EVENTS_FORWARDED.inc(counters.forwarded)
        metrics.TIMERS_FIRED.inc(counters.timers_fired)
        metrics.ERASURES.inc(counters.erased)
        _count_changes([change for part in committed for change in part.changes])
        return not fenced

    def send(self, outgoing: Sequence[Outgoing]) -> None:
        """Produce `outgoing` apart from any batch: the next commit (or :meth:`close`)
        waits for its acknowledgements, and fails if the broker refused it."""
        self._produce(outgoing)
        self.producer.poll(0)

    def send_keyed(self, topic: str, messages: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Like :meth:`send`, for messages of one topic given as (key, value) pairs: a
        partition step's change events, made by the step."""
        producer, delivered = self.producer, self._delivered
        for key, value in messages:
            producer.produce(topic, key=key, value=value, on_delivery=delivered)
        producer.poll(0)

    def settle(self, timeout: float) -> None:
        """Wait up to `timeout` s for what is in flight, after an outage; raise
        :class:`DeliveryError` unless the broker acknowledged all of it."""
        if self._producer_failed:
            log.warning("the broker failed the producer for good; starting a new one")
            self.producer = self.make_producer()
            self._producer_failed = False
        self._errors.clear()
        self._flush(timeout)

    def close(self) -> None:
        """Deliver what is queued, for up to 10 s."""
        self.producer.flush(10)

    def _produce(self, outgoing: Sequence[Outgoing]) -> None:
        producer = self.producer
        for message in outgoing:
            producer.produce(
                message.topic,
                key=message.key,
                value=message.value,
                headers=message.headers,
                partition=message.partition,
                on_delivery=self._delivered,
            )

    def _flush(self, timeout: float) -> None:
        try:
            remaining = self.producer.flush(timeout)
        except KafkaException as error:  # a fatal error is raised from flush()
            self._producer_failed = producer_lost(error.args[0])
            raise DeliveryError(str(error)) from error
        if remaining or self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError(f"{remaining} undelivered, errors: {errors[:3]}")

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._errors.append(error.str())
            if producer_lost(error):
                self._producer_failed = True


def _count_changes(changes: Sequence[SegmentChange]) -> None:
    """Add published changes to the change and transition metrics."""
    metrics.CHANGES.inc(len(changes))
    moves, cluster_moves = tally_moves(changes)
    for segment, direction, count in moves:
        metrics.TRANSITIONS.labels(segment=segment, direction=direction).inc(count)
    for cluster, direction, count in cluster_moves:
        metrics.CLUSTER_TRANSITIONS.labels(cluster=cluster, direction=direction).inc(count)
