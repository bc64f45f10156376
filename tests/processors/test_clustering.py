"""Online clustering: snapshots, stable ids, merging, drift, resume, and placing users."""

import random

import numpy as np
import pytest

from processors._core import FEATURE_NAMES
from processors.classifier import Classifier
from processors.cluster_names import name_clusters
from processors.events import Action, EventKind
from processors.model import (
    COLD_START,
    FEATURE_INDEX,
    ClusterAssigner,
    ModelSnapshot,
    SnapshotError,
    parse_snapshot,
)
from processors.rules import parse_rules
from processors.training import OnlineClusterer, TrainerConfig
from tests.steps import segments_of
from tests.steps import step as partition_step

# Three kinds of shopper, by the features that set them apart.
KINDS = {
    "buyer": {"orders_lifetime": 12, "revenue_30d": 400, "avg_order_value": 90},
    "browser": {"product_views_7d": 80, "sessions_7d": 9, "searches_7d": 20},
    "lapsed": {"days_since_last_seen": 120, "days_since_first_seen": 300},
}
CONFIG = TrainerConfig(k_min=2, k_max=5, min_samples=300, min_events=5, drift_warmup=300, seed=3)


def row(kind, rng, shift=0.0, events=20):
    values = [0.0] * len(FEATURE_NAMES)
    values[FEATURE_INDEX["events_lifetime"]] = events
    values[FEATURE_INDEX["days_since_first_seen"]] = 30
    values[FEATURE_INDEX["mobile_share_30d"]] = 0.5
    for name, mean in KINDS[kind].items():
        values[FEATURE_INDEX[name]] = max(0.0, rng.gauss(mean * (1 + shift), mean * 0.1))
    return values


def population(n, rng, kinds=tuple(KINDS), offset=0, shift=0.0):
    return [
        (f"u{offset + i}", kinds[i % len(kinds)], row(kinds[i % len(kinds)], rng, shift))
        for i in range(n)
    ]


def learned(model, users):
    for user_id, _, values in users:
        model.learn(user_id, values)


def test_first_snapshot_waits_for_enough_warm_users_then_finds_the_kinds():
    rng = random.Random(1)
    model = OnlineClusterer(CONFIG)
    cold = [(f"c{i}", row("buyer", rng, events=2)) for i in range(400)]
    for user_id, values in cold:
        model.learn(user_id, values)
    assert model.snapshot(now=1.0) is None  # cold-start users are not clustered
    users = population(600, rng)
    learned(model, users)
    snapshot = model.snapshot(now=2.0)
    assert (snapshot.version, snapshot.generation, snapshot.reason) == (1, 1, "initial")
    assert len(snapshot.clusters) == 3
    assigner = ClusterAssigner(snapshot)
    placed = assigner.assign(np.array([values for _, _, values in users]))
    by_kind = {}
    for (_, kind, _), cluster in zip(users, placed, strict=True):
        by_kind.setdefault(kind, set()).add(cluster)
    assert all(len(clusters) == 1 for clusters in by_kind.values())
    assert len({next(iter(c)) for c in by_kind.values()}) == 3
    names = snapshot.names()
    assert "repeat buyer" in names[next(iter(by_kind["buyer"]))]
    assert "lapsed" in names[next(iter(by_kind["lapsed"]))]
    assert assigner.assign(np.array([row("buyer", rng, events=1)])) == [COLD_START]
    assert sum(c.size for c in snapshot.clusters) == 600
    assert snapshot.quantiles["orders_lifetime"][100] >= 12


def test_ids_stay_stable_across_updates_and_reclustering():
    rng = random.Random(2)
    model = OnlineClusterer(CONFIG)
    users = population(900, rng)
    learned(model, users)
    first = model.snapshot(now=1.0)
    learned(model, population(900, rng))
    update = model.snapshot(now=2.0)
    assert (update.version, update.generation, update.reason) == (2, 1, "update")
    again = model.recluster(now=3.0)
    assert (again.version, again.generation, again.reason) == (3, 2, "recluster")
    rows = np.array([values for _, _, values in users])
    before = ClusterAssigner(first).assign(rows)
    assert ClusterAssigner(update).assign(rows) == before
    assert ClusterAssigner(again).assign(rows) == before


def test_clusters_under_the_minimum_share_are_merged():
    rng = random.Random(3)
    config = TrainerConfig(k_min=3, k_max=3, min_samples=300, min_share=0.05, seed=3)
    model = OnlineClusterer(config)
    users = population(1000, rng, kinds=("buyer", "browser"))
    users += population(20, rng, kinds=("lapsed",), offset=5000)  # 2 %
    learned(model, users)
    snapshot = model.snapshot(now=1.0)
    assert len(snapshot.clusters) == 2
    assert min(c.share for c in snapshot.clusters) >= 0.05


