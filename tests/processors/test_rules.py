"""Rule files: evaluation, and errors reported with line and field."""

from pathlib import Path

import pytest

from processors.classifier import Classifier
from processors.events import Action, EventKind
from processors.rules import RuleFileError, parse_rules
from streams.settings import default_rules_file
from tests.steps import as_of, segments_of, step

ONE = """
segments:
  - name: Mixed
    description: test
    condition:
      any:
        - all:
            - {feature: orders_lifetime, op: ">", value: 2}
            - {feature: revenue_lifetime, op: "<", value: 100}
        - not: {feature: page_views_30d, op: "!=", value: 7}
"""


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        ({"orders_lifetime": 3, "revenue_lifetime": 50, "page_views_30d": 0}, ("Mixed",)),
        ({"orders_lifetime": 3, "revenue_lifetime": 150, "page_views_30d": 0}, ()),
        ({"orders_lifetime": 0, "revenue_lifetime": 0, "page_views_30d": 7}, ("Mixed",)),
        ({"orders_lifetime": 2, "revenue_lifetime": 50, "page_views_30d": 8}, ()),
    ],
)
def test_nested_conditions(features, expected):
    assert segments_of(parse_rules(ONE), features) == expected


@pytest.mark.parametrize(
    ("op", "below", "at", "above"),
    [
        (">", False, False, True),
        (">=", False, True, True),
        ("<", True, False, False),
        ("<=", True, True, False),
        ("==", False, True, False),
        ("!=", True, False, True),
    ],
)
def test_every_operator_on_both_sides_of_its_threshold(op, below, at, above):
    text = f"segments:\n  - name: S\n    description: d\n    condition: {{feature: orders_lifetime, op: '{op}', value: 1}}\n"
    rules = parse_rules(text)
    for orders, holds in [(0, below), (1, at), (2, above)]:
        assert segments_of(rules, {"orders_lifetime": orders}) == (("S",) if holds else ()), orders


def test_default_rules_parse():
    rules = parse_rules(Path(default_rules_file()).read_text())
    assert rules.names == (
        "High-Value Recent Buyers",
        "Lapsed Customers",
        "Cart Abandoners",
        "Frequent Browsers",
        "Bargain Hunters",
        "New Visitors",
    )


