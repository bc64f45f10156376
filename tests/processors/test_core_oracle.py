"""The compiled core against the plain batch oracle, on random streams, at moments the
test chooses.

Random users send every kind of Segment call as raw JSON, in any order, some twice;
anonymous ids are merged into users by `identify` and `alias`; the watermark advances
on the way. The core reads the messages with its decoder, the oracle with its own.
Events come seconds and minutes apart as well as days, where the narrow windows are.
Both are then compared, feature by feature and with equality, at moments the test
draws: past the last event by minutes, hours and days, on every window's edges and at
the users' timers; and, fed in time order, after every event at that event's time.
"""

import random
from datetime import UTC, datetime, timedelta

import orjson
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from processors._core import Action, decode_events
from processors.classifier import Classifier
from processors.rules import parse_rules
from processors.wire import Advance
from tests import oracle
from tests.loopback import settle
from tests.steps import as_of, step

DAY, HOUR, MINUTE = 86_400, 3_600, 60
START = 1_790_000_000
USERS = ("u0", "u1", "u2")
ANONYMOUS = ("a0", "a1", "a2")  # a<n> is u<n> before signing in
CALLS = [
    "page",
    "screen",
    "identify",
    "alias",
    "group",
    "Product Viewed",
    "Products Searched",
    "Product Added",
    "Product Removed",
    "Cart Viewed",
    "Checkout Started",
    "Order Completed",
    "Video Played",
]
moments = st.one_of(
    st.integers(0, 10 * MINUTE),  # seconds apart: the 5-minute buckets
    st.integers(0, 3 * HOUR),  # minutes apart: the hourly ones and sessions
    st.integers(0, 40 * DAY),  # days apart: the daily ones
)


def streams(calls, offsets, max_size):
    return st.lists(
        st.tuples(
            st.integers(0, len(USERS) + len(ANONYMOUS) - 1),
            st.sampled_from(calls),
            offsets,
            st.sampled_from(["shoes", "books", ""]),
            st.sampled_from([0.0, 9.99, 30.0, 1234.5, 0.015]),
            st.sampled_from([None, "mobile", "Desktop"]),
            st.sampled_from(["p1", "p2"]),
            st.sampled_from(["Z", ".250Z", "+02:00"]),
        ),
        min_size=1,
        max_size=max_size,
    )


