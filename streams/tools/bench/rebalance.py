"""Rebalances under live load: every worker restarted in turn, then one SIGKILLed.

:func:`measure_rebalances` starts `workers` workers on a topic of its own (16 partitions
in the bench), produces live events at a steady rate, and every :data:`PROBE_EVERY`
seconds one probe on each partition: a page view by a user of its own, applied once its
state row is readable in Redis. Then:

- `restart_pause_p99_ms`: each worker in turn gets SIGTERM and is started again once it
  has stopped; the next follows once the new one has been assigned partitions. The
  figure is the 99th percentile of the probes' time from produced to readable, over
  the probes sent from the first SIGTERM until every probe sent before the last worker
  rejoined is readable.
- `failover_seconds`: one worker gets SIGKILL; the figure is the time from the kill
  until every partition has applied a probe sent after it (so a partition the killed
  worker owned counts from the kill until another worker took it over and caught up).

It returns once the workers have committed every event produced (`sent`, probes
included), and stops them: a caller compares the workers' counters with `sent` to
check that nothing was lost or applied twice.

    figures = measure_rebalances(processes, settings, rate=1_000, workers=4)
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import orjson
from confluent_kafka import Producer

from processors.partitioner import canonical_partition
from state.read_model import ReadModel
from streams.heap import frozen_heap
from streams.kafka import reliable_producer
from streams.redis_clients import read_model
from streams.settings import Settings
from streams.tools.bench.parts import (
    Probe,
    ProbeWatch,
    Processes,
    joined,
    live_events,
    percentiles,
    wait_for,
)

PROBE_EVERY = 0.1
"""Seconds between two rounds of probes, one on each partition."""
_TICK = 0.01
_STAMP = b'"timestamp":"'
"""How each of :func:`~streams.tools.bench.parts.live_events`'s heads ends."""


@dataclass(frozen=True, slots=True)
class RebalanceFigures:
    """What :func:`measure_rebalances` measured, and how many events it produced."""

    restart_pause_p99_ms: float
    restart_pause_p50_ms: float
    failover_seconds: float
    sent: int


class _LiveLoad:
    """Live events at `rate`/s and a probe on each partition every `PROBE_EVERY` s, from a
    thread, while `watch` looks for the probes' state rows."""

    def __init__(self, settings: Settings, rate: float, watch: ProbeWatch) -> None:
        self.settings = settings
        self.rate = rate
        self.watch = watch
        self.sent = 0
        self.stopping = threading.Event()
        self._ids = _probe_ids(settings.partitions)
        self._thread = threading.Thread(target=self._produce, name="live-load", daemon=True)

    def __enter__(self) -> _LiveLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self._thread.join(60)

    def _produce(self) -> None:
        producer = reliable_producer(self.settings, **{"linger.ms": 1})
        source = _repeating_events(self.rate)
        topic = self.settings.events_topic
        begin = time.monotonic()
        next_probe = begin
        with frozen_heap():
            while not self.stopping.is_set():
                now = time.monotonic()
                stamp = datetime.now(UTC).isoformat()
                while self.sent < int((now - begin) * self.rate):
                    key, head = next(source)
                    value = b'%s"messageId":"rebalance-%d",%s%s"}' % (
                        head[: -len(_STAMP)],
                        self.sent,
                        _STAMP,
                        stamp.encode(),
                    )
                    producer.produce(topic, key=key, value=value)
                    self.sent += 1
                if now >= next_probe:
                    self._probe(producer, stamp)
                    next_probe += PROBE_EVERY
                producer.poll(0)
                time.sleep(_TICK)
        if producer.flush(60):
            raise RuntimeError("the broker did not take every live event")

    def _probe(self, producer: Producer, stamp: str) -> None:
        sent = time.time()
        probes = []
        for partition, ids in enumerate(self._ids):
            user = next(ids)
            body = {"type": "page", "userId": user, "timestamp": stamp}
            topic = self.settings.events_topic
            producer.produce(topic, key=user.encode(), value=orjson.dumps(body))
            probes.append(Probe(partition, user, sent))
        self.sent += len(probes)
        self.watch.add(probes)


