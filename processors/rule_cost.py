"""What a rules file's computed traits, sequences and absences add to each user's state.

The sizes are those of the state row's msgpack encoding (docs/redis-keys.md): a
computed trait costs a fixed part and a cell per bucket (second, minute, day or the
lifetime) that holds a counted event, up to the buckets its window reads.

>>> from processors.rules import parse_rules
>>> rules = parse_rules('''
... computed:
...   minutes_30d: {event: Video Played, aggregate: sum, of: properties.minutes, window: 30d}
... segments:
...   - {name: Fans, description: d, condition: {computed: minutes_30d, op: ">", value: 60}}
... ''')
>>> for line in state_costs(rules):
...     print(line)
minutes_30d (sum over 30 days): 20 B + 11 B per day with events, at most 350 B
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from processors.rules import RuleSet

_FIXED = 20
"""A trait's key (12 characters), aggregate and the lists around its cells."""
_BUCKET = {1: 5, 60: 5, 86_400: 3, 0: 1}
"""A bucket's number, by bucket width (0: the lifetime's one bucket)."""
_CELL = {
    "count": 2,
    "sum": 7,
    "avg": 7,
    "min": 9,
    "max": 9,
    "distinct_count": 0,
    "most_frequent": 0,
    "first": 16,
    "last": 16,
    "first_time": 5,
    "last_time": 5,
}
"""A cell's fields, by aggregate (a count under 128, a sum under 4,295 in millionths, a
float, a time and a short text)."""
_PER_VALUE = 12
"""One distinct value of `distinct_count` or `most_frequent` (short text and its count)."""
_UNITS = {1: "second", 60: "minute", 86_400: "day", 0: "lifetime"}


def _window_text(window: dict[str, int] | None) -> str:
    if window is None:
        return "lifetime"
    unit = _UNITS[window["width"]]
    span = f"{window['buckets']} {unit}s"
    if window["skip"]:
        return f"{span} ending {window['skip']} {unit}s back"
    return span


def _trait(definition: dict[str, Any]) -> tuple[int, int, int]:
    """Fixed bytes, bytes per bucket, and the most buckets kept."""
    window = definition["window"]
    width = 0 if window is None else window["width"]
    per_bucket = 1 + _BUCKET[width] + _CELL[definition["aggregate"]]
    buckets = 1 if window is None else window["buckets"] + window["skip"]
    return _FIXED, per_bucket, buckets


def state_bytes(definition: dict[str, Any]) -> int:
    """The least a computed trait adds to a user's state row once it counted an event: its
    fixed part and one bucket."""
    fixed, per_bucket, _ = _trait(definition)
    return fixed + per_bucket


def state_costs(rules: RuleSet) -> Iterator[str]:
    """One line per computed trait (named, or a condition's own: a time-window condition's
    count, a sequence's steps, an absence's events) on its state per user."""
    for definition in rules.computed:
        fixed, per_bucket, buckets = _trait(definition)
        names = ", ".join(definition["names"]) or "a condition's own events"
        aggregate = definition["aggregate"]
        window = definition["window"]
        line = f"{names} ({aggregate} over {_window_text(window)}): {fixed} B"
        if window is None:
            line = f"{names} ({aggregate} over the lifetime): {fixed + per_bucket} B"
        elif window["width"] == 1 and buckets > 3_600:  # a sequence's step: event times
            days = buckets / 86_400
            line = f"{names} (event times kept {days:g} days): {fixed} B + {per_bucket} B "
            line += "per second with events"
        else:
            unit = _UNITS[window["width"]]
            line += f" + {per_bucket} B per {unit} with events, at most "
            line += f"{fixed + per_bucket * buckets:,} B"
        if aggregate in ("distinct_count", "most_frequent"):
            line += f", and about {_PER_VALUE} B per distinct value and bucket (up to 1,000)"
        yield line
