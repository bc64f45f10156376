"""The edge: one collector process's rates, and the time from a tracker's call to its label.

- `collector_batch_eps`: events/s through `POST /v1/batch`, 100 events a request, on
  :data:`CONNECTIONS` keep-alive connections, each sending its next request once the
  last was answered (the collector answers once the broker acknowledged every event);
- `collector_single_rps`: single `track` calls/s through `POST /v1/t` (the browser
  SDK's path, a `text/plain` body with its `writeKey`), the same way;
- `tracker_to_label_p50_ms`, `tracker_to_label_p99_ms`: with a worker running, single
  calls sent open-loop at a fixed rate; every 100th is a probe, a user of its own, timed
  from its call's start to its state row (written with its labels) readable in Redis;
- `arrival_delay_p999_ms`, `arrival_delay_max_ms`: of those calls' events, in the events
  topic's offset order, how far behind its partition's newest event time each one came
  (the collector stamps them as they arrive): the reordering segstream's own path adds,
  which the firing delay must cover.

    figures = measure_edge(processes, settings, seconds=10, rate=5_000)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import cast

import orjson
import uvloop
from confluent_kafka import TopicPartition

from processors._core import Action, decode_events
from processors.partitioner import canonical_partition
from streams.heap import frozen_heap
from streams.kafka import topic_reader
from streams.settings import Settings
from streams.tools.bench.parts import (
    Probe,
    ProbeWatch,
    Processes,
    exchange,
    joined,
    percentiles,
    wait_for,
    wait_for_http,
)
from streams.tools.embedded import free_port
from streams.topics import ensure_topics

CONNECTIONS = 64
"""Keep-alive connections each measurement sends on, as many browsers would: one call
waits for the broker's ack, about 5 ms (the producer's linger) and more, so fewer
connections measure that wait rather than the collector."""
BATCH = 100
"""Events in one `/v1/batch` request."""
OPEN_CONNECTIONS = 256
"""Connections the tracker to label sends on: enough that a call never waits for one
(at 5,000 calls/s and 20 ms a call, about 100 are in use)."""
PROBE_EVERY = 100
"""Every this many calls of the tracker-to-label load is a probe."""
_KEY = "bench-write-key"


@dataclass(frozen=True, slots=True)
class EdgeFigures:
    """What :func:`measure_edge` measured."""

    collector_batch_eps: float
    collector_single_rps: float
    tracker_to_label_p50_ms: float
    tracker_to_label_p99_ms: float
    tracker_to_label_probes: int
    arrival_delay_p999_ms: float
    arrival_delay_max_ms: float


def measure_edge(
    processes: Processes, settings: Settings, seconds: float, rate: float
) -> EdgeFigures:
    """A collector (write key :data:`_KEY`): its batch and single-call rates for `seconds`
    each, into a topic nobody reads (`<events topic>-rates`); then another on `settings`'
    events topic with a worker behind it: the tracker to label at `rate` calls/s."""
    rates = settings.model_copy(update={"events_topic": f"{settings.events_topic}-rates"})
    ensure_topics(rates)
    with _collector(processes, rates, "collector-rates") as port, frozen_heap():
        batches = uvloop.run(_closed_loop(port, _batch_requests(), seconds))
        singles = uvloop.run(_closed_loop(port, _single_requests("edge"), seconds))
    worker = processes.start(settings, "edge-worker", "streams", "worker")
    try:
        wait_for(partial(joined, processes.logs / "edge-worker.log"), 120, "the edge worker")
        with _collector(processes, settings, "collector-live") as port, frozen_heap():
            with ProbeWatch(settings) as warming:  # the worker's and the collector's first calls
                uvloop.run(_open_loop(port, settings, rate, min(2.0, seconds), warming, "warm"))
            with ProbeWatch(settings) as watch:
                uvloop.run(_open_loop(port, settings, rate, seconds, watch, "live"))
    finally:
        processes.stop(worker)
    latencies = [probe.seen - probe.sent for probe in watch.probes if probe.seen is not None]
    if len(latencies) < len(watch.probes):
        missing = len(watch.probes) - len(latencies)
        raise TimeoutError(f"{missing} of {len(watch.probes)} probes were never applied")
    p50, p99 = percentiles(latencies)
    delays = sorted(arrival_delays(settings))
    return EdgeFigures(
        batches * BATCH / seconds,
        singles / seconds,
        p50,
        p99,
        len(latencies),
        delays[min(len(delays) - 1, int(len(delays) * 0.999))] * 1000 if delays else 0.0,
        delays[-1] * 1000 if delays else 0.0,
    )


def arrival_delays(settings: Settings) -> list[float]:
    """How far behind its partition's newest event time each event of the events topic
    came, partition by partition in offset order, in seconds (what the worker's
    `segstream_worker_arrival_delay_seconds` observes)."""
    topic = settings.events_topic
    reader = topic_reader(settings, f"{settings.group_id}-bench-delays")
    delays: list[float] = []
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        for partition in partitions:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            reader.assign([TopicPartition(topic, partition, low)])
            newest, read, deadline = -math.inf, low, time.monotonic() + 60
            while read < high and time.monotonic() < deadline:
                messages = [m for m in reader.consume(10_000, 1.0) if m.error() is None]
                if not messages:
                    continue
                read = cast(int, messages[-1].offset()) + 1
                values = [m.value() or b"" for m in messages]
                for action in decode_events(values, settings.max_event_bytes):
                    if isinstance(action, Action):
                        delays.append(max(newest - action.timestamp, 0.0))
                        newest = max(newest, action.timestamp)
    finally:
        reader.close()
    return delays


@contextlib.contextmanager
def _collector(processes: Processes, settings: Settings, name: str) -> Iterator[int]:
    """A collector process on `settings`, on a port of its own (yielded) once ready."""
    port = free_port()
    update = {"collector_port": port, "write_keys": _KEY}
    collector = processes.start(settings.model_copy(update=update), name, "streams", "collector")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", collector)
        yield port
    finally:
        processes.stop(collector)


def _post(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    """A keep-alive `POST` with the write key as the basic-auth user."""
    auth = base64.b64encode(f"{_KEY}:".encode()).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: collector\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _event(user: str, number: int) -> dict[str, object]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": user,
        "messageId": f"{user}-{number}",
        "properties": {"product_id": f"p{number % 500}", "price": 19.5, "category": "shoes"},
    }


def _batch_requests() -> Iterator[bytes]:
    """`/v1/batch` requests of :data:`BATCH` events by 1,000 users, endlessly."""
    for number in itertools.count():
        events = [_event(f"edge-{(number * BATCH + n) % 1000}", number) for n in range(BATCH)]
        yield _post("/v1/batch", orjson.dumps({"batch": events}))


def _single_requests(prefix: str) -> Iterator[bytes]:
    """Single `track` calls as the browser SDK sends them: `/v1/t`, `text/plain`, the write
    key in the body."""
    for number in itertools.count():
        body = {**_event(f"{prefix}-{number % 1000}", number), "writeKey": _KEY}
        yield _post("/v1/t", orjson.dumps(body), "text/plain")


async def _closed_loop(port: int, requests: Iterator[bytes], seconds: float) -> int:
    """Send `requests` for `seconds` on :data:`CONNECTIONS` connections, each the next once
    the last was answered; how many were answered 200."""
    deadline = time.perf_counter() + seconds
    answered = 0

    async def connection() -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                head = await exchange(reader, writer, next(requests))
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"the collector answered {head[:40]!r}")
                answered += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return answered


async def _open_loop(
    port: int, settings: Settings, rate: float, seconds: float, watch: ProbeWatch, name: str
) -> None:
    """Single calls at `rate`/s for `seconds`, whatever the answers' pace; every
    :data:`PROBE_EVERY`th a probe that `watch` times."""
    queue: asyncio.Queue[tuple[bytes, Probe | None] | None] = asyncio.Queue()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (item := await queue.get()) is not None:
                request, probe = item
                if probe is not None:
                    probe.sent = time.time()
                    watch.add([probe])
                head = await exchange(reader, writer, request)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"the collector answered {head[:40]!r}")
        finally:
            writer.close()

    connections = [asyncio.create_task(connection()) for _ in range(OPEN_CONNECTIONS)]
    calls = list(itertools.islice(_single_requests(name), int(rate * seconds)))
    for index in range(0, len(calls), PROBE_EVERY):  # drawn before the clock starts
        user = f"{name}-probe-{index}"
        calls[index] = _post("/v1/t", orjson.dumps({**_event(user, index), "writeKey": _KEY}))
    begin = time.perf_counter()
    for index, call in enumerate(calls):
        delay = begin + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        probe = None
        if index % PROBE_EVERY == 0:
            user = f"{name}-probe-{index}"
            probe = Probe(canonical_partition(user, settings.partitions), user, 0.0)
        queue.put_nowait((call, probe))
    for _ in connections:
        queue.put_nowait(None)
    await asyncio.gather(*connections)
