"""A store the previous release wrote (the earlier key layout, its rows, its offsets) is
refused by the worker, then converted by `segstream migrate` to the profiles that release
exported and the oracle computes, with its totals, and the worker goes on from its offsets.

The store and the events topic it was built from are fixtures the previous release wrote
once (`data/earlier_store/README.md` says how)."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
import yaml
from confluent_kafka import Producer

from processors.wire import CONTROL_HEADER, RELAY_HEADER
from streams.redis_clients import redis_client
from streams.settings import Settings, default_rules_file
from streams.tools.simulate import KafkaSink, send
from streams.tools.simulator import Simulation
from tests import oracle
from tests.integration.conftest import export, segstream, wait_for_events

pytestmark = pytest.mark.integration
EARLIER = Path(__file__).parent / "data" / "earlier_store"
UNTIL = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
"""The `--until` the previous release's replay advanced every partition to."""


def renamed(text: str, settings: Settings) -> str:
    """A key of the fixture under the test's own prefix, topic and group."""
    text = text.replace("events-earlier", settings.events_topic)
    text = text.replace("workers-earlier", settings.group_id)
    return settings.redis_prefix + text.removeprefix("earlier")


def load_store(client: redis.Redis, settings: Settings) -> dict[str, int]:
    """Write the fixture's keys; the totals the previous release kept."""
    with gzip.open(EARLIER / "store.json.gz", "rt") as handle:
        stored = json.load(handle)
    raw = base64.b64decode
    totals = {}
    for key, (kind, value) in stored.items():
        name = renamed(key, settings)
        if kind == "string":
            client.set(name, raw(value))
        elif kind == "hash":
            client.hset(name, mapping={raw(k): raw(v) for k, v in value.items()})
        elif kind == "set":
            client.sadd(name, *(raw(member) for member in value))
        elif kind == "zset":
            client.zadd(name, {raw(member): score for member, score in value})
        else:
            assert kind == "list", kind
            client.rpush(name, *(raw(item) for item in value))
        if key == "earlier:stats":
            totals = {raw(k).decode(): int(raw(v)) for k, v in value.items()}
    return totals


def produce_topic(settings: Settings) -> list[bytes]:
    """The fixture's events topic, message for message, to the same partitions and offsets;
    the tracker events among them (neither relays nor commands)."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    delivered: list[tuple[int, int]] = []

    def note(error, message) -> None:
        assert error is None, error
        delivered.append((message.partition(), message.offset()))

    wanted, events = [], []
    with gzip.open(EARLIER / "topic.jsonl.gz", "rt") as handle:
        for line in handle:
            partition, offset, key, value, headers = json.loads(line)
            body = base64.b64decode(value)
            marks = [(name, base64.b64decode(data)) for name, data in headers]
            producer.produce(
                settings.events_topic,
                key=key.encode(),
                value=body,
                partition=partition,
                headers=marks,
                on_delivery=note,
            )
            wanted.append((partition, offset))
            if not {name for name, _ in marks} & {RELAY_HEADER, CONTROL_HEADER}:
                events.append(body)
            producer.poll(0)
    assert producer.flush(30) == 0
    assert sorted(delivered) == sorted(wanted), "the messages are not where the offsets say"
    return events


def test_a_store_the_previous_release_wrote_is_refused_then_migrated_and_the_worker_goes_on(
    config, model, start_worker
):
    client = redis_client(config)
    keys = config.key_layout()
    totals = load_store(client, config)
    events = produce_topic(config)
    assert model.counters() == {}

    refused = segstream(config, "worker", timeout=120)
    assert refused.returncode == 1
    assert "segstream migrate" in refused.stderr

    migrated = segstream(config, "migrate", timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert "to the partition-tagged layout" in migrated.stdout
    assert model.counters() == totals

    with gzip.open(EARLIER / "export.jsonl.gz", "rb") as handle:
        earlier = {row["user_id"]: row for row in map(orjson.loads, handle.read().splitlines())}
    rows = {row["user_id"]: row for row in map(orjson.loads, export(config))}
    assert set(rows) == set(earlier)
    rules = yaml.safe_load(default_rules_file().read_text())
    people = oracle.people(e for e in map(oracle.readable, events) if e is not None)
    assert set(people) == set(rows)
    for user_id, row in rows.items():
        before = earlier[user_id]
        assert row["as_of"] == before["as_of"] == UNTIL
        assert row["segments"] == before["segments"], user_id
        assert {k: row["features"][k] for k in before["features"]} == before["features"]
        expected = oracle.features(people[user_id], UNTIL)
        assert {k: v for k, v in expected.items() if row["features"][k] != v} == {}, user_id
        assert set(row["segments"]) == oracle.segments(rules, people[user_id], UNTIL), user_id
    sizes = model.segment_sizes()
    for segment, size in sizes.items():
        assert size == sum(segment in row["segments"] for row in rows.values()), segment
    again = segstream(config, "migrate")
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert client.exists(keys.partition_count)

    more = Simulation(users=5, seed=22)
    send(more, KafkaSink(config), rate=0, duration=0, limit=0, stop=threading.Event())
    worker = start_worker()
    wait_for_events(
        model, totals["events"] + totals["dead_letters"] + sum(1 for _ in more.events())
    )
    assert worker.stop() == 0
