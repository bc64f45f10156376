"""Timers: users change segments as event time passes, on time, once, whatever the batching."""

import math
import random
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors._core import Resident, decode_events
from processors.events import Action, EventKind
from processors.model import CLUSTER_FEATURES
from processors.rules import parse_rules
from processors.wire import Advance
from tests.steps import as_of, per_user, run_as_worker
from tests.steps import step as partition_step

DAY, MINUTE = 86_400, 60
DEFAULT_RULES = parse_rules(Path("processors/rules/default.yaml").read_text(encoding="utf-8"))
TIMED_RULES = parse_rules("""
cart_abandonment_after: 20m
segments:
  - name: Bursty
    description: three views of one category within ten minutes
    condition: {event: Product Viewed, at_least: 3, within: 10m}
  - name: Busy Hour
    description: active in the last hour
    condition: {feature: page_views_1h, op: ">=", value: 2}
  - name: Yesterday
    description: a day-window count
    condition: {feature: product_views_24h, op: ">", value: 1}
  - name: Young
    description: a customer for under four days
    condition: {feature: T, op: "<", value: 4}
  - name: Idle Cart
    description: cart idle for an hour and a half exactly
    condition: {feature: cart_idle_minutes, op: "==", value: 90}
  - name: Abandoned
    description: cart left alone
    condition: {feature: cart_abandoned, op: "==", value: 1}
  - name: Seen Lately
    description: seen within two days
    condition: {feature: days_since_last_seen, op: "<=", value: 2}
  - name: Few Sessions
    description: a count that time can only lower, below a bound
    condition: {feature: sessions_7d, op: "<", value: 3}
  - name: Two Adds
    description: equal to a count
    condition: {feature: cart_adds_24h, op: "==", value: 2}
  - name: Not Sixty
    description: unequal to a sum
    condition: {feature: revenue_7d, op: "!=", value: 60}
  - name: Viewing
    description: above a count
    condition: {feature: product_views_1h, op: ">", value: 1}
  - name: One Order
    description: at most a count
    condition: {feature: orders_30d, op: "<=", value: 1}
""")
COMPUTED_RULES = parse_rules(
    Path("processors/rules/computed-bench.yaml").read_text(encoding="utf-8")
)
REFRESH_EVERY = 7 * DAY
"""The weekly grid that refreshes of idle users' feature vectors fall on."""
VECTOR_FEATURES = [
    name for name in CLUSTER_FEATURES if not name.startswith("days_since")
]  # the clock features grow every second

KINDS = [
    EventKind.PAGE,
    EventKind.PRODUCT_VIEWED,
    EventKind.CART_ADD,
    EventKind.CART_REMOVE,
    EventKind.ORDER,
]
event_lists = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, 40 * DAY),
        st.sampled_from(["shoes", "books"]),
        st.sampled_from(["p1", "p2"]),
    ),
    min_size=1,
    max_size=25,
)


def action(user_id, number, kind, moment, category="shoes", product="p1"):
    value = 30.0 if kind in (EventKind.ORDER, EventKind.CART_ADD, EventKind.CART_REMOVE) else 0.0
    return Action(
        user_id, f"{user_id}-{number}", kind, float(moment), value, (category,), product=product
    )


def user_of(events, rules):
    actions = [
        action("u", number, kind, moment, category, product)
        for number, (kind, moment, category, product) in enumerate(events)
    ]
    return partition_step(actions, rules=rules, retention=400 * DAY).users["u"]


def observed(user, rules, moment):
    segments = as_of({"u": user}, moment, rules).users["u"].segments
    every = user.features(moment)
    windows = {name: every[name] for name in VECTOR_FEATURES}
    return segments, windows


@settings(max_examples=200, deadline=None)
@given(event_lists, st.sampled_from([DEFAULT_RULES, TIMED_RULES]), st.randoms())
def test_no_rule_changes_before_the_timer_and_no_window_long_before(events, rules, rng):
    user = user_of(events, rules)
    due = user.due
    assert due is not None  # the expiry at least
    assert due > user.as_of
    segments, vector = observed(user, rules, user.as_of)
    probes = {due - 1, *(rng.uniform(user.as_of, due - 1) for _ in range(20))}
    for moment in sorted(p for p in probes if p >= user.as_of):
        segments_then, vector_then = observed(user, rules, moment)
        assert segments_then == segments, moment
        if vector_then != vector:  # refreshed at the next point of the grid, not later
            assert due <= math.ceil(moment / REFRESH_EVERY) * REFRESH_EVERY, moment


