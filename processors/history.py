"""How much of the events' history the rules need: what a rebuild must find retained.

A rebuild from the events topic (`rules apply --backfill`) is exact when the
topic still holds every event a condition of the new rules can read as of now:
the longest window of their features, computed traits, sequences, absences and
bursts. Anything kept for a lifetime (a `*_lifetime` or since-first-seen
feature, an identify trait, a computed trait without a window, an open cart)
needs the whole history.

>>> from processors.rules import parse_rules
>>> needed_seconds(parse_rules('''segments:
...   - name: Weekly
...     description: Ordered this week.
...     condition: {feature: orders_7d, op: ">=", value: 1}'''))
604800.0
>>> needed_seconds(parse_rules('''segments:
...   - name: Ever
...     description: Ordered once.
...     condition: {feature: orders_lifetime, op: ">=", value: 1}'''))
inf
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import orjson

from processors.rules import RuleSet

FEATURE_WINDOWS = {
    "_1h": 3_600.0,
    "_24h": 86_400.0,
    "_prev_7d": 14 * 86_400.0,
    "_7d": 7 * 86_400.0,
    "_30d": 30 * 86_400.0,
}
"""A built-in feature's window, by the end of its name; the others reach back forever."""


def needed_seconds(rules: RuleSet) -> float:
    """The longest span of event time before now that `rules` can read (`inf`: all)."""
    return max(_segment_spans(rules).values(), default=0.0)


def segments_needing(rules: RuleSet, available: float) -> list[str]:
    """The segments of `rules` whose conditions read further back than `available`
    seconds: with less history than they need, they are not exact."""
    return [name for name, span in _segment_spans(rules).items() if span > available]


_COMPUTED_KEYS = ("computed", "after", "missing", "sequence")
"""Where a condition's intermediate form names computed traits by their numbers."""


def _segment_spans(rules: RuleSet) -> dict[str, float]:
    """Each segment's longest span of event time before now, the segments it names
    included."""
    intermediate = orjson.loads(rules.ir)
    computed = [_computed_span(definition) for definition in intermediate["computed"]]
    conditions = {s["name"]: s["condition"] for s in intermediate["segments"]}
    spans: dict[str, float] = {}

    def span(name: str) -> float:
        if name not in spans:
            found = 0.0
            for node in _nodes(conditions[name]):
                found = max(found, _node_span(node))
                for key in _COMPUTED_KEYS:
                    numbers = node.get(key)
                    for number in numbers if isinstance(numbers, list) else [numbers]:
                        if isinstance(number, int) and not isinstance(number, bool):
                            found = max(found, computed[number])
                if isinstance(node.get("segment"), str):
                    found = max(found, span(node["segment"]))
            spans[name] = found
        return spans[name]

    for name in conditions:
        span(name)
    return spans


def _computed_span(definition: dict[str, Any]) -> float:
    window = definition["window"]
    if window is None or not window["width"]:
        return math.inf
    return float((window["buckets"] + window["skip"]) * window["width"])


def _node_span(node: dict[str, Any]) -> float:
    if "feature" in node:
        name = node["feature"]
        return next((s for end, s in FEATURE_WINDOWS.items() if name.endswith(end)), math.inf)
    if "trait" in node:
        return math.inf
    if "burst" in node:
        return float(node["within"])
    return 0.0  # computed traits, sequences and absences: their definitions' spans


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a condition's intermediate form, the condition first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)
