"""Prediction quality as it is used, on purchases replayed in event-time order: the core
takes an example of every customer at every UTC midnight and labels it 30 days on,
the trainer learns each one as it matures, and a new model is in force every week
(docs/predictions.md, "Quality targets"). On CDNOW's 1/10 sample, the predictions made
as of 1997-09-30 are scored against the purchases of the following 30 days; on a
population drawn from a BG/NBD process with known parameters, against the probabilities
the parameters imply."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import lifetimes
import numpy as np
from sklearn.metrics import roc_auc_score

from processors._core import Action
from processors.classifier import Classifier
from processors.events import EventKind
from processors.examples import Example, unpack_examples
from processors.model import ClusterAssigner
from processors.prediction_training import PredictionLearner, quality_of
from processors.wire import Advance
from tests.oracle import labelled_on
from tests.steps import NOBODY, predicting, step

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
    models = {"purchase_30d": learner.model()} if learner.positives else {}
    snapshot = predicting(models, version=version)
    return Classifier.of(NOBODY, ClusterAssigner(snapshot), examples=True)


def replay(actions: list[Action], first: int, end: int) -> Iterator[Example]:
    """The `purchase_30d` examples of `actions` (from event time `first` to `end`) as the
    workers and the trainer make them, each once learned: a week of events at a time
    through the core, its matured examples learned, a new model in force every week."""
    learner = PredictionLearner("purchase_30d")
    classifier = classifier_with(learner, 1)
    stored: dict = {}
    timers: dict[str, int] = {}
    by_week: dict[int, list[Action]] = defaultdict(list)
    for action in actions:
        if action.timestamp < end:
            by_week[int(action.timestamp) // WEEK].append(action)
    for number, week in enumerate(range(first // WEEK, end // WEEK + 1)):
        until = float(min((week + 1) * WEEK, end))
        due = sorted((moment, user) for user, moment in timers.items() if moment <= until)
        outcome = step(
            [*by_week.get(week, []), Advance(until)], stored, classifier, due=due, firing=until
        )
        stored.update(outcome.users)
        for user_id, moment in outcome.timers.items():
            if moment is None:
                timers.pop(user_id, None)
            else:
                timers[user_id] = moment
        for example in unpack_examples(outcome.examples) if outcome.example_count else ():
            if example.prediction == "purchase_30d":
                yield example
                learner.learn(example)  # as the trainer does, once it matured
        classifier = classifier_with(learner, number + 2)


def test_cdnow_purchase_30d_as_of_the_calibration_end_ranks_and_calibrates():
    actions = orders()
    target_day = midnight("19971001") // DAY  # the snapshot of the events up to 1997-09-30
    end = labelled_on(target_day + 30) * DAY  # the midnight that gives its 30-day labels
    scored = {
        example.user_id: (example.predicted, example.label)
        for example in replay(actions, int(actions[0].timestamp), end)
        if example.day == target_day and example.predicted is not None
    }
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


def bgnbd_orders(customers: int, seed: int, days: int) -> tuple[list[Action], dict]:
    """Customers drawn from a BG/NBD process with known parameters: each buys at a rate
    `lambda ~ Gamma(r, alpha)` a day while alive, and after each purchase leaves for good with
    probability `p ~ Beta(a, b)`; they arrive over the first 60 days. Their orders, and
    what the probability of a purchase within 30 days needs: each one's first purchase
    and the parameters."""
    r, alpha, a, b = 0.6, 12.0, 0.7, 2.8
    rng = np.random.default_rng(seed)
    start = midnight("20250101")
    found, births = [], {}
    for index in range(customers):
        rate, leave = rng.gamma(r, 1 / alpha), rng.beta(a, b)
        moment = rng.uniform(0, 60) * DAY
        user = f"c{index:04d}"
        births[user] = start + moment
        number = 0
        while moment < days * DAY:
            value = float(round(rng.uniform(10, 90), 2))
            found.append(
                Action(user, f"{user}-{number}", EventKind.ORDER, start + moment, value=value)
            )
            number += 1
            if rng.random() < leave:
                break
            moment += rng.exponential(1 / rate) * DAY
    found.sort(key=lambda action: action.timestamp)
    return found, {"r": r, "alpha": alpha, "a": a, "b": b, "births": births}


def true_probability(params: dict, times: list[float], birth: float, moment: float) -> float:
    """P(a purchase within 30 days after `moment` | the purchases before it), under the
    known parameters: P(alive) (BG/NBD) times 1 - E[e^(-30 lambda)] over its posterior."""
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    x = len(times) - 1
    age, last = (moment - birth) / DAY, (times[-1] - birth) / DAY
    alive = 1.0
    if x > 0:
        alive = 1 / (1 + a / (b + x - 1) * ((alpha + age) / (alpha + last)) ** (r + x))
    return alive * (1 - ((alpha + age) / (alpha + age + 30)) ** (r + x))


def test_on_a_known_bgnbd_population_auc_and_calibration_come_close_to_the_truth():
    days = 330
    actions, params = bgnbd_orders(1_500, seed=3, days=days)
    start = midnight("20250101")
    times: dict[str, list[float]] = defaultdict(list)
    for action in actions:
        times[action.user_id].append(action.timestamp)
    judged = []
    for example in replay(actions, start, start + days * DAY):
        made_at = example.day * DAY
        if example.predicted is not None and made_at >= start + 180 * DAY:
            before = [t for t in times[example.user_id] if t < made_at]
            truth = true_probability(params, before, params["births"][example.user_id], made_at)
            judged.append((example.predicted, truth, example.label))

    predicted, truth, observed = (np.array(column) for column in zip(*judged, strict=True))
    model_auc = roc_auc_score(observed > 0, predicted)
    true_auc = roc_auc_score(observed > 0, truth)
    quality = quality_of(predicted, observed, amount=False)
    print(
        f"BG/NBD population: {len(judged)} examples, AUC {model_auc:.3f} against the true "
        f"probabilities' {true_auc:.3f}, calibration error {quality.calibration_error:.3f}"
    )
    assert model_auc >= true_auc - 0.03
    assert quality.calibration_error is not None
    assert quality.calibration_error <= 0.03
