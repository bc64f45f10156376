"""The partition step: coalescing, versions, dedup, and independence from order and batching."""

import random
from collections import Counter
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from processors._core import User, Watermark, tally_moves
from processors.classifier import Classifier
from processors.events import Action, EventKind
from processors.model import ClusterAssigner
from processors.rules import parse_rules
from tests.steps import as_of, predicting, step

RULES = parse_rules("""
segments:
  - name: Buyers
    description: ordered
    condition: {feature: orders_lifetime, op: ">=", value: 1}
  - name: Browsers
    description: looked, never bought
    condition:
      all:
        - {feature: product_views_30d, op: ">=", value: 2}
        - {feature: orders_lifetime, op: "==", value: 0}
  - name: Lapsed
    description: no order for 30 days
    condition:
      all:
        - {feature: orders_lifetime, op: ">=", value: 1}
        - {feature: days_since_last_order, op: ">", value: 30}
""")
DAY = 86_400.0


def test_every_transition_is_published_even_within_one_batch():
    actions = [
        Action("u", "1", EventKind.PRODUCT_VIEWED, 1.0),
        Action("u", "2", EventKind.PRODUCT_VIEWED, 2.0),  # enters Browsers ...
        Action("u", "3", EventKind.ORDER, 3.0, value=5.0),  # ... and leaves for Buyers
    ]
    outcome = step(actions, {}, RULES, dedup_before=0.0)
    assert [(c.entered, c.exited, c.version, c.event_time) for c in outcome.changes] == [
        (("Browsers",), (), 1, 2.0),
        (("Buyers",), ("Browsers",), 2, 3.0),
    ]
    assert outcome.new_users == 1


def test_no_change_when_segments_stay():
    first = step([Action("u", "1", EventKind.ORDER, 1.0)], {}, RULES, dedup_before=0.0)
    again = step([Action("u", "2", EventKind.ORDER, 2.0)], first.users, RULES, dedup_before=0.0)
    assert again.changes == []
    assert again.new_users == 0
    assert again.users["u"].features()["orders_lifetime"] == 2


def test_versions_grow_with_each_transition():
    users: dict[str, User] = {}
    versions = []
    for number, kind in enumerate(
        [EventKind.PRODUCT_VIEWED, EventKind.PRODUCT_VIEWED, EventKind.ORDER]
    ):
        outcome = step(
            [Action("u", str(number), kind, float(number))], users, RULES, dedup_before=0.0
        )
        users = outcome.users
        versions += [change.version for change in outcome.changes]
    assert versions == [1, 2]
    assert users["u"].segments == ("Buyers",)


def test_a_message_id_is_applied_once_while_remembered():
    order = Action("u", "same", EventKind.ORDER, 100.0, value=10.0)
    first = step([order, order], {}, RULES, dedup_before=0.0)
    assert first.duplicates == 1
    again = step([order], first.users, RULES, dedup_before=50.0)
    assert again.duplicates == 1
    assert again.users["u"].features()["orders_lifetime"] == 1
    forgotten = step(
        [Action("u", "x", EventKind.PAGE, 300.0)], again.users, RULES, dedup_before=200.0
    )
    assert forgotten.users["u"].remembered == 1  # only the event at 300


def test_time_moves_a_user_into_lapsed():
    users = step(
        [Action("u", "1", EventKind.ORDER, 0.0, value=10.0)], {}, RULES, dedup_before=0.0
    ).users
    early = as_of(users, 29 * DAY, RULES)
    assert early.changes == []
    later = as_of(early.users, 31 * DAY, RULES)
    [change] = later.changes
    assert (change.entered, change.reason, change.event_time) == (("Lapsed",), "time", 31 * DAY)
    back = as_of(later.users, 1.0, RULES)
    assert back.changes == []  # never back in time
    assert back.users["u"].as_of == 31 * DAY


