"""The bench's figures as the table `segstream bench` prints and the README shows.

>>> figures = {"worker_eps": 100.0, "naive_eps": 10.0, "raw_eps": 400.0}
>>> [row[:2] for row in rows(figures)][:2]
[('one worker', '100 events/s'), ('naive Faust baseline', '10 events/s')]
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

_ROWS = (
    ("one worker", "worker_eps", "events/s"),
    ("naive Faust baseline", "naive_eps", "events/s"),
    ("raw limit (consume + validate)", "raw_eps", "events/s"),
    ("I/O floor (+ MGET, MULTI/EXEC)", "io_floor_eps", "events/s"),
    ("two workers", "two_workers_eps", "events/s"),
    ("a rebuild from history, one worker", "rebuild_eps", "events/s"),
    ("  against one worker live", "rebuild_vs_worker", "share"),
    ("a rebuild from history, two workers", "rebuild_two_workers_eps", "events/s"),
    ("  against one worker's rebuild", "rebuild_two_vs_one", "share"),
    ("one worker with --rules", "rules_worker_eps", "events/s"),
    ("  its share of the I/O floor", "rules_worker_vs_io_floor", "share"),
    ("  the I/O floor over its rows and projection", "rules_io_floor_eps", "events/s"),
    ("  its share of that floor", "rules_worker_vs_own_io_floor", "share"),
    ("  its Redis per user (median)", "rules_redis_bytes_per_user", "bytes"),
    ("one worker with predictions on", "predictions_worker_eps", "events/s"),
    ("  against one worker without", "predictions_vs_worker", "share"),
    (
        "  its Redis per user (median, pending examples)",
        "predictions_redis_bytes_per_user",
        "bytes",
    ),
    ("the trainer learning its labelled examples", "trainer_examples_per_second", "examples/s"),
    ("  against one example per user and prediction a day", "trainer_examples_headroom", "times"),
    ("freshness p50 at half load", "freshness_p50_ms", "ms"),
    ("freshness p99 at half load", "freshness_p99_ms", "ms"),
    ("Redis per user (median)", "redis_bytes_per_user", "bytes"),
    ("  and its last 50 changes for the console (median)", "redis_bytes_per_user_changes", "bytes"),
    ("Redis commands per event", "redis_commands_per_event", "commands"),
    ("Redis bytes written per event", "redis_bytes_per_event", "bytes"),
    ("worker CPU per event", "worker_cpu_us_per_event", "µs"),
    ("Redis CPU per event", "redis_cpu_us_per_event", "µs"),
    ("Redis per pending timer", "redis_bytes_per_timer", "bytes"),
    ("Redis per user in membership sets and index", "redis_bytes_per_user_sets", "bytes"),
    ("lookup p50", "lookup_p50_ms", "ms"),
    ("lookup p99", "lookup_p99_ms", "ms"),
    ("rules preview", "preview_seconds", "s"),
    ("console p99: segments page", "console_segments_p99_ms", "ms"),
    ("console p99: segments refresh", "console_segments_fragment_p99_ms", "ms"),
    ("console p99: a segment's page", "console_segment_p99_ms", "ms"),
    ("console p99: a profile", "console_profile_p99_ms", "ms"),
    ("console p99: rules page", "console_rules_p99_ms", "ms"),
    ("console p99: validating an edit", "console_validate_p99_ms", "ms"),
    ("webhooks to a healthy receiver", "deliveries_per_second", "changes/s"),
    ("webhooks: 503 twice before each 200", "flaky_receiver_seconds", "s"),
    ("time to act p50 (cart abandoned to webhook)", "time_to_act_p50_ms", "ms"),
    ("time to act p99 (cart abandoned to webhook)", "time_to_act_p99_ms", "ms"),
    ("time to act p99, a lone cart on a quiet partition", "quiet_time_to_act_p99_ms", "ms"),
    ("collector: /v1/batch, 100 events a request", "collector_batch_eps", "events/s"),
    ("collector: single /v1/t calls", "collector_single_rps", "calls/s"),
    ("tracker to label p50 (HTTP track to Redis)", "tracker_to_label_p50_ms", "ms"),
    ("tracker to label p99 (HTTP track to Redis)", "tracker_to_label_p99_ms", "ms"),
    ("arrival delay p99.9 (collector's reordering)", "arrival_delay_p999_ms", "ms"),
    ("rolling restart: freshness p99 over it", "restart_pause_p99_ms", "ms"),
    ("a SIGKILLed worker's partitions consumed again", "failover_seconds", "s"),
)
_FRACTIONAL = ("ms", "µs", "commands", "s", "share")
_TARGETS = {
    "worker_eps": "≥ 30,000, ≥ 0.5 of floor",
    "rules_worker_vs_io_floor": "≥ 0.5",
    "predictions_vs_worker": "≥ 0.9",
    "trainer_examples_headroom": "> 1",
    "rebuild_vs_worker": "≥ 0.8",
    "rebuild_two_vs_one": "≥ 1.6",
    "freshness_p99_ms": "≤ 150",
    "redis_bytes_per_user": "≤ 1,024",
    "lookup_p99_ms": "≤ 5",
    "preview_seconds": "≤ 10 for 100,000 users",
    **{
        f"console_{page}_p99_ms": "≤ 200"
        for page in ("segments", "segments_fragment", "segment", "profile", "rules", "validate")
    },
    "deliveries_per_second": "≥ 1,000",
    "flaky_receiver_seconds": "≤ 300 for 10,000 changes",
    "time_to_act_p99_ms": "≤ 1,000 + firing delay (5 s)",
    "quiet_time_to_act_p99_ms": "≤ idle (60 s) + firing delay (5 s) + 1,000",
    "arrival_delay_p999_ms": "≤ firing delay (5 s)",
    "collector_batch_eps": "≥ one worker",
    "collector_single_rps": "≥ 5,000",
    "tracker_to_label_p99_ms": "≤ 100 at 5,000 calls/s",
    "restart_pause_p99_ms": "≤ 2,000",
    "failover_seconds": "≤ 15",
}


def rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, value, ratio to the baseline and to the raw limit, target) for each figure."""
    found = []
    for label, key, unit in _ROWS:
        if key not in figures:
            continue
        value = figures[key]
        decimals = 2 if unit in _FRACTIONAL else 0
        shown = f"{value:,.{decimals}f} {unit}"
        ratio = ""
        if key in ("worker_eps", "two_workers_eps"):
            naive, raw = figures.get("naive_eps"), figures.get("raw_eps")
            floor = figures.get("io_floor_eps")
            parts = []
            if naive:
                parts.append(f"{value / naive:.1f} x naive")
            if raw:
                parts.append(f"{value / raw:.2f} of raw")
            if floor:
                parts.append(f"{value / floor:.2f} of floor")
            ratio = ", ".join(parts)
        if key == "flaky_receiver_seconds" and "flaky_changes" in figures:
            ratio = f"for {figures['flaky_changes']:,} changes"
        if key == "preview_seconds" and "preview_users" in figures:
            ratio = f"for {figures['preview_users']:,} users"
        found.append((label, shown, ratio, _TARGETS.get(key, "")))
    return found


def _machine(machine: dict[str, Any]) -> str:
    """Where the figures were measured: ``2 CPUs, Intel(R) Xeon(R) Processor (family 6
    model 207), Python 3.11.7``."""
    if not machine:
        return ""
    cpus, cpu, python = (machine.get(key, "?") for key in ("cpus", "cpu", "python"))
    return f"{cpus} CPUs, {cpu}, Python {python}"


def bench_table(figures: dict[str, Any]) -> Table:
    """A rich table of `figures`, with the run's size in its title."""
    table = Table(
        title=f"segstream bench: {figures.get('events', 0):,} events, "
        f"{figures.get('users', 0):,} users, {figures.get('partitions', 0)} partitions\n"
        f"{figures.get('broker', '')}; {figures.get('redis', '')}",
        caption=_machine(figures.get("machine", {})),
    )
    for column in ("measure", "value", "ratio", "target"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for row in rows(figures):
        table.add_row(*row)
    return table
