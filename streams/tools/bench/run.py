"""One run of the bench: the infrastructure, each measurement in turn, and the figures
(the package's docstring lists them).

    figures = run_bench(BenchConfig(events=300_000, users=30_000), print)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, cast

import orjson
import redis
import uvloop
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from processors._core import PREDICTIONS
from processors.events import NOTHING, Action, Projection, decode_all
from processors.partitioner import canonical_partition, canonical_partitions
from processors.rules import parse_rules
from state.keys import KeyLayout
from state.read_model import ReadModel
from state.redis_store import RedisStateStore
from streams.generations import start_build
from streams.heap import frozen_heap
from streams.kafka import admin_client, reliable_producer
from streams.redis_clients import redis_client
from streams.settings import Settings
from streams.tools.bench.console import console_p99, fill_console_records
from streams.tools.bench.edge import measure_edge
from streams.tools.bench.naive import COUNTER as NAIVE_COUNTER
from streams.tools.bench.parts import (
    Processes,
    exchange,
    live_events,
    percentiles,
    wait_for_http,
)
from streams.tools.bench.predictions import trainer_examples_per_second
from streams.tools.bench.preview import fill_preview_store
from streams.tools.bench.preview import preview_seconds as preview_seconds_of
from streams.tools.bench.rebalance import measure_rebalances
from streams.tools.bench.target import Target, bench_target, redis_nodes
from streams.tools.bench.webhooks import (
    changes_on,
    deliveries_per_second,
    flaky_receiver_seconds,
    time_to_act,
)
from streams.tools.embedded import free_port
from streams.tools.replay import REPLAYED
from streams.tools.simulator import Simulation
from streams.topics import ensure_topics

Report = Callable[[str], None]
_REBALANCE_TOPIC = "rebalance"
_QUIET_TOPIC = "bench-quiet"
_WIDE_TOPICS = (_REBALANCE_TOPIC, _QUIET_TOPIC)
_WIDE_PARTITIONS = 16
"""Partitions of the rebalance topic and of the quiet one (one lone cart each)."""
"""The rebalance measurement's topic: sixteen partitions shared by four workers."""
_POLL = 0.05
_LOOKUP_CONNECTIONS = 16


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to measure, and how much of it."""

    events: int = 1_000_000
    users: int = 100_000
    partitions: int = 4
    seed: int = 7
    naive_seconds: float = 60.0
    freshness_seconds: float = 30.0
    lookup_rps: int = 1_000
    lookup_seconds: float = 10.0
    timeout: float = 3_600.0
    redis_cluster: bool = False
    """Measure on a Redis Cluster of three masters on this machine instead of one Redis."""
    kafka: str | None = None
    """The bootstrap servers of the user's own Kafka to measure on, with `redis`."""
    redis: str | None = None
    """The URL of the user's own Redis to measure on, with `kafka`."""
    webhook_changes: int = 20_000
    """Changes timed at a healthy webhook receiver (at most what the one-worker run made)."""
    flaky_changes: int = 10_000
    """Changes a receiver answering 503 twice before each 200 must take."""
    preview_users: int = 100_000
    """Users the rules preview is timed over (copies of the one-worker run's)."""
    console_requests: int = 200
    """Requests timed per console page, over the preview's users."""
    act_seconds: float = 20.0
    """How long live events with cart probes are produced for the time to act."""
    edge_seconds: float = 10.0
    """How long each of the collector's measurements runs."""
    edge_rate: float = 5_000.0
    """Single tracker calls a second for the tracker to label."""
    rules: Path | None = None
    """A second rules file the one-worker run is measured with again (its throughput, share
    of the I/O floor and Redis bytes per user)."""


