"""One user, one partition, whatever the producer: canonical partitions and forwarding."""

from __future__ import annotations

import random

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions

from processors.partitioner import PRODUCER_PARTITIONER, canonical_partition
from state.read_model import ReadModel
from state.redis_store import RedisStateStore
from streams.redis_clients import redis_client
from streams.tools.replay import wait_until_applied
from streams.tools.simulator import DEFAULT_END, Simulation
from tests.integration.conftest import (
    WorkerProcess,
    advance,
    assert_same_profiles,
    export,
    isolated_settings,
    read_topic,
    segstream,
    wait_for_events,
)

pytestmark = pytest.mark.integration
MONTH = 30 * 86_400.0


def test_librdkafka_murmur2_random_puts_keys_where_canonical_partition_says(config):
    producer = Producer(
        {"bootstrap.servers": config.kafka_bootstrap, "partitioner": PRODUCER_PARTITIONER}
    )
    keys = [f"user-{index}" for index in range(200)] + ["", "zoë", "a" * 300]
    for key in keys:
        producer.produce(config.events_topic, key=key.encode(), value=b"{}")
    assert producer.flush(30) == 0
    placed = {m.key().decode(): m.partition() for m in read_topic(config, config.events_topic)}
    assert placed == {key: canonical_partition(key, config.partitions) for key in keys}


def run(settings, start_worker, produce):
    """Produce the history with `produce`, advance every partition past it, and export."""
    worker = start_worker(settings)
    sent = produce(settings)
    model = ReadModel(redis_client(settings), settings.key_layout())
    wait_for_events(model, sent, timeout=180)
    wait_until_applied(settings, advance(settings, DEFAULT_END), timeout=120)
    counters = wait_for_events(model, sent, timeout=60)
    assert worker.stop() == 0
    return export(settings), counters


def test_any_mix_of_partitioners_gives_the_profiles_of_one(stack, start_worker):
    history = list(Simulation(users=100, seed=5, days=20).events())  # about 7,800 events
    # Forwarded events reach their partition after events sent there directly, so the
    # comparison holds only if nothing is late: lateness covers the whole history.
    wide = {"allowed_lateness_seconds": MONTH, "dedup_horizon_seconds": MONTH}

    def canonical(settings):
        producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "partitioner": PRODUCER_PARTITIONER}
        )
        for event in history:
            producer.produce(settings.events_topic, key=event.key, value=event.value)
        assert producer.flush(30) == 0
        return len(history)

    def mixed(settings):
        producers = [
            Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": name})
            for name in ("consistent_random", "murmur2_random", "random")
        ]
        rng = random.Random(11)
        for event in history:
            rng.choice(producers).produce(settings.events_topic, key=event.key, value=event.value)
        for producer in producers:
            assert producer.flush(30) == 0
        return len(history)

    reference, _ = run(isolated_settings(stack).model_copy(update=wide), start_worker, canonical)
    exported, counters = run(isolated_settings(stack).model_copy(update=wide), start_worker, mixed)
    assert counters["forwarded"] > len(history) // 3
    assert counters.get("dead_letters", 0) == 0
    assert counters["events"] + counters.get("duplicates", 0) == len(history)
    assert len(reference) > 90
    assert_same_profiles(exported, reference)


def test_a_worker_refuses_a_topic_with_another_partition_count_than_its_state(stack):
    settings = isolated_settings(stack)  # the events topic has 4 partitions
    store = RedisStateStore(
        redis_client(settings),
        settings.key_layout(),
        settings.group_id,
    )
    assert store.claim_partition_count(6) == 6  # built with 6
    done = segstream(settings, "worker", timeout=120)
    assert done.returncode == 1
    assert f"the events topic '{settings.events_topic}' has 4 partitions" in done.stderr
    assert "was built with 6" in done.stderr
    assert "segstream replay" in done.stderr
    assert store.claim_partition_count(4) == 6  # left as it was


def test_partitions_added_while_workers_run_stop_them_naming_both_counts(stack, tmp_path):
    """Two workers on a topic of 4 partitions; 2 are added: the workers stop as they would
    have refused to start, naming 6 and 4, and the state keeps its count."""
    settings = isolated_settings(stack)
    workers = [WorkerProcess(settings, tmp_path / f"worker-{n}.log") for n in range(2)]
    for worker in workers:
        worker.wait_for_log("partitions assigned", timeout=120)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    added = admin.create_partitions([NewPartitions(settings.events_topic, 6)])
    added[settings.events_topic].result(30)
    for worker in workers:
        assert worker.process.wait(120) == 1, worker.log.read_text()[-2000:]
        said = worker.log.read_text()
        assert f"the events topic '{settings.events_topic}' has 6 partitions" in said
        assert "was built with 4" in said
    store = RedisStateStore(redis_client(settings), settings.key_layout(), settings.group_id)
    assert store.claim_partition_count(6) == 4