def errors_of(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        parse_rules(text, source="test.yaml")
    return [str(error) for error in caught.value.errors]


def test_errors_name_line_and_field():
    text = """segments:
  - name: A
    description: x
    condition:
      all:
        - {feature: orders_lifetime, op: '>=', value: 1}
        - not: {feature: orders_lifetime, op: '=>', value: 1}
        - any: []
        - {bogus: 1}
  - name: B
    description: y
    condition: {feature: no_such_feature, op: '>', value: abc}
"""
    assert errors_of(text) == [
        "line 7, segments[0].condition.all[1].not.op: Input should be '>', '>=', '<', '<=', '==', '!=', 'between', 'in' or 'not_in'",
        "line 8, segments[0].condition.all[2].any: List should have at least 1 item after validation, not 0",
        "line 9, segments[0].condition.all[3]: a condition is a mapping with one of: all, any, not, feature, trait, computed, "
        "prediction, event, sequence, after, segment",
        "line 12, segments[1].condition.feature: unknown feature 'no_such_feature'; an identify "
        "trait is `trait: no_such_feature`, a computed trait `computed: no_such_feature` "
        "(docs/rules.md lists the features)",
    ]


def test_text_features_compare_by_equality_and_numbers_need_numbers():
    text = """segments:
  - name: A
    description: x
    condition:
      all:
        - {feature: top_category_30d, op: '>', value: shoes}
        - {feature: orders_30d, op: '>', value: many}
"""
    assert errors_of(text) == [
        "line 6, segments[0].condition.all[0]: a text feature compares with ==, !=, in or not_in",
        "line 7, segments[0].condition.all[1].value: a number or a percentile such as p75(revenue_30d)",
    ]
    rules = parse_rules(
        "segments:\n  - {name: Shoes, description: d, condition: {feature: top_category_30d, op: '==', value: shoes}}\n"
    )
    assert segments_of(rules, {"top_category_30d": "shoes"}) == ("Shoes",)
    assert segments_of(rules, {"top_category_30d": "bags"}) == ()


def test_yaml_syntax_error_has_a_line():
    assert errors_of("segments:\n  - name: [unclosed\n") == [
        "line 3, (yaml): expected ',' or ']', but got '<stream end>'"
    ]


def test_duplicate_names_are_refused():
    text = (
        "segments:\n"
        + "  - {name: A, description: d, condition: {feature: orders_lifetime, op: '>', value: 1}}\n"
        * 2
    )
    assert errors_of(text) == ["line 3, segments[1].name: duplicate segment name 'A'"]


def test_an_empty_or_plain_text_file_is_refused_in_one_sentence():
    shape = "a rules file is a mapping with a `segments:` list (see docs/rules.md)"
    for text, what in (("", "is empty"), ("hello world\n", "is not a YAML mapping")):
        with pytest.raises(RuleFileError) as refused:
            parse_rules(text, source="r.yaml")
        assert str(refused.value) == f"r.yaml {what}: {shape}"


def test_every_error_is_reported_at_once_each_at_its_own_line():
    text = """segments:
  - name: Buyers
    description: bought
    condition: {feature: orders_lifetime, op: ">=", value: 1}
  - name: Weird
    condition: {feature: orders_30d, op: "=>", value: 2}
  - name: Combo
    description: buyers
    condition:
      all:
        - {segment: Buyer}
        - {feature: revenue_30d, op: ">", value: ten}
  - name: Buyers
    description: again
    condition: {not: {segment: Nobody}}
"""
    assert errors_of(text) == [
        "line 5, segments[1].description: Field required",
        "line 6, segments[1].condition.op: Input should be '>', '>=', '<', '<=', '==', '!=', "
        "'between', 'in' or 'not_in'",
        "line 11, segments[2].condition.all[0].segment: unknown segment 'Buyer'",
        "line 12, segments[2].condition.all[1].value: a number or a percentile such as "
        "p75(revenue_30d)",
        "line 13, segments[3].name: duplicate segment name 'Buyers'",
        "line 15, segments[3].condition.not.segment: unknown segment 'Nobody'",
    ]


BURST = """segments:
  - name: Shoe Burst
    description: Three views of one category within ten minutes.
    condition:
      all:
        - {event: Product Viewed, at_least: 3, within: 10m, per: category}
        - {feature: orders_lifetime, op: "==", value: 0}
"""


def views(*moments, category="shoes"):
    return [
        Action("u", f"{category}{number}", EventKind.PRODUCT_VIEWED, moment, categories=(category,))
        for number, moment in enumerate(moments)
    ]


def segments_at(actions, moment):
    rules = parse_rules(BURST)
    users = step(actions, rules=rules).users
    return as_of(users, moment, rules).users["u"].segments


def test_time_window_condition_counts_one_category_within_the_window():
    assert segments_at(views(0, 200, 590), 590) == ("Shoe Burst",)
    assert segments_at(views(0, 200, 590), 801) == ()  # the first view slid out
    assert segments_at(views(0, 400, 900), 900) == ()
    assert segments_at([*views(0, 100), *views(150, category="bags")], 150) == ()


def test_time_window_condition_errors():
    text = """segments:
  - name: A
    description: d
    condition: {event: Product Viewed, at_least: 0, within: 401d}
  - name: B
    description: d
    condition: {event: Product Viewed, at_least: 2, within: 3 days}
  - name: C
    description: d
    condition: {event: Video Played, at_least: 2, within: 50h, per: category}
  - name: D
    description: d
    condition: {event: Video Played, at_least: 2, within: 90s}
"""
    assert errors_of(text) == [
        "line 4, segments[0].condition.at_least: Input should be greater than or equal to 1",
        "line 4, segments[0].condition.within: between 1s and 400d",
        "line 7, segments[1].condition.within: a duration such as 10m, 48h or 30d",
        "line 10, segments[2].condition.within: a window longer than 48h counts whole days: "
        "50h is not a whole number of days",
    ]


PERCENTILES = """
segments:
  - name: Big Spenders
    description: Spent at least the 75th percentile in 30 days.
    condition: {feature: revenue_30d, op: ">=", value: p75(revenue_30d)}
  - name: Top Browsers
    description: Views above the 99.5th percentile.
    condition: {feature: product_views_7d, op: ">", value: "p99.5( product_views_7d )"}
"""


def test_percentile_thresholds_read_population_values_by_name():
    rules = parse_rules(PERCENTILES)
    assert rules.percentiles == {("revenue_30d", 75.0), ("product_views_7d", 99.5)}
    thresholds = {"p75(revenue_30d)": 120.0, "p99.5(product_views_7d)": 40.0}
    features = {"revenue_30d": 120.0, "product_views_7d": 41.0}
    assert segments_of(rules, features, thresholds) == ("Big Spenders", "Top Browsers")
    assert segments_of(rules, {**features, "revenue_30d": 119.0}, thresholds) == ("Top Browsers",)


def test_unknown_percentiles_match_nobody():
    order = [Action("u", "m", EventKind.ORDER, 10.0, value=500.0)]
    rules = parse_rules(PERCENTILES)
    assert step(order, rules=rules).users["u"].segments == ()
    known = Classifier(rules, None, {"p75(revenue_30d)": 100.0})
    assert step(order, rules=known).users["u"].segments == ("Big Spenders",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("p101(revenue_30d)", "a percentile is between p0 and p100"),
        ("p75(no_such_feature)", "unknown numeric feature 'no_such_feature'"),
        ("p75(last_device)", "unknown numeric feature 'last_device'"),
        ("q75(revenue_30d)", "a number or a percentile such as p75(revenue_30d)"),
    ],
)
def test_bad_percentiles_are_refused_with_line_and_field(value, message):
    text = f"segments:\n  - name: S\n    description: d\n    condition: {{feature: revenue_30d, op: '>', value: '{value}'}}\n"
    assert errors_of(text) == [f"line 4, segments[0].condition.value: {message}"]


