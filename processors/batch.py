"""One batch of a partition's actions applied to user state: the worker's pure core.

Actions are applied in the order given (the aggregates do not depend on it);
a `messageId` seen before is skipped. A user is evaluated after each of their
actions, so their transitions depend only on their own events, not on batching.

>>> from processors.events import Action, EventKind
>>> from processors.rules import parse_rules
>>> rules = parse_rules('''
... segments:
...   - name: Buyers
...     description: Ordered at least once.
...     condition: {feature: orders_lifetime, op: ">=", value: 1}
... ''')
>>> actions = [Action("u1", "m1", EventKind.PAGE, 10.0), Action("u1", "m2", EventKind.ORDER, 20.0),
...            Action("u1", "m2", EventKind.ORDER, 20.0)]
>>> outcome = apply_batch(actions, {}, rules, watermark=0.0)
>>> [(c.user_id, c.entered, c.version) for c in outcome.changes], outcome.duplicates
([('u1', ('Buyers',), 1)], 1)
>>> outcome.users["u1"].profile.events
2
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from processors.events import Action
from processors.profile import LazyFeatures
from processors.rules import RuleSet
from processors.segments import ChangeReason, SegmentChange
from processors.user import UserState


@dataclass(slots=True)
class BatchOutcome:
    """What a batch produced: the new state of every touched user, and the changes."""

    users: dict[str, UserState]
    changes: list[SegmentChange]
    new_users: int
    duplicates: int


def apply_batch(
    actions: Sequence[Action],
    stored: Mapping[str, UserState],
    rules: RuleSet,
    *,
    watermark: float,
) -> BatchOutcome:
    """Fold one partition's `actions` into its users' `stored` state and re-evaluate them.

    `stored` holds the state loaded for (some of) the actions' users; a user
    without one starts empty. The states in `stored` are updated in place.
    `watermark` is the partition's watermark after these actions: message ids
    of events before it can be forgotten, since a duplicate of them is late.
    """
    users: dict[str, UserState] = {}
    changes = []
    new_users = duplicates = 0
    for action in actions:
        user = users.get(action.user_id)
        if user is None:
            user = stored.get(action.user_id)
            if user is None:
                user = UserState()
                new_users += 1
            users[action.user_id] = user
        if not user.first_time(action):
            duplicates += 1
            continue
        user.profile.apply(action)
        change = _evaluate(action.user_id, user, rules, ChangeReason.EVENT, None)
        if change is not None:
            changes.append(change)
    for user in users.values():
        user.forget_before(watermark)
        user.profile.prune(user.as_of)
    return BatchOutcome(users, changes, new_users, duplicates)


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
        change = _evaluate(user_id, user, rules, reason, as_of)
        user.profile.prune(user.as_of)
        if change is not None:
            changes.append(change)
    return changes


def _evaluate(
    user_id: str, user: UserState, rules: RuleSet, reason: str, as_of: float | None
) -> SegmentChange | None:
    """Evaluation never goes back in time: as of the later of `as_of`, the user's
    latest event and their previous evaluation."""
    moment = max(user.as_of, float(user.profile.last_seen or 0), as_of or 0.0)
    user.as_of = moment
    segments = rules.evaluate(LazyFeatures(user.profile, moment))
    return user.labels.move_to(segments, user_id=user_id, reason=reason, event_time=moment)
