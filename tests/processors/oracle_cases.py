"""The oracle's answers as plain expected values for the core's Rust tests.

`processors/core/tests/data/oracle_cases.json` holds random one-person streams of raw
Segment messages, a rules file in the core's intermediate form, and for chosen moments
the features and segments `tests/oracle.py` computes from the messages up to each
moment. The Rust tests (`processors/core/tests/oracle_cases.rs`) check the core's
features, segments and timers against them, so `make mutants` can tell a mutated core
from a correct one without Python. `test_oracle_cases.py` checks that the file is what
this module writes; rewrite it with::

    .venv/bin/python -m tests.processors.oracle_cases

>>> case = stream(random.Random(1), 0)
>>> case["moments"][0][0] <= case["moments"][-1][0]
True
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from processors.rules import parse_rules
from tests import oracle
from tests.processors.test_core_oracle import CALLS, START, message

DAY, HOUR, MINUTE = 86_400, 3_600, 60
CASES = Path(__file__).parents[2] / "processors" / "core" / "tests" / "data" / "oracle_cases.json"
STREAMS = 40
RULES_TEXT = """
cart_abandonment_after: 20m
computed:
  plays_10m: {event: Video Played, aggregate: count, window: 10m}
  spent_2h: {event: Video Played, aggregate: sum, of: properties.price, window: 2h}
  cheapest: {any: true, aggregate: min, of: properties.price, window: {between: [7d, 1d]}}
  kinds_3d: {any: true, aggregate: distinct_count, of: properties.category, window: 3d}
  pricing_first: {page: Pricing, aggregate: first_time, window: 30d}
  last_played: {event: Video Played, aggregate: last_time, window: 30d}
segments:
  - name: Buyers
    description: an order in 30 days
    condition: {feature: orders_30d, op: ">=", value: 1}
  - name: Lapsing
    description: bought, but not for three days
    condition:
      all:
        - {feature: orders_lifetime, op: ">", value: 0}
        - {feature: days_since_last_order, op: ">", value: 3}
  - name: Newcomers
    description: first seen within a day
    condition: {feature: days_since_first_seen, op: "<=", value: 1}
  - name: Regulars
    description: two days or more since the first purchase day
    condition: {feature: T, op: ">=", value: 2}
  - name: Abandoners
    description: a cart left alone, within the week
    condition:
      all:
        - {feature: cart_abandoned, op: "==", value: 1}
        - {feature: cart_idle_minutes, op: "<", value: 10080}
  - name: Small Spenders
    description: some revenue this week, under 50
    condition:
      all:
        - {feature: revenue_7d, op: ">", value: 0}
        - {feature: revenue_7d, op: "<", value: 50}
  - name: Bursty
    description: three product views of one category within ten minutes
    condition: {event: Product Viewed, at_least: 3, within: 10m, per: category}
  - name: Shoe People
    description: shoes lead their month
    condition: {feature: top_category_30d, op: "==", value: shoes}
  - name: One Session
    description: exactly one session this week, pages today
    condition:
      all:
        - {feature: sessions_7d, op: "==", value: 1}
        - {feature: page_views_24h, op: "!=", value: 0}
  - name: Cooling
    description: busier last week than this one
    group: pace
    condition: {feature: events_per_active_day_prev_7d, op: ">=", value: 2}
  - name: Busy Hour
    description: views this hour
    group: pace
    condition: {feature: product_views_1h, op: ">=", value: 2}
  - name: Not Buying
    description: none of the buyers
    condition: {not: {segment: Buyers}}
  - name: Browsing
    description: pages this month, beside Buyers' orders in the same window group
    condition: {feature: page_views_30d, op: ">=", value: 2}
  - name: Weekly Visitors
    description: a session this week, beside the week's pages
    condition:
      any:
        - {feature: sessions_7d, op: ">=", value: 2}
        - {feature: searches_7d, op: ">=", value: 1}
  - name: Video Fans
    description: two plays within ten minutes (exact seconds)
    condition: {computed: plays_10m, op: ">=", value: 2}
  - name: Spenders
    description: between 10 and 2000 spent on plays in two hours (whole minutes)
    condition: {computed: spent_2h, op: between, value: [10, 2000]}
  - name: Cheap Last Week
    description: something under 1, from a week ago to a day ago (whole days)
    condition: {computed: cheapest, op: "<", value: 1}
  - name: Varied
    description: two kinds in three days
    condition: {computed: kinds_3d, op: ">=", value: 2}
  - name: Pricing Readers
    description: first read the pricing page within the last 2 hours
    condition: {computed: pricing_first, op: within_last, value: 2h}
  - name: Lapsed Viewers
    description: last played more than a day ago
    condition: {computed: last_played, op: more_than_ago, value: 1d}
  - name: Repeat Viewers
    description: two plays of p2 within 90 minutes
    condition:
      event: Video Played
      at_least: 2
      within: 90m
      where: {property: properties.product_id, op: "==", value: p2}
  - name: Viewed Then Paid
    description: two steps within 3 hours, true for 2 days, exact to the second
    condition:
      sequence: [{event: Product Viewed}, {event: Order Completed}]
      within: 3h
      window: 2d
  - name: Left Without Buying
    description: an addition with no order or checkout for an hour, for two days
    condition:
      after: {event: Product Added}
      not: {events: [Order Completed, Checkout Started]}
      within: 1h
      for: 2d
  - name: Still Away
    description: a page with no play after it for an hour, for ever
    condition:
      after: {page: Pricing}
      not: {event: Video Played}
      within: 1h
