"""Prometheus metrics of the worker, declared once; labelled children bound up front."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from streams.worker.histogram import BulkHistogram

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

EVENTS_CONSUMED = Counter(
    "segstream_worker_events_consumed_total",
    "Messages the worker consumed from the events topic (events, relays and commands).",
)
EVENTS_PROCESSED = Counter(
    "segstream_worker_events_processed_total",
    "Events applied to a user's aggregates and committed.",
)
EVENTS_DUPLICATE = Counter(
    "segstream_worker_events_duplicate_total",
    "Events skipped because their messageId had been applied before.",
)
EVENTS_FORWARDED = Counter(
    "segstream_worker_events_forwarded_total",
    "Events that arrived on another partition than their user's and were forwarded to it.",
)
DEAD_LETTERS = Counter(
    "segstream_worker_events_dead_lettered_total",
    "Events sent to the dead-letter topic, by reason.",
    ["reason"],
)
ERASURES = Counter(
    "segstream_worker_users_erased_total",
    "Users erased on request: state, labels, membership and timers removed.",
)
USERS_LOADED = Counter(
    "segstream_worker_users_loaded_total",
    "Stored users the steps loaded: kept decoded in the worker since their last step "
    "(`resident`), or decoded from their state row (`row`: new to the worker, or changed by "
    "another since).",
    ["source"],
)
USERS_LOADED_RESIDENT = USERS_LOADED.labels(source="resident")
USERS_LOADED_ROW = USERS_LOADED.labels(source="row")
CHANGES = Counter(
    "segstream_worker_segment_changes_total",
    "Segment change events published.",
)
EXAMPLES = Counter(
    "segstream_worker_examples_total",
    "Labelled point-in-time examples published for the trainer (docs/predictions.md).",
)
TRANSITIONS = Counter(
    "segstream_worker_segment_transitions_total",
    "Users entering or leaving a segment, by segment and direction (entered, exited).",
    ["segment", "direction"],
)
CLUSTER_TRANSITIONS = Counter(
    "segstream_worker_cluster_transitions_total",
    "Users entering or leaving a cluster, by cluster id and direction (entered, exited).",
    ["cluster", "direction"],
)
BATCH_EVENTS = Histogram(
    "segstream_worker_batch_events",
    "Messages per consumed batch.",
    buckets=(1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000, 20_000),
)
BATCH_SECONDS = Histogram(
    "segstream_worker_batch_processing_seconds",
    "Time to process one batch, from consume to state commit.",
    buckets=_LATENCY,
)
FRESHNESS = BulkHistogram(
    "segstream_worker_freshness_seconds",
    "From an event's time to its user's state and labels committed to Redis (live events).",
    (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3_600),
)
ARRIVAL_DELAY = BulkHistogram(
    "segstream_worker_arrival_delay_seconds",
    "How far behind its partition's newest event time each live event arrived; those past "
    "SEGSTREAM_FIRING_DELAY_SECONDS may correct what timers announced (reason late).",
    (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1_800, 3_600),
)
REDIS_WRITE_SECONDS = Histogram(
    "segstream_worker_redis_write_seconds",
    "Time to commit one batch's state, labels and offsets to Redis (one transaction).",
    buckets=_LATENCY,
)
KAFKA_WRITE_SECONDS = Histogram(
    "segstream_worker_kafka_write_seconds",
    "Time to produce one batch's changes, dead letters and vectors until the broker acked.",
    buckets=_LATENCY,
)
CONSUMER_LAG = Gauge(
    "segstream_worker_consumer_lag_messages",
    "Messages in a partition not yet committed by this worker (high watermark minus offset).",
    ["partition"],
)
GENERATION = Gauge(
    "segstream_worker_generation",
    "The generation of users' state the worker serves (`rules apply --backfill` makes the next).",
)
BUILD_LAG = Gauge(
    "segstream_worker_build_lag_messages",
    "Messages of a partition the generation being built has yet to take, by the high "
    "watermark of its latest fetch.",
    ["partition"],
)
BUILD_EVENTS = Counter(
    "segstream_worker_build_events_total",
    "Messages of the events topic taken into a generation being built.",
)
PARTITIONS = Gauge(
    "segstream_worker_partitions_assigned",
    "Partitions of the events topic this worker owns.",
)
LAST_BATCH = Gauge(
    "segstream_worker_last_batch_timestamp_seconds",
    "Wall-clock time the worker last finished a pass of its loop (liveness).",
)
FENCED = Counter(
    "segstream_worker_fenced_batches_total",
    "Batches dropped because another worker had committed their partitions.",
)
BATCHES_RETRIED = Counter(
    "segstream_worker_batches_retried_total",
    "Batches not committed because Redis or the broker did not answer; redone from the "
    "committed offsets once both answer.",
    ["cause"],
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
RULES = Info(
    "segstream_worker_rules",
    "The rules version (label) in force.",
)
TIMERS_FIRED = Counter(
    "segstream_worker_timers_fired_total",
    "Users' timers that came due and re-evaluated them as event time passed.",
)
TIMER_LAG = Gauge(
    "segstream_worker_timer_lag_seconds",
    "How far the watermark has passed the oldest timer still waiting to fire (0: none waits).",
)
