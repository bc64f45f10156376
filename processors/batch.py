"""A run of one partition's events applied to user state, without commands.

The worker's step is :func:`processors.partition.run_partition`; this is the
same for a plain list of events, as tests and offline tools use it.

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

from collections.abc import Mapping, Sequence

from processors.evaluation import Classification
from processors.events import Action
from processors.partition import PartitionStep, run_partition
from processors.user import UserState


def apply_batch(
    actions: Sequence[Action],
    stored: Mapping[str, UserState],
    classification: Classification,
    *,
    watermark: float,
) -> PartitionStep:
    """Fold `actions` into the users' `stored` state, evaluating each user after each event.

    `watermark` bounds the message ids remembered for deduplication.
    """
    return run_partition(actions, stored, classification, dedup_before=watermark)