def test_drift_triggers_reclustering_with_its_reason():
    rng = random.Random(4)
    model = OnlineClusterer(CONFIG)
    learned(model, population(900, rng, kinds=("buyer", "browser")))
    first = model.snapshot(now=1.0)
    learned(model, population(900, rng, kinds=("buyer", "browser"), offset=1000))
    assert model.snapshot(now=2.0).reason == "update"
    assert model.drifts == 0
    # The lapsed kind appears and the browsers change: distances to the centroids jump.
    learned(model, population(3000, rng, kinds=("lapsed", "browser"), offset=2000, shift=2.0))
    assert model.drifts >= 1
    drifted = model.snapshot(now=3.0)
    assert (drifted.reason, drifted.generation) == ("drift", first.generation + 1)
    buyer_id = ClusterAssigner(first).assign(np.array([row("buyer", rng)]))
    assert ClusterAssigner(drifted).assign(np.array([row("buyer", rng)])) == buyer_id


def test_a_restarted_trainer_resumes_from_its_last_snapshot():
    rng = random.Random(5)
    model = OnlineClusterer(CONFIG)
    users = population(900, rng)
    learned(model, users)
    last = model.snapshot(now=1.0)
    resumed = OnlineClusterer(CONFIG)
    resumed.restore(parse_snapshot(last.to_json()), list(model.sample.rows.items()))
    learned(resumed, population(300, rng, offset=9000))
    following = resumed.snapshot(now=2.0)
    assert (following.version, following.generation, following.reason) == (2, 1, "update")
    rows = np.array([values for _, _, values in users])
    assert ClusterAssigner(following).assign(rows) == ClusterAssigner(last).assign(rows)
    assert following.sample_users == 1200


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (lambda d: d.update(std=[0.0] * len(d["std"])), "std finite and positive"),
        (lambda d: d["clusters"][0].update(centroid=[1.0]), "finite centroid values"),
        (lambda d: d.update(features=["no_such_feature", *d["features"][1:]]), "unknown features"),
        (lambda d: d["clusters"][1].update(id=d["clusters"][0]["id"]), "ids must be unique"),
        (lambda d: d["quantiles"]["orders_30d"].reverse(), "must not decrease"),
        (lambda d: d.pop("version"), "version: Field required"),
    ],
)
def test_corrupt_snapshots_are_refused(corrupt, problem):
    import orjson

    rng = random.Random(6)
    model = OnlineClusterer(CONFIG)
    learned(model, population(900, rng))
    document = orjson.loads(model.snapshot(now=1.0).to_json())
    document["quantiles"]["orders_30d"] = list(range(101))
    corrupt(document)
    with pytest.raises(SnapshotError, match=problem):
        parse_snapshot(orjson.dumps(document))
    with pytest.raises(SnapshotError):
        parse_snapshot(b"{not json")


def test_names_are_distinct():
    features = ("revenue_30d", "mobile_share_30d", "sessions_7d")
    names = name_clusters(
        features, [(2.0, 1.0, 0.0), (2.0, 1.0, 0.6), (2.0, 1.0, 0.6), (0.1, 0.0, 0.0)]
    )
    assert names == [
        "high spend · mobile",
        "high spend · mobile · frequent visits #1",
        "high spend · mobile · frequent visits #2",
        "average",
    ]


def test_a_partition_step_places_touched_users_and_publishes_cluster_moves():
    rng = random.Random(7)
    model = OnlineClusterer(TrainerConfig(k_min=2, k_max=2, min_samples=200, min_events=3, seed=1))
    for i in range(400):
        values = row("buyer" if i % 2 else "browser", rng)
        model.learn(f"p{i}", values)
    assigner = ClusterAssigner(model.snapshot(now=0.0))
    rules = parse_rules(
        "segments:\n  - {name: Buyer, description: d, condition: {feature: orders_lifetime, op: '>=', value: 1}}\n"
    )
    classifier = Classifier.of(rules, assigner)
    views = [
        Action("b", f"v{i}", EventKind.PRODUCT_VIEWED, 100.0 + i, categories=("shoes",))
        for i in range(2)
    ]
    step = partition_step(views, {}, classifier, dedup_before=0)
    [vector] = step.vectors
    assert (vector.user_id, vector.values[FEATURE_INDEX["events_lifetime"]]) == ("b", 2)
    assert step.users["b"].cluster == COLD_START
    assert [(c.cluster, c.previous_cluster, c.model_version) for c in step.changes] == [
        (COLD_START, None, 1)
    ]
    more = [
        Action("b", f"w{i}", EventKind.PRODUCT_VIEWED, 200.0 + i, categories=("shoes",))
        for i in range(80)
    ]
    step = partition_step(more, step.users, classifier, dedup_before=0)
    [change] = step.changes  # one cluster move for the whole step
    assert (change.previous_cluster, change.cluster[0]) == (COLD_START, "c")
    assert (change.version, change.reason, change.segments) == (2, "event", ())
    assert step.placed == ["b"]


