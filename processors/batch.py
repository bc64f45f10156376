"""One batch of actions applied to user state: the worker's pure core.

Actions are applied in the order given; each touched user is then evaluated
once against the rules, so a batch yields at most one change per user.

>>> from processors.events import Action, EventKind
>>> from processors.rules import parse_rules
>>> rules = parse_rules('''
... segments:
...   - name: Buyers
...     description: Ordered at least once.
...     condition: {feature: orders, op: ">=", value: 1}
... ''')
>>> actions = [Action("u1", "m1", EventKind.PAGE, 10.0), Action("u1", "m2", EventKind.ORDER, 20.0)]
>>> outcome = apply_batch(actions, {}, rules)
>>> [(c.user_id, c.entered, c.version) for c in outcome.changes]
[('u1', ('Buyers',), 1)]
>>> outcome.users["u1"].profile.events
2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from processors.events import Action
from processors.rules import RuleSet
from processors.segments import ChangeReason, SegmentChange
from processors.user import UserState


@dataclass(slots=True)
class BatchOutcome:
    """What a batch produced: the new state of every touched user, and the changes."""

    users: dict[str, UserState]
    changes: list[SegmentChange]
    new_users: int


def apply_batch(
    actions: Sequence[Action], stored: Mapping[str, UserState], rules: RuleSet
) -> BatchOutcome:
    """Fold ``actions`` into the users' ``stored`` state and re-evaluate their segments.

    ``stored`` holds the state loaded for (some of) the actions' users; a user
    without one starts empty. The states in ``stored`` are updated in place.
    """
    users: dict[str, UserState] = {}
    new_users = 0
    for action in actions:
        user = users.get(action.user_id)
        if user is None:
            user = stored.get(action.user_id)
            if user is None:
                user = UserState()
                new_users += 1
            users[action.user_id] = user
        user.profile.apply(action)
    changes = []
    for user_id, user in users.items():
        as_of = user.profile.last_seen or 0.0
        user.as_of = as_of
        segments = rules.evaluate(user.profile.features(as_of))
        change = user.labels.move_to(
            segments, user_id=user_id, reason=ChangeReason.EVENT, event_time=as_of
        )
        if change is not None:
            changes.append(change)
    return BatchOutcome(users, changes, new_users)