def _phase(target: Target, config: BenchConfig, tag: str, topic: str) -> Settings:
    """Settings of one measurement: its own keys, group and output topics, reading `topic`;
    every name starts with the run's prefix."""
    tag = f"{target.run}-{tag}"
    settings = target.settings(
        redis_prefix=tag,
        events_topic=f"{target.run}-{topic}",
        dead_letter_topic=f"{tag}-dlq",
        changes_topic=f"{tag}-changes",
        rules_topic=f"{tag}-rules",
        features_topic=f"{tag}-features",
        examples_topic=f"{tag}-examples",
        models_topic=f"{tag}-models",
        destinations_topic=f"{tag}-destinations",
        deliveries_dlq_topic=f"{tag}-deliveries-dlq",
        group_id=f"{tag}-workers",
        partitions=_WIDE_PARTITIONS if topic in _WIDE_TOPICS else config.partitions,
        api_tokens="bench",
        batch_max_events=20_000,
    )
    ensure_topics(settings)
    return settings


def _preload(settings: Settings, config: BenchConfig) -> list[bytes]:
    """Produce the simulated events (as history) and return a sample of their user ids."""
    producer = reliable_producer(settings, **{"linger.ms": 50, "batch.num.messages": 10_000})
    simulation = Simulation(users=config.users, seed=config.seed)
    keys: list[bytes] = []
    for index, event in enumerate(islice(simulation.events(), config.events)):
        while True:
            try:
                producer.produce(
                    settings.events_topic, key=event.key, value=event.value, headers=REPLAYED
                )
                break
            except BufferError:
                producer.poll(0.05)
        if index % 1_000 == 0:
            keys.append(event.key)
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("the broker did not take every preloaded event")
    return keys


def _committed(client: redis.Redis, keys: KeyLayout, fields: tuple[str, ...]) -> int:
    counters = ReadModel(client, keys).counters()
    return sum(counters.get(name, 0) for name in fields)


def _throughput(
    client: redis.Redis,
    keys: KeyLayout,
    total: int,
    fields: tuple[str, ...],
    timeout: float,
    until: float | None = None,
    on_start: Callable[[], None] = lambda: None,
) -> float:
    """Events per second from the first commit until `total` were committed (or `until`);
    `on_start` is called at the first commit.

    A run so short that the first commit already held everything counts from the
    call instead, start-up included.
    """
    called = time.monotonic()
    deadline = called + timeout
    start = first = None
    while time.monotonic() < deadline:
        done = _committed(client, keys, fields)
        now = time.monotonic()
        if done and start is None:
            start, first = now, done
            on_start()
        finished = done >= total or (until is not None and now - (start or now) >= until)
        if start is not None and first is not None and finished:
            if done > first:
                return (done - first) / max(now - start, 1e-9)
            return done / max(now - called, 1e-9)
        time.sleep(_POLL)
    raise TimeoutError(f"only {_committed(client, keys, fields)} of {total} events in {timeout} s")


_WORKER_FIELDS = ("events", "duplicates", "dead_letters")


def _workers_eps(
    processes: Processes,
    settings: Settings,
    count: int,
    total: int,
    timeout: float,
    rebuild: bool = False,
) -> tuple[float, float]:
    """The workers' events/s, and their CPU seconds per event from the first commit on; with
    `rebuild`, of a build of the next generation (`rules apply --backfill`) over the events
    they have taken already."""
    client = redis_client(settings)
    workers = [
        processes.start(settings, f"{settings.redis_prefix}-worker-{n}", "streams", "worker")
        for n in range(count)
    ]
    keys = settings.key_layout()
    if rebuild:
        _wait_for_group(settings, count, timeout)
        text = settings.rules_file.read_text(encoding="utf-8")
        keys = keys.of_generation(start_build(settings, text, str(settings.rules_file)).generation)
    at_start: list[tuple[float, int]] = []

    def started() -> None:
        at_start.append((_cpu_seconds(workers), _committed(client, keys, _WORKER_FIELDS)))

    try:
        eps = _throughput(client, keys, total, _WORKER_FIELDS, timeout, on_start=started)
        cpu, done = _cpu_seconds(workers), _committed(client, keys, _WORKER_FIELDS)
        (cpu_then, done_then), *_ = at_start
        if done == done_then or cpu == cpu_then:
            # a run so short that one commit held it, or that used less CPU after the
            # first commit than one clock tick (10 ms): start-up included
            return eps, cpu / max(done, 1)
        return eps, (cpu - cpu_then) / (done - done_then)
    finally:
        for worker in workers:
            processes.stop(worker)
        client.close()