events = st.one_of(
    streams(CALLS, moments, 40),
    # bursts: a few kinds, minutes apart, where the narrowest windows and conditions are
    streams(["Product Viewed", "Product Added", "page"], st.integers(0, 30 * MINUTE), 25),
)
RULES_TEXT = """
cart_abandonment_after: 20m
computed:
  plays: {event: Video Played, aggregate: count, window: 10m}
  spent_2h:
    event: Video Played
    where: {property: properties.category, op: "!=", value: ""}
    aggregate: sum
    of: properties.price
    window: 2h
  avg_price_3d: {events: [Video Played, Product Viewed], aggregate: avg, of: properties.price,
                 window: 3d}
  cheapest: {any: true, aggregate: min, of: properties.price, window: {between: [7d, 1d]}}
  priciest: {event: Video Played, aggregate: max, of: properties.price}
  categories: {any: true, aggregate: distinct_count, of: properties.category, window: 30d}
  favourite: {event: Video Played, aggregate: most_frequent, of: properties.product_id,
              window: 90m}
  first_category: {event: Product Added, aggregate: first, of: properties.category}
  last_price:
    event: Video Played
    where:
      any:
        - {property: properties.product_id, op: "==", value: p2}
        - {not: {property: context.device.type, op: in, value: [mobile]}}
    aggregate: last
    of: properties.price
    window: {between: [3h, 1h]}
  pricing_first: {page: Pricing, aggregate: first_time}
  orders_7d: {event: Order Completed, aggregate: count, window: 7d}
  product_views_30d: {event: Product Viewed, aggregate: count, window: 30d}
  orders_lifetime: {event: Order Completed, aggregate: count}
  last_played: {event: Video Played, aggregate: last_time, window: 30d}
segments:
  - name: Buyers
    description: an order in 30 days
    condition: {feature: orders_30d, op: ">=", value: 1}
  - name: Abandoners
    description: a cart left alone, within the week
    condition:
      all:
        - {feature: cart_abandoned, op: "==", value: 1}
        - {feature: cart_idle_minutes, op: "<=", value: 10080}
  - name: Bursty
    description: three product views of one category within ten minutes
    condition: {event: Product Viewed, at_least: 3, within: 10m, per: category}
  - name: Mobile Browsers
    description: on a phone, not buying
    condition:
      all:
        - {feature: last_device, op: "==", value: mobile}
        - {not: {segment: Buyers}}
  - name: Busy Hour
    description: pages this hour, or a recent session
    group: activity
    condition:
      any:
        - {feature: page_views_1h, op: ">", value: 1}
        - {feature: sessions_7d, op: ">=", value: 2}
  - name: Quiet
    description: the rest of the activity group
    group: activity
    condition: {feature: days_since_last_seen, op: "<", value: 3}
  - name: Big Spenders
    description: a percentile no snapshot gave
    condition: {feature: revenue_30d, op: ">=", value: p90(revenue_30d)}
  - name: Many Categories
    description: a computed trait's percentile the snapshot gave
    condition: {computed: categories, op: ">=", value: p50(categories)}
  - name: Top Spenders
    description: a computed trait's percentile no snapshot gave
    condition: {computed: spent_2h, op: ">", value: p99.5(spent_2h)}
  - name: Shoe Plans
    description: identify traits, nested and of every type
    condition:
      all:
        - {trait: plan, op: in, value: [shoes, books]}
        - {trait: seats, op: ">", value: 9.99}
        - {not: {trait: address.country, op: "==", value: Desktop}}
  - name: Unplaced
    description: a trait never set, or set to null
    condition: {trait: address.country, op: missing}
  - name: Seated
    description: a trait of another type than the value
    condition: {trait: seats, op: not_in, value: [p1, 30]}
  - name: Phones
    description: text operators, in either case
    condition: {trait: address.country, op: starts_with, value: MOB, case: insensitive}
  - name: Desks
    description: a pattern, in either case
    condition: {trait: address.country, op: matches, value: "^desk(top)?$", case: insensitive}
  - name: Readers
    description: the end of a text
    condition: {trait: plan, op: ends_with, value: oks}
  - name: Second Seats
    description: text within text, never within a number
    condition: {trait: seats, op: contains, value: "2"}
  - name: New Accounts
    description: a time trait within the last day, which time flips
    condition: {trait: signed_up_at, op: within_last, value: 1d}
  - name: Old Accounts
    description: a time trait more than 30 hours ago
    condition: {trait: signed_up_at, op: more_than_ago, value: 30h}
  - name: Few Orders
    description: a built-in feature between two numbers, or among names
    condition:
      any:
        - {feature: orders_30d, op: between, value: [1, 2]}
        - {feature: last_device, op: in, value: [mobile, desktop]}
  - name: Video Fans
    description: a count over exact seconds
    condition: {computed: plays, op: ">=", value: 2}
  - name: Spenders
    description: a filtered sum over whole minutes, between two numbers
    condition: {computed: spent_2h, op: between, value: [10, 2000]}
  - name: Pricey
    description: an average over whole days of two events
    condition: {computed: avg_price_3d, op: ">", value: 20}
  - name: Cheap Last Week
    description: a minimum of every event, from 7 days ago to 1 day ago
    condition: {computed: cheapest, op: "<", value: 1}
  - name: Ever Pricey
    description: a lifetime maximum, or many categories
    condition:
      any:
        - {computed: priciest, op: ">=", value: 1000}
        - {computed: categories, op: ">=", value: 3}
  - name: Fans Of One
    description: the most frequent value
    condition: {computed: favourite, op: "==", value: p1}
  - name: Shoe Starters
    description: the first value, of an empty text too
    condition: {computed: first_category, op: in, value: [shoes, ""]}
  - name: Earlier Price
    description: the last value, from 3 hours ago to 1 hour ago
    condition: {computed: last_price, op: exists}
  - name: Pricing Readers
    description: a page's first time within the last 2 hours
    condition: {computed: pricing_first, op: within_last, value: 2h}
  - name: Lapsed Viewers
    description: a last time more than a day ago
    condition: {computed: last_played, op: more_than_ago, value: 1d}
  - name: Repeat Viewers
    description: a custom event's count with a filter, which time lowers
    condition:
      event: Video Played
      at_least: 2
      within: 2h
      where: {property: properties.product_id, op: "==", value: p2}
  - name: Trial Then Checkout
    description: a sequence of three steps, exact to the second
    condition:
      sequence:
        - {event: Product Added}
        - {event: Video Played, where: {property: properties.category, op: "!=", value: books}}
        - {event: Checkout Started}
      within: 2h
      window: 1d
  - name: Left Without Buying
    description: an addition with no order for 30 minutes, for a day
    condition:
      after: {event: Product Added}
      not: {event: Order Completed}
      within: 30m
      for: 1d
"""
RULES = parse_rules(RULES_TEXT)
"""Every form of condition: comparisons of numbers and text, all, any, not, a segment, a
burst, a priority group, a percentile no snapshot gave, traits, computed traits of every
aggregate and kind of window, a custom event's count."""
THRESHOLDS = {"p50(computed.categories)": 2.0}
"""The thresholds a model snapshot gave: one of two computed traits' percentiles."""
CLASSIFIER = Classifier(RULES, None, THRESHOLDS)


