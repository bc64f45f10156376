"""Evaluating users against the rules at a moment of event time.

>>> from processors.events import Action, EventKind
>>> from processors.rules import parse_rules
>>> rules = parse_rules("segments:\\n  - {name: Quiet, description: d, "
...                     "condition: {feature: days_since_last_seen, op: '>', value: 1}}\\n")
>>> user = UserState()
>>> user.profile.apply(Action("u", "m", EventKind.PAGE, 0.0))
>>> [c.entered for c in evaluate([("u", user)], rules, reason="time", as_of=2 * 86_400.0)]
[('Quiet',)]
"""

from __future__ import annotations

from collections.abc import Iterable

from processors.profile import LazyFeatures
from processors.rules import RuleSet
from processors.segments import SegmentChange
from processors.user import UserState


def evaluate_one(
    user_id: str, user: UserState, rules: RuleSet, reason: str, as_of: float | None = None
) -> SegmentChange | None:
    """Evaluate one user; the change, if their segments moved.

    Evaluation never goes back in time: it is as of the later of `as_of`, the
    user's latest event and their previous evaluation.
    """
    moment = max(user.as_of, float(user.profile.last_seen or 0), as_of or 0.0)
    user.as_of = moment
    segments = rules.evaluate(LazyFeatures(user.profile, moment))
    return user.labels.move_to(segments, user_id=user_id, reason=reason, event_time=moment)


def evaluate(
    users: Iterable[tuple[str, UserState]],
    rules: RuleSet,
    *,
    reason: str,
    as_of: float | None = None,
) -> list[SegmentChange]:
    """Evaluate `users` as of `as_of` (default: their latest event) and return the changes."""
    changes = []
    for user_id, user in users:
        change = evaluate_one(user_id, user, rules, reason, as_of)
        user.profile.prune(user.as_of)
        if change is not None:
            changes.append(change)
    return changes