def _wait_for_group(settings: Settings, count: int, timeout: float) -> None:
    """Wait until `count` workers share every partition of the events topic, so that no
    rebalance falls inside a measurement."""
    admin = admin_client(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        group = admin.describe_consumer_groups([settings.group_id])[settings.group_id].result()
        owners = [m for m in group.members if m.assignment.topic_partitions]
        owned = sum(len(m.assignment.topic_partitions) for m in owners)
        if len(owners) == count and owned == settings.partitions:
            return
        time.sleep(_POLL)
    raise TimeoutError(f"{count} workers did not share the partitions in {timeout} s")


def _cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> float:
    """User and system CPU seconds the running `processes` have used, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for process in processes:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _naive_eps(processes: Processes, settings: Settings, config: BenchConfig) -> float:
    client = redis_client(settings)
    naive = processes.start(settings, "naive", "streams.tools.bench.naive")
    try:
        keys = settings.key_layout()
        return _throughput(
            client, keys, config.events, (NAIVE_COUNTER,), config.timeout, config.naive_seconds
        )
    finally:
        processes.stop(naive)
        client.close()


def _reader(settings: Settings) -> Consumer:
    """A consumer of every partition of the events topic from its start, in no group."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "queued.min.messages": 100_000,
        }
    )
    partitions = range(settings.partitions)
    consumer.assign(
        [TopicPartition(settings.events_topic, p, OFFSET_BEGINNING) for p in partitions]
    )
    return consumer


def _raw_eps(settings: Settings, total: int) -> float:
    """confluent-kafka batch consume plus event validation, from the first message to the last."""
    consumer = _reader(settings)
    seen = 0
    start = None
    try:
        while seen < total:
            batch = consumer.consume(min(10_000, total - seen), 5.0)
            if not batch:
                raise TimeoutError(f"raw consumer read {seen} of {total} events")
            start = start or time.perf_counter()
            raws = [message.value() or b"" for message in batch if message.error() is None]
            decode_all(raws)
            seen += len(raws)
        return seen / (time.perf_counter() - (start or 0))
    finally:
        consumer.close()


def _io_floor_eps(settings: Settings, total: int, keep: Projection = NOTHING) -> float:
    """Consume the events in the workers' batches, decode them (keeping what `keep` names),
    load each batch's users in one round trip and write each partition's back with its
    offset in one MULTI/EXEC; nothing else."""
    consumer = _reader(settings)
    client = redis_client(settings)
    keys = settings.key_layout()
    seen = 0
    start = None
    try:
        while seen < total:
            batch = consumer.consume(min(settings.batch_max_events, total - seen), 5.0)
            if not batch:
                raise TimeoutError(f"the I/O floor read {seen} of {total} events")
            start = start or time.perf_counter()
            users: dict[int, dict[str, None]] = {}
            offsets: dict[int, int] = {}
            messages = [message for message in batch if message.error() is None]
            for message in messages:
                offsets[message.partition() or 0] = (message.offset() or 0) + 1
            seen += len(messages)
            decoded = decode_all([message.value() or b"" for message in messages], keep=keep)
            for message, action in zip(messages, decoded, strict=True):
                if isinstance(action, Action):
                    users.setdefault(message.partition() or 0, {})[action.user_id] = None
            rows = RedisStateStore(client, keys, "bench-floor").rows(users)
            for partition, offset in offsets.items():
                with client.pipeline(transaction=True) as pipe:
                    for user in users.get(partition, {}):
                        if user in rows:
                            pipe.set(keys.state(partition, user), rows[user])
                    pipe.set(keys.offset(partition, "bench-floor"), offset)
                    pipe.execute()
        return seen / (time.perf_counter() - (start or 0))
    finally:
        consumer.close()
        client.close()


@dataclass(frozen=True)
class _RedisLoad:
    """What Redis had done since it started: commands, bytes received, CPU seconds."""

    commands: int
    received: int
    cpu: float


