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

from processors._core import PartitionStep, Resident, SegmentChange, User, Watermark, run_partition
from processors.classifier import Classifier
from processors.events import Action
from processors.model import Cluster, ModelSnapshot, PredictionModel
from processors.rules import RuleSet, parse_rules
from processors.wire import Advance, Item

NOBODY = parse_rules(
    "segments:\n  - {name: Nobody, description: d, "
    "condition: {feature: orders_lifetime, op: '<', value: 0}}\n"
)
"""Rules no user meets: for tests of aggregates alone."""


def step(
    items: Sequence[Item],
    stored: Mapping[str, User] | Mapping[str, bytes] | None = None,
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


def run_as_worker(
    items: Sequence[Item],
    rules: RuleSet,
    *,
    lateness: float,
    batch_sizes: Sequence[int],
    delay: float = 5.0,
    retention: float = 400 * 86_400.0,
    examples: list[bytes] | None = None,
    resident: Resident | None = None,
) -> tuple[list[SegmentChange], dict[str, User], dict[str, int]]:
    """Run `items` (in arrival order) through partition steps the way a worker does: a
    partition clock with the allowed `lateness` and firing `delay` that refuses late
    events, its firing clock as marks, a timer store of due times, state carried from step
    to step in its stored rows, users kept decoded in `resident` if given. The changes,
    the users and their timers at the end; each step's labelled examples (packed) go to
    `examples`."""
    clock = Watermark(lateness, delay)
    stored: dict[str, bytes] = {}
    timers: dict[str, int] = {}
    changes: list[SegmentChange] = []
    start = 0
    for size in batch_sizes:
        opened = clock.firing
        batch, marks = [], []
        for item in items[start : start + size]:
            if isinstance(item, Advance):
                clock.advance_to(item.until)
            elif isinstance(item, Action) and not clock.admit(item.timestamp):
                continue  # late: the worker dead-letters it
            batch.append(item)
            marks.append(clock.firing)
        start += size
        due = sorted((moment, user) for user, moment in timers.items() if moment <= clock.firing)
        outcome = step(
            batch,
            stored,
            rules,
            partition_users=list(stored),
            retention=retention,
            marks=marks,
            opened=opened,
            due=due,
            firing=clock.firing,
            resident=resident,
        )
        stored.update(outcome.rows)
        for user_id in outcome.expired:
            stored.pop(user_id, None)
        for user_id, moment in outcome.timers.items():
            if moment is None:
                timers.pop(user_id, None)
            else:
                timers[user_id] = moment
        changes += outcome.changes
        if examples is not None and outcome.example_count:
            examples.append(outcome.examples)
        del outcome  # the users it shared with `resident` are theirs alone again
    return changes, {key: User.from_bytes(row) for key, row in stored.items()}, timers


def per_user(changes: Sequence[SegmentChange]) -> dict[str, list[tuple[Any, ...]]]:
    """Each user's changes in order: version, entered, exited, reason and event time."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for change in changes:
        found.setdefault(change.user_id, []).append(
            (change.version, change.entered, change.exited, change.reason, change.event_time)
        )
    return found


def predicting(
    models: Mapping[str, PredictionModel],
    quantiles: Mapping[str, tuple[float, ...]] | None = None,
    version: int = 1,
) -> ModelSnapshot:
    """A snapshot of one cluster that scores `models` (predictions by name)."""
    return ModelSnapshot(
        version=version,
        generation=1,
        reason="initial",
        created_at=0.0,
        features=("orders_lifetime",),
        mean=(0.0,),
        std=(1.0,),
        clusters=(Cluster(id="c1", name="everyone", centroid=(0.0,), share=1.0),),
        min_events=0,
        quantiles=dict(quantiles or {}),
        predictions=dict(models),
    )