"""
GAPS = (10 * MINUTE, 3 * HOUR, 2 * DAY, 40 * DAY)
"""How far apart a stream's events may be: seconds, minutes, hours and days."""


def stream(rng: random.Random, number: int) -> dict:
    """One person's messages and the oracle's features and segments at chosen moments."""
    spread = rng.choice(GAPS)
    calls = [c for c in CALLS if c not in ("identify", "alias")]
    raw = [
        message(
            f"{number}-{index}",
            0,
            rng.choice(calls),
            rng.randrange(spread),
            rng.choice(["shoes", "books", ""]),
            rng.choice([0.0, 9.99, 30.0, 1234.5, 0.015]),
            rng.choice([None, "mobile", "Desktop"]),
            rng.choice(["p1", "p2"]),
            "Z",
        )
        for index in range(rng.randrange(1, 30))
    ]
    events = [oracle.read(r) for r in raw]
    times = sorted({int(e.timestamp) for e in events})
    end = times[-1]
    chosen = set(times)
    for width in (300, HOUR, DAY, 7 * DAY):
        for _ in range(3):
            boundary = (end // width + rng.randrange(40)) * width
            chosen |= {boundary - 1, boundary}
    chosen |= {end + rng.randrange(45 * DAY) for _ in range(4)}
    for moment in rng.sample(times, min(3, len(times))):  # where absences and sequences turn
        for span in (30 * MINUTE, HOUR, 2 * HOUR, DAY, DAY + 30 * MINUTE, DAY + HOUR):
            chosen |= {moment + span - 1, moment + span}
    rules = yaml.safe_load(RULES_TEXT)
    moments = []
    for moment in sorted(chosen):
        until = [e for e in events if int(e.timestamp) <= moment]
        values = oracle.features(until, moment, 20 * MINUTE)
        members = oracle.segments(rules, until, moment)
        moments.append([moment, [values[name] for name in values], sorted(members)])
    return {"events": [r.decode() for r in raw], "moments": moments}


def cases(seed: int = 0) -> dict:
    """The whole file: the rules, the feature names in order, and the streams."""
    rng = random.Random(seed)
    names = list(
        oracle.features([oracle.read(message(0, 0, "page", 0, "", 0.0, None, "p", "Z"))], START)
    )
    rules = parse_rules(RULES_TEXT)
    return {
        "rules": json.loads(rules.ir),
        "projection": rules.projection._asdict(),
        "features": names,
        "streams": [stream(rng, number) for number in range(STREAMS)],
    }


def written(seed: int = 0) -> str:
    """The file's text: one stream a line, so a change shows as a readable diff."""
    whole = cases(seed)
    lines = [json.dumps(s, separators=(",", ":")) for s in whole.pop("streams")]
    head = json.dumps(whole, separators=(",", ":"))
    return head[:-1] + ',"streams":[\n' + ",\n".join(lines) + "\n]}\n"


if __name__ == "__main__":
    CASES.parent.mkdir(parents=True, exist_ok=True)
    CASES.write_text(written())
    print(f"wrote {CASES}")
