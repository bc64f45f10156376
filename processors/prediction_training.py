"""The trainer's prediction models, learned online from labelled examples, and their quality
measured as the predictions are used.

Each prediction has a River `StandardScaler` over the `log1p` of the inputs and a
`LogisticRegression` on the scaled values (for `revenue_90d`: of an order within
90 days), whose log-odds a second, one-input `LogisticRegression` calibrates
(Platt scaling, learned before the model learns each example, so that it sees
the model's scores as they are made); `revenue_90d` adds a `LinearRegression`
of the revenue of the examples with an order. Logistic and linear models are
what the core evaluates without Python: a dot product and a link function.

Quality is progressive validation with delayed labels: each example carries
the prediction the model in force made at its snapshot day, and that is what
is scored against the label, before the model learns from it.

>>> import random
>>> from processors.examples import Example
>>> rng = random.Random(1)
>>> learner = PredictionLearner("purchase_30d")
>>> for n in range(400):
...     orders = rng.randint(0, 5)
...     inputs = (float(orders),) + (0.0,) * (len(PREDICTION_INPUTS) - 1)
...     bought = rng.random() < (0.8 if orders >= 3 else 0.1)
...     learner.learn(Example(f"u{n}", "purchase_30d", 0, 30, inputs, None, float(bought)))
>>> model = learner.model()
>>> model.ready, model.weights[0] > 0
(True, True)
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError
from river import linear_model, optim, preprocessing
from sklearn.metrics import roc_auc_score

from processors._core import PREDICTION_INPUTS, PREDICTIONS, score_predictions
from processors.examples import Example
from processors.model import PERCENTILE_POINTS, PredictionModel, PredictionQuality
from processors.rules import PREDICTION_PREFIX

log = logging.getLogger(__name__)

QUALITY_WINDOW = 10_000
"""The latest examples the rolling quality figures are computed over."""

_AMOUNTS = {"revenue_90d"}
"""The predictions that are amounts; the others are probabilities."""


@dataclass(slots=True)
class Quality:
    """A prediction's quality over its latest scored examples (see :func:`quality_of`)."""

    examples: int
    positives: int
    auc: float | None
    log_loss: float | None
    base_log_loss: float | None
    mean_predicted: float
    mean_observed: float
    calibration: list[tuple[float, float]] = field(default_factory=list)
    """Per decile of the prediction (lowest first): mean predicted, mean observed."""
    lift: float | None = None
    """The top decile's mean outcome over the overall mean outcome."""

    @property
    def calibration_error(self) -> float | None:
        """Mean |predicted - observed| over the deciles."""
        if not self.calibration:
            return None
        return float(np.mean([abs(p - o) for p, o in self.calibration]))

    def published(self) -> PredictionQuality:
        """As a snapshot carries it."""
        return PredictionQuality(
            examples=self.examples,
            positives=self.positives,
            auc=self.auc,
            log_loss=self.log_loss,
            base_log_loss=self.base_log_loss,
            mean_predicted=self.mean_predicted,
            mean_observed=self.mean_observed,
            calibration=tuple(self.calibration),
            calibration_error=self.calibration_error,
            lift=self.lift,
        )


