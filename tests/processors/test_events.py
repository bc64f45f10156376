"""Decoding Segment events: every understood kind, and every way to be malformed."""

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.events import Action, EventKind, Reason, Rejection, decode_event

BASE = {"messageId": "m-1", "userId": "u-1", "timestamp": "2026-10-01T12:00:00Z"}


def event(**fields):
    return orjson.dumps({**BASE, **fields})


def decoded(**fields) -> Action:
    result = decode_event(event(**fields))
    assert isinstance(result, Action), result
    return result


def rejected(raw: bytes) -> Rejection:
    result = decode_event(raw)
    assert isinstance(result, Rejection), result
    return result


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Product Viewed", EventKind.PRODUCT_VIEWED),
        ("Product Added", EventKind.CART_ADD),
        ("Product Removed", EventKind.CART_REMOVE),
        ("Cart Viewed", EventKind.CART_VIEWED),
        ("Checkout Started", EventKind.CHECKOUT),
        ("Order Completed", EventKind.ORDER),
        ("Products Searched", EventKind.SEARCH),
        ("Newsletter Signed Up", EventKind.OTHER),
    ],
)
def test_track_events_map_to_kinds(name, kind):
    assert decoded(type="track", event=name).kind is kind


def test_page_and_screen_are_page_views():
    assert decoded(type="page", name="Home").kind is EventKind.PAGE
    assert decoded(type="screen", name="Cart").kind is EventKind.PAGE


def test_identify_links_anonymous_id():
    action = decoded(type="identify", anonymousId="a-1", traits={"email": "x@example.com"})
    assert (action.kind, action.user_id, action.anonymous_id) == (EventKind.IDENTIFY, "u-1", "a-1")


def test_alias_carries_previous_id():
    action = decoded(type="alias", previousId="a-9")
    assert (action.kind, action.previous_id) == (EventKind.ALIAS, "a-9")


def test_anonymous_event_belongs_to_anonymous_id():
    raw = orjson.dumps({"type": "page", "anonymousId": "a-2", "timestamp": BASE["timestamp"]})
    action = decode_event(raw)
    assert isinstance(action, Action)
    assert (action.user_id, action.anonymous_id) == ("a-2", None)


def test_numeric_user_id_is_text():
    assert decoded(type="page", userId=12345).user_id == "12345"


def test_order_revenue_total_and_categories():
    products = [{"category": "shoes"}, {"category": "socks"}, {"category": "shoes"}]
    order = decoded(
        type="track", event="Order Completed", properties={"revenue": 99.5, "products": products}
    )
    assert (order.value, order.categories) == (99.5, ("shoes", "socks"))
    assert decoded(type="track", event="Order Completed", properties={"total": 20}).value == 20.0
    assert decoded(type="track", event="Order Completed").value == 0.0


def test_cart_add_value_is_price_times_quantity():
    added = decoded(
        type="track",
        event="Product Added",
        properties={"category": "toys", "price": 12.5, "quantity": 2},
    )
    assert (added.value, added.categories) == (25.0, ("toys",))


def test_context_device_and_timezone():
    action = decoded(
        type="page",
        timestamp="2026-10-01T14:00:00+02:00",
        context={"device": {"type": "Mobile"}, "userAgent": "x", "locale": "de-DE"},
    )
    assert action.device == "mobile"
    assert action.timestamp == decoded(type="page").timestamp


def test_naive_timestamp_is_utc():
    assert (
        decoded(type="page", timestamp="2026-10-01T12:00:00").timestamp
        == decoded(type="page").timestamp
    )


def test_missing_message_id_gets_a_stable_digest():
    raw = orjson.dumps({"type": "page", "userId": "u", "timestamp": BASE["timestamp"]})
    first, second = decode_event(raw), decode_event(raw)
    assert isinstance(first, Action)
    assert isinstance(second, Action)
    assert first.message_id == second.message_id
    assert first.message_id.startswith("sha1:")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", Reason.INVALID_JSON),
        (b"[1, 2]", Reason.INVALID_SCHEMA),
        (b"", Reason.INVALID_JSON),
        (event(type="teleport"), Reason.UNKNOWN_TYPE),
        (orjson.dumps({"type": "page", "timestamp": "2026-10-01T12:00:00Z"}), Reason.MISSING_ID),
        (
            orjson.dumps({"type": "page", "userId": "", "timestamp": "2026-10-01T12:00:00Z"}),
            Reason.MISSING_ID,
        ),
        (event(type="page", timestamp="yesterday"), Reason.INVALID_TIMESTAMP),
        (orjson.dumps({"type": "page", "userId": "u"}), Reason.INVALID_TIMESTAMP),
        (
            event(type="track", event="Order Completed", properties={"revenue": -1}),
            Reason.INVALID_REVENUE,
        ),
        (
            event(type="track", event="Order Completed", properties={"revenue": "lots"}),
            Reason.INVALID_REVENUE,
        ),
        (
            event(type="track", event="Order Completed", properties={"revenue": True}),
            Reason.INVALID_REVENUE,
        ),
        (
            event(type="track", event="Order Completed", properties={"products": "x"}),
            Reason.INVALID_PROPERTIES,
        ),
        (
            event(type="track", event="Product Added", properties={"price": -3}),
            Reason.INVALID_PROPERTIES,
        ),
        (event(type="track", event=""), Reason.INVALID_SCHEMA),
        (event(type="alias"), Reason.INVALID_SCHEMA),
    ],
)
def test_malformed_events_are_rejected_with_a_reason(raw, reason):
    rejection = rejected(raw)
    assert rejection.reason == reason
    assert rejection.detail


def test_oversized_event_is_rejected_before_parsing():
    raw = event(type="page", properties={"blob": "x" * 40_000})
    assert rejected(raw).reason == Reason.OVERSIZED
    assert isinstance(decode_event(raw, max_bytes=100_000), Action)


def test_custom_event_with_odd_properties_is_accepted():
    action = decoded(
        type="track", event="Quiz Answered", properties={"revenue": "n/a", "price": -1}
    )
    assert action.kind is EventKind.OTHER


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_reject_without_raising(raw):
    assert isinstance(decode_event(raw), Action | Rejection)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["track", "page", "identify", "alias", "group", "screen"]),
    st.dictionaries(
        st.sampled_from(
            ["event", "userId", "anonymousId", "timestamp", "properties", "context", "previousId"]
        ),
        json_values,
    ),
)
def test_mutated_events_decode_or_reject_without_raising(kind, fields):
    raw = json.dumps({**BASE, "type": kind, **fields}).encode()
    assert isinstance(decode_event(raw), Action | Rejection)
