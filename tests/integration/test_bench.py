"""A small run of `segstream bench`, so the harness cannot rot (figures are not judged here)."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

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
)


def test_a_small_bench_measures_every_figure(tmp_path):
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "streams", "bench",
            "--events", "3000", "--users", "300",
            "--naive-seconds", "2", "--freshness-seconds", "2",
            "--lookup-rps", "100", "--lookup-seconds", "1",
            "--webhook-changes", "200", "--flaky-changes", "20", "--act-seconds", "5", "--preview-users", "1000",
            "--json", str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    figures = orjson.loads(output.read_bytes())
    for key in KEYS:
        assert figures[key] > 0, key
    assert figures["events"] == 3000
    assert "naive Faust baseline" in done.stdout
    assert "lookup p99" in done.stdout
    assert figures["flaky_changes"] == 20
    assert figures["preview_users"] == 1000
    assert "time to act p99" in done.stdout
    machine = figures["machine"]
    assert machine["cpu"]
    assert machine["cpus"] > 0
    assert f"{machine['cpus']} CPUs, {machine['cpu']}" in " ".join(done.stdout.split())
