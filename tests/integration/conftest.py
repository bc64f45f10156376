"""A real Apache Kafka and a real Redis for the whole session, a Redis Cluster for the
test files that ask for it, and helpers around them.

The broker listens for plain clients and, for the users in `SCRAM_USERS`, for SASL/SCRAM
ones. A test file runs on a Redis Cluster of three masters when it is marked so::

    pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster]
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import orjson
import pytest
import redis
import requests
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from processors.events import Action, decode_event
from processors.wire import ADVANCE_WATERMARK, CONTROL_HEADER
from state.model_store import ModelStore
from state.read_model import ReadModel
from streams.redis_clients import redis_client
from streams.settings import Settings, default_rules_file
from streams.tools.embedded import Stack, free_port, running_stack
from streams.tools.redis_cluster import RedisCluster, running_redis_cluster
from streams.tools.simulate import KafkaSink
from streams.tools.simulator import Simulation
from streams.topics import ensure_topics
from tests import oracle

pytestmark = pytest.mark.integration


SCRAM_USERS = {"segstream": "s3cret"}
"""The SASL/SCRAM users the broker is started with."""


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The embedded broker (Apache Kafka) and a Redis."""
    with running_stack(tmp_path_factory.mktemp("stack"), SCRAM_USERS) as running:
        yield running


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, embedded_stack: Stack) -> Stack:
    """The broker and Redis a test file runs on: the Redis Cluster where the file is marked
    `redis_cluster`, the session's Redis otherwise."""
    found = embedded_stack
    if request.node.get_closest_marker("redis_cluster") is not None:
        cluster = cast(RedisCluster, request.getfixturevalue("redis_cluster"))
        found = dataclasses.replace(found, redis_url=cluster.url, redis_pid=cluster.pids[0])
    return found


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of three masters."""
    with running_redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


def isolated_settings(stack: Stack, partitions: int = 4) -> Settings:
    """Settings with topics (of `partitions` partitions), Redis keys and consumer group of
    their own."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        redis_cluster=is_cluster(stack.redis_url),
        redis_prefix=f"t{tag}",
        events_topic=f"events-{tag}",
        dead_letter_topic=f"events.dlq-{tag}",
        changes_topic=f"segment-changes-{tag}",
        rules_topic=f"rules-{tag}",
        features_topic=f"features-{tag}",
        models_topic=f"models-{tag}",
        destinations_topic=f"destinations-{tag}",
        deliveries_dlq_topic=f"deliveries.dlq-{tag}",
        group_id=f"workers-{tag}",
        partitions=partitions,
        batch_max_wait_ms=50,
    )
    ensure_topics(settings)
    return settings


def is_cluster(url: str) -> bool:
    """Whether the Redis at `url` is a node of a cluster."""
    client = redis.Redis.from_url(url)
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    finally:
        client.close()


@pytest.fixture
def config(stack: Stack) -> Settings:
    """Settings with topics, Redis keys and group of this test's own."""
    return isolated_settings(stack)


def environment(settings: Settings) -> dict[str, str]:
    """The process environment that gives a child process `settings`."""
    values = settings.environment()
    clean = {name: value for name, value in os.environ.items() if not name.startswith("SEGSTREAM_")}
    return {**clean, **values}


def segstream(
    settings: Settings, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one `segstream` command against `settings` and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class WorkerProcess:
    """`segstream worker` (or another long-running command) as a child process."""

    def __init__(self, settings: Settings, log: Path, command: str = "worker") -> None:
        self.log = log
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", command],
                env=environment(settings),
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_for_log(self, text: str, timeout: float = 60) -> str:
        """Wait until the process has logged a line containing `text`; return that line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if text in line:
                    return line
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} in {self.log}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)


@pytest.fixture
def start_worker(config: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(settings: Settings = config, command: str = "worker") -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"{command}-{len(started)}.log", command)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


@pytest.fixture
def model(config: Settings) -> ReadModel:
    return ReadModel(redis_client(config), config.key_layout())


def wait_until_serving(url: str, process: WorkerProcess, timeout: float = 60) -> None:
    """Wait until an HTTP service answers 200 at `url` (its readiness probe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.process.poll() is None, process.log.read_text(errors="replace")[-3000:]
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout} s:\n{process.log.read_text()[-3000:]}")


def wait_for_events(model: ReadModel, total: int, timeout: float = 120) -> dict[str, int]:
    """Wait until the workers have committed `total` events and applied all they relayed."""
    deadline = time.monotonic() + timeout
    counters: dict[str, int] = {}
    while time.monotonic() < deadline:
        counters = model.counters()
        seen = sum(counters.get(name, 0) for name in ("events", "duplicates", "dead_letters"))
        if seen >= total and counters.get("relays_sent", 0) == counters.get("relays_applied", 0):
            return counters
        time.sleep(0.2)
    raise AssertionError(f"workers committed {counters} of {total} events in {timeout} s")


def export(settings: Settings) -> list[bytes]:
    """`segstream profiles export`, sorted: the form two runs are compared in."""
    done = segstream(settings, "profiles", "export", timeout=300)
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.encode().splitlines())


