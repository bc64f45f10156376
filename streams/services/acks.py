"""Produce from asyncio and wait for the broker's acknowledgement.

confluent-kafka calls delivery callbacks from `poll()`; one thread polls and
hands each finished send back to the event loop, so a request handler can
`await` its messages being acknowledged without blocking the loop.

Example (with a broker at `settings.kafka_bootstrap`)::

    producer = AckingProducer(lambda: reliable_producer(settings))
    await producer.send("events", [(b"u1", b'{"type": "page", ...}')], timeout=10)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.kafka import producer_lost

log = logging.getLogger(__name__)


class NotAcknowledgedError(RuntimeError):
    """The broker did not acknowledge every message in time, or refused some."""


class AckingProducer:
    """A confluent-kafka producer whose sends can be awaited until acknowledged.

    `make_producer` builds the producer, and builds a new one when the broker has
    failed the current one for good (fenced after a broker freeze, for example):
    librdkafka cannot go on with such a producer.
    """

    def __init__(self, make_producer: Callable[[], Producer]) -> None:
        self.make_producer = make_producer
        self.producer = make_producer()
        self._failed = threading.Event()
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._poller.start()

    async def send(
        self,
        topic: str,
        messages: Sequence[tuple[bytes, bytes]],
        *,
        timeout: float,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Produce `(key, value)` messages (each with `headers`) to `topic`; return once the
        broker acked all.

        Raises :class:`NotAcknowledgedError` when the local queue is full, when the
        producer or the broker refuses a message, or when `timeout` seconds pass first.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        done.add_done_callback(_observed)
        waiting = [len(messages)]
        errors: list[str] = []

        def acknowledged(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                errors.append(error.str())
                if producer_lost(error):
                    self._failed.set()
            waiting[0] -= 1
            if waiting[0] == 0:
                loop.call_soon_threadsafe(_settle, done, errors)

        if self._failed.is_set():
            self._replace_failed_producer()
        try:
            for key, value in messages:
                self.producer.produce(
                    topic, key=key, value=value, headers=headers, on_delivery=acknowledged
                )
        except BufferError:
            raise NotAcknowledgedError("the producer's queue is full") from None
        except KafkaException as error:
            if producer_lost(error.args[0]):
                self._failed.set()
            raise NotAcknowledgedError(f"the producer refused: {error.args[0].str()}") from None
        if not messages:
            return
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            raise NotAcknowledgedError(
                f"the broker did not acknowledge within {timeout:g} s"
            ) from None

    def _replace_failed_producer(self) -> None:
        log.warning("the broker failed the producer for good; starting a new one")
        self._failed.clear()
        self.producer = self.make_producer()

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to `timeout` s) and stop polling."""
        self._stopping.set()
        self._poller.join()
        self.producer.flush(timeout)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            try:
                self.producer.poll(0.05)
            except KafkaException as error:  # a fatal error is raised from poll()
                if producer_lost(error.args[0]):
                    self._failed.set()
                log.warning("producer error: %s", error)


def _observed(done: asyncio.Future[None]) -> None:
    """Mark a late failure as seen: the request it belonged to has already answered."""
    if not done.cancelled():
        done.exception()


def _settle(done: asyncio.Future[None], errors: list[str]) -> None:
    if done.done():
        return
    if errors:
        done.set_exception(NotAcknowledgedError(f"the broker refused: {errors[0]}"))
    else:
        done.set_result(None)