later = st.lists(
    st.one_of(
        st.tuples(st.just(300), st.integers(0, 13), st.integers(0, 1)),  # 5-minute edges
        st.tuples(st.just(HOUR), st.integers(0, 25), st.integers(0, 1)),  # hourly edges
        st.tuples(st.just(DAY), st.integers(0, 32), st.integers(0, 1)),  # daily edges
        st.tuples(st.just(1), st.integers(0, 45 * DAY), st.just(0)),  # anywhere
    ),
    min_size=1,
    max_size=8,
)
"""Moments after the last event: `(width, k, back)` is `back` seconds before the `k`-th
boundary of width `width` after the last event's bucket began, where windows turn."""


def message(number, actor, call, offset, category, amount, device, product, zone) -> bytes:
    """One raw Segment message of `actor` (a user or an anonymous id)."""
    sender = (USERS + ANONYMOUS)[actor]
    person = USERS[actor % len(USERS)]
    moment = datetime.fromtimestamp(START + offset, UTC)
    if zone == "+02:00":
        stamp = moment.astimezone(UTC).replace(tzinfo=None) + timedelta(hours=2)
        stamp_text = stamp.isoformat() + "+02:00"
    else:
        stamp_text = moment.replace(tzinfo=None).isoformat() + zone
    body: dict = {"messageId": f"m{number}", "timestamp": stamp_text}
    if device:
        body["context"] = {"device": {"type": device}}
    if call in ("page", "screen", "group"):
        body |= {"type": call, "userId" if sender in USERS else "anonymousId": sender}
        if call != "group" and category:
            body["name"] = "Pricing" if category == "shoes" else "Home"
        if call == "screen":  # traits in the context, as mobile SDKs send them
            body.setdefault("context", {})["traits"] = {"plan": category, "seats": product}
    elif call == "identify":
        body |= {"type": "identify", "userId": person, "anonymousId": f"a{person[1]}"}
        signed_up = (moment - timedelta(hours=amount)).isoformat()
        body["traits"] = {
            "plan": category or None,
            "seats": amount,
            "address": {"country": device},
            "signed_up_at": signed_up,
        }
    elif call == "alias":
        body |= {"type": "alias", "userId": person, "previousId": f"a{person[1]}"}
    else:
        properties: dict = {"product_id": product, "category": category, "price": amount}
        if call == "Order Completed":
            properties = {"revenue": amount, "products": [{"category": category}]}
        body |= {"type": "track", "event": call, "properties": properties}
        body["userId" if sender in USERS else "anonymousId"] = sender
    return orjson.dumps(body)


def read_by_the_core(raw: list[bytes]) -> list[Action]:
    actions = decode_events(raw, 32_768, keep=RULES.projection)
    assert all(isinstance(action, Action) for action in actions), actions
    return actions


