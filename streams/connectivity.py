"""Whether the broker and Redis answer, logged once per change of state.

A client that retries every few milliseconds must not write a line per retry:
each process keeps one :class:`Link` per dependency, which logs when the
dependency is lost and when it answers again, and nothing in between.

>>> link = Link("kafka")
>>> link.up is None
True
>>> link.lost("connection refused"), link.lost("connection refused"), link.reached()
(True, False, True)
>>> link.up
True
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

_PER_CONNECTION = frozenset({KafkaError._TRANSPORT, KafkaError._RESOLVE})
"""One connection failed: librdkafka retries it, and says when every broker is down."""


class Link:
    """One dependency's state: `up` is `None` until anything is known."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.up: bool | None = None
        self._lock = threading.Lock()

    def reached(self) -> bool:
        """The dependency answered; returns whether that is news (and was logged)."""
        with self._lock:
            news, self.up = self.up is not True, True
        if news:
            log.info("%s reachable", self.name)
        return news

    def lost(self, detail: str) -> bool:
        """The dependency did not answer; returns whether that is news (and was logged)."""
        with self._lock:
            news, self.up = self.up is not False, False
        if news:
            log.warning("%s unreachable: %s", self.name, detail)
        return news


KAFKA = Link("kafka")
"""This process's view of the Kafka brokers."""
REDIS = Link("redis")
"""This process's view of Redis."""


def kafka_error(error: KafkaError) -> None:
    """librdkafka's error callback: "all brokers down" marks the brokers lost, once; a
    single connection's failure is retried by librdkafka; any other error is logged."""
    code = error.code()
    if code == KafkaError._ALL_BROKERS_DOWN:
        KAFKA.lost(error.str())
    elif code in _PER_CONNECTION:
        log.debug("kafka connection: %s", error.str())
    else:
        log.warning("kafka error: %s", error.str())


class _QuietConnectFailures(logging.Filter):
    """Drops librdkafka's per-attempt connection failures; :data:`KAFKA` reports the state."""

    def filter(self, record: logging.LogRecord) -> bool:
        facility = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return facility not in ("FAIL", "BROKERFAIL")


LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
"""Where librdkafka's own log lines go (connection failures filtered out)."""
LIBRDKAFKA_LOG.addFilter(_QuietConnectFailures())
