"""A worker's build of a new generation beside the one it serves.

The live worker owns some partitions of the events topic; its builder owns the same
ones (it follows every rebalance) and reads them with a consumer of its own,
assigned by hand, from the generation's committed progress or, for a partition it
has not built yet, from the earliest retained offset. Each batch is the live
worker's batch (:meth:`Worker.process`): the same core, timers, fenced commits and
replay after a crash, under the generation's keys. What a build replays happened
already, so it publishes no segment changes and no feature vectors, and it produces
relays, forwarded events and dead letters only for messages the live worker has
not committed yet (it produced the others). Example::

    builder = GenerationBuilder(worker, build, build_generation_parts(settings, 2))
    while builder.build_step():
        ...
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence

from confluent_kafka import Message, TopicPartition

from processors._core import Relay
from processors.classifier import Classifier
from state.timer_store import DueTimers
from streams.generations import Build
from streams.worker import metrics, outgoing
from streams.worker.decoding import DecodedBatch
from streams.worker.loop import Worker, _Stepped
from streams.worker.outgoing import Outgoing
from streams.worker.partitions import PartitionState
from streams.worker.parts import WorkerParts

log = logging.getLogger(__name__)

_FETCH_WAIT = 0.05
"""Longest a build step waits for history the consumer is still fetching, in seconds (the
live events wait as long at most, during a build)."""


class GenerationBuilder(Worker):
    """Builds `build`'s generation for the partitions `live` owns (see the module)."""

    records_activity = False
    """History's changes happened already: they count in no activity record."""

    def __init__(self, live: Worker, build: Build, parts: WorkerParts) -> None:
        super().__init__(live.settings, build.rules(), parts)
        self.live = live
        self.build = build
        self.partitions = live.partitions
        self.model = live.model
        self.classifier = Classifier.of(self.rules, self.model, examples=self.settings.predictions)

    def build_step(self) -> bool:
        """Follow the live worker's partitions and model, then build one batch of what has
        arrived; whether more is waiting (messages or timers). While history is left to
        build, it waits up to `_FETCH_WAIT` s for the next fetch rather than spin."""
        self._follow()
        if not self.owned:
            return False
        behind = self._behind()
        messages = self._arrived(_FETCH_WAIT if behind else 0)
        backlog = self.process(messages)
        return backlog or behind or len(messages) >= self.settings.batch_max_events

    def _behind(self) -> bool:
        """Whether an owned partition has messages left to build, by the high watermarks of
        the latest fetches (no round trip); each partition's lag goes to the metrics."""
        topic = self.settings.events_topic
        behind = False
        for number, state in self.owned.items():
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, number), cached=True
            )
            lag = max(high - (state.committed or 0), 0)
            metrics.BUILD_LAG.labels(partition=str(number)).set(lag)
            behind |= lag > 0
        return behind

    def within(self, lag: int) -> bool:
        """Whether every partition of the topic (this worker's and the others') has at most
        `lag` messages left to build, by the generation's committed progress."""
        topic = self.settings.events_topic
        numbers = list(range(self.partitions))
        progress = self.store.progress(numbers)
        for number in numbers:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, number), 10)
            done = progress[number].offset if number in progress else low
            if high - max(done, low) > lag:
                return False
        return True

    def reached(self, positions: Mapping[int, PartitionState]) -> bool:
        """Whether every partition of `positions` is owned and built at least as far."""
        return all(
            number in self.owned and (self.owned[number].committed or 0) >= (at.committed or 0)
            for number, at in positions.items()
        )

    def rewind(self) -> None:
        """Go back to the committed progress after a batch that was not committed."""
        self._rewind(list(self.owned))

    def close(self) -> None:
        """Leave the partitions, deliver what is queued, close the generation's store."""
        for number in self.owned:
            with contextlib.suppress(KeyError):
                metrics.BUILD_LAG.remove(str(number))
        self.consumer.close()
        self.checkpoint.close()
        self.parts.close_store()
        log.info("build of generation %d stopped", self.build.generation)

    def _follow(self) -> None:
        if self.live.model is not self.model:
            self.model = self.live.model
            self.classifier = Classifier.of(
                self.rules, self.model, examples=self.settings.predictions
            )
        topic = self.settings.events_topic
        lost = sorted(set(self.owned) - set(self.live.owned))
        gained = sorted(set(self.live.owned) - set(self.owned))
        if lost:
            self._revoked(self.consumer, [TopicPartition(topic, n) for n in lost])
        if gained:
            self._assigned(self.consumer, [TopicPartition(topic, n) for n in gained])

    def _published(self, stepped_at: float) -> tuple[float, str] | None:
        """History's transitions happened already: no change event is made."""
        return None

    def _send_changes(self, messages: Sequence[tuple[bytes, bytes | None]]) -> None:
        """History's transitions happened already: none is published."""

    def _send_examples(self, packed: bytes, count: int) -> None:
        """The serving generation published history's examples already: none is."""

    def _outgoing(
        self,
        decoded: DecodedBatch,
        relays: Sequence[tuple[Relay, int, Message]],
        number: int,
    ) -> list[Outgoing]:
        """Only what comes of messages the live worker has not committed yet."""
        return [
            *outgoing.relays(
                self.settings.events_topic,
                [caused for caused in relays if self._ahead(caused[2])],
                [
                    forward
                    for forward in decoded.misrouted_from(number)
                    if self._ahead(forward.message)
                ],
            ),
            *outgoing.dead_letters(
                [
                    rejected
                    for rejected in decoded.rejected_from(number)
                    if self._ahead(rejected[0])
                ],
                self.settings.dead_letter_topic,
                self.privacy.scrub_bytes,
            ),
        ]

    def _ahead(self, message: Message) -> bool:
        """Whether the live worker has not committed `message` yet."""
        live = self.live.owned.get(message.partition() or 0)
        return live is None or (message.offset() or 0) >= (live.committed or 0)

    def _account(
        self,
        decoded: DecodedBatch,
        batch: _Stepped,
        size: int,
        backlog: Mapping[int, DueTimers],
        started: float,
    ) -> None:
        """A build feeds neither the trainer nor the live worker's metrics: only its own."""
        metrics.BUILD_EVENTS.inc(size)
