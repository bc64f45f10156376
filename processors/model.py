"""A clustering model snapshot: what the trainer publishes and workers assign with.

A snapshot holds everything a worker needs to place a user, and nothing it
has to learn: the clustering features and which of them are log1p-transformed,
the scaler's mean and standard deviation, each cluster's stable id, readable
name, centroid (in scaled space) and share, and the population percentiles of
every numeric feature that rules can use as thresholds (`p75(revenue_30d)`).

:func:`parse_snapshot` refuses anything inconsistent (wrong shapes, non-finite
numbers, unknown features, percentiles that go down), so a corrupt snapshot
never replaces a good one.

>>> snapshot = ModelSnapshot(
...     version=1, generation=1, reason="initial", created_at=0.0,
...     features=("orders_lifetime", "mobile_share_30d"), log_features=("orders_lifetime",),
...     mean=(0.5, 0.5), std=(0.5, 0.25),
...     clusters=(Cluster(id="c1", name="buyers", centroid=(1.0, 0.0), share=0.5),
...               Cluster(id="c2", name="mobile", centroid=(-1.0, 2.0), share=0.5)),
...     min_events=2, quantiles={},
... )
>>> assigner = ClusterAssigner(snapshot)
>>> rows = np.zeros((3, len(FEATURE_NAMES)))
>>> rows[:, FEATURE_INDEX["events_lifetime"]] = [9, 9, 1]
>>> rows[0, FEATURE_INDEX["orders_lifetime"]] = 3
>>> rows[1, FEATURE_INDEX["mobile_share_30d"]] = 1.0
>>> assigner.assign(rows)
['c1', 'c2', 'cold-start']
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from processors._core import FEATURE_NAMES, PREDICTION_INPUTS, PREDICTIONS
from processors.rules import PREDICTION_PREFIX, parse_percentile

COLD_START = "cold-start"
"""The cluster of a user with too little history to be placed."""

_COMPUTED_NAME = re.compile(r"computed\.[A-Za-z_]\w{0,63}")
"""A computed trait's name as quantiles name it (`computed.NAME`)."""
_PREDICTION_NAMES = {f"prediction.{name}" for name in PREDICTIONS}
"""The predictions' names as quantiles name them (`prediction.NAME`)."""

GATE_LABELS = 100
"""Positive and negative matured labels a prediction needs before it is scored."""
PERCENTILE_POINTS = 101
"""Percentiles kept per feature: p0, p1, ..., p100."""

FEATURE_INDEX: dict[str, int] = {name: index for index, name in enumerate(FEATURE_NAMES)}
"""Column of each numeric feature in a feature vector."""

CLUSTER_FEATURES: tuple[str, ...] = (
    "days_since_last_seen",
    "days_since_first_seen",
    "orders_lifetime",
    "avg_order_value",
    "revenue_30d",
    "sessions_7d",
    "product_views_7d",
    "searches_7d",
    "cart_adds_7d",
    "abandoned_carts_7d",
    "bounce_rate_7d",
    "mobile_share_30d",
    "top_category_share_30d",
    "engagement_velocity",
)
"""The features users are clustered on by default."""

LOG_FEATURES: tuple[str, ...] = (
    "days_since_last_seen",
    "days_since_first_seen",
    "orders_lifetime",
    "avg_order_value",
    "revenue_30d",
    "sessions_7d",
    "product_views_7d",
    "searches_7d",
    "cart_adds_7d",
    "abandoned_carts_7d",
)
"""Heavy-tailed clustering features, compressed with log1p before scaling."""

Matrix = NDArray[np.float64]


class SnapshotError(ValueError):
    """A model snapshot that cannot be used."""


class Cluster(BaseModel):
    """One cluster: stable `id`, readable `name`, centroid in scaled space, sampled users.

    `size` is how many sampled users it holds and `share` their fraction.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=32, pattern=r"^c\d+$")
    name: str = Field(min_length=1, max_length=120)
    centroid: tuple[float, ...]
    size: int = Field(default=0, ge=0)
    share: float = Field(ge=0.0, le=1.0)


class PredictionQuality(BaseModel):
    """A prediction's quality over its latest scored examples (progressive validation:
    the prediction made at each example's snapshot against its label); see
    `processors.prediction_training.quality_of`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    examples: int = Field(ge=0)
    positives: int = Field(ge=0)
    auc: float | None
    log_loss: float | None
    base_log_loss: float | None
    mean_predicted: float
    mean_observed: float
    calibration: tuple[tuple[float, float], ...] = ()
    calibration_error: float | None = None
    lift: float | None = None