REFERENCES = """
segments:
  - name: VIP Lapsed
    description: Lapsed, and a big spender.
    condition:
      all:
        - {segment: Lapsed}
        - {feature: revenue_lifetime, op: ">=", value: 1000}
  - name: Lapsed
    description: No order for 30 days.
    condition: {feature: days_since_last_order, op: ">", value: 30}
    group: lifecycle
  - name: Active
    description: Ordered within 30 days.
    condition: {feature: orders_30d, op: ">=", value: 0}
    group: lifecycle
  - name: Not Active
    description: Anyone the lifecycle group did not call active.
    condition: {not: {segment: Active}}
"""


def test_segments_can_refer_to_segments_decided_before_them():
    rules = parse_rules(REFERENCES)
    lapsed_vip = {"revenue_lifetime": 2000, "days_since_last_order": 40, "orders_30d": 0}
    assert segments_of(rules, lapsed_vip) == ("VIP Lapsed", "Lapsed", "Not Active")
    active = {"revenue_lifetime": 2000, "days_since_last_order": 2, "orders_30d": 1}
    assert segments_of(rules, active) == ("Active",)


def test_reference_cycles_and_unknown_segments_are_refused():
    cycle = """segments:
  - name: A
    description: a
    condition: {segment: B}
  - name: B
    description: b
    condition: {any: [{segment: C}, {feature: orders_30d, op: '>', value: 1}]}
  - name: C
    description: c
    condition: {not: {segment: A}}
"""
    assert errors_of(cycle) == [
        "line 4, segments[0].condition: segments refer to each other in a cycle: A -> B -> C -> A"
    ]
    through_group = """segments:
  - name: A
    description: a
    condition: {segment: B}
    group: g
  - name: B
    description: b
    condition: {feature: orders_30d, op: '>', value: 1}
    group: g
"""
    assert errors_of(through_group) == [
        "line 4, segments[0].condition: segments refer to each other in a cycle: A -> B -> A"
    ]
    unknown = "segments:\n  - name: A\n    description: a\n    condition: {segment: Nobody}\n"
    assert errors_of(unknown) == ["line 4, segments[0].condition.segment: unknown segment 'Nobody'"]