def assert_equal_at(users, everyone, moment):
    """Every user's features and segments as of `moment` equal the oracle's, and the core
    took that moment: `everyone` is each person's raw-read events."""
    assert set(users) == set(everyone)
    rules = yaml.safe_load(RULES_TEXT)
    for user_id, user in users.items():
        assert user.as_of == moment, (user_id, user.as_of, moment)
        expected = oracle.features(everyone[user_id], moment)
        got = user.features()
        wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
        assert not wrong, (user_id, moment, wrong)
        expected_segments = oracle.segments(rules, everyone[user_id], moment, THRESHOLDS)
        assert set(user.segments) == expected_segments, user_id
        traits = oracle.traits(everyone[user_id], moment)
        assert user.traits() == {k: v for k, v in traits.items() if k in RULES.traits}, user_id
        computed = {
            name: oracle.computed_value(trait, everyone[user_id], moment)
            for name, trait in rules["computed"].items()
        }
        assert user.computed(CLASSIFIER.core) == computed, (user_id, moment)
        for shorthand in ("orders_7d", "product_views_30d", "orders_lifetime"):  # docs/features.md
            assert computed[shorthand] == got[shorthand], (user_id, shorthand)


VIEWED_AT_300 = (0, "Product Viewed", 300, "", 0.0, None, "p1", "Z")
"""A view in the second half of a 10-minute bucket: 12 buckets of 5 minutes keep it in
the hour 5 minutes longer than 6 buckets of 10 would."""


@settings(max_examples=1_000, deadline=None)
@given(events, later, st.randoms(use_true_random=False))
@example([VIEWED_AT_300], [(300, 11, 0)], random.Random(0))
def test_the_core_computes_what_the_oracle_computes_at_moments_the_test_chooses(
    stream, offsets, rng: random.Random
):
    raw = [message(number, *fields) for number, fields in enumerate(stream)]
    sent = read_by_the_core(raw)
    items: list = [*sent, *rng.sample(sent, k=len(sent) // 4)]  # some delivered twice
    rng.shuffle(items)  # in any order
    everyone = oracle.people(oracle.read(r) for r in raw)
    end = max(event.timestamp for events in everyone.values() for event in events)
    for _ in range(rng.randrange(3)):  # the watermark advancing on the way, before the end
        items.insert(
            rng.randrange(len(items) + 1), Advance(START + rng.randrange(int(end - START) + 1))
        )
    users = settle(items, CLASSIFIER)
    chosen = {(int(end) // width + k) * width - back for width, k, back in offsets}
    chosen |= {user.due - back for user in users.values() if user.due for back in (0, 1)}
    for moment in sorted(m for m in chosen if m >= int(end)):
        users = as_of(users, moment, CLASSIFIER).users
        users = {user_id: user for user_id, user in users.items() if user.alias_of is None}
        assert_equal_at(users, everyone, moment)


@settings(max_examples=600, deadline=None)
@given(events)
@example([VIEWED_AT_300, (0, "page", 3600, "", 0.0, None, "p1", "Z")])
def test_fed_in_time_order_the_core_agrees_with_the_oracle_after_every_event(stream):
    raw = [message(number, *fields) for number, fields in enumerate(stream)]
    keep = [i for i, fields in enumerate(stream) if fields[1] not in ("identify", "alias")]
    raw = [raw[i] for i in keep]  # one user each: no merges to wait for
    in_order = sorted(zip(read_by_the_core(raw), raw, strict=True), key=lambda p: p[0].timestamp)
    users: dict = {}
    arrived: list[bytes] = []
    for action, one in in_order:
        users = {**users, **step([action], users).users}
        arrived.append(one)
        everyone = oracle.people(oracle.read(r) for r in arrived)
        user = users[action.user_id]
        moment = float(int(action.timestamp))  # event times count in whole seconds
        assert user.as_of == moment  # the core is as of the event it just took
        expected = oracle.features(everyone[action.user_id], moment)
        got = user.features()
        wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
        assert not wrong, (action.user_id, moment, wrong)


def test_every_feature_is_compared():
    raw = message(0, 0, "page", 0, "", 0.0, None, "p1", "Z")
    user = step(read_by_the_core([raw])).users["u0"]
    assert set(user.features()) == set(oracle.features([oracle.read(raw)], START))