def assert_same_profiles(exported, reference):
    """Byte equality, reported as the users and fields that differ."""
    if exported == reference:
        return
    mine = {row["user_id"]: row for row in map(orjson.loads, exported)}
    theirs = {row["user_id"]: row for row in map(orjson.loads, reference)}
    assert set(mine) == set(theirs)
    differences = []
    for user_id in sorted(mine):
        a, b = mine[user_id], theirs[user_id]
        fields = {k: (a[k], b[k]) for k in a if k != "features" and not _same(a[k], b[k])}
        fields |= {
            k: (v, b["features"][k])
            for k, v in a["features"].items()
            if not _same(b["features"][k], v)
        }
        if fields:
            differences.append((user_id, fields))
    raise AssertionError(f"{len(differences)} users differ, e.g. {differences[:3]}")


def advance(settings, until):
    """What `replay --until` sends after the events: every partition's watermark to `until`.

    Returns the last offset the broker gave each partition.
    """
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    offsets = {}

    def delivered(error, message):
        assert error is None, error
        offsets[message.partition()] = message.offset()

    for partition in range(settings.partitions):
        producer.produce(
            settings.events_topic,
            value=orjson.dumps({"until": until}),
            partition=partition,
            headers=[(CONTROL_HEADER, ADVANCE_WATERMARK)],
            on_delivery=delivered,
        )
    assert producer.flush(30) == 0
    return offsets


def _same(a: object, b: object) -> bool:
    """Equal as JSON, where 1 and 1.0 differ."""
    return orjson.dumps(a) == orjson.dumps(b)


def read_topic(settings: Settings, topic: str) -> list:
    """Every message on `topic`, partition by partition in offset order: up to each
    partition's high watermark as it was when the read began."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"reader-{uuid.uuid4().hex}"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)[1]
            for partition in partitions
        }
        consumer.assign(
            [TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions]
        )
        by_partition: dict[int, list] = {partition: [] for partition in partitions}
        unread = {partition for partition, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while unread and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                assert message.error() is None, message.error()
                partition = message.partition()
                if message.offset() < ends[partition]:
                    by_partition[partition].append(message)
                if message.offset() >= ends[partition] - 1:
                    unread.discard(partition)
        assert not unread, f"{topic}: partitions {sorted(unread)} not read to {ends} in 60 s"
        return [
            message for partition in sorted(by_partition) for message in by_partition[partition]
        ]
    finally:
        consumer.close()


FAULT_EVENTS = int(os.environ.get("FAULT_EVENTS", "50000"))
"""The fault tests' history size (`make chaos`: 200,000)."""


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """`FAULT_EVENTS` simulated events with a few malformed ones, as a JSON Lines file."""
    path = tmp_path_factory.mktemp("history") / "events.jsonl"
    simulation = Simulation(users=900, seed=21, invalid_share=0.002)
    count = 0
    with path.open("wb") as handle:
        for event in simulation.events():
            handle.write(event.value + b"\n")
            count += 1
            if count == FAULT_EVENTS:
                break
    return path


HISTORY_UNTIL = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
"""Where the fault tests' replays move every partition's clocks: past the history's end."""


