"""One partition's share of a batch, in offset order: events and pipeline commands.

Besides tracker events, a partition carries commands the pipeline sends itself:

- :class:`Merge` — "the anonymous id on this partition is `into`": its profile
  becomes a tombstone pointing at `into`, and its aggregates travel on as
  an :class:`Absorb` keyed by `into`;
- :class:`Absorb` — another id's aggregates, to add to this user's;
- :class:`Advance` — the partition's watermark moves to `until`: every user of
  the partition is evaluated as of then.

Events for a tombstoned id are forwarded to the user it points at. The step
returns these as :class:`Relay` messages for the worker to produce.

>>> from processors.events import Action, EventKind
>>> from processors.rules import parse_rules
>>> rules = parse_rules("segments:\\n  - {name: Any, description: d, "
...                     "condition: {feature: events_lifetime, op: '>', value: 0}}\\n")
>>> step = run_partition([Action("anon", "m1", EventKind.PAGE, 1.0), Merge("anon", "ann"),
...                       Action("anon", "m2", EventKind.PAGE, 2.0)], {}, rules, dedup_before=0)
>>> [(relay.kind, relay.key) for relay in step.relays]
[('absorb', 'ann'), ('forward', 'ann')]
>>> step.users["anon"].alias_of
'ann'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from processors.evaluation import (
    Classification,
    Classifier,
    evaluate,
    evaluate_one,
    place,
    vectors,
)
from processors.events import Action, EventKind
from processors.segments import ChangeReason, SegmentChange
from processors.user import UserState
from processors.vectors import FeatureVector


@dataclass(frozen=True, slots=True)
class Merge:
    """The id `anonymous_id` (whose events arrive on this partition) is the user `into`."""

    anonymous_id: str
    into: str


@dataclass(frozen=True, slots=True)
class Absorb:
    """The aggregates of `source_id`, serialised, to add to user `into`."""

    source_id: str
    into: str
    state: bytes


@dataclass(frozen=True, slots=True)
class Advance:
    """The partition's watermark moves to `until` (epoch seconds)."""

    until: float


Item = Action | Merge | Absorb | Advance


@dataclass(frozen=True, slots=True)
class Relay:
    """A message the pipeline sends itself on the events topic, keyed by `key`.

    `kind` is `merge`, `absorb` or `forward`; `body` is the command's payload
    (for `forward`, the worker sends the original event); `position` is the
    index of the item that caused it.
    """

    kind: str
    key: str
    body: bytes = b""
    position: int = -1


@dataclass(slots=True)
class PartitionStep:
    """What one partition's items produced.

    `touched` maps each user whose aggregates or evaluation moved to why
    (`event`, `merge` or `time`); `vectors` are their feature vectors, one per
    user, and `placed` those the model placed in a cluster (their labels
    record its version even when the cluster stayed the same).
    """

    users: dict[str, UserState]
    changes: list[SegmentChange] = field(default_factory=list)
    touched: dict[str, str] = field(default_factory=dict)
    vectors: list[FeatureVector] = field(default_factory=list)
    placed: list[str] = field(default_factory=list)
    relays: list[Relay] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    new_users: int = 0
    applied: int = 0
    duplicates: int = 0