def quality_of(predicted: Iterable[float], observed: Iterable[float], amount: bool) -> Quality:
    """The quality of `predicted` against the outcomes `observed` (1 or 0, or amounts).

    AUC ranks the predictions against whether the outcome is positive (exact, ties
    counted half); log loss and the base rate's log loss (predicting the observed
    rate for everyone) are for probabilities only; calibration is by decile of the
    prediction.

    >>> q = quality_of([0.1, 0.7, 0.4, 0.9], [0, 0, 1, 1], amount=False)
    >>> q.auc, round(q.log_loss, 3), round(q.base_log_loss, 3)
    (0.75, 0.583, 0.693)
    """
    p = np.asarray(list(predicted), dtype=np.float64)
    y = np.asarray(list(observed), dtype=np.float64)
    positive = y > 0
    found = Quality(
        examples=len(p),
        positives=int(positive.sum()),
        auc=None,
        log_loss=None,
        base_log_loss=None,
        mean_predicted=float(p.mean()) if len(p) else 0.0,
        mean_observed=float(y.mean()) if len(y) else 0.0,
    )
    if not len(p):
        return found
    if 0 < found.positives < len(p):
        found.auc = float(roc_auc_score(positive, p))
    if not amount:
        clipped = np.clip(p, 1e-12, 1 - 1e-12)
        found.log_loss = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
        rate = min(max(found.mean_observed, 1e-12), 1 - 1e-12)
        found.base_log_loss = float(-(rate * math.log(rate) + (1 - rate) * math.log(1 - rate)))
    order = np.argsort(p, kind="stable")
    deciles = [chunk for chunk in np.array_split(order, 10) if len(chunk)]
    found.calibration = [(float(p[c].mean()), float(y[c].mean())) for c in deciles]
    if found.mean_observed > 0 and len(deciles) == 10:
        found.lift = found.calibration[-1][1] / found.mean_observed
    return found


class PredictionLearner:
    """One prediction's online model and its quality; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.amount = name in _AMOUNTS
        self.scaler = preprocessing.StandardScaler()
        self.classifier = linear_model.LogisticRegression(
            optimizer=optim.SGD(0.01), intercept_lr=0.01, l2=0.0
        )
        self.platt = linear_model.LogisticRegression(  # starts as the identity
            optimizer=optim.SGD(0.02),
            intercept_lr=0.05,
            initializer=optim.initializers.Constant(1.0),
        )
        self.spend = (
            linear_model.LinearRegression(optimizer=optim.SGD(0.01), intercept_lr=0.1, l2=1e-4)
            if self.amount
            else None
        )
        self.positives = 0
        self.negatives = 0
        self.scored: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=QUALITY_WINDOW
        )
        """The latest (prediction made, outcome) pairs of examples that had a prediction."""

    def learn(self, example: Example) -> None:
        """Score the prediction made at the example's snapshot, then learn from it."""
        if example.predicted is not None:
            self.scored.append((example.predicted, example.label))
        x = {
            name: math.log1p(max(value, 0.0))
            for name, value in zip(PREDICTION_INPUTS, example.inputs, strict=True)
        }
        outcome = example.label > 0
        if self.positives + self.negatives:
            z = self._log_odds(self.scaler.transform_one(x))
            self.platt.learn_one({"z": z}, outcome)
        self.scaler.learn_one(x)
        scaled = self.scaler.transform_one(x)
        self.classifier.learn_one(scaled, outcome)
        if self.spend is not None and outcome:
            self.spend.learn_one(scaled, example.label)
        if outcome:
            self.positives += 1
        else:
            self.negatives += 1

    def _log_odds(self, scaled: Mapping[str, float]) -> float:
        weights = self.classifier.weights
        intercept = float(self.classifier.intercept)
        return intercept + sum(float(weights.get(k, 0.0)) * v for k, v in scaled.items())

    def model(self) -> PredictionModel:
        """The coefficients as the core scores them, with the labels learned."""
        means = self.scaler.means
        stds = [math.sqrt(self.scaler.vars[name]) for name in PREDICTION_INPUTS]
        weights = self.classifier.weights
        spend = None
        if self.spend is not None:
            spend_weights = tuple(self.spend.weights.get(n, 0.0) for n in PREDICTION_INPUTS)
            spend = (spend_weights, float(self.spend.intercept))
        return PredictionModel(
            mean=tuple(float(means[name]) for name in PREDICTION_INPUTS),
            std=tuple(s if s > 0 else 1.0 for s in stds),
            weights=tuple(float(weights.get(name, 0.0)) for name in PREDICTION_INPUTS),
            intercept=float(self.classifier.intercept),
            calibration=(float(self.platt.weights.get("z", 1.0)), float(self.platt.intercept))
            if self.positives + self.negatives > 1
            else (1.0, 0.0),
            spend=spend,
            positives=self.positives,
            negatives=self.negatives,
            quality=self.quality().published(),
        )

    def restore(self, model: PredictionModel) -> None:
        """Go on from a published model (a restarted trainer): its scaler, coefficients,
        calibration and counts; the quality window starts empty."""
        count = max(model.positives + model.negatives, 1)
        self.scaler = preprocessing.StandardScaler._from_state(
            counts=dict.fromkeys(PREDICTION_INPUTS, count),
            means=dict(zip(PREDICTION_INPUTS, model.mean, strict=True)),
            vars={n: s**2 for n, s in zip(PREDICTION_INPUTS, model.std, strict=True)},
        )
        self.classifier._weights.update(dict(zip(PREDICTION_INPUTS, model.weights, strict=True)))
        self.classifier.intercept = model.intercept
        self.platt._weights.update({"z": model.calibration[0]})
        self.platt.intercept = model.calibration[1]
        if self.spend is not None and model.spend is not None:
            self.spend._weights.update(dict(zip(PREDICTION_INPUTS, model.spend[0], strict=True)))
            self.spend.intercept = model.spend[1]
        self.positives, self.negatives = model.positives, model.negatives

    def quality(self) -> Quality:
        """The quality over the latest scored examples."""
        return quality_of(
            (p for p, _ in self.scored), (y for _, y in self.scored), amount=self.amount
        )


