"""Two clocks: timers fire by the firing clock, seconds behind the newest event; an event
later than that is still applied, and what was announced is corrected with reason `late`.

Each test compares a partition fed in arrival order (as a worker is) with the same events
fed in event-time order. An event's arrival delay is how far its moment is behind the
newest event time when it arrives.
"""

import itertools
import math
from datetime import UTC, datetime

from hypothesis import event, given, settings
from hypothesis import strategies as st

from processors.events import Action, EventKind
from processors.rules import parse_rules
from tests.steps import as_of, per_user, run_as_worker

DELAY = 30.0
LATENESS = 3_600.0
RULES = parse_rules("""
cart_abandonment_after: 20m
segments:
  - name: Abandoned
    description: cart left alone for twenty minutes
    condition: {feature: cart_abandoned, op: "==", value: 1}
  - name: Busy Hour
    description: two pages within the hour
    condition: {feature: page_views_1h, op: ">=", value: 2}
  - name: Bursty
    description: three product views within ten minutes
    condition: {event: Product Viewed, at_least: 3, within: 10m}
  - name: Buyers
    description: an order in 30 days
    condition: {feature: orders_30d, op: ">=", value: 1}
""")
KINDS = [EventKind.PAGE, EventKind.PRODUCT_VIEWED, EventKind.CART_ADD, EventKind.ORDER]
START = 1_790_000_000.0

histories = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(KINDS), st.integers(0, 2 * 3600)),
    min_size=1,
    max_size=40,
)
on_time_delays = st.floats(0, DELAY)
any_delays = st.one_of(st.floats(0, DELAY), st.floats(DELAY, LATENESS))


def actions_of(history):
    return [
        Action(user, f"{user}-{number}", kind, START + moment, value=20.0, categories=("c",))
        for number, (user, kind, moment) in enumerate(history)
    ]


def arrival_order(actions, delays, *, keep_each_users_order):
    """Each event arrives `delay` after its moment; with `keep_each_users_order` no event
    overtakes an earlier one of its user (a tracker's queue), which keeps every delay."""
    arrives: dict[int, float] = {}
    latest: dict[str, float] = {}
    for index in sorted(range(len(actions)), key=lambda i: (actions[i].timestamp, i)):
        action = actions[index]
        moment = action.timestamp + delays[index]
        if keep_each_users_order:
            moment = latest[action.user_id] = max(moment, latest.get(action.user_id, -math.inf))
        arrives[index] = moment
    order = sorted(range(len(actions)), key=lambda i: (arrives[i], actions[i].timestamp, i))
    return [actions[i] for i in order]


def in_time_order(actions):
    return sorted(actions, key=lambda action: action.timestamp)


def behind_the_firing_clock(arrived):
    """Which events arrive older than the firing clock (newest event time minus DELAY)."""
    newest = -math.inf
    behind = []
    for action in arrived:
        behind.append(action.timestamp < newest - DELAY)
        newest = max(newest, action.timestamp)
    return behind


def batches(count, cuts):
    bounds = sorted({0, count, *(cut for cut in cuts if cut < count)})
    return [end - start for start, end in itertools.pairwise(bounds)]


def settled(users, moment):
    """Every user's aggregates and segments once evaluated as of `moment`."""
    step = as_of(users, moment, RULES)
    return {user_id: (user.aggregates(), user.segments) for user_id, user in step.users.items()}


@settings(max_examples=150, deadline=None)
@given(histories, st.data(), st.lists(st.integers(1, 40), max_size=5))
def test_on_time_arrivals_give_each_user_the_in_order_changes(history, data, cuts):
    actions = actions_of(history)
    delays = [data.draw(on_time_delays) for _ in actions]
    arrived = arrival_order(actions, delays, keep_each_users_order=True)
    assert not any(behind_the_firing_clock(arrived))
    live, _, _ = run_as_worker(
        arrived, RULES, lateness=LATENESS, delay=DELAY, batch_sizes=batches(len(arrived), cuts)
    )
    ordered, _, _ = run_as_worker(
        in_time_order(actions), RULES, lateness=LATENESS, delay=DELAY, batch_sizes=[len(actions)]
    )
    assert per_user(live) == per_user(ordered)
    assert all(change.reason != "late" for change in live)


