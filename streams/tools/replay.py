"""Replaying a JSON Lines export through the live pipeline, in event-time order.

The file may be in any order and larger than memory: it is read in runs of
`run_events` lines, each run sorted by event time and spilled to a temporary
file, and the runs are merged. Lines whose timestamp cannot be read are sent
first, unchanged, so the workers dead-letter them with a reason. After
producing, :func:`replay` waits until the workers have committed every
replayed offset; with `until`, it then advances every partition's watermark
to that time and waits for the workers to re-evaluate their users as of it.
"""

from __future__ import annotations

import heapq
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

import msgpack
import orjson
import redis
from confluent_kafka import KafkaError, Message

from processors.wire import ADVANCE_WATERMARK, CONTROL_HEADER, REPLAY_HEADER
from state.read_model import ReadModel
from state.redis_store import RedisStateStore
from streams.kafka import reliable_producer
from streams.redis_clients import redis_client
from streams.settings import Settings

log = logging.getLogger(__name__)
Progress = Callable[[int], None]
REPLAYED: list[tuple[str, str | bytes | None]] = [(REPLAY_HEADER, b"1")]
"""Headers of a replayed event."""
_UNREADABLE = -1.0e18  # before any real event time


def _sort_key(line: bytes) -> tuple[float, bytes]:
    """Event time and partition key of one line; unreadable lines sort first."""
    try:
        event = orjson.loads(line)
        moment = datetime.fromisoformat(event["timestamp"]).timestamp()
        key = str(event.get("userId") or event.get("anonymousId") or "").encode()
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return _UNREADABLE, b""
    return moment, key


def _spill(run: list[tuple[float, bytes, bytes]], directory: Path, number: int) -> Path:
    """Write a sorted run as msgpack, which keeps any bytes, valid UTF-8 or not."""
    run.sort(key=lambda item: item[0])
    path = directory / f"run-{number:05d}"
    with path.open("wb") as handle:
        for moment, key, line in run:
            handle.write(msgpack.packb([moment, key, line]))
    return path


def _read_run(path: Path) -> Iterator[tuple[float, bytes, bytes]]:
    with path.open("rb") as handle:
        yield from (tuple(row) for row in msgpack.Unpacker(handle))


def sorted_events(
    source: IO[bytes], directory: Path, run_events: int
) -> Iterator[tuple[float, bytes, bytes]]:
    """`(event time, key, line)` of every non-blank line of `source`, oldest first.

    >>> import io, tempfile
    >>> lines = b'{"timestamp": "2026-01-02T00:00:00Z", "userId": "b"}\\n' \\
    ...         b'not json \\xff\\n{"timestamp": "2026-01-01T00:00:00Z", "userId": "a"}\\n'
    >>> with tempfile.TemporaryDirectory() as scratch:
    ...     events = sorted_events(io.BytesIO(lines), Path(scratch), run_events=2)
    ...     [line[:8] for _, _, line in events]
    [b'not json', b'{"timest', b'{"timest']
    """
    runs: list[Path] = []
    run: list[tuple[float, bytes, bytes]] = []
    for raw in source:
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        moment, key = _sort_key(line)
        run.append((moment, key, line))
        if len(run) >= run_events:
            runs.append(_spill(run, directory, len(runs)))
            run = []
    run.sort(key=lambda item: item[0])
    yield from heapq.merge(run, *(_read_run(path) for path in runs), key=lambda item: item[0])


class _Delivered:
    """The highest offset the broker acknowledged per partition, and any failure."""

    def __init__(self) -> None:
        self.offsets: dict[int, int] = {}
        self.errors: list[str] = []

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors.append(error.str())
            return
        partition, offset = message.partition(), message.offset()
        if partition is not None and offset is not None:
            self.offsets[partition] = max(offset, self.offsets.get(partition, -1))


def replay(
    settings: Settings,
    source: IO[bytes],
    *,
    until: float | None = None,
    run_events: int = 500_000,
    timeout: float = 3_600.0,
    rate: float | None = None,
    on_sent: Progress | None = None,
    on_applied: Progress | None = None,
) -> int:
    """Send `source` through the events topic in event-time order; return the events sent.

    With `rate`, at most that many events a second (a replay that lasts, as live traffic
    does); otherwise as fast as the broker takes them.
    """
    producer = reliable_producer(settings)
    delivered = _Delivered()
    topic = settings.events_topic
    sent = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="segstream-replay-") as scratch:
        for _, key, line in sorted_events(source, Path(scratch), run_events):
            if rate is not None and sent % 100 == 0:
                producer.poll(0)
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            while True:
                try:
                    producer.produce(
                        topic,
                        key=key or None,
                        value=line,
                        headers=REPLAYED,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
            if sent % 10_000 == 0:
                producer.poll(0)
                if on_sent:
                    on_sent(sent)
    if until is not None:
        partitions = producer.list_topics(topic, timeout=30).topics[topic].partitions
        for partition in partitions:
            producer.produce(
                topic,
                value=orjson.dumps({"until": until}),
                partition=partition,
                headers=[(CONTROL_HEADER, ADVANCE_WATERMARK)],
                on_delivery=delivered,
            )
    remaining = producer.flush(120)
    if remaining or delivered.errors:
        raise RuntimeError(
            f"{remaining} replayed events unacknowledged; errors: {delivered.errors[:3]}"
        )
    if on_sent:
        on_sent(sent)
    wait_until_applied(settings, delivered.offsets, timeout, on_applied)
    return sent


def relays_settled(model: ReadModel) -> bool:
    """Whether every relayed message the workers committed sending has been applied."""
    counters = model.counters()
    return counters.get("relays_sent", 0) == counters.get("relays_applied", 0)


def wait_until_applied(
    settings: Settings,
    offsets: dict[int, int],
    timeout: float,
    on_applied: Progress | None = None,
) -> None:
    """Block until the workers have committed every partition past `offsets`.

    Also waits until every message the workers relayed to themselves (identity
    merges, forwarded events) has been applied.
    """
    client = redis_client(settings)
    store = RedisStateStore(client, settings.key_layout(), settings.group_id)
    model = ReadModel(client, settings.key_layout())
    deadline = time.monotonic() + timeout
    target = sum(offset + 1 for offset in offsets.values())
    done = 0
    try:
        while True:
            try:
                progress = store.progress(sorted(offsets))
                done = sum(
                    min(progress[p].offset, end + 1) if p in progress else 0
                    for p, end in offsets.items()
                )
                if on_applied:
                    on_applied(done)
                if done >= target and relays_settled(model):
                    return
            except (redis.ConnectionError, redis.TimeoutError) as error:
                log.warning("waiting for redis to read progress error=%s", type(error).__name__)
                time.sleep(1.0)
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers applied {done} of {target} offsets in {timeout:.0f} s")
            time.sleep(0.2)
    finally:
        client.close()