def replay_in_background(settings, path, log, rate=None):
    """`segstream replay` of `path` with `--until` `HISTORY_UNTIL` (at most `rate` events/s),
    running."""
    paced = ["--rate", str(rate)] if rate else []
    until = datetime.fromtimestamp(HISTORY_UNTIL, UTC).isoformat()
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "replay", str(path), "--until", until, *paced],
        env=environment(settings),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def replay_killing_the_worker(settings, start_worker, history, model, log, seed):
    """Replay `history` with `--until` while the worker is SIGKILLed five times at random
    points and restarted; return once the replay saw everything applied."""
    rng = random.Random(seed)
    worker = start_worker(settings)
    replay = replay_in_background(settings, history, log)
    for _ in range(5):
        target = rng.randrange(FAULT_EVENTS // 10, FAULT_EVENTS * 9 // 10)
        wait_for_events(model, min(target, FAULT_EVENTS - 1_000), timeout=300)
        time.sleep(rng.random())
        worker.kill()
        worker = start_worker(settings)
    assert replay.wait(600) == 0, log.read_text()
    worker.stop()  # perhaps still starting: the replay waited until everything was applied


def assert_counted_once(model, history):
    """The totals count each event of `history` once: applied or dead-lettered."""
    counters = model.counters()
    malformed = sum(
        1
        for line in history.read_bytes().splitlines()
        if not isinstance(decode_event(line), Action)
    )
    assert counters["events"] + counters["dead_letters"] == FAULT_EVENTS
    assert counters["dead_letters"] == malformed


def one_clean_run(settings, history, logs):
    """One uninterrupted worker over the history on `settings`: its export."""
    worker = WorkerProcess(settings, logs / "worker.log")
    replay = replay_in_background(settings, history, logs / "replay.log")
    assert replay.wait(600) == 0, (logs / "replay.log").read_text()
    assert worker.stop() == 0
    exported = export(settings)
    assert len(exported) > 300
    return exported


def changes_by_user(settings: Settings) -> dict[str, dict[int, dict[str, object]]]:
    """Every change event on the change topic, by user and version."""
    history: dict[str, dict[int, dict[str, object]]] = {}
    for message in read_topic(settings, settings.changes_topic):
        change = orjson.loads(message.value())
        history.setdefault(change["user_id"], {})[change["version"]] = change
    return history


def assert_versions_without_gaps(settings: Settings, exported: list[bytes]) -> None:
    """Each exported user's change versions run 1, 2, … and the last has their segments; a
    user in any segment has at least one change, so an empty change topic fails."""
    history = changes_by_user(settings)
    assert history, "no change event at all"
    for line in exported:
        profile = orjson.loads(line)
        versions = history.get(profile["user_id"], {})
        assert sorted(versions) == list(range(1, len(versions) + 1)), profile["user_id"]
        assert versions or not profile["segments"], f"{profile['user_id']} has no change"
        if versions:
            assert versions[len(versions)]["segments"] == profile["segments"]


def assert_matches_oracle(
    settings: Settings, exported: list[bytes], history: list[bytes], until: float
) -> None:
    """The exported profiles and the change topic against `tests/oracle.py`, computed from
    the raw `history`: every person, and only they, exported as of `until`, with the
    oracle's features and segments; change versions without gaps, the last one with the
    exported segments; and every change of a user that no identity call links, evaluated
    as of its `event_time`, with the oracle's segments from their events up to then
    (unless another of their events shares that second, whose order the oracle cannot
    tell)."""
    rules = yaml.safe_load((settings.rules_file or default_rules_file()).read_text())
    events = [event for event in map(oracle.readable, history) if event is not None]
    people = oracle.people(events)
    rows = {row["user_id"]: row for row in map(orjson.loads, exported)}
    assert set(rows) == set(people)
    for user_id, row in rows.items():
        assert row["as_of"] == until, user_id
        expected = oracle.features(people[user_id], until)
        wrong = {k: (row["features"][k], v) for k, v in expected.items() if row["features"][k] != v}
        assert not wrong, (user_id, wrong)
        assert set(row["segments"]) == oracle.segments(rules, people[user_id], until), user_id
    assert_versions_without_gaps(settings, exported)
    linked = {e.user_id for e in events if e.kind in ("identify", "alias")}
    linked |= {e.anonymous_id or e.previous_id for e in events if e.kind in ("identify", "alias")}
    checked = 0
    for user_id, changes in changes_by_user(settings).items():
        if user_id in linked or user_id not in people:
            continue
        seconds = Counter(int(event.timestamp) for event in people[user_id])
        for change in changes.values():
            moment = cast(float, change["event_time"])
            if seconds[int(moment)] > 1:
                continue
            expected_segments = oracle.segments(rules, people[user_id], moment)
            assert set(cast(list, change["segments"])) == expected_segments, (user_id, change)
            checked += 1
    assert checked > len(rows), f"{checked} change events compared with the oracle"


def wait_for_port(port: int, timeout: float = 30) -> None:
    """Wait until something listens on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def run_worker_and_trainer(settings: Settings, start: Callable[..., WorkerProcess]) -> None:
    """Run a worker and the trainer on `settings` over 60 simulated users' events: every
    event is applied and the trainer stores a snapshot; both then stop cleanly. The trainer
    serves its web page on a port of its own."""
    ensure_topics(settings)
    worker = start(settings)
    trainer = start(settings.model_copy(update={"trainer_web_port": free_port()}), "trainer")
    sink = KafkaSink(settings)
    sent = 0
    for event in Simulation(users=60, seed=3).events():
        sink.write(event)
        sent += 1
    sink.close()
    client = redis_client(settings)
    counters = wait_for_events(ReadModel(client, settings.key_layout()), sent, 180)
    assert counters["events"] == sent
    store = ModelStore(client, settings.key_layout())
    deadline = time.monotonic() + 120
    while store.latest() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.latest() is not None, trainer.log.read_text()[-3000:]
    assert worker.stop() == 0
    assert trainer.stop() == 0


def wait_for_settled_model(settings: Settings, timeout: float = 120):
    """The latest snapshot once the trainer has learned all there was: no newer one for
    three snapshot intervals (a trainer publishes only after learning something)."""
    store = ModelStore(redis_client(settings), settings.key_layout())
    quiet = 3 * settings.snapshot_seconds
    deadline = time.monotonic() + timeout
    latest = store.latest()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = store.latest()
        if current is not None and (latest is None or current.version != latest.version):
            latest, since = current, time.monotonic()
        elif latest is not None and time.monotonic() - since >= quiet:
            return latest
    raise AssertionError(f"the model kept changing for {timeout:.0f} s")