@settings(max_examples=300, deadline=None)
@given(histories, st.data(), st.booleans())
def test_late_arrivals_are_corrected_and_every_announcement_is_exact_for_what_had_arrived(
    history, data, keep_each_users_order
):
    actions = actions_of(history)
    delays = [data.draw(any_delays) for _ in actions]
    arrived = arrival_order(actions, delays, keep_each_users_order=keep_each_users_order)
    behind = behind_the_firing_clock(arrived)
    live_changes = []
    users: dict = {}
    for count in range(1, len(arrived) + 1):  # one arrival a batch, as a quiet stream comes
        changes, users, _ = run_as_worker(
            arrived[:count], RULES, lateness=LATENESS, delay=DELAY, batch_sizes=[1] * count
        )
        fresh = changes[len(live_changes) :]
        assert changes[: len(live_changes)] == live_changes  # a prefix is never rewritten
        if any(change.reason == "late" for change in fresh):
            assert behind[count - 1], "only an event behind the firing clock corrects"
        live_changes = changes
        firing = max(action.timestamp for action in arrived[:count]) - DELAY
        _, ordered_users, _ = run_as_worker(
            in_time_order(arrived[:count]),
            RULES,
            lateness=LATENESS,
            delay=DELAY,
            batch_sizes=[count],
        )
        for user_id, user in users.items():
            moment = max(firing, user.as_of)
            exact = as_of(ordered_users, moment, RULES).users[user_id].segments
            assert user.segments == exact, (user_id, moment)
    event("an event arrived behind the firing clock" if any(behind) else "every event on time")
    event(
        "a change was corrected" if any(c.reason == "late" for c in live_changes) else "none late"
    )
    for user_changes in per_user(live_changes).values():
        assert [version for version, *_ in user_changes] == list(range(1, len(user_changes) + 1))
    end = max(action.timestamp for action in actions)
    _, ordered_users, _ = run_as_worker(
        in_time_order(actions), RULES, lateness=LATENESS, delay=DELAY, batch_sizes=[len(actions)]
    )
    assert settled(users, end) == settled(ordered_users, end)


def at(clock: str) -> float:
    """An event time on 2026-12-01, UTC, from `HH:MM`."""
    hours, minutes = map(int, clock.split(":"))
    return datetime(2026, 12, 1, hours, minutes, tzinfo=UTC).timestamp()


def test_a_late_order_corrects_an_announced_abandonment():
    """The worked timeline of docs/event-time.md, with a 30-minute abandonment."""
    rules = parse_rules("""
cart_abandonment_after: 30m
segments:
  - {name: Cart Abandoners, description: d, condition: {feature: cart_abandoned, op: "==", value: 1}}
  - {name: Buyers, description: d, condition: {feature: orders_30d, op: ">=", value: 1}}
""")
    add = Action("ann", "a1", EventKind.CART_ADD, at("10:00"), value=45.0, product="p7")
    others = [Action("zed", f"z{m}", EventKind.PAGE, at(f"10:{m:02d}")) for m in range(1, 41)]
    order = Action("ann", "a2", EventKind.ORDER, at("10:29"), value=45.0)
    arrived = [add, *others[:31], order, *others[31:]]  # the order comes after zed's 10:31
    changes, users, _ = run_as_worker(
        arrived, rules, lateness=3600, delay=5, batch_sizes=[1] * len(arrived)
    )
    anns = [c for c in changes if c.user_id == "ann"]
    assert [(c.version, c.entered, c.exited, c.reason, c.event_time) for c in anns] == [
        (1, ("Cart Abandoners",), (), "time", at("10:30")),
        (2, ("Buyers",), ("Cart Abandoners",), "late", at("10:30")),
    ]
    announced = next(i for i, a in enumerate(arrived) if a.timestamp >= at("10:30") + 5)
    assert arrived[announced].timestamp == at("10:31")  # the firing clock passes 10:30
    for count, abandoned in [(announced, False), (announced + 1, True)]:
        before, _, _ = run_as_worker(
            arrived[:count], rules, lateness=3600, delay=5, batch_sizes=[count]
        )
        assert any("Cart Abandoners" in c.entered for c in before) == abandoned
    assert users["ann"].segments == ("Buyers",)
    in_order, _, _ = run_as_worker(
        in_time_order(arrived), rules, lateness=3600, delay=5, batch_sizes=[len(arrived)]
    )
    assert [(c.entered, c.reason) for c in in_order if c.user_id == "ann"] == [
        (("Buyers",), "event")
    ]
