"""Prediction quality as it is used, on CDNOW's 1/10 sample replayed in event-time order:
the core takes an example of every customer at every UTC midnight and labels it 30 days
later, the trainer learns each one as it matures, and a new model is in force every
week; the predictions made as of 1997-09-30 are scored against the purchases of the
following 30 days (docs/predictions.md, "Quality targets")."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import lifetimes
import numpy as np
from sklearn.metrics import roc_auc_score

from processors._core import Action
from processors.classifier import Classifier
from processors.events import EventKind
from processors.examples import unpack_examples
from processors.model import Cluster, ClusterAssigner, ModelSnapshot
from processors.prediction_training import PredictionLearner
from processors.wire import Advance
from tests.steps import NOBODY, step

DAY = 86_400
WEEK = 7 * DAY
CDNOW = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_sample.txt"


def midnight(text: str) -> int:
    return int(datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC).timestamp())


def orders() -> list[Action]:
    """Every purchase of the sample as an `Order Completed` at noon of its day."""
    found = []
    for number, line in enumerate(CDNOW.read_text().splitlines()):
        customer, _, day, _, amount = line.split()
        moment = float(midnight(day) + DAY // 2)
        found.append(Action(customer, f"o{number}", EventKind.ORDER, moment, value=float(amount)))
    return sorted(found, key=lambda action: action.timestamp)


def classifier_with(learner: PredictionLearner, version: int) -> Classifier:
    """The rules no one meets, with a snapshot scoring what `learner` learned."""
    snapshot = ModelSnapshot(
        version=version,
        generation=1,
        reason="update",
        created_at=0.0,
        features=("orders_lifetime",),
        mean=(0.0,),
        std=(1.0,),
        clusters=(Cluster(id="c1", name="everyone", centroid=(0.0,), share=1.0),),
        min_events=0,
        quantiles={},
        predictions={"purchase_30d": learner.model()} if learner.positives else {},
    )
    return Classifier.of(NOBODY, ClusterAssigner(snapshot), examples=True)


def test_cdnow_purchase_30d_as_of_the_calibration_end_ranks_and_calibrates():
    actions = orders()
    target_day = midnight("19971001") // DAY  # the snapshot of the events up to 1997-09-30
    end = (target_day + 30) * DAY  # its 30-day label matures then
    learner = PredictionLearner("purchase_30d")
    classifier = classifier_with(learner, 1)
    stored: dict = {}
    timers: dict[str, int] = {}
    scored: dict[str, tuple[float, float]] = {}
    by_week: dict[int, list[Action]] = defaultdict(list)
    for action in actions:
        if action.timestamp < end:
            by_week[int(action.timestamp) // WEEK].append(action)
    first, last = min(by_week), end // WEEK
    for number, week in enumerate(range(first, last + 1)):
        until = float(min((week + 1) * WEEK, end))
        due = sorted((moment, user) for user, moment in timers.items() if moment <= until)
        outcome = step(
            [*by_week.get(week, []), Advance(until)],
            stored,
            classifier,
            due=due,
            firing=until,
        )
        stored.update(outcome.users)
        for user_id, moment in outcome.timers.items():
            if moment is None:
                timers.pop(user_id, None)
            else:
                timers[user_id] = moment
        for example in unpack_examples(outcome.examples) if outcome.example_count else ():
            if example.prediction != "purchase_30d":
                continue
            if example.day == target_day and example.predicted is not None:
                scored[example.user_id] = (example.predicted, example.label)
            learner.learn(example)  # as the trainer does, once it matured
        classifier = classifier_with(learner, number + 2)  # a new model in force each week

    assert len(scored) == len({a.user_id for a in actions if a.timestamp < target_day * DAY})
    predicted = np.array([p for p, _ in scored.values()])
    observed = np.array([y for _, y in scored.values()])
    auc = roc_auc_score(observed > 0, predicted)
    print(
        f"CDNOW purchase_30d as of 1997-09-30: {len(scored)} customers, AUC {auc:.3f}, "
        f"mean prediction {predicted.mean():.3f}, observed rate {observed.mean():.3f}"
    )
    assert auc >= 0.78
    assert abs(predicted.mean() - observed.mean()) <= 0.05
