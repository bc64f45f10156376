"""Prometheus metrics of the trainer, declared once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from processors.model import ModelSnapshot

VECTORS = Counter(
    "segstream_trainer_vectors_total",
    "Feature vectors the trainer read from the features topic.",
)
BAD_MESSAGES = Counter(
    "segstream_trainer_bad_messages_total",
    "Messages on the features topic that were not feature vectors, skipped.",
)
SNAPSHOTS = Counter(
    "segstream_trainer_snapshots_total",
    "Model snapshots published, by reason (initial, update, recluster, drift).",
    ["reason"],
)
DRIFTS = Counter(
    "segstream_trainer_drift_detections_total",
    "Drift detected on assignment distances (each leads to re-clustering).",
)
MODEL_VERSION = Gauge(
    "segstream_trainer_model_version",
    "Version of the latest published snapshot.",
)
CLUSTERS = Gauge(
    "segstream_trainer_clusters",
    "Clusters in the latest published snapshot.",
)
SAMPLE_USERS = Gauge(
    "segstream_trainer_sample_users",
    "Users in the trainer's sample.",
)
INERTIA = Gauge(
    "segstream_trainer_inertia",
    "Mean squared distance (standardised units) of sampled users to their nearest centroid.",
)
ASSIGNMENT_DISTANCE = Gauge(
    "segstream_trainer_assignment_distance",
    "Drift detector's running mean of the distance from each new vector to its centroid.",
)
LAST_SNAPSHOT = Gauge(
    "segstream_trainer_last_snapshot_timestamp_seconds",
    "Wall-clock time of the latest published snapshot.",
)


def show(snapshot: ModelSnapshot) -> None:
    """Set the model gauges to the snapshot in force."""
    MODEL_VERSION.set(snapshot.version)
    CLUSTERS.set(len(snapshot.clusters))
    INERTIA.set(snapshot.inertia)
    LAST_SNAPSHOT.set(snapshot.created_at)