def _redis_load(settings: Settings) -> _RedisLoad:
    """What every Redis node of the store had done, summed."""
    total = _RedisLoad(0, 0, 0.0)
    for node in redis_nodes(settings):
        try:
            commands = cast(dict[str, dict[str, Any]], node.info("commandstats"))
            received = node.info("stats")["total_net_input_bytes"]
            cpu = node.info("cpu")
        finally:
            node.close()
        total = _RedisLoad(
            total.commands + sum(int(stat["calls"]) for stat in commands.values()),
            total.received + int(received),
            total.cpu + float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        )
    return total


def _bytes_per_timer(settings: Settings) -> float:
    """`MEMORY USAGE` of every partition's timer shards and shard index, per pending timer."""
    client = redis_client(settings)
    keys = settings.key_layout()
    partitions = range(settings.partitions)
    shards = [
        keys.timer_shard(partition, shard)
        for partition in partitions
        for shard in range(settings.timer_shards)
    ]
    indexes = [keys.timers(partition) for partition in partitions]
    with client.pipeline(transaction=False) as pipe:
        for name in shards + indexes:
            pipe.memory_usage(name)
        for name in shards:
            pipe.zcard(name)
        answers = pipe.execute()
    client.close()
    memory = sum(int(size or 0) for size in answers[: len(shards) + len(indexes)])
    timers = sum(int(count) for count in answers[len(shards) + len(indexes) :])
    return memory / max(timers, 1)


def _bytes_per_user_in_sets(settings: Settings) -> float:
    """`MEMORY USAGE` (exact) of every partition's membership sets and user index, per user."""
    client = redis_client(settings)
    keys = settings.key_layout()
    model = ReadModel(client, keys)
    partitions = range(settings.partitions)
    names = [keys.partition_users(partition) for partition in partitions]
    names += [keys.members(p, segment) for segment in model.segment_sizes() for p in partitions]
    names += [keys.cluster_members(p, c) for c in model.cluster_sizes() for p in partitions]
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name, samples=0)
        for partition in partitions:
            pipe.scard(keys.partition_users(partition))
        answers = pipe.execute()
    client.close()
    memory = sum(int(size or 0) for size in answers[: len(names)])
    return memory / max(sum(int(count) for count in answers[len(names) :]), 1)


def _bytes_per_user(settings: Settings, users: list[bytes], *, changes: bool = False) -> float:
    """Median `MEMORY USAGE` of the sampled stored users' state and labels, or with
    `changes` of their change logs (the console's profiles; 0 for a user without one)."""
    client = redis_client(settings)
    keys = settings.key_layout()
    sizes = []
    for user in dict.fromkeys(users):
        name = user.decode()
        partition = canonical_partition(name, settings.partitions)
        state = client.memory_usage(keys.state(partition, name))
        if state is None:
            continue  # merged into another id, or expired
        if changes:
            sizes.append(int(client.memory_usage(keys.user_log(partition, name)) or 0))
        else:
            sizes.append(int(state) + int(client.memory_usage(keys.labels(partition, name)) or 0))
    client.close()
    return float(statistics.median(sizes)) if sizes else 0.0


async def _lookups(url: str, users: list[str], rps: int, seconds: float) -> list[float]:
    """Latencies of `GET /v1/users/{id}` sent open-loop at `rps` for `seconds`.

    Sixteen keep-alive connections (:func:`~streams.tools.bench.parts.exchange`).
    """
    host, port = url.removeprefix("http://").split(":")
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while (user := await queue.get()) is not None:
                started = time.perf_counter()
                request = (
                    f"GET /v1/users/{user} HTTP/1.1\r\nHost: {host}\r\n"
                    "Authorization: Bearer bench\r\n\r\n"
                )
                head = await exchange(reader, writer, request.encode())
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"lookup of {user} answered {head[:12]!r}")
        finally:
            writer.close()

    connections = [asyncio.create_task(connection()) for _ in range(_LOOKUP_CONNECTIONS)]
    for user in users[:50]:
        queue.put_nowait(user)  # warm the connections and the API
    while not queue.empty():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    latencies.clear()
    begin = time.perf_counter()
    for index in range(int(rps * seconds)):
        delay = begin + index / rps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(users[index % len(users)])
    for _ in connections:
        queue.put_nowait(None)
    await asyncio.gather(*connections)
    return latencies