def test_a_customer_whose_only_order_is_31_days_old_lapses_once_by_time():
    start = 1_790_000_000
    items = [action("buyer", 0, EventKind.ORDER, start)]
    items += [action(f"other{n}", n, EventKind.PAGE, start + n * DAY) for n in range(1, 33)]
    changes, stored, _ = run_as_worker(
        items, DEFAULT_RULES, lateness=3600, batch_sizes=[len(items)]
    )
    timed = [c for c in changes if c.user_id == "buyer" and c.reason == "time"]
    assert [(c.entered, c.exited) for c in timed] == [(("Lapsed Customers",), ())]
    assert 30 * DAY < timed[0].event_time - start <= 30 * DAY + 10
    assert stored["buyer"].segments == ("Lapsed Customers",)


def test_a_cart_ordered_within_ten_minutes_is_never_abandoned():
    start = 1_790_000_000
    items = [
        action("quick", 0, EventKind.CART_ADD, start),
        action("quick", 1, EventKind.ORDER, start + 10 * MINUTE),
    ]
    items += [action("other", n, EventKind.PAGE, start + n * 3600) for n in range(1, 30)]
    changes, _, _ = run_as_worker(items, DEFAULT_RULES, lateness=600, batch_sizes=[1] * len(items))
    assert not any("Cart Abandoners" in c.entered for c in changes if c.user_id == "quick")


def test_an_abandoned_cart_enters_at_the_deadline_and_carries_the_cart():
    start = 1_790_000_000
    items = [
        action("slow", 0, EventKind.CART_ADD, start, product="p1"),
        action("slow", 1, EventKind.CART_ADD, start + 5 * MINUTE, "books", "p2"),
        action("slow", 2, EventKind.CART_REMOVE, start + 6 * MINUTE, "books", "p2"),
        action("other", 3, EventKind.PAGE, start + 3 * 3600),
    ]
    changes, _, _ = run_as_worker(items, DEFAULT_RULES, lateness=600, batch_sizes=[len(items)])
    entered = [c for c in changes if "Cart Abandoners" in c.entered]
    assert [(c.user_id, c.reason, c.event_time) for c in entered] == [
        ("slow", "time", start + 6 * MINUTE + 30 * MINUTE)
    ]
    assert [(line.product, line.count, line.value) for line in entered[0].cart] == [("p1", 1, 30.0)]
    exits = [c for c in changes if "Cart Abandoners" in c.exited]
    assert exits == []


def test_the_users_own_event_fires_their_due_timer_first():
    start = 1_790_000_000
    items = [
        action("u", 0, EventKind.CART_ADD, start),
        action("u", 1, EventKind.PAGE, start + 45 * MINUTE),
    ]
    changes, _, _ = run_as_worker(items, DEFAULT_RULES, lateness=3600, batch_sizes=[2])
    assert [(c.reason, c.event_time, c.entered) for c in changes if c.entered][-1] == (
        "time",
        start + 30 * MINUTE,
        ("Cart Abandoners",),
    )


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False))
def test_batching_never_changes_what_a_user_goes_through(rng):
    start = 1_790_000_000
    items = []
    for number in range(120):
        user = f"u{rng.randrange(6)}"
        kind = rng.choice(KINDS)
        moment = start + rng.randrange(0, 45 * DAY)
        items.append(action(user, number, kind, moment, rng.choice(["shoes", "books"])))
    items.sort(key=lambda item: item.timestamp)
    for index in range(len(items) - 1):  # a few events a little late
        if rng.random() < 0.1:
            items[index], items[index + 1] = items[index + 1], items[index]
    items.append(Advance(start + 60 * DAY))
    assert_batching_changes_nothing(items, rng)


def assert_batching_changes_nothing(items, rng, rules=TIMED_RULES):
    """One batch or random small ones: the same changes for every user, the same labels;
    and small batches that keep their users resident (a few at a time) or decode them
    from their rows: the same changes, the same rows, the same timers."""
    whole, whole_state, _ = run_as_worker(items, rules, lateness=7200, batch_sizes=[len(items)])
    sizes = []
    while sum(sizes) < len(items):
        sizes.append(rng.randrange(1, 30))
    split, split_state, split_timers = run_as_worker(items, rules, lateness=7200, batch_sizes=sizes)
    assert per_user(split) == per_user(whole)
    assert {u: s.segments for u, s in split_state.items()} == {
        u: s.segments for u, s in whole_state.items()
    }
    resident = Resident(rng.randrange(2, 8))
    kept = run_as_worker(items, rules, lateness=7200, batch_sizes=sizes, resident=resident)
    assert kept[0] == split
    assert {u: s.to_bytes() for u, s in kept[1].items()} == {
        u: s.to_bytes() for u, s in split_state.items()
    }
    assert kept[2] == split_timers
    assert resident.take_counts()[0] > 0


