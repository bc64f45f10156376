"""Predictions in the core against the plain oracle: the inputs, the scores, the rules
that compare them, and the timers that move users at the UTC midnights where whole-day
inputs change."""

import random

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from processors._core import PREDICTION_INPUTS, PREDICTIONS, Action
from processors.classifier import Classifier
from processors.events import EventKind
from processors.model import (
    Cluster,
    ClusterAssigner,
    ModelSnapshot,
    PredictionModel,
)
from processors.rules import RuleFileError, parse_rules
from processors.wire import Advance
from tests import oracle
from tests.steps import run_as_worker, step

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


def snapshot(models: dict[str, PredictionModel], quantiles=None, version=1) -> ModelSnapshot:
    """A snapshot of one cluster that scores `models`."""
    return ModelSnapshot(
        version=version,
        generation=1,
        reason="initial",
        created_at=0.0,
        features=("orders_lifetime",),
        mean=(0.0,),
        std=(1.0,),
        clusters=(Cluster(id="c1", name="everyone", centroid=(0.0,), share=1.0),),
        min_events=0,
        quantiles=quantiles or {},
        predictions=models,
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
    model = ClusterAssigner(snapshot(models, quantiles))
    coefficients = {name: model.coefficients() for name, model in models.items() if model.ready}
    return Classifier.of(RULES, model), coefficients


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
        st.integers(0, 120 * DAY),
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
    changes, users, _ = run_as_worker(
        items, classifier, lateness=0.0, batch_sizes=[3] * len(items), delay=0.0
    )
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
    classifier = Classifier.of(RULES, ClusterAssigner(snapshot({"purchase_30d": model})))
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
    assert snapshot({"purchase_30d": good}).scored()["purchase_30d"] == good.coefficients()
    with pytest.raises(ValueError, match=f"needs {len(PREDICTION_INPUTS)} coefficients"):
        PredictionModel(mean=(0.0,), std=(1.0,), weights=(1.0,), intercept=0.0)