def _lookup_latency(
    processes: Processes, settings: Settings, users: list[str], config: BenchConfig
) -> tuple[float, float]:
    client = redis_client(settings)
    keys = settings.key_layout()
    owners = canonical_partitions(users, settings.partitions)
    users = [
        user
        for user, partition in zip(users, owners, strict=True)
        if client.exists(keys.labels(partition, user))
    ]
    client.close()
    port = free_port()
    api_settings = settings.model_copy(update={"api_port": port})
    api = processes.start(api_settings, "api", "streams", "api")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/readyz", api)
        with frozen_heap():
            latencies = uvloop.run(_lookups(url, users, config.lookup_rps, config.lookup_seconds))
    finally:
        processes.stop(api)
    return percentiles(latencies)


def _console_latency(processes: Processes, settings: Settings, requests: int) -> dict[str, float]:
    """Each console page's p99 in ms over the store of `settings`, its records filled."""
    users = fill_console_records(settings)
    port = free_port()
    api = processes.start(
        settings.model_copy(update={"api_port": port}), "console", "streams", "api"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/readyz", api)
        return console_p99(url, "bench", users, requests)
    finally:
        processes.stop(api)


_WATCH_EVERY = 0.005
"""How often the freshness watcher looks for the probes' labels, in seconds."""


def _freshness(
    processes: Processes, settings: Settings, rate: float, config: BenchConfig
) -> tuple[float, float]:
    """Produce live events at `rate`/s; time how long 1 % of them (probes) take to be readable.

    A probe is readable once its state row is there: the worker writes it in the same
    transaction as the labels. The watcher asks with one `MGET` a partition, so that it
    takes little of the cores it shares with the pipeline.
    """
    client = redis_client(settings)
    keys = settings.key_layout()
    worker = processes.start(settings, "fresh-worker", "streams", "worker")
    producer = reliable_producer(settings)
    pending: dict[int, dict[str, float]] = {}  # by partition: probe's state key, when sent
    latencies: list[float] = []
    lock = threading.Lock()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() or any(pending.values()):
            with lock:
                waiting = [(number, list(probes.items())) for number, probes in pending.items()]
            waiting = [(number, probes) for number, probes in waiting if probes]
            if waiting:
                with client.pipeline(transaction=False) as pipe:
                    for _, probes in waiting:  # a cluster pipeline refuses `mget()` (see `rows`)
                        pipe.execute_command("MGET", *(key for key, _ in probes))  # type: ignore[no-untyped-call]
                    found = cast(list[list[bytes | None]], pipe.execute())
                now = time.time()
                with lock:
                    for (number, probes), rows in zip(waiting, found, strict=True):
                        for (key, sent), row in zip(probes, rows, strict=True):
                            if row is not None:
                                latencies.append(now - sent)
                                del pending[number][key]
            time.sleep(_WATCH_EVERY)

    try:
        # drawn and encoded before the clock starts, so the load generator costs the cores
        # little: each tick stamps its events with one timestamp
        needed = int(rate * config.freshness_seconds) + 1
        source = iter(
            list(
                itertools.islice(
                    live_events(max(1_000, config.users // 10), config.seed + 1), needed
                )
            )
        )
        _warm_up(producer, settings, client, keys)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with frozen_heap():
            tick = 0.01
            begin = time.monotonic()
            sent = probes = 0
            while time.monotonic() - begin < config.freshness_seconds:
                due = int((time.monotonic() - begin) * rate)
                now = time.time()
                stamp = datetime.fromtimestamp(now, UTC).isoformat().encode()
                while sent < due:
                    key, head = next(source)
                    if sent % 100 == 0:
                        key = f"probe-{probes}".encode()
                        head = b'{"type":"page","userId":"%s","timestamp":"' % key
                        probes += 1
                        user = key.decode()
                        number = canonical_partition(user, settings.partitions)
                        with lock:
                            pending.setdefault(number, {})[keys.state(number, user)] = now
                    producer.produce(settings.events_topic, key=key, value=head + stamp + b'"}')
                    sent += 1
                producer.poll(0)
                time.sleep(tick)
            producer.flush(30)
            deadline = time.monotonic() + 30
            while any(pending.values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            done.set()
            watcher.join(5)
    finally:
        done.set()
        processes.stop(worker)
        client.close()
    return percentiles(latencies)


def _warm_up(producer: Any, settings: Settings, client: redis.Redis, keys: KeyLayout) -> None:
    """Wait until the worker has joined and committed a first live event."""
    body = {"type": "page", "userId": "warm-up", "timestamp": datetime.now(UTC).isoformat()}
    producer.produce(settings.events_topic, key=b"warm-up", value=orjson.dumps(body))
    producer.flush(10)
    deadline = time.monotonic() + 120
    while not client.exists(
        keys.labels(canonical_partition("warm-up", settings.partitions), "warm-up")
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the freshness worker did not start")
        time.sleep(0.05)


def run_bench(config: BenchConfig, report: Report) -> dict[str, Any]:
    """Every figure of the bench, measured in one run on the user's Kafka and Redis
    (`config.kafka`, `config.redis`) or on the embedded stack (with a Redis Cluster in
    place of its Redis when `config.redis_cluster`)."""
    with (
        tempfile.TemporaryDirectory(prefix="segstream-bench-") as scratch,
        bench_target(
            Path(scratch),
            kafka=config.kafka,
            redis_url=config.redis,
            redis_cluster=config.redis_cluster,
        ) as target,
    ):
        report(f"on {target.broker}; {target.redis}")
        processes = Processes(Path(scratch))
        try:
            return _measure(target, config, processes, report)
        finally:
            processes.stop_all()


def _cpu_model() -> str:
    """The processor's name and model, as Linux reports them (figures differ by a factor
    between processors, so a run names its own): ``Intel(R) Xeon(R) Processor (family 6
    model 207)``."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            found.setdefault(key.strip(), value.strip())
    if "model name" not in found:
        return platform.processor() or platform.machine()
    return f"{found['model name']} (family {found.get('cpu family')} model {found.get('model')})"


def _measure(
    target: Target, config: BenchConfig, processes: Processes, report: Report
) -> dict[str, Any]:
    topic = "bench-events"
    one = _phase(target, config, "b1", topic)
    report(f"preloading {config.events:,} simulated events of {config.users:,} users")
    sample = _preload(one, config)
    report("one worker")
    before = _redis_load(one)
    worker_eps, worker_cpu = _workers_eps(processes, one, 1, config.events, config.timeout)
    after = _redis_load(one)
    report("two workers")
    two = _phase(target, config, "b2", topic)
    two_workers_eps, _ = _workers_eps(processes, two, 2, config.events, config.timeout)
    report("a rebuild from the events topic (rules apply --backfill): one worker, then two")
    rebuilt = _phase(target, config, "b11", topic)
    _workers_eps(processes, rebuilt, 1, config.events, config.timeout)
    rebuild_eps, _ = _workers_eps(
        processes, rebuilt, 1, config.events, config.timeout, rebuild=True
    )
    rebuild_two_eps, _ = _workers_eps(
        processes, rebuilt, 2, config.events, config.timeout, rebuild=True
    )
    report("raw limit: batch consume and validation")
    raw_eps = _raw_eps(one, config.events)
    report("I/O floor: consume, decode, one MGET and one MULTI/EXEC per batch")
    io_floor_eps = _io_floor_eps(one, config.events)
    report(f"naive Faust baseline ({config.naive_seconds:g} s)")
    naive_eps = _naive_eps(processes, _phase(target, config, "b3", topic), config)
    report("Redis memory per user")
    bytes_per_user = _bytes_per_user(one, sample)
    with_rules: dict[str, Any] = {}
    if config.rules is not None:
        report(f"one worker with {config.rules}")
        ruled = _phase(target, config, "b10", topic).model_copy(update={"rules_file": config.rules})
        rules_eps, rules_cpu = _workers_eps(processes, ruled, 1, config.events, config.timeout)
        report("I/O floor over the rows and the projection of those rules")
        projection = parse_rules(config.rules.read_text(encoding="utf-8")).projection
        rules_floor = _io_floor_eps(ruled, config.events, keep=projection)
        with_rules = {
            "rules_file": str(config.rules),
            "rules_worker_eps": round(rules_eps, 1),
            "rules_worker_vs_io_floor": round(rules_eps / max(io_floor_eps, 1e-9), 3),
            "rules_io_floor_eps": round(rules_floor, 1),
            "rules_worker_vs_own_io_floor": round(rules_eps / max(rules_floor, 1e-9), 3),
            "rules_worker_cpu_us_per_event": round(rules_cpu * 1e6, 2),
            "rules_redis_bytes_per_user": round(_bytes_per_user(ruled, sample), 1),
        }
    report("one worker with predictions on (a snapshot per live user at every UTC midnight)")
    predicted = _phase(target, config, "b12", topic).model_copy(update={"predictions": True})
    predictions_eps, predictions_cpu = _workers_eps(
        processes, predicted, 1, config.events, config.timeout
    )
    report("the trainer learning that run's labelled examples")
    learned_eps, learned = trainer_examples_per_second(predicted)
    needed_eps = config.users * len(PREDICTIONS) / 86_400
    with_predictions = {
        "predictions_worker_eps": round(predictions_eps, 1),
        "predictions_vs_worker": round(predictions_eps / max(worker_eps, 1e-9), 3),
        "predictions_worker_cpu_us_per_event": round(predictions_cpu * 1e6, 2),
        "predictions_redis_bytes_per_user": round(_bytes_per_user(predicted, sample), 1),
        "trainer_examples": learned,
        "trainer_examples_per_second": round(learned_eps, 1),
        "trainer_examples_needed_per_second": round(needed_eps, 3),
        "trainer_examples_headroom": round(learned_eps / max(needed_eps, 1e-9), 1),
    }
    report(f"rules preview over {config.preview_users:,} users")
    previewed = _phase(target, config, "b6", topic)
    fill_preview_store(one, previewed, config.preview_users)
    preview_seconds, preview_users = preview_seconds_of(previewed)
    report(f"the console's pages over those {preview_users:,} users")
    console = _console_latency(processes, previewed, config.console_requests)
    report(f"read API lookups at {config.lookup_rps:,}/s")
    users = [user.decode() for user in dict.fromkeys(sample)]
    lookup_p50, lookup_p99 = _lookup_latency(processes, one, users, config)
    report(f"freshness at {worker_eps / 2:,.0f} events/s")
    fresh = _phase(target, config, "b4", "bench-live")
    freshness_p50, freshness_p99 = _freshness(processes, fresh, worker_eps / 2, config)
    available = changes_on(one, max(config.webhook_changes, config.flaky_changes))
    report("webhooks: one deliverer to a healthy receiver")
    deliveries = deliveries_per_second(
        processes, one, processes.logs, min(config.webhook_changes, available), config.timeout
    )
    flaky_changes = min(config.flaky_changes, available)
    report(f"webhooks: {flaky_changes:,} changes to a receiver answering 503 twice before 200")
    flaky_seconds = flaky_receiver_seconds(
        processes, one, processes.logs, flaky_changes, config.timeout
    )
    report(
        f"webhooks: time to act, abandoned carts at {worker_eps / 2:,.0f} events/s and a lone"
        f" cart on each of {_WIDE_PARTITIONS} quiet partitions"
    )
    busy = _phase(target, config, "b5", "bench-act")
    act = time_to_act(
        processes,
        busy,
        _phase(target, config, "b9", _QUIET_TOPIC),
        processes.logs,
        worker_eps / 2,
        config.act_seconds,
    )
    report(f"the edge: one collector, then tracker to label at {config.edge_rate:,.0f} calls/s")
    edge = measure_edge(
        processes, _phase(target, config, "b7", "bench-edge"), config.edge_seconds, config.edge_rate
    )
    report(f"rebalances: four workers on 16 partitions at {worker_eps / 2:,.0f} events/s")
    rebalances = measure_rebalances(
        processes, _phase(target, config, "b8", _REBALANCE_TOPIC), worker_eps / 2
    )
    return {
        **with_rules,
        **with_predictions,
        **{f"console_{page}_p99_ms": p99 for page, p99 in console.items()},
        "worker_eps": round(worker_eps, 1),
        "two_workers_eps": round(two_workers_eps, 1),
        "rebuild_eps": round(rebuild_eps, 1),
        "rebuild_vs_worker": round(rebuild_eps / max(worker_eps, 1e-9), 3),
        "rebuild_two_workers_eps": round(rebuild_two_eps, 1),
        "rebuild_two_vs_one": round(rebuild_two_eps / max(rebuild_eps, 1e-9), 3),
        "naive_eps": round(naive_eps, 1),
        "raw_eps": round(raw_eps, 1),
        "io_floor_eps": round(io_floor_eps, 1),
        "worker_vs_io_floor": round(worker_eps / max(io_floor_eps, 1e-9), 3),
        "redis_commands_per_event": round((after.commands - before.commands) / config.events, 3),
        "redis_bytes_per_event": round((after.received - before.received) / config.events, 1),
        "redis_cpu_us_per_event": round((after.cpu - before.cpu) / config.events * 1e6, 2),
        "worker_cpu_us_per_event": round(worker_cpu * 1e6, 2),
        "redis_bytes_per_timer": round(_bytes_per_timer(one), 1),
        "redis_bytes_per_user_sets": round(_bytes_per_user_in_sets(one), 1),
        "worker_vs_naive": round(worker_eps / max(naive_eps, 1e-9), 2),
        "worker_vs_raw": round(worker_eps / max(raw_eps, 1e-9), 3),
        "freshness_p50_ms": round(freshness_p50, 1),
        "freshness_p99_ms": round(freshness_p99, 1),
        "redis_bytes_per_user": round(bytes_per_user, 1),
        "redis_bytes_per_user_changes": round(_bytes_per_user(one, sample, changes=True), 1),
        "lookup_p50_ms": round(lookup_p50, 2),
        "lookup_p99_ms": round(lookup_p99, 2),
        "preview_seconds": round(preview_seconds, 2),
        "preview_users": preview_users,
        "deliveries_per_second": round(deliveries, 1),
        "flaky_receiver_seconds": round(flaky_seconds, 1),
        "flaky_changes": flaky_changes,
        "time_to_act_p50_ms": round(act.busy_p50_ms, 1),
        "time_to_act_p99_ms": round(act.busy_p99_ms, 1),
        "time_to_act_probes": act.busy_probes,
        "quiet_time_to_act_p50_ms": round(act.quiet_p50_ms, 1),
        "quiet_time_to_act_p99_ms": round(act.quiet_p99_ms, 1),
        "quiet_time_to_act_probes": act.quiet_probes,
        "firing_delay_seconds": busy.firing_delay_seconds,
        "idle_watermark_seconds": busy.idle_watermark_seconds,
        "collector_batch_eps": round(edge.collector_batch_eps, 1),
        "collector_single_rps": round(edge.collector_single_rps, 1),
        "tracker_to_label_p50_ms": round(edge.tracker_to_label_p50_ms, 1),
        "tracker_to_label_p99_ms": round(edge.tracker_to_label_p99_ms, 1),
        "tracker_to_label_probes": edge.tracker_to_label_probes,
        "arrival_delay_p999_ms": round(edge.arrival_delay_p999_ms, 1),
        "arrival_delay_max_ms": round(edge.arrival_delay_max_ms, 1),
        "restart_pause_p50_ms": round(rebalances.restart_pause_p50_ms, 1),
        "restart_pause_p99_ms": round(rebalances.restart_pause_p99_ms, 1),
        "failover_seconds": round(rebalances.failover_seconds, 2),
        "events": config.events,
        "users": config.users,
        "partitions": config.partitions,
        "broker": target.broker,
        "redis": target.redis,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
