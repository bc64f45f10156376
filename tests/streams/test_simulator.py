"""The simulator: reproducible, time-ordered, and personas that really differ."""

from collections import defaultdict
from itertools import islice

import pytest

from processors.events import Action, EventKind, Rejection, decode_event
from streams.tools.simulator import Simulation
from tests.steps import step


@pytest.fixture(scope="module")
def population():
    simulation = Simulation(users=300, seed=11)
    actions = [decode_event(event.value) for event in simulation.events()]
    assert all(isinstance(action, Action) for action in actions)
    users = step(actions).users
    truth = {row["user_id"]: row["persona"] for row in simulation.truth()}
    by_persona = defaultdict(list)
    for user_id, user in users.items():
        if user_id in truth:
            by_persona[truth[user_id]].append(user.features(simulation.end))
    return simulation, by_persona


def mean(rows, feature):
    return sum(row[feature] for row in rows) / len(rows)


def test_same_seed_same_stream_and_different_seed_differs():
    first = list(islice(Simulation(100, seed=3).events(), 500))
    assert first == list(islice(Simulation(100, seed=3).events(), 500))
    assert first != list(islice(Simulation(100, seed=4).events(), 500))


def test_a_users_events_do_not_depend_on_population_size():
    def of_user_zero(size):
        return [e.value for e in Simulation(size, seed=5).events() if e.key == b"user-0000000"]

    small = of_user_zero(5)
    assert small
    assert small == of_user_zero(40)


def test_events_come_in_event_time_order():
    times = [event.timestamp for event in Simulation(200, seed=2).events()]
    assert times == sorted(times)


def test_every_persona_is_present(population):
    _, by_persona = population
    assert set(by_persona) == {
        "bargain_hunter",
        "luxury_buyer",
        "frequent_browser",
        "cart_abandoner",
        "lapsed_customer",
        "new_visitor",
    }


def test_personas_behave_differently(population):
    _, rows = population
    assert mean(rows["luxury_buyer"], "avg_order_value") > 5 * mean(
        rows["bargain_hunter"], "avg_order_value"
    )
    assert mean(rows["bargain_hunter"], "orders_lifetime") > 1.5 * mean(
        rows["luxury_buyer"], "orders_lifetime"
    )
    assert mean(rows["frequent_browser"], "product_views_30d") > 3 * mean(
        rows["cart_abandoner"], "product_views_30d"
    )
    assert mean(rows["frequent_browser"], "orders_lifetime") == 0
    assert mean(rows["cart_abandoner"], "cart_adds_30d") > 5 * mean(
        rows["frequent_browser"], "cart_adds_30d"
    )
    assert mean(rows["cart_abandoner"], "orders_lifetime") == 0
    new = [row["days_since_first_seen"] for row in rows["new_visitor"]]
    assert all(0 <= days <= 7 for days in new)  # seen (-1 is never), and within the week
    older = [row["days_since_first_seen"] for row in rows["frequent_browser"]]
    assert sorted(older)[len(older) // 2] > 7
    buyers = [row for row in rows["lapsed_customer"] if row["orders_lifetime"]]
    assert len(buyers) > 0.8 * len(rows["lapsed_customer"])
    assert min(row["days_since_last_order"] for row in buyers) > 60


def test_identified_new_visitors_switch_from_anonymous_to_user_id(population):
    simulation, _ = population
    identified = next(u for u in simulation.users if u.persona == "new_visitor" and u.identified)
    keys = {
        e.key
        for e in simulation.events()
        if e.key in (identified.user_id.encode(), identified.anonymous_id.encode())
    }
    kinds = [
        decode_event(e.value).kind
        for e in simulation.events()
        if e.key == identified.user_id.encode()
    ]
    assert keys == {identified.user_id.encode(), identified.anonymous_id.encode()}
    assert EventKind.IDENTIFY in kinds


def test_invalid_share_adds_malformed_events_and_keeps_the_valid_ones():
    clean = list(islice(Simulation(50, seed=9).events(), 3000))
    mixed = list(islice(Simulation(50, seed=9, invalid_share=0.05).events(), 3200))
    bad = [e for e in mixed if isinstance(decode_event(e.value), Rejection)]
    good = [e for e in mixed if not isinstance(decode_event(e.value), Rejection)]
    assert 60 < len(bad) < 250
    assert good[: len(clean) - 200] == clean[: len(clean) - 200]
