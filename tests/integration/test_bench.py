"""A small run of `segstream bench`, so the harness cannot rot (figures are not judged here)."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
import redis
from confluent_kafka.admin import AdminClient

pytestmark = pytest.mark.integration
KEYS = (
    "worker_eps",
    "two_workers_eps",
    "naive_eps",
    "raw_eps",
    "io_floor_eps",
    "redis_commands_per_event",
    "redis_bytes_per_event",
    "redis_cpu_us_per_event",
    "worker_cpu_us_per_event",
    "redis_bytes_per_timer",
    "redis_bytes_per_user_sets",
    "freshness_p50_ms",
    "freshness_p99_ms",
    "redis_bytes_per_user",
    "lookup_p50_ms",
    "lookup_p99_ms",
    "preview_seconds",
    "preview_users",
    "deliveries_per_second",
    "flaky_receiver_seconds",
    "time_to_act_p50_ms",
    "time_to_act_p99_ms",
    "time_to_act_probes",
    "quiet_time_to_act_p50_ms",
    "quiet_time_to_act_p99_ms",
    "quiet_time_to_act_probes",
    "firing_delay_seconds",
    "idle_watermark_seconds",
    "collector_batch_eps",
    "collector_single_rps",
    "tracker_to_label_p50_ms",
    "tracker_to_label_p99_ms",
    "tracker_to_label_probes",
    "restart_pause_p99_ms",
    "failover_seconds",
)
MAYBE_ZERO = ("arrival_delay_p999_ms", "arrival_delay_max_ms")
"""Figures a small run may measure as 0: events that all arrived in time order."""


def small_bench(output, *more):
    """`segstream bench` at a small size, its figures to `output`."""
    done = subprocess.run(
        [
            sys.executable, "-m", "streams", "bench",
            "--events", "3000", "--users", "300",
            "--naive-seconds", "2", "--freshness-seconds", "2",
            "--lookup-rps", "100", "--lookup-seconds", "1",
            "--webhook-changes", "200", "--flaky-changes", "20", "--act-seconds", "5", "--preview-users", "1000",
            "--edge-seconds", "2", "--edge-rate", "300",
            "--json", str(output), *more,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},  # the table's rows unwrapped
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_a_bench_on_your_own_kafka_and_redis_leaves_nothing_behind(stack, tmp_path):
    """The session's broker and Redis stand in for a user's: the bench measures on them
    and removes its topics, groups and keys afterwards."""
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    client = redis.Redis.from_url(stack.redis_url)
    topics_before = set(admin.list_topics(timeout=10).topics)
    keys_before = client.dbsize()
    output = tmp_path / "bench.json"
    done = small_bench(output, "--kafka", stack.kafka_bootstrap, "--redis", stack.redis_url)
    figures = orjson.loads(output.read_bytes())
    assert figures["worker_eps"] > 0
    assert figures["broker"].startswith("Kafka cluster ")
    assert f"at {stack.kafka_bootstrap}, 1 broker, group protocols" in figures["broker"]
    assert "consumer" in figures["broker"]
    assert figures["redis"].startswith("Redis ")
    assert "(yours, one node)" in figures["redis"]
    assert "Kafka cluster" in done.stdout
    left = {t for t in admin.list_topics(timeout=10).topics if t not in topics_before}
    assert not {t for t in left if t.startswith("bench")}, left
    groups = [g.group_id for g in admin.list_consumer_groups().result().valid]
    assert not [g for g in groups if g.startswith("bench")], groups
    assert not list(client.scan_iter(match="bench*", count=1000))
    assert client.dbsize() == keys_before


def test_a_small_bench_measures_every_figure(tmp_path):
    output = tmp_path / "bench.json"
    done = small_bench(output)
    figures = orjson.loads(output.read_bytes())
    for key in KEYS:
        assert figures[key] > 0, key
    for key in MAYBE_ZERO:
        assert figures[key] >= 0, key
    assert figures["events"] == 3000
    assert "naive Faust baseline" in done.stdout
    assert "lookup p99" in done.stdout
    assert figures["flaky_changes"] == 20
    assert figures["preview_users"] == 1000
    assert "time to act p99" in done.stdout
    assert "tracker to label p99" in done.stdout
    assert "a SIGKILLed worker's partitions consumed again" in done.stdout
    assert figures["broker"] == "Apache Kafka 4.4.0 (embedded, KRaft, one node)"
    assert figures["redis"].startswith("Redis ")
    assert "(embedded, one node)" in figures["redis"]
    assert figures["broker"] in " ".join(done.stdout.split())
    machine = figures["machine"]
    assert machine["cpu"]
    assert machine["cpus"] > 0
    assert f"{machine['cpus']} CPUs, {machine['cpu']}" in " ".join(done.stdout.split())
