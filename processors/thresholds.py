"""Which users a moved percentile threshold can move.

A rule compares a feature with a population percentile (`p90(revenue_30d)`) that
every model snapshot may move. The store keeps, per partition and per feature a
percentile compares, each user's value at their latest evaluation
(:func:`indexed_values`); when a snapshot moves a threshold from `old` to `new`, only
the users whose value lies between the two can change their answer
(:func:`moved_ranges`). A windowed feature compared with a percentile keeps its value
until the user's next evaluation (a timer re-evaluates them whenever its window
changes), so its range is exact, and so is a computed trait's (`computed.NAME`: its
timers too follow every change of its value); a clock feature (`days_since_…`) only
grows between evaluations, so its range reaches down to every lower value.

>>> from processors.rules import parse_rules
>>> rules = parse_rules("segments:\\n  - {name: Big, description: d, condition: "
...                     "{feature: revenue_30d, op: '>=', value: p90(revenue_30d)}}\\n")
>>> moved_ranges(rules, {"p90(revenue_30d)": 120.0}, {"p90(revenue_30d)": 95.5})
{'revenue_30d': (95.5, 120.0)}
>>> moved_ranges(rules, {}, {"p90(revenue_30d)": 95.5})
{'revenue_30d': (-inf, inf)}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from processors._core import CLOCK_FEATURES, User
from processors._core import Classifier as CompiledRules
from processors.rules import COMPUTED_PREFIX, PREDICTION_PREFIX, RuleSet, percentile_name


def indexed_features(rules: RuleSet) -> tuple[str, ...]:
    """The features `rules` compare with a percentile, sorted: those the store indexes (a
    prediction is not: every snapshot moves every user's, so a moved prediction
    percentile re-evaluates everyone)."""
    found = {feature for feature, _ in rules.percentiles}
    return tuple(sorted(f for f in found if not f.startswith(PREDICTION_PREFIX)))


def indexed_values(
    features: Iterable[str],
    users: Mapping[str, User],
    ids: Iterable[str],
    classifier: CompiledRules,
) -> dict[str, dict[str, float]]:
    """Per feature (or `computed.NAME`), the values of the users `ids` (merged ids left
    out) as of their latest evaluation: what the store's index keeps. A computed trait
    with no number (an average of no events) is left out: no threshold moves it."""
    chosen = [(user_id, users[user_id]) for user_id in ids if users[user_id].alias_of is None]
    features = list(features)
    found: dict[str, dict[str, float]] = {feature: {} for feature in features}
    computed = [name for name in features if name.startswith(COMPUTED_PREFIX)]
    for user_id, user in chosen:
        for feature in features:
            if not feature.startswith(COMPUTED_PREFIX):
                found[feature][user_id] = user.number(feature)
        if computed:
            values = user.vector(user_id, classifier).computed
            for name in computed:
                value = values.get(name.removeprefix(COMPUTED_PREFIX))
                if value is not None:
                    found[name][user_id] = value
    return found


def moved_ranges(
    rules: RuleSet, old: Mapping[str, float], new: Mapping[str, float]
) -> dict[str, tuple[float, float]]:
    """Per feature, the values between a threshold's `old` and `new` value (by percentile
    name; a percentile unknown before or after reaches every value), for the thresholds
    that moved; a prediction's are left out (see :func:`indexed_features`)."""
    found: dict[str, tuple[float, float]] = {}
    for feature, q in rules.percentiles:
        if feature.startswith(PREDICTION_PREFIX):
            continue
        name = percentile_name(feature, q)
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None or after is None:
            low, high = -math.inf, math.inf
        else:
            low, high = min(before, after), max(before, after)
        if feature in CLOCK_FEATURES:
            low = -math.inf
        if feature in found:
            low, high = min(low, found[feature][0]), max(high, found[feature][1])
        found[feature] = (low, high)
    return found