def prediction_quantiles(
    models: Mapping[str, PredictionModel], rows: Iterable[Sequence[float]]
) -> dict[str, tuple[float, ...]]:
    """Per ready prediction (`prediction.NAME`), its values at p0..p100 over `rows` of raw
    inputs (the trainer's sample of users), scored as the core scores them.

    >>> width = len(PREDICTION_INPUTS)
    >>> model = PredictionModel(mean=(0.0,) * width, std=(1.0,) * width,
    ...     weights=(1.0,) + (0.0,) * (width - 1), intercept=0.0, positives=100, negatives=100)
    >>> rows = [(float(n),) + (0.0,) * (width - 1) for n in range(10)]
    >>> found = prediction_quantiles({"purchase_30d": model}, rows)["prediction.purchase_30d"]
    >>> round(found[0], 3), round(found[100], 3)
    (0.5, 0.909)
    """
    ready = {name: model for name, model in models.items() if model.ready}
    rows = [list(row) for row in rows]
    if not ready or not rows:
        return {}
    scored = score_predictions({n: m.coefficients() for n, m in ready.items()}, rows)
    points = np.linspace(0, 100, PERCENTILE_POINTS)
    found = {}
    for index, name in enumerate(PREDICTIONS):
        if name in ready:
            values = np.array([row[index] for row in scored], dtype=np.float64)
            line = np.maximum.accumulate(np.percentile(values, points))
            found[PREDICTION_PREFIX + name] = tuple(line.tolist())
    return found


class Predictions:
    """A learner per prediction: the trainer's side of docs/predictions.md."""

    def __init__(self) -> None:
        self.learners = {name: PredictionLearner(name) for name in PREDICTIONS}
        self.learned = 0

    def learn(self, example: Example) -> None:
        """Learn one labelled example (already deduplicated)."""
        self.learners[example.prediction].learn(example)
        self.learned += 1

    def restore(self, models: Mapping[str, PredictionModel]) -> None:
        """Go on from the models of a published snapshot."""
        for name, model in models.items():
            self.learners[name].restore(model)

    def models(self) -> dict[str, PredictionModel]:
        """Every prediction that has learned something, by name; one whose coefficients are
        not finite (its learning diverged) is left out, so gated, with a warning."""
        found = {}
        for name, learner in self.learners.items():
            if not learner.positives + learner.negatives:
                continue
            try:
                found[name] = learner.model()
            except ValidationError as error:
                log.warning("prediction %s left out of the snapshot: %s", name, error)
        return found
