"""Predictions in the core against the plain oracle: the inputs, the scores, the rules
that compare them, and the timers that move users at the UTC midnights where whole-day
inputs change."""

import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from processors._core import (
    LABEL_EVERY_DAYS,
    PREDICTION_HORIZON_DAYS,
    PREDICTION_INPUTS,
    PREDICTIONS,
    Action,
    User,
)
from processors.classifier import Classifier
from processors.events import EventKind
from processors.examples import Example, unpack_examples
from processors.model import (
    Cluster,
    ClusterAssigner,
    ModelSnapshot,
    PredictionModel,
)
from processors.prediction_training import PredictionLearner, Predictions
from processors.rules import RuleFileError, parse_rules
from processors.wire import Absorb, Advance, Erase
from tests import oracle
from tests.steps import predicting, run_as_worker, step

DAY = 86_400
START = 1_790_000_000 - 1_790_000_000 % DAY  # a UTC midnight
RULES_TEXT = """
segments:
  - name: Likely Buyers
    description: likely to order within 30 days
    condition: {prediction: purchase_30d, op: ">=", value: 0.5}
  - name: Drifting
    description: likely to be gone for 90 days, among buyers
    condition:
      all:
        - {prediction: churn_90d, op: between, value: [0.4, 0.9]}
        - {feature: orders_lifetime, op: ">=", value: 1}
  - name: Top Value
    description: the top fifth by expected revenue
    condition: {prediction: revenue_90d, op: ">=", value: p80(revenue_90d)}
"""
RULES = parse_rules(RULES_TEXT)
KINDS = {
    "page": EventKind.PAGE,
    "view": EventKind.PRODUCT_VIEWED,
    "add": EventKind.CART_ADD,
    "order": EventKind.ORDER,
}


def prediction_model(rng: random.Random, *, amount: bool, ready: bool = True) -> PredictionModel:
    width = len(PREDICTION_INPUTS)
    return PredictionModel(
        mean=tuple(rng.uniform(0, 2) for _ in range(width)),
        std=tuple(rng.uniform(0.5, 2) for _ in range(width)),
        weights=tuple(rng.uniform(-1.5, 1.5) for _ in range(width)),
        intercept=rng.uniform(-1, 1),
        calibration=(rng.uniform(0.5, 1.5), rng.uniform(-0.5, 0.5)),
        spend=(tuple(rng.uniform(-20, 20) for _ in range(width)), 50.0) if amount else None,
        positives=100 if ready else 99,
        negatives=400,
    )


def classifier_of(seed: int, gated: str | None = None) -> tuple[Classifier, dict[str, dict]]:
    """Random coefficients for every prediction (`gated` one short of its labels), with the
    top-fifth threshold of the expected revenue; the coefficients the oracle reads."""
    rng = random.Random(seed)
    models = {
        name: prediction_model(rng, amount=name == "revenue_90d", ready=name != gated)
        for name in PREDICTIONS
    }
    quantiles = {"prediction.revenue_90d": tuple(float(q) for q in range(0, 202, 2))}
    assigner = ClusterAssigner(predicting(models, quantiles))
    coefficients = {name: m.coefficients() for name, m in models.items() if m.ready}
    return Classifier.of(RULES, assigner, examples=True), coefficients


def oracle_event(action: Action, kind: str) -> oracle.Event:
    """The event as the oracle reads it."""
    named = {"page": "page", "view": "product_viewed", "add": "cart_add", "order": "order"}
    return oracle.Event(
        action.user_id, action.message_id, named[kind], action.timestamp, action.value
    )


