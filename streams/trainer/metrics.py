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
    "Messages on the features or examples topic that could not be read, skipped.",
)
EXAMPLES = Counter(
    "segstream_trainer_examples_total",
    "Labelled examples learned (each once), by prediction.",
    ["prediction"],
)
LABELS = Gauge(
    "segstream_trainer_prediction_labels",
    "Labelled examples a prediction learned, by outcome (positive, negative); it is "
    "scored once both reach 100.",
    ["prediction", "outcome"],
)
QUALITY = Gauge(
    "segstream_trainer_prediction_quality",
    "A prediction's quality over its latest 10,000 scored examples, the prediction made at "
    "each example's snapshot against its label, by figure (auc, log_loss, base_log_loss, "
    "calibration_error, lift, mean_predicted, mean_observed).",
    ["prediction", "figure"],
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
    for name, model in snapshot.predictions.items():
        LABELS.labels(prediction=name, outcome="positive").set(model.positives)
        LABELS.labels(prediction=name, outcome="negative").set(model.negatives)
        quality = model.quality
        if quality is None:
            continue
        figures = {
            "auc": quality.auc,
            "log_loss": quality.log_loss,
            "base_log_loss": quality.base_log_loss,
            "calibration_error": quality.calibration_error,
            "lift": quality.lift,
            "mean_predicted": quality.mean_predicted,
            "mean_observed": quality.mean_observed,
        }
        for figure, value in figures.items():
            if value is not None:
                QUALITY.labels(prediction=name, figure=figure).set(value)
    INERTIA.set(snapshot.inertia)
    LAST_SNAPSHOT.set(snapshot.created_at)
