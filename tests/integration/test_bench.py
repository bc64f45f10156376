"""A small run of `segstream bench`, so the harness cannot rot (figures are not judged here)."""

from __future__ import annotations

import orjson
import pytest

from tests.integration.small_bench import small_bench

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # a small bench: ~4 min
KEYS = (
    "worker_eps",
    "two_workers_eps",
    "rebuild_eps",
    "rebuild_two_workers_eps",
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
    "redis_bytes_per_user_changes",
    "lookup_p50_ms",
    "lookup_p99_ms",
    "preview_seconds",
    "preview_users",
    "console_segments_p99_ms",
    "console_segments_fragment_p99_ms",
    "console_segment_p99_ms",
    "console_profile_p99_ms",
    "console_rules_p99_ms",
    "console_validate_p99_ms",
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
    "rules_worker_eps",
    "rules_worker_vs_io_floor",
    "rules_worker_cpu_us_per_event",
    "rules_redis_bytes_per_user",
    "rules_io_floor_eps",
    "rules_worker_vs_own_io_floor",
    "predictions_worker_eps",
    "predictions_vs_worker",
    "predictions_redis_bytes_per_user",
    "trainer_examples",
    "trainer_examples_per_second",
    "trainer_examples_headroom",
)
MAYBE_ZERO = ("arrival_delay_p999_ms", "arrival_delay_max_ms")
"""Figures a small run may measure as 0: events that all arrived in time order."""


def test_a_small_bench_measures_every_figure(tmp_path):
    output = tmp_path / "bench.json"
    done = small_bench(output, "--rules", "processors/rules/computed-bench.yaml")
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
    assert figures["rules_file"] == "processors/rules/computed-bench.yaml"
    assert figures["rules_redis_bytes_per_user"] > figures["redis_bytes_per_user"]
    assert "its share of that floor" in done.stdout
    assert "a SIGKILLed worker's partitions consumed again" in done.stdout
    assert figures["broker"] == "Apache Kafka 4.4.0 (embedded, KRaft, one node)"
    assert figures["redis"].startswith("Redis ")
    assert "(embedded, one node)" in figures["redis"]
    assert figures["broker"] in " ".join(done.stdout.split())
    machine = figures["machine"]
    assert machine["cpu"]
    assert machine["cpus"] > 0
    assert f"{machine['cpus']} CPUs, {machine['cpu']}" in " ".join(done.stdout.split())