SHOP_CALLS = ["Product Viewed", "Product Added", "Products Searched", "Checkout Started"]


def shop_events(rng, users, span, count):
    """Raw track calls of a shop (the bench's computed rules count them), in time order."""
    start = 1_790_000_000
    moments = sorted(start + rng.randrange(span) for _ in range(count))
    raw = []
    for number, moment in enumerate(moments):
        name = rng.choice([*SHOP_CALLS, "Order Completed"])
        properties = {
            "price": rng.choice([5.0, 30.0, 250.0]),
            "category": rng.choice(["electronics", "books"]),
            "product_id": f"p{rng.randrange(40)}",
            "revenue": rng.choice([20.0, 80.0, 600.0]),
        }
        stamp = datetime.fromtimestamp(moment, UTC).isoformat()
        body = {"type": "track", "event": name, "userId": f"u{rng.randrange(users)}"}
        body |= {"messageId": f"m{number}", "timestamp": stamp, "properties": properties}
        raw.append(orjson.dumps(body))
    return [*decode_events(raw, 32_768, keep=COMPUTED_RULES.projection), Advance(start + 200 * DAY)]


@pytest.mark.parametrize(
    ("seed", "users", "span", "count"),
    [(21, 2, 6 * 3600, 60), (22, 4, 12 * 3600, 100), (3, 6, 60 * DAY, 150)],
)
def test_batching_changes_nothing_for_computed_traits_sequences_and_absence(
    seed, users, span, count
):
    """The bench's twenty computed traits (windows of seconds, minutes and days, a
    `between` window, every kind of aggregate), two sequences and an absence, in one
    batch and one event a batch: timers set from what a test's value can do, and events
    that make an old cell's leaving matter before their own could (seeds that found it)."""
    rng = random.Random(seed)
    items = shop_events(rng, users, span, count)
    whole, _, _ = run_as_worker(items, COMPUTED_RULES, lateness=7200, batch_sizes=[len(items)])
    ones, _, _ = run_as_worker(items, COMPUTED_RULES, lateness=7200, batch_sizes=[1] * len(items))
    assert {c.reason for c in whole} >= {"event", "time"}
    assert per_user(ones) == per_user(whole)
    assert_batching_changes_nothing(items, rng, COMPUTED_RULES)


def test_the_sweep_at_an_advance_finds_nothing_the_timers_missed():
    rng = random.Random(5)
    start = 1_790_000_000
    items = [
        action(f"u{n % 40}", n, rng.choice(KINDS), start + rng.randrange(0, 20 * DAY))
        for n in range(400)
    ]
    items.sort(key=lambda item: item.timestamp)
    items.append(Advance(start + 75 * DAY))
    for rules in (DEFAULT_RULES, TIMED_RULES):
        changes, _, _ = run_as_worker(items, rules, lateness=3600, batch_sizes=[len(items)])
        swept = [c for c in changes if c.event_time == start + 75 * DAY]
        assert swept == []


def test_users_idle_past_retention_expire_by_timer_and_come_back_new():
    start = 1_790_000_000
    items = [action("old", 0, EventKind.ORDER, start)]
    items += [action("other", n, EventKind.PAGE, start + n * 10 * DAY) for n in range(1, 8)]
    items.append(action("old", 9, EventKind.PAGE, start + 75 * DAY))
    changes, stored, _ = run_as_worker(
        items, DEFAULT_RULES, lateness=3600, batch_sizes=[3, 3, 3], retention=50 * DAY
    )
    mine = [c for c in changes if c.user_id == "old"]
    assert [c.reason for c in mine][-2:] == ["expired", "event"]
    assert [c.version for c in mine] == list(range(1, len(mine) + 1))
    assert stored["old"].features()["orders_lifetime"] == 0


