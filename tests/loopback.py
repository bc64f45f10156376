"""Run the pipeline's pure step over a list of events with relays looped back, in memory.

What the workers do across partitions, done in one place: the reference the
integration tests compare Redis with.
"""

from __future__ import annotations

import math

from processors._core import User, run_partition
from processors.classifier import Classifier
from processors.events import Action
from processors.rules import RuleSet
from processors.wire import Absorb, Advance, Item, Merge


def settle(
    actions: list[Item], rules: RuleSet | Classifier, until: float | None = None
) -> dict[str, User]:
    """Every user's final state, merged ids left out; with `until`, as of that moment
    (what advancing every partition's watermark to it does)."""
    classifier = (rules if isinstance(rules, Classifier) else Classifier.of(rules)).core
    users: dict[str, User] = {}
    queue: list[Item] = list(actions)
    while queue:
        step = run_partition(queue, users, classifier, dedup_before=-math.inf)
        users.update(step.users)
        items, queue = queue, []
        for relay in step.relays:
            cause = items[relay.position]
            if relay.kind == "merge":
                queue.append(Merge(anonymous_id=relay.key, into=relay.body.decode()))
            elif relay.kind == "absorb":
                assert isinstance(cause, Merge)
                queue.append(Absorb(source_id=cause.anonymous_id, into=relay.key, state=relay.body))
            else:
                assert isinstance(cause, Action)
                queue.append(cause.for_user(relay.key))
    if until is not None:
        everyone = list(users)
        step = run_partition(
            [Advance(until)], users, classifier, dedup_before=-math.inf, partition_users=everyone
        )
        users.update(step.users)
    return {user_id: user for user_id, user in users.items() if user.alias_of is None}
