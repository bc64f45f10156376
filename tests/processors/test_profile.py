"""Windowed features of one user, checked by hand on small timelines."""

import pytest

from processors._core import FEATURE_NAMES, TEXT_FEATURES, User
from processors.events import Action, EventKind
from tests.steps import user_after

MINUTE, HOUR, DAY = 60, 3_600, 86_400
T0 = 1_000 * DAY  # midnight UTC, so day buckets start at T0


def profile_of(*actions: Action) -> User:
    return user_after(*actions)


def act(moment, kind=EventKind.PAGE, **fields):
    return Action("u", f"m{moment}-{kind}", kind, float(moment), **fields)


def test_every_feature_is_present():
    features = profile_of(act(T0)).features(T0)
    assert set(features) == set(FEATURE_NAMES) | set(TEXT_FEATURES)


@pytest.mark.parametrize(
    ("age", "window_counts"),
    [
        (0, (1, 1, 1, 1)),
        (54 * MINUTE, (1, 1, 1, 1)),  # 1 h window: 12 five-minute buckets ending with as_of's
        (61 * MINUTE, (0, 1, 1, 1)),
        (23 * HOUR, (0, 1, 1, 1)),  # 24 h window: 24 hourly buckets
        (25 * HOUR, (0, 0, 1, 1)),
        (6 * DAY, (0, 0, 1, 1)),  # 7 d window: 7 daily buckets
        (8 * DAY, (0, 0, 0, 1)),
        (29 * DAY, (0, 0, 0, 1)),  # 30 d window: 30 daily buckets
        (31 * DAY, (0, 0, 0, 0)),
    ],
)
def test_count_windows_slide_with_their_bucket_granularity(age, window_counts):
    profile = profile_of(act(T0 + 30, EventKind.SEARCH))
    features = profile.features(T0 + 30 + age)
    assert (
        features["searches_1h"],
        features["searches_24h"],
        features["searches_7d"],
        features["searches_30d"],
    ) == window_counts


def test_revenue_windows_lifetime_and_average():
    profile = profile_of(
        act(T0, EventKind.ORDER, value=100.0),
        act(T0 + 10 * DAY, EventKind.ORDER, value=50.0),
        act(T0 + 40 * DAY, EventKind.ORDER, value=25.5),
    )
    features = profile.features(T0 + 40 * DAY)
    assert features["revenue_7d"] == 25.5
    assert features["revenue_30d"] == 25.5
    assert features["revenue_lifetime"] == 175.5
    assert features["orders_lifetime"] == 3
    assert features["avg_order_value"] == 58.5


def test_rfm_in_the_buy_till_you_die_convention():
    profile = profile_of(
        act(T0 + HOUR, EventKind.ORDER, value=10.0),
        act(T0 + 2 * HOUR, EventKind.ORDER, value=5.0),  # same day as the first: not a repeat
        act(T0 + 3 * DAY, EventKind.ORDER, value=20.0),
        act(T0 + 3 * DAY + HOUR, EventKind.ORDER, value=4.0),  # same day: summed, 24
        act(T0 + 7 * DAY, EventKind.ORDER, value=30.0),
    )
    features = profile.features(T0 + 10 * DAY + 5 * HOUR)
    assert (features["frequency"], features["recency"], features["T"]) == (2, 7, 10)
    assert features["monetary_value"] == 27.0  # mean of 24 and 30


def test_means_are_exact_not_rounded_to_cents():
    profile = profile_of(
        act(T0, EventKind.ORDER, value=10.0),
        act(T0 + DAY, EventKind.ORDER, value=29.73),
        act(T0 + 2 * DAY, EventKind.ORDER, value=14.96),
    )
    features = profile.features(T0 + 3 * DAY)
    assert features["monetary_value"] == 22.345  # lifetimes gives 22.345 too
    assert features["avg_order_value"] == (10.0 + 29.73 + 14.96) / 3


def test_rfm_without_purchases_or_repeats_is_zero():
    assert profile_of(act(T0)).features(T0)["frequency"] == 0
    one = profile_of(act(T0, EventKind.ORDER, value=9.0)).features(T0 + 2 * DAY)
    assert (one["frequency"], one["recency"], one["T"], one["monetary_value"]) == (0, 0, 2, 0)