def run_partition(
    items: Sequence[Item],
    stored: Mapping[str, UserState],
    classification: Classification,
    *,
    dedup_before: float,
    partition_users: Sequence[str] = (),
    retention: float = math.inf,
) -> PartitionStep:
    """Apply `items` in order to the partition's users.

    `stored` holds the loaded state of the users the items name (and, when an
    :class:`Advance` is among them, of all `partition_users`). Message ids of
    events before `dedup_before` are forgotten at the end. When a watermark
    advance leaves a user without events for more than `retention` seconds,
    the user expires: they leave their segments and their state is dropped.
    At the end, every touched user gets a feature vector and, when
    `classification` has a model, a cluster: at most one cluster change per
    user per step.
    """
    rules = classification if isinstance(classification, Classifier) else Classifier(classification)
    step = PartitionStep(users={})

    def user(user_id: str) -> UserState:
        found = step.users.get(user_id)
        if found is None:
            found = stored.get(user_id)
            if found is None:
                found = UserState()
                step.new_users += 1
            step.users[user_id] = found
        return found

    for position, item in enumerate(items):
        match item:
            case Action():
                _event(item, user(item.user_id), step, rules, position)
            case Merge():
                _merge(item, user(item.anonymous_id), step, position)
            case Absorb():
                _absorb(item, user(item.into), step, rules)
            case Advance():
                ids = dict.fromkeys([*partition_users, *step.users])
                everyone = [(user_id, user(user_id)) for user_id in ids]
                everyone = [(user_id, state) for user_id, state in everyone if not state.alias_of]
                idle_since = item.until - retention
                for user_id, state in everyone:
                    last_seen = state.profile.last_seen
                    if last_seen is not None and last_seen < idle_since:
                        _expire(user_id, state, step, item.until)
                active = [(u, state) for u, state in everyone if u not in step.expired]
                step.changes += evaluate(active, rules, reason=ChangeReason.TIME, as_of=item.until)
                for user_id, _ in active:
                    step.touched.setdefault(user_id, ChangeReason.TIME)
    for state in step.users.values():
        state.forget_before(dedup_before)
        state.profile.prune(state.as_of)
    _vectorise(step, rules)
    return step


def _vectorise(step: PartitionStep, rules: Classifier) -> None:
    """Feature vectors of the touched users, and their clusters when there is a model."""
    touched = [
        (user_id, step.users[user_id])
        for user_id in step.touched
        if user_id not in step.expired and step.users[user_id].alias_of is None
    ]
    step.vectors = vectors(touched)
    if rules.model is None:
        return
    vector_of = {vector.user_id: vector for vector in step.vectors}
    for reason in (ChangeReason.EVENT, ChangeReason.MERGE, ChangeReason.TIME):
        group = [(user_id, state) for user_id, state in touched if step.touched[user_id] == reason]
        found = [vector_of[user_id] for user_id, _ in group]
        step.changes += place(group, found, rules.model, reason=reason)
        step.placed += [user_id for user_id, _ in group]


def _event(
    action: Action, state: UserState, step: PartitionStep, rules: Classifier, position: int
) -> None:
    if state.alias_of:
        step.relays.append(Relay("forward", state.alias_of, position=position))
        return
    if not state.first_time(action):
        step.duplicates += 1
        return
    step.applied += 1
    other = action.anonymous_id if action.kind is EventKind.IDENTIFY else action.previous_id
    if other and other != action.user_id and other not in state.linked:
        state.linked.append(other)
        step.relays.append(Relay("merge", other, action.user_id.encode(), position))
    state.profile.apply(action)
    step.touched[action.user_id] = ChangeReason.EVENT
    _record(step, evaluate_one(action.user_id, state, rules, ChangeReason.EVENT))


def _merge(merge: Merge, state: UserState, step: PartitionStep, position: int) -> None:
    if state.alias_of or merge.anonymous_id == merge.into:
        return  # already merged; the first link wins
    payload = state.to_bytes()
    state.alias_of = merge.into
    exit_all = state.labels.clear(
        user_id=merge.anonymous_id, reason=ChangeReason.MERGE, event_time=state.as_of
    )
    _record(step, exit_all)
    step.relays.append(Relay("absorb", merge.into, payload, position))


def _absorb(absorb: Absorb, state: UserState, step: PartitionStep, rules: Classifier) -> None:
    if absorb.source_id in state.absorbed:
        return
    state.absorbed.append(absorb.source_id)
    other = UserState.from_bytes(absorb.state)
    state.profile.merge(other.profile)
    state.recent.update(other.recent)
    state.as_of = max(state.as_of, other.as_of)
    step.touched.setdefault(absorb.into, ChangeReason.MERGE)
    _record(step, evaluate_one(absorb.into, state, rules, ChangeReason.MERGE))


def _expire(user_id: str, state: UserState, step: PartitionStep, moment: float) -> None:
    if user_id in step.expired:
        return
    state.as_of = max(state.as_of, moment)
    _record(
        step, state.labels.clear(user_id=user_id, reason=ChangeReason.EXPIRED, event_time=moment)
    )
    step.expired.append(user_id)


def _record(step: PartitionStep, change: SegmentChange | None) -> None:
    if change is not None:
        step.changes.append(change)
