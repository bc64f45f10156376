"""How far back the rules read: what a rebuild needs the events topic to hold."""

from __future__ import annotations

import math
from pathlib import Path

from processors.history import needed_seconds, segments_needing
from processors.rules import parse_rules

BENCH = parse_rules(Path("processors/rules/computed-bench.yaml").read_text(encoding="utf-8"))
DAY = 86_400


def test_each_segment_reads_as_far_back_as_its_longest_window():
    rules = parse_rules(
        """computed:
  views_30d: {event: Product Viewed, aggregate: count, window: 30d}
  before: {event: Order Completed, aggregate: sum, of: properties.revenue,
           window: {between: [90d, 30d]}}
segments:
  - name: Bursty
    description: Three views in ten minutes.
    condition: {event: Product Viewed, at_least: 3, within: 10m}
  - name: Viewers
    description: Many views this month.
    condition: {computed: views_30d, op: ">=", value: 3}
  - name: Spent Before
    description: Spent in the two months before the last 30 days.
    condition: {computed: before, op: ">", value: 0}
  - name: Viewing Spenders
    description: Both.
    condition: {all: [{segment: Viewers}, {segment: Spent Before}]}
  - name: Pro
    description: On the pro plan.
    condition: {trait: plan, op: "==", value: pro}
"""
    )
    assert segments_needing(rules, 31 * DAY) == ["Spent Before", "Viewing Spenders", "Pro"]
    assert segments_needing(rules, 90 * DAY) == ["Pro"]
    assert segments_needing(rules, 600) == [name for name in rules.names if name != "Bursty"]
    assert needed_seconds(rules) == math.inf


def test_the_bench_rules_need_the_whole_history_for_their_lifetime_traits():
    assert needed_seconds(BENCH) == math.inf
    assert segments_needing(BENCH, 40 * DAY) == [
        "Heavy Browsers",
        "Growing Spenders",
        "Loyal",
        "Left At Checkout",
        "Lapsed Customers",
        "Steady",
    ]