@pytest.mark.parametrize("seed", [17, 18, 19])
def test_batching_changes_nothing_for_two_busy_users_in_three_hours(seed):
    """Dense histories: events that unsettle a comparison close to its deadline."""
    rng = random.Random(seed)
    start = 1_790_000_000
    items = [
        action(f"u{rng.randrange(2)}", number, rng.choice(KINDS), start + rng.randrange(3 * 3600))
        for number in range(120)
    ]
    items.sort(key=lambda item: item.timestamp)
    items.append(Advance(start + 60 * DAY))
    assert_batching_changes_nothing(items, rng)


def test_a_time_trait_enters_and_leaves_by_timer_to_the_second():
    rules = parse_rules("""
segments:
  - name: New Accounts
    description: signed up within the last day
    condition: {trait: signed_up_at, op: within_last, value: 1d}
  - name: Old Accounts
    description: signed up more than 30 hours ago
    condition: {trait: signed_up_at, op: more_than_ago, value: 30h}
""")
    start = 1_790_000_000
    signed_up = {"signed_up_at": "2026-09-21T14:13:20Z"}  # `start`
    items = [Action("ann", "i", EventKind.IDENTIFY, start + 60, traits=signed_up)]
    items += [action("other", n, EventKind.PAGE, start + n * 3600) for n in range(1, 50)]
    changes, _, timers = run_as_worker(items, rules, lateness=600, batch_sizes=[7] * 8)
    anns = [c for c in changes if c.user_id == "ann"]
    assert [(c.reason, c.event_time, c.entered, c.exited) for c in anns] == [
        ("event", start + 60, ("New Accounts",), ()),
        ("time", start + DAY + 1, (), ("New Accounts",)),
        ("time", start + 30 * 3600 + 1, ("Old Accounts",), ()),
    ]
    assert "ann" not in timers  # nothing left to flip


CLOCK_RULES = parse_rules("""
segments:
  - name: Idle
    description: nothing for a week
    condition: {feature: days_since_last_seen, op: ">", value: 7}
""")


def test_a_user_back_after_a_week_leaves_an_idle_segment_at_their_event():
    start = 1_790_035_200  # a UTC midnight
    items = [
        action("u", 0, EventKind.PAGE, start),
        action("u", 1, EventKind.PAGE, start + 10 * DAY),
        action("other", 2, EventKind.PAGE, start + 11 * DAY),
    ]
    for sizes in ([len(items)], [1] * len(items)):
        changes, stored, _ = run_as_worker(items, CLOCK_RULES, lateness=600, batch_sizes=sizes)
        idle, back = [c for c in changes if c.user_id == "u"]
        assert (idle.reason, idle.entered) == ("time", ("Idle",))
        assert 7 * DAY < idle.event_time - start <= 7 * DAY + 10  # to 0.0001 day
        assert (back.reason, back.exited, back.event_time) == ("event", ("Idle",), start + 10 * DAY)
        assert stored["u"].segments == ()


WAITING_RULES = parse_rules("""
segments:
  - name: Browsing Buyers
    description: a page this week and an order this month
    condition:
      all:
        - {feature: page_views_7d, op: ">=", value: 1}
        - {feature: orders_30d, op: ">=", value: 1}
""")


def test_a_part_that_cannot_flip_first_holds_back_the_timer_until_an_event_moves_it():
    start = 1_790_035_200  # a UTC midnight
    page = action("u", 0, EventKind.PAGE, start + 3600)
    # no order: the page leaving the week cannot move the segment, so only the refresh of
    # the clustering features (on the weekly grid after it) is due
    alone = user_of([(EventKind.PAGE, start + 3600, "shoes", "p1")], WAITING_RULES)
    assert alone.due == math.ceil((start + 7 * DAY) / REFRESH_EVERY) * REFRESH_EVERY
    assert alone.due > start + 7 * DAY
    # an order brings the page's moment back: the segment is left when the page's day
    # leaves the week, whether the order comes in the page's step (the user's timer is
    # recomputed by then) or in a step of its own (the user is timed again at once)
    items = [page, action("u", 1, EventKind.ORDER, start + 2 * DAY)]
    items += [action("other", 2 + n, EventKind.PAGE, start + n * DAY) for n in range(3, 10)]
    for sizes in ([len(items)], [1] * len(items)):
        changes, _, _ = run_as_worker(items, WAITING_RULES, lateness=600, batch_sizes=sizes)
        assert [
            (c.reason, c.entered, c.exited, c.event_time) for c in changes if c.user_id == "u"
        ] == [
            ("event", ("Browsing Buyers",), (), start + 2 * DAY),
            ("time", (), ("Browsing Buyers",), start + 7 * DAY),
        ]