streams = st.lists(
    st.tuples(
        st.sampled_from(["u0", "u1"]),
        st.sampled_from(list(KINDS)),
        st.one_of(st.integers(0, 120 * DAY), st.integers(0, 120).map(lambda d: d * DAY)),
        st.sampled_from([0.0, 12.5, 80.0, 310.99]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(
    sent=streams,
    seed=st.integers(0, 10_000),
    gated=st.sampled_from([None, "purchase_30d"]),
    tail=st.integers(0, 100 * DAY),
)
def test_the_core_scores_and_segments_as_the_oracle_does_at_every_moment(sent, seed, gated, tail):
    classifier, coefficients = classifier_of(seed, gated)
    ordered = sorted(sent, key=lambda s: s[2])
    actions = [
        Action(user, f"m{n}", KINDS[kind], float(START + offset), value=value)
        for n, (user, kind, offset, value) in enumerate(ordered)
    ]
    end = START + ordered[-1][2] + tail
    items = [*actions, Advance(float(end))]
    packed: list[bytes] = []
    changes, users, _ = run_as_worker(
        items, classifier, lateness=0.0, batch_sizes=[3] * len(items), delay=0.0, examples=packed
    )
    examples = [example for message in packed for example in unpack_examples(message)]
    everyone = {
        user: [
            oracle_event(a, s[1])
            for a, s in zip(actions, ordered, strict=True)
            if a.user_id == user
        ]
        for user in users
    }
    rules = yaml.safe_load(RULES_TEXT)
    thresholds = dict(classifier.thresholds)
    for user_id, user in users.items():
        # the predictions as of the end, input by input and score by score
        events = everyone[user_id]
        inputs = oracle.prediction_inputs(events, end)
        predicted = user.predictions(classifier.core, float(end))
        for name in PREDICTIONS:
            model = coefficients.get(name)
            expected = None if model is None else oracle.score(model, inputs)
            assert predicted[name] == expected, (user_id, name)
        # membership at every event, every midnight and the end, from the changes
        moments = {int(e.timestamp) for e in events} | {end}
        first = int(min(e.timestamp for e in events))
        moments |= set(range(first - first % DAY + DAY, end + 1, DAY))
        mine = [c for c in changes if c.user_id == user_id]
        for moment in sorted(moments):
            held: set[str] = set()
            for change in mine:
                if change.event_time <= moment:
                    held = (held | set(change.entered)) - set(change.exited)
            expected = oracle.segments(rules, events, moment, thresholds, coefficients)
            assert held == expected, (user_id, moment)
        # an example per snapshot midnight after the first event and horizon reached
        mine = [e for e in examples if e.user_id == user_id]
        assert len({e.key for e in mine}) == len(mine)
        expected_keys = {
            (user_id, name, day)
            for day in range(first // DAY + 1, end // DAY + 1)
            for name, horizon in zip(PREDICTIONS, PREDICTION_HORIZON_DAYS, strict=True)
            if oracle.labelled_on(day + horizon) * DAY <= end
        }
        assert {e.key for e in mine} == expected_keys
        for example in mine:
            midnight = example.day * DAY
            horizon = PREDICTION_HORIZON_DAYS[PREDICTIONS.index(example.prediction)]
            assert example.matured == oracle.labelled_on(example.day + horizon)
            before = [e for e in events if e.timestamp < midnight]
            inputs = oracle.prediction_inputs(before, midnight)
            assert example.inputs == tuple(float(np.float32(v)) for v in inputs), example
            model = coefficients.get(example.prediction)
            made = None if model is None else float(np.float32(oracle.score(model, inputs)))
            assert example.predicted == made, example
            assert example.label == oracle.label(example.prediction, events, example.day)


def test_an_idle_user_leaves_at_the_utc_midnight_their_score_falls():
    width = len(PREDICTION_INPUTS)
    idle = PREDICTION_INPUTS.index("idle_days")
    weights = [0.0] * width
    weights[idle] = -3.0  # every idle day lowers the odds
    model = PredictionModel(
        mean=(0.0,) * width,
        std=(1.0,) * width,
        weights=tuple(weights),
        intercept=3.0,
        positives=100,
        negatives=100,
    )
    classifier = Classifier.of(RULES, ClusterAssigner(predicting({"purchase_30d": model})))
    seen = step([Action("u", "m1", EventKind.PAGE, START + 3_600.0)], {}, classifier)
    assert seen.changes[0].entered == ("Likely Buyers",)
    # sigmoid(3 - 3 log1p(d)) falls under 0.5 from d = 2 days (e - 1 < 2)
    assert seen.users["u"].due == START + DAY
    later = step(
        [Advance(START + 3 * DAY + 5.0)],
        seen.users,
        classifier,
        partition_users=["u"],
        due=[(START + DAY, "u")],
        firing=START + 3 * DAY + 5.0,
    )
    (left,) = later.changes
    assert (left.exited, left.reason, left.event_time) == (
        ("Likely Buyers",),
        "time",
        START + 2 * DAY,
    )


def test_a_gated_prediction_is_null_and_meets_no_condition():
    classifier, _ = classifier_of(3, gated="purchase_30d")
    users = step([Action("u", "m1", EventKind.ORDER, START + 5.0, value=30.0)], {}, classifier)
    user = users.users["u"]
    predicted = user.predictions(classifier.core)
    assert predicted["purchase_30d"] is None
    assert predicted["churn_90d"] is not None
    assert "Likely Buyers" not in user.segments
    assert user.document("u", classifier.core)["predictions"] == predicted
    ungated = Classifier.of(RULES, None)
    assert user.predictions(ungated.core) == dict.fromkeys(PREDICTIONS)


def test_prediction_conditions_are_validated_with_line_and_field():
    text = (
        "segments:\n"
        "  - name: A\n"
        "    description: d\n"
        "    condition: {prediction: purchase_90d, op: '>=', value: 0.5}\n"
        "  - name: B\n"
        "    description: d\n"
        "    condition: {prediction: revenue_90d, op: '>=', value: p90(orders_30d)}\n"
        "  - name: C\n"
        "    description: d\n"
        "    condition: {prediction: churn_90d, op: between, value: [0.9, 0.1]}\n"
    )
    with pytest.raises(RuleFileError) as refused:
        parse_rules(text)
    message = str(refused.value)
    assert "line 4, segments[0].condition.prediction.prediction: unknown prediction" in message
    assert "line 7, segments[1].condition.prediction.value: " in message
    assert "'orders_30d' is none" in message
    assert "line 10, segments[2].condition.prediction.value: " in message


def test_snapshots_refuse_prediction_coefficients_of_the_wrong_shape():
    rng = random.Random(1)
    good = prediction_model(rng, amount=False)
    assert predicting({"purchase_30d": good}).scored()["purchase_30d"] == good.coefficients()
    with pytest.raises(ValueError, match=f"needs {len(PREDICTION_INPUTS)} coefficients"):
        PredictionModel(mean=(0.0,), std=(1.0,), weights=(1.0,), intercept=0.0)


def days_later(users, classifier, days: int, user_id: str = "u"):
    """The step that brings `users` to `days` UTC midnights after START, firing their
    timers."""
    until = float(START + days * DAY)
    return step(
        [Advance(until)],
        users,
        classifier,
        partition_users=list(users),
        due=[(users[user_id].due, user_id)],
        firing=until,
    )


def test_pending_examples_are_kept_in_the_row_merged_with_an_id_and_erased_with_the_user():
    classifier, _ = classifier_of(5)
    bought = step([Action("u", "m1", EventKind.ORDER, START + 5.0, value=30.0)], {}, classifier)
    later = days_later(bought.users, classifier, 3)
    user = later.users["u"]
    start_day = START // DAY
    assert user.pending == [start_day + 1, start_day + 2, start_day + 3]
    assert later.example_count == 0  # no horizon reached: nothing learned early
    assert User.from_bytes(user.to_bytes()) == user

    anonymous = step([Action("a", "m2", EventKind.PAGE, START + 7.0)], {}, classifier)
    anonymous = days_later(anonymous.users, classifier, 5, "a").users["a"]
    absorbed = step([Absorb("a", "u", anonymous.to_bytes())], later.users, classifier)
    assert absorbed.users["u"].pending == [start_day + day for day in range(1, 6)]

    # erased, the user's state goes (the worker deletes it); back, they start afresh
    back = Action("u", "m3", EventKind.PAGE, START + 3 * DAY + 9.0)
    erased = step([Erase("u"), back], later.users, classifier)
    assert erased.erased == []
    assert erased.users["u"].pending == []
    assert step([Erase("u")], later.users, classifier).erased == ["u"]


def test_examples_go_out_at_the_first_labelling_midnight_from_their_horizon_and_no_sooner():
    classifier, _ = classifier_of(6)
    bought = step([Action("u", "m1", EventKind.ORDER, START + 5.0, value=30.0)], {}, classifier)
    start_day = START // DAY
    labelled = oracle.labelled_on(start_day + 1 + 30) - start_day  # the first snapshot's
    assert labelled - (1 + 30) < LABEL_EVERY_DAYS
    assert days_later(bought.users, classifier, labelled - 1).example_count == 0
    at_labels = days_later(bought.users, classifier, labelled)
    examples = unpack_examples(at_labels.examples)
    assert (examples[0].prediction, examples[0].day - start_day, examples[0].label) == (
        "purchase_30d",
        1,
        0.0,  # the order was on the day before the first snapshot
    )
    assert {e.matured for e in examples} == {start_day + labelled}
    assert all(e.day + 30 <= e.matured for e in examples)
    at_97 = days_later(at_labels.users, classifier, 97)
    late = unpack_examples(at_97.examples)
    assert all(e.matured <= start_day + 97 for e in late)
    churn = [e for e in late if e.prediction == "churn_90d"]
    assert churn[0].day - start_day == 1  # the first snapshot, after the order
    assert all(e.label == 1.0 for e in churn)  # no event since


def test_a_restarted_trainer_goes_on_from_the_published_coefficients():
    rng = random.Random(8)
    learner = PredictionLearner("revenue_90d")
    for n in range(300):
        inputs = tuple(float(rng.randint(0, 9)) for _ in PREDICTION_INPUTS)
        spent = rng.uniform(20, 90) if inputs[0] > 4 else 0.0
        learner.learn(Example(f"u{n}", "revenue_90d", 0, 90, inputs, None, spent))
    published = learner.model()
    assert published.spend is not None
    resumed = PredictionLearner("revenue_90d")
    resumed.restore(published)
    assert resumed.model().model_copy(update={"quality": None}) == published.model_copy(
        update={"quality": None}
    )


def test_a_prediction_whose_learning_diverged_is_left_out_of_the_snapshot():
    predictions = Predictions()
    inputs = (1.0,) * len(PREDICTION_INPUTS)
    for name in ("purchase_30d", "churn_90d"):
        predictions.learn(Example("u", name, 0, 90, inputs, None, 1.0))
    predictions.learners["churn_90d"].classifier._weights.update({"orders_lifetime": math.inf})
    assert set(predictions.models()) == {"purchase_30d"}


@settings(max_examples=40, deadline=None)
@given(sent=streams, tail=st.integers(0, 100 * DAY), size=st.integers(1, 6))
def test_taking_examples_moves_no_one_sooner_or_later(sent, tail, size):
    """Predictions on or off, users enter and leave segments and move between clusters at
    the same moments: a midnight's timer with nothing else due only takes the snapshot."""
    snapshot = ModelSnapshot(
        version=1,
        generation=1,
        reason="initial",
        created_at=0.0,
        features=("days_since_last_seen", "orders_lifetime"),
        mean=(0.0, 0.0),
        std=(1.0, 1.0),
        clusters=(
            Cluster(id="c1", name="recent", centroid=(0.0, 0.0), share=0.5),
            Cluster(id="c2", name="lapsing", centroid=(20.0, 1.0), share=0.5),
        ),
        min_events=0,
        quantiles={},
    )
    shop = parse_rules(Path("processors/rules/default.yaml").read_text(encoding="utf-8"))
    ordered = sorted(sent, key=lambda s: s[2])
    actions = [
        Action(user, f"m{n}", KINDS[kind], float(START + offset), value=value)
        for n, (user, kind, offset, value) in enumerate(ordered)
    ]
    items = [*actions, Advance(float(START + ordered[-1][2] + tail))]
    moves = []
    for examples in (False, True):
        classifier = Classifier.of(shop, ClusterAssigner(snapshot), examples=examples)
        changes, _, _ = run_as_worker(
            items, classifier, lateness=0.0, batch_sizes=[size] * len(items), delay=0.0
        )
        moves.append(
            [(c.user_id, c.entered, c.exited, c.cluster, c.event_time, c.reason) for c in changes]
        )
    assert moves[0] == moves[1]