def test_percentile_thresholds_come_from_the_snapshot():
    rng = random.Random(8)
    model = OnlineClusterer(CONFIG)
    learned(model, population(600, rng))
    snapshot = model.snapshot(now=0.0)
    rules = parse_rules(
        "segments:\n  - {name: Big, description: d, condition: "
        "{feature: revenue_30d, op: '>=', value: p90(revenue_30d)}}\n"
    )
    classifier = Classifier.of(rules, ClusterAssigner(snapshot))
    threshold = classifier.thresholds["p90(revenue_30d)"]
    assert threshold == snapshot.percentile("revenue_30d", 90)
    assert threshold == pytest.approx(
        np.percentile(model.sample.matrix()[:, FEATURE_INDEX["revenue_30d"]], 90)
    )
    assert segments_of(rules, {"revenue_30d": threshold}, classifier.thresholds) == ("Big",)
    assert Classifier.of(rules).thresholds == {}


def test_refreshed_vectors_update_the_sample_but_do_not_train():
    rng = random.Random(5)
    model = OnlineClusterer(CONFIG)
    learned(model, population(600, rng))
    model.snapshot(now=1.0)
    centers = {i: dict(center) for i, center in model.kmeans.centers.items()}
    count = model.learned
    idle = row("lapsed", rng)
    model.learn("u1", idle, refresh=True)
    assert (model.kmeans.centers, model.learned) == (centers, count)
    assert idle in model.sample.matrix().tolist()


def test_an_empty_vector_takes_its_user_out_of_the_sample():
    rng = random.Random(6)
    model = OnlineClusterer(CONFIG)
    learned(model, population(600, rng))
    model.learn("anon-1", row("lapsed", rng))
    assert "anon-1" in model.sample.rows
    model.learn("anon-1", ())
    assert "anon-1" not in model.sample.rows
    assert len(model.sample) == 600


def test_only_timer_driven_vectors_are_marked_refresh():
    rules = parse_rules(
        "segments:\n  - {name: Any, description: d, "
        "condition: {feature: sessions_7d, op: '>', value: 0}}\n"
    )
    first = partition_step([Action("u", "m1", EventKind.PAGE, 0.0)], {}, rules, dedup_before=0)
    assert [vector.refresh for vector in first.vectors] == [False]
    later = partition_step(
        [],
        first.users,
        rules,
        dedup_before=0,
        due=[(first.users["u"].due, "u")],
        firing=9 * 86_400.0,
    )
    assert [vector.refresh for vector in later.vectors] == [True]


def test_the_sample_gives_percentiles_of_the_computed_traits_vectors_carry():
    """Workers send the values of the computed traits the rules compare with a percentile;
    the snapshot's quantiles hold them as `computed.NAME`, which the classifier reads."""
    rules = parse_rules("""
computed:
  minutes: {event: Video Played, aggregate: sum, of: properties.minutes, window: 30d}
segments:
  - name: Binge Watchers
    description: the top tenth by minutes watched
    condition: {computed: minutes, op: ">=", value: p90(minutes)}
""")
    rng = random.Random(4)
    model = OnlineClusterer(CONFIG)
    users = population(600, rng)
    watched = []
    for number, (user_id, _, values) in enumerate(users):
        minutes = {"minutes": float(number % 100)} if number % 3 else {}  # a third have none
        model.learn(user_id, values, computed=minutes)
        watched += minutes.values()
    snapshot = model.snapshot(now=1.0)
    quantiles = snapshot.quantiles["computed.minutes"]
    assert quantiles == tuple(np.percentile(watched, np.linspace(0, 100, 101)).tolist())
    assert ModelSnapshot.model_validate_json(snapshot.to_json()) == snapshot
    classifier = Classifier.of(rules, ClusterAssigner(snapshot))
    assert classifier.thresholds == {"p90(computed.minutes)": np.percentile(watched, 90)}