class PredictionModel(BaseModel):
    """One prediction's coefficients over the standardised `log1p` inputs
    (:data:`PREDICTION_INPUTS` order) and the labels it learned from.

    The core scores `sigmoid(a·(weights·x + intercept) + b)` with `calibration`
    `(a, b)`, times `max(0, spend·x + c)` for an amount (`spend` `(weights, c)`).
    `positives` and `negatives` count the matured labels learned; the prediction
    is scored once both reach :data:`GATE_LABELS` (:attr:`ready`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float
    calibration: tuple[float, float] = (1.0, 0.0)
    spend: tuple[tuple[float, ...], float] | None = None
    positives: int = Field(default=0, ge=0)
    negatives: int = Field(default=0, ge=0)
    quality: PredictionQuality | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PredictionModel:
        width = len(PREDICTION_INPUTS)
        vectors = [self.mean, self.std, self.weights]
        if self.spend is not None:
            vectors.append(self.spend[0])
        if any(len(vector) != width for vector in vectors):
            raise ValueError(f"a prediction needs {width} coefficients of each kind")
        numbers = [*itertools.chain(*vectors), self.intercept, *self.calibration]
        if self.spend is not None:
            numbers.append(self.spend[1])
        if not all(map(math.isfinite, numbers)) or not all(v > 0 for v in self.std):
            raise ValueError("coefficients must be finite and std positive")
        return self

    @property
    def ready(self) -> bool:
        """Whether it has learned enough positive and negative labels to be scored."""
        return min(self.positives, self.negatives) >= GATE_LABELS

    def coefficients(self) -> dict[str, object]:
        """What the core needs to score it."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "weights": list(self.weights),
            "intercept": self.intercept,
            "calibration": self.calibration,
            "spend": None if self.spend is None else (list(self.spend[0]), self.spend[1]),
        }