def test_recency_in_days():
    profile = profile_of(act(T0, EventKind.ORDER, value=1.0), act(T0 + DAY))
    features = profile.features(T0 + 3 * DAY)
    assert features["days_since_last_order"] == 3.0
    assert features["days_since_last_seen"] == 2.0
    assert features["days_since_first_seen"] == 3.0
    assert profile_of(act(T0)).features(T0)["days_since_last_order"] == -1.0


def test_sessions_duration_bounce_and_abandoned_carts():
    profile = profile_of(
        act(T0),  # session 1: bounce
        act(T0 + HOUR),  # session 2: 10 minutes, cart, no order: abandoned once closed
        act(T0 + HOUR + 5 * MINUTE, EventKind.CART_ADD, value=5.0),
        act(T0 + HOUR + 10 * MINUTE),
        act(T0 + 3 * HOUR),  # session 3: cart and order
        act(T0 + 3 * HOUR + MINUTE, EventKind.CART_ADD, value=5.0),
        act(T0 + 3 * HOUR + 2 * MINUTE, EventKind.ORDER, value=5.0),
    )
    features = profile.features(T0 + 4 * HOUR)
    assert features["sessions_7d"] == 3
    assert features["session_duration_7d"] == round((0 + 600 + 120) / 3, 1)
    assert features["bounce_rate_7d"] == round(1 / 3, 4)
    assert features["abandoned_carts_7d"] == 1
    assert profile.features(T0 + HOUR + 39 * MINUTE)["abandoned_carts_7d"] == 0  # not closed yet
    assert profile.features(T0 + 8 * DAY)["sessions_7d"] == 0


def test_a_gap_of_thirty_minutes_starts_a_new_session():
    assert profile_of(act(T0), act(T0 + 30 * MINUTE - 1)).features(T0 + HOUR)["sessions_7d"] == 1
    assert profile_of(act(T0), act(T0 + 30 * MINUTE)).features(T0 + HOUR)["sessions_7d"] == 2


def test_category_affinity_and_devices():
    profile = profile_of(
        act(T0, EventKind.PRODUCT_VIEWED, categories=("shoes",), device="mobile"),
        act(T0 + 1, EventKind.PRODUCT_VIEWED, categories=("bags",), device="mobile"),
        act(T0 + 2, EventKind.ORDER, value=3.0, categories=("shoes", "socks"), device="desktop"),
        act(T0 + 3, EventKind.PAGE, device="tablet"),
    )
    features = profile.features(T0 + 10)
    assert (features["top_category_30d"], features["top_category_share_30d"]) == ("shoes", 0.5)
    assert features["mobile_share_30d"] == 0.5
    assert features["last_device"] == "tablet"
    old = profile.features(T0 + 31 * DAY)
    assert (old["top_category_30d"], old["mobile_share_30d"]) == ("", 0.0)


def test_engagement_velocity_compares_the_last_week_with_the_one_before():
    before = [act(T0 + day * DAY + i) for day in (-1, 0) for i in range(2)]  # 2 per active day
    recent = [act(T0 + (7 + day) * DAY + i) for day in (0,) for i in range(6)]  # 6 on one day
    features = profile_of(*before, *recent).features(T0 + 7 * DAY + HOUR)
    assert features["events_per_active_day_7d"] == 6.0
    assert features["events_per_active_day_prev_7d"] == 2.0
    assert features["engagement_velocity"] == round(__import__("math").log2(7 / 3), 4)


def test_identity_calls_are_not_behaviour():
    profile = profile_of(act(T0, EventKind.IDENTIFY), act(T0, EventKind.ALIAS))
    assert profile.events == 0
    assert profile.features(T0)["days_since_last_seen"] == -1.0


def test_row_round_trip_is_exact():
    profile = profile_of(
        act(T0, EventKind.ORDER, value=3.5, device="tablet", categories=("x",)),
        act(T0 + 3 * DAY, EventKind.CART_ADD, value=1.0),
    )
    assert User.from_bytes(profile.to_bytes()) == profile
