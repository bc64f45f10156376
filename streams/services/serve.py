"""Run an HTTP service that produces to Kafka: uvicorn, an acking producer, topic upkeep.

The service listens at once, whether or not the broker answers; a thread
creates the topics when it does and keeps :data:`~streams.connectivity.KAFKA`
current, which the collector's readiness follows. Example::

    serve(settings, streams.services.collector.build_app, settings.collector_port)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from streams import logs
from streams.heap import quiet_collector
from streams.kafka import reliable_producer
from streams.services.acks import AckingProducer
from streams.settings import Settings
from streams.topics import keep_provisioned


def serve(
    settings: Settings, build_app: Callable[[Settings, AckingProducer], Any], port: int
) -> None:
    """Build the app with a producer that waits for acks and serve it until interrupted."""
    import uvicorn

    logs.configure(settings.log_level)
    stop = threading.Event()
    threading.Thread(target=keep_provisioned, args=(settings, stop), daemon=True).start()
    timeout_ms = int(settings.ack_timeout_seconds * 1000)
    producer = AckingProducer(
        lambda: reliable_producer(settings, **{"message.timeout.ms": timeout_ms})
    )
    try:
        app = build_app(settings, producer)
        quiet_collector()
        level = settings.log_level.lower()
        uvicorn.run(app, host=settings.http_host, port=port, log_level=level, access_log=False)
    finally:
        stop.set()
        producer.close()
