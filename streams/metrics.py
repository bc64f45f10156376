"""Prometheus metrics of the worker, declared once; labelled children bound up front."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "segstream_worker_events_total",
    "Events consumed by the worker, by outcome.",
    ["outcome"],
)
EVENTS_APPLIED = EVENTS.labels(outcome="applied")
EVENTS_DEAD_LETTERED = EVENTS.labels(outcome="dead_lettered")

DEAD_LETTERS = Counter(
    "segstream_worker_dead_letters_total",
    "Events sent to the dead-letter topic, by reason.",
    ["reason"],
)
CHANGES = Counter(
    "segstream_worker_segment_changes_total",
    "Segment change events published.",
)
BATCH_EVENTS = Histogram(
    "segstream_worker_batch_events",
    "Events per consumed batch.",
    buckets=(1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000, 20_000),
)
BATCH_SECONDS = Histogram(
    "segstream_worker_batch_seconds",
    "Time to process one batch, from consume to state commit.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FENCED = Counter(
    "segstream_worker_fenced_batches_total",
    "Batches dropped because another worker had committed their partitions.",
)
FEATURE_VECTORS = Counter(
    "segstream_worker_feature_vectors_total",
    "Feature vectors sent to the trainer.",
)
MODEL_VERSION = Gauge(
    "segstream_worker_model_version",
    "Version of the model snapshot users are placed with (0 before the first).",
)
MODELS_REFUSED = Counter(
    "segstream_worker_models_refused_total",
    "Model snapshots refused as corrupt; the previous one stayed in force.",
)
TIMERS_FIRED = Counter(
    "segstream_worker_timers_fired_total",
    "Users' timers that came due and re-evaluated them as event time passed.",
)
TIMER_LAG = Gauge(
    "segstream_worker_timer_lag_seconds",
    "How far the watermark has passed the oldest timer still waiting to fire (0: none waits).",
)