def test_computed_trait_errors_name_line_and_field_all_at_once():
    text = """computed:
  minutes:
    event: Video Played
    aggregate: median
    of: properties.minutes
  plays: {event: Video Played, aggregate: sum, window: 50h}
  shows: {aggregate: distinct_count, of: properties.show}
  played_at: {event: Video Played, aggregate: last_time, of: properties.at, window: 401d}
  phones:
    page: Home
    where: {property: context.device.type, op: matches, value: "("}
    aggregate: count
segments:
  - name: A
    description: d
    condition: {computed: nope, op: ">", value: 1}
"""
    errors = errors_of(text)
    assert errors[0].startswith("line 4, computed.minutes.aggregate: Input should be 'count'")
    assert errors[1:] == [
        "line 6, computed.plays.window: a window longer than 48h counts whole days: 50h is not "
        "a whole number of days",
        "line 7, computed.shows: name exactly one of event, events, any: true or page",
        "line 8, computed.played_at.window: between 1s and 400d",
        "line 11, computed.phones.where.value: not a regular expression: error: unclosed group",
    ]


def test_a_computed_trait_is_compared_as_its_type_allows():
    text = """computed:
  minutes: {event: Video Played, aggregate: sum, of: properties.minutes, window: 30d}
  last_played: {event: Video Played, aggregate: last_time}
segments:
  - name: A
    description: d
    condition:
      any:
        - {computed: minutes, op: contains, value: "1"}
        - {computed: last_played, op: ">", value: 3}
        - {computed: unknown, op: exists}
"""
    assert errors_of(text) == [
        "line 9, segments[0].condition.any[0].op: 'minutes' (sum) is a number: contains cannot "
        "compare it; use one of >, >=, <, <=, between, ==, !=, in, not_in, exists, missing",
        "line 10, segments[0].condition.any[1].op: 'last_played' (last_time) is a time: > cannot "
        "compare it; use one of within_last, more_than_ago, exists, missing, ==, !=",
        "line 11, segments[0].condition.any[2].computed: unknown computed trait 'unknown'",
    ]


def test_a_computed_trait_compares_with_a_percentile_of_a_numeric_one():
    text = """computed:
  minutes: {event: Video Played, aggregate: sum, of: properties.minutes, window: 30d}
  genre: {event: Video Played, aggregate: most_frequent, of: properties.genre, window: 30d}
  orders_30d: {event: Order Completed, aggregate: count, window: 30d}
segments:
  - name: Binge Watchers
    description: d
    condition: {computed: minutes, op: ">=", value: p90(minutes)}
  - name: Buyers
    description: a computed trait named like a feature keeps its own percentile
    condition: {computed: orders_30d, op: ">", value: p50(orders_30d)}
"""
    rules = parse_rules(text)
    assert rules.percentiles == {("computed.minutes", 90.0), ("computed.orders_30d", 50.0)}
    wrong = text.replace("p90(minutes)", "p90(genre)").replace("p50(orders_30d)", "p101(x)")
    assert errors_of(wrong) == [
        "line 11, segments[1].condition.value: a percentile is between p0 and p100",
    ]
    wrong = text.replace("p90(minutes)", "p90(genre)").replace("p50(orders_30d)", "p50(nope)")
    assert errors_of(wrong) == [
        "line 8, segments[0].condition.value: a percentile of a numeric computed trait; 'genre' "
        "is not a number (most_frequent)",
        "line 11, segments[1].condition.value: a percentile of a numeric computed trait; 'nope' "
        "is unknown",
    ]
    wrong = text.replace("{computed: minutes, op", "{computed: genre, op")
    assert errors_of(wrong)[0] == (
        "line 8, segments[0].condition.computed: 'genre' (most_frequent) is not a number: "
        "no percentile"
    )