kinds = st.sampled_from(
    [EventKind.PAGE, EventKind.PRODUCT_VIEWED, EventKind.ORDER, EventKind.CART_ADD]
)
LATENESS = 3_600.0
streams = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        kinds,
        st.floats(0, 40 * DAY),
        st.sampled_from(["mobile", "desktop"]),
        st.floats(0, LATENESS),
    ),
    min_size=1,
    max_size=60,
)


def run(actions, cuts, *, with_changes=False):
    """Feed `actions` in batches cut at `cuts`, as a worker would, checking none is late."""
    clock = Watermark(LATENESS, 5.0)
    users: dict[str, User] = {}
    changes = []
    bounds = sorted({0, len(actions), *(cut for cut in cuts if cut < len(actions))})
    for start, end in pairwise(bounds):
        assert all(clock.admit(action.timestamp) for action in actions[start:end])
        horizon = clock.max_event_time - LATENESS
        outcome = step(actions[start:end], users, RULES, dedup_before=horizon)
        users = {**users, **outcome.users}
        changes += outcome.changes
    profiles = {user_id: user.aggregates() for user_id, user in users.items()}
    return (profiles, changes) if with_changes else profiles


@settings(max_examples=150, deadline=None)
@given(streams, st.lists(st.integers(1, 60), max_size=6))
def test_profiles_do_not_depend_on_batching_or_arrival_order_within_lateness(stream, cuts):
    actions = [
        Action(user, str(i), kind, moment, value=9.99, categories=("c",), device=device)
        for i, (user, kind, moment, device, _) in enumerate(stream)
    ]
    delays = [delay for *_, delay in stream]
    in_time_order = sorted(actions, key=lambda action: action.timestamp)
    arrival = sorted(range(len(actions)), key=lambda i: actions[i].timestamp + delays[i])
    late_but_within_bound = [actions[i] for i in arrival]
    whole, transitions = run(in_time_order, [], with_changes=True)
    assert run(in_time_order, cuts, with_changes=True) == (whole, transitions)
    assert run(late_but_within_bound, cuts) == whole


def test_revenue_sums_are_exact_in_any_order():
    amounts = [0.1, 0.2, 0.7, 19.99, 1e6 + 0.01] * 20
    actions = [
        Action("u", str(i), EventKind.ORDER, float(i), value=a) for i, a in enumerate(amounts)
    ]
    reordered = list(actions)
    random.Random(4).shuffle(reordered)
    forward = step(actions, {}, RULES, dedup_before=0.0).users["u"]
    backward = step(reordered, {}, RULES, dedup_before=0.0).users["u"]
    assert forward.to_bytes() == backward.to_bytes()
    assert forward.features(100.0)["revenue_lifetime"] == round(sum(amounts), 2)


def mixed_step(seed: int, users: int, events: int):
    """One step of `events` of every kind, about two hours apart, from `users` users, with
    `RULES` and a one-cluster model: changes of segments and clusters, and their users."""
    rng = random.Random(seed)
    moment = 1_790_000_000.123
    items = [
        Action(
            f"u{rng.randrange(users)}", f"m{n}", rng.choice(list(EventKind)), moment + n * 7_777.7
        )
        for n in range(events)
    ]
    return step(items, rules=Classifier.of(RULES, ClusterAssigner(predicting({}))))


def test_move_tallies_count_what_the_changes_hold():
    """The transition metrics' tally, made in the core, against the changes' own lists."""
    changes = mixed_step(4, users=5, events=60).changes
    tally: Counter[tuple[str, str]] = Counter()
    placed: Counter[tuple[str, str]] = Counter()
    for change in changes:
        tally.update((segment, "entered") for segment in change.entered)
        tally.update((segment, "exited") for segment in change.exited)
        if change.cluster != change.previous_cluster:
            placed[change.cluster, "entered"] += 1
    moves, cluster_moves = tally_moves(changes)
    assert {(name, way): count for name, way, count in moves} == tally
    assert sum(tally.values()) > len(changes) / 2
    assert cluster_moves == [("c1", "entered", placed["c1", "entered"])] == [("c1", "entered", 5)]