class ModelSnapshot(BaseModel):
    """A versioned clustering model and population percentiles.

    `version` grows with every snapshot; `generation` grows when the trainer
    re-clusters (`reason` `initial`, `recluster` or `drift`) and stays the same
    for snapshots that only refine centroids (`update`). `min_events` is the
    history (events) a user needs before leaving `cold-start`. `quantiles` maps
    a feature, a computed trait the rules compare with a percentile, or a
    scored prediction (`prediction.NAME`), to its values at p0..p100 over users;
    `predictions` holds each prediction's model, once it has one; `sample_users` is how many
    users they and the shares were computed on. `inertia` is the mean squared
    distance, in standardised units, from each warm sampled user to the
    nearest centroid.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    generation: int = Field(ge=1)
    reason: Literal["initial", "update", "recluster", "drift"]
    created_at: float
    features: tuple[str, ...] = Field(min_length=1)
    log_features: tuple[str, ...] = ()
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clusters: tuple[Cluster, ...] = Field(min_length=1)
    min_events: int = Field(ge=0)
    quantiles: dict[str, tuple[float, ...]]
    sample_users: int = Field(default=0, ge=0)
    learned: int = Field(default=0, ge=0)
    inertia: float = Field(default=0.0, ge=0)
    predictions: dict[str, PredictionModel] = {}

    @model_validator(mode="after")
    def _consistent(self) -> ModelSnapshot:
        unknown = [name for name in self.features if name not in FEATURE_INDEX]
        if unknown:
            raise ValueError(f"unknown features {unknown}")
        if not set(self.log_features) <= set(self.features):
            raise ValueError("log_features must be among features")
        width = len(self.features)
        if len(self.mean) != width or len(self.std) != width:
            raise ValueError(f"mean and std need {width} values each")
        if not all(math.isfinite(v) for v in self.mean) or not all(
            math.isfinite(v) and v > 0 for v in self.std
        ):
            raise ValueError("mean must be finite and std finite and positive")
        ids = [cluster.id for cluster in self.clusters]
        if len(set(ids)) != len(ids):
            raise ValueError("cluster ids must be unique")
        for cluster in self.clusters:
            if len(cluster.centroid) != width or not all(map(math.isfinite, cluster.centroid)):
                raise ValueError(f"cluster {cluster.id} needs {width} finite centroid values")
        unknown = sorted(set(self.predictions) - set(PREDICTIONS))
        if unknown:
            raise ValueError(f"unknown predictions {unknown}")
        for name, values in self.quantiles.items():
            known = name in FEATURE_INDEX or name in _PREDICTION_NAMES
            if not known and not _COMPUTED_NAME.fullmatch(name):
                raise ValueError(f"quantiles of unknown feature {name!r}")
            if len(values) != PERCENTILE_POINTS or not all(map(math.isfinite, values)):
                raise ValueError(f"quantiles of {name!r} need {PERCENTILE_POINTS} finite values")
            if any(b < a for a, b in itertools.pairwise(values)):
                raise ValueError(f"quantiles of {name!r} must not decrease")
        return self

    def scored(self) -> dict[str, object]:
        """The ready predictions' coefficients for the core, with the snapshot's version
        (the others are gated)."""
        found: dict[str, object] = {"version": self.version}
        for name, model in self.predictions.items():
            if model.ready:
                found[name] = model.coefficients()
        return found

    def names(self) -> dict[str, str]:
        """Cluster id to readable name."""
        return {cluster.id: cluster.name for cluster in self.clusters}

    def lacks(self, needs: Iterable[str]) -> list[str]:
        """Which of `needs` (percentile names, `prediction.NAME`) this snapshot cannot give:
        a percentile it has no quantiles for, a prediction still gated.

        >>> snap = ModelSnapshot.model_construct(quantiles={"orders_30d": tuple(range(101))},
        ...                                      predictions={})
        >>> snap.lacks(["p75(orders_30d)", "p90(revenue_30d)", "prediction.churn_90d"])
        ['p90(revenue_30d)', 'prediction.churn_90d']
        """
        lacking = []
        for need in needs:
            if need.startswith(PREDICTION_PREFIX):
                model = self.predictions.get(need.removeprefix(PREDICTION_PREFIX))
                known = model is not None and model.ready
            else:
                parsed = parse_percentile(need)
                known = parsed is not None and self.percentile(*parsed) is not None
            if not known:
                lacking.append(need)
        return lacking

    def percentile(self, feature: str, q: float) -> float | None:
        """The population's `q`-th percentile (0-100) of `feature`; `None` when unknown.

        >>> snap = ModelSnapshot.model_construct(quantiles={"orders_30d": tuple(range(101))})
        >>> snap.percentile("orders_30d", 75), snap.percentile("orders_30d", 12.5)
        (75.0, 12.5)
        """
        values = self.quantiles.get(feature)
        if values is None:
            return None
        position = min(max(q, 0.0), 100.0)
        low = int(position)
        if low == 100:
            return float(values[100])
        fraction = position - low
        return float(values[low] + (values[low + 1] - values[low]) * fraction)

    def to_json(self) -> bytes:
        """The snapshot as published on the models topic and stored in Redis."""
        return orjson.dumps(self.model_dump(mode="json"))


def parse_snapshot(data: bytes | str) -> ModelSnapshot:
    """Validate a published snapshot; raise :class:`SnapshotError` naming what is wrong."""
    try:
        return ModelSnapshot.model_validate_json(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(snapshot)'}: {item['msg']}"
            for item in error.errors(include_url=False)[:5]
        )
        raise SnapshotError(f"invalid model snapshot: {problems}") from None


def transform(rows: Matrix, features: Sequence[str], log_features: Sequence[str]) -> Matrix:
    """The clustering columns of full feature vectors, heavy-tailed ones through log1p.

    Negative values (such as "no order yet" as -1) count as 0 before log1p.

    >>> transform(np.array([[0.0] * len(FEATURE_NAMES)]), ["orders_lifetime"], []).shape
    (1, 1)
    """
    columns: Matrix = rows[:, [FEATURE_INDEX[name] for name in features]].astype(np.float64)
    logged = [index for index, name in enumerate(features) if name in set(log_features)]
    if logged:
        columns[:, logged] = np.log1p(np.maximum(columns[:, logged], 0.0))
    return columns


class ClusterAssigner:
    """Places users in a snapshot's clusters with numpy: nearest centroid in scaled space."""

    def __init__(self, snapshot: ModelSnapshot) -> None:
        self.snapshot = snapshot
        self.version = snapshot.version
        self._mean = np.array(snapshot.mean)
        self._std = np.array(snapshot.std)
        self._centroids = np.array([cluster.centroid for cluster in snapshot.clusters])
        self._ids = [cluster.id for cluster in snapshot.clusters]
        self._events = FEATURE_INDEX["events_lifetime"]

    def scale(self, rows: Matrix) -> Matrix:
        """Full feature vectors (one per row, :data:`FEATURE_NAMES` order) in scaled space."""
        snapshot = self.snapshot
        columns = transform(rows, snapshot.features, snapshot.log_features)
        scaled: Matrix = (columns - self._mean) / self._std
        return scaled

    def nearest(self, scaled: Matrix) -> NDArray[np.intp]:
        """Index of the closest centroid of each scaled row."""
        distances = ((scaled[:, None, :] - self._centroids[None, :, :]) ** 2).sum(axis=2)
        nearest: NDArray[np.intp] = distances.argmin(axis=1)
        return nearest

    def assign(self, rows: Matrix) -> list[str]:
        """The cluster id of each row; :data:`COLD_START` below `min_events` events."""
        if len(rows) == 0:
            return []
        nearest = self.nearest(self.scale(rows))
        warm = rows[:, self._events] >= self.snapshot.min_events
        return [
            self._ids[index] if is_warm else COLD_START
            for index, is_warm in zip(nearest.tolist(), warm.tolist(), strict=True)
        ]
