"""Driving the compiled core from tests: one partition step over a list of items.

>>> from processors.events import Action, EventKind
>>> user = user_after(Action("u", "m1", EventKind.PAGE, 10.0))
>>> user.events, user.features()["page_views_1h"]
(1, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from processors._core import PartitionStep, User, run_partition
from processors.classifier import Classifier
from processors.events import Action
from processors.rules import RuleSet, parse_rules
from processors.wire import Advance, Item

NOBODY = parse_rules(
    "segments:\n  - {name: Nobody, description: d, "
    "condition: {feature: orders_lifetime, op: '<', value: 0}}\n"
)
"""Rules no user meets: for tests of aggregates alone."""


def step(
    items: Sequence[Item],
    stored: Mapping[str, User] | None = None,
    rules: RuleSet | Classifier = NOBODY,
    **options: Any,
) -> PartitionStep:
    """One partition step; message ids are remembered forever unless `dedup_before` says."""
    classifier = rules if isinstance(rules, Classifier) else Classifier.of(rules)
    options.setdefault("dedup_before", -math.inf)
    return run_partition(items, stored or {}, classifier.core, **options)


def user_after(*actions: Action, rules: RuleSet = NOBODY) -> User:
    """The one user `actions` make, in one step."""
    users = step(actions, rules=rules).users
    (user,) = users.values()
    return user


def as_of(
    users: Mapping[str, User], moment: float, rules: RuleSet | Classifier = NOBODY
) -> PartitionStep:
    """Every one of `users` evaluated as of `moment` (an advance of the watermark to it)."""
    return step([Advance(moment)], users, rules, partition_users=list(users))


def segments_of(
    rules: RuleSet, features: Mapping[str, float | str], thresholds: Mapping[str, float] = {}
) -> tuple[str, ...]:
    """The segments of a user with these feature values (the others as a new user's)."""
    return Classifier(rules, None, dict(thresholds)).core.segments_of(features)
