"""Aggregates of one user."""

from processors.events import Action, EventKind
from processors.profile import FEATURE_NAMES, Profile

DAY = 86_400.0


def test_counts_revenue_and_recency():
    profile = Profile()
    actions = [
        Action("u", "1", EventKind.PAGE, 0.0, device="desktop"),
        Action("u", "2", EventKind.PRODUCT_VIEWED, 10.0),
        Action("u", "3", EventKind.SEARCH, 20.0),
        Action("u", "4", EventKind.CART_ADD, 30.0, value=15.0),
        Action("u", "5", EventKind.CHECKOUT, 40.0),
        Action("u", "6", EventKind.ORDER, 2 * DAY, value=40.0),
        Action("u", "7", EventKind.ORDER, 3 * DAY, value=20.0, device="mobile"),
        Action("u", "8", EventKind.OTHER, 4 * DAY),
    ]
    for action in actions:
        profile.apply(action)
    features = profile.features(as_of=5 * DAY)
    assert set(features) == set(FEATURE_NAMES)
    assert features["page_views"] == 1
    assert features["product_views"] == 1
    assert features["searches"] == 1
    assert features["cart_adds"] == 1
    assert features["checkouts"] == 1
    assert features["orders"] == 2
    assert features["events"] == 8
    assert features["revenue"] == 60.0
    assert features["avg_order_value"] == 30.0
    assert features["days_since_last_order"] == 2.0
    assert features["days_since_last_seen"] == 1.0
    assert features["days_since_first_seen"] == 5.0
    assert profile.last_device == "mobile"


def test_never_is_minus_one_and_no_orders_means_zero_average():
    profile = Profile()
    profile.apply(Action("u", "1", EventKind.PAGE, 100.0))
    features = profile.features(as_of=100.0)
    assert features["days_since_last_order"] == -1.0
    assert features["avg_order_value"] == 0.0


def test_out_of_order_events_keep_first_and_last_seen():
    profile = Profile()
    for moment in (50.0, 10.0, 30.0):
        profile.apply(Action("u", str(moment), EventKind.PAGE, moment))
    assert (profile.first_seen, profile.last_seen) == (10.0, 50.0)


def test_row_round_trip():
    profile = Profile()
    profile.apply(Action("u", "1", EventKind.ORDER, 5.0, value=3.5, device="tablet"))
    assert Profile.from_row(profile.to_row()) == profile