def _repeating_events(rate: float) -> Iterator[tuple[bytes, bytes]]:
    """Live events drawn once (30 s worth at `rate`, at most 1,000,000) and sent again and
    again, so that the load generator costs the cores little; they come without a message
    id, and each is given a new one when it is sent."""
    pool = list(itertools.islice(live_events(10_000, 13, ids=False), int(min(rate * 30, 1e6))))
    return itertools.cycle(pool)


def _probe_ids(partitions: int) -> list[Iterator[str]]:
    """For each partition, an endless series of fresh user ids whose canonical partition it
    is.

    >>> ids = _probe_ids(4)
    >>> [canonical_partition(next(ids[p]), 4) for p in range(4)]
    [0, 1, 2, 3]
    """

    def of(partition: int) -> Iterator[str]:
        for number in itertools.count():
            user = f"rebalance-probe-{number}"
            if canonical_partition(user, partitions) == partition:
                yield user

    return [of(partition) for partition in range(partitions)]


def measure_rebalances(
    processes: Processes,
    settings: Settings,
    rate: float,
    workers: int = 4,
    timeout: float = 120,
) -> RebalanceFigures:
    """Run `workers` workers on `settings` under live load at `rate`/s; restart each in
    turn, then SIGKILL one (see the module docstring)."""
    logs = processes.logs
    names = [f"{settings.redis_prefix}-rebalance-{n}" for n in range(workers)]
    running = [processes.start(settings, name, "streams", "worker") for name in names]
    for name in names:
        wait_for(partial(joined, logs / f"{name}.log"), timeout, f"{name} joining")
    with ProbeWatch(settings, every=_TICK) as watch, _LiveLoad(settings, rate, watch) as load:
        wait_for(lambda: _all_seen(watch.since(0)), timeout, "the first probes")
        first_stop = time.time()
        for index, name in enumerate(names):
            processes.stop(running[index])
            log = logs / f"{name}.log"
            log.write_bytes(b"")  # so that the new process's assignment is what is awaited
            running[index] = processes.start(settings, name, "streams", "worker")
            wait_for(partial(joined, log), timeout, f"{name} rejoining")
        rejoined = time.time()
        wait_for(lambda: _all_seen(watch.since(first_stop)), timeout, "probes after restarts")
        restarting = [probe for probe in watch.since(first_stop) if probe.sent <= rejoined]
        latencies = [probe.seen - probe.sent for probe in restarting if probe.seen is not None]
        restart_p50, restart_p99 = percentiles(latencies)
        running[0].kill()
        running[0].wait(10)
        killed = time.time()
        wait_for(lambda: _taken_over(watch.since(killed), settings.partitions), timeout, "failover")
        failover = max(_first_seen(watch.since(killed), p) for p in range(settings.partitions))
    processes.running.remove(running[0])
    model = read_model(settings)
    wait_for(lambda: _counted(model) >= load.sent, timeout, "every event committed")
    for process in running[1:]:
        processes.stop(process)
    return RebalanceFigures(
        restart_pause_p99_ms=restart_p99,
        restart_pause_p50_ms=restart_p50,
        failover_seconds=failover - killed,
        sent=load.sent,
    )


def _counted(model: ReadModel) -> int:
    """Events the workers have committed: applied, dropped as duplicates or dead-lettered."""
    counters = model.counters()
    return sum(counters.get(name, 0) for name in ("events", "duplicates", "dead_letters"))


def _first_seen(probes: list[Probe], partition: int) -> float:
    """When the first of `probes` on `partition` to be applied was seen."""
    return min(probe.seen for probe in probes if probe.partition == partition and probe.seen)


def _all_seen(probes: list[Probe]) -> bool:
    return bool(probes) and all(probe.seen is not None for probe in probes)


def _taken_over(probes: list[Probe], partitions: int) -> bool:
    """Whether every partition has applied a probe among `probes`."""
    return {probe.partition for probe in probes if probe.seen is not None} == set(range(partitions))
