"""One partition's share of a batch, in offset order: events and pipeline commands.

Besides tracker events, a partition carries commands the pipeline sends itself:

- :class:`Merge` — "the anonymous id on this partition is `into`": its profile
  becomes a tombstone pointing at `into`, and its aggregates travel on as
  an :class:`Absorb` keyed by `into`;
- :class:`Absorb` — another id's aggregates, to add to this user's;
- :class:`Advance` — the partition's watermark moves to `until`: the timers due
  by then fire, and every user of the partition is evaluated as of then;
- :class:`Erase` — forget a user on request: they leave their segments, their
  state, labels and timer go, and a tombstone follows on the change topic; the
  ids merged with them are erased too, wherever their partition.

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

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from processors.evaluation import (
    Classification,
    Classifier,
    evaluate,
    evaluate_one,
    place,
    vectors,
)
from processors.events import Action, EventKind
from processors.segments import ChangeReason, SegmentChange, UserLabels
from processors.timers import expires, next_due
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


@dataclass(frozen=True, slots=True)
class Erase:
    """Forget `user_id`; with `follow`, also the user it is an alias of and the ids linked."""

    user_id: str
    follow: bool = True


Item = Action | Merge | Absorb | Advance | Erase


@dataclass(frozen=True, slots=True)
class Relay:
    """A message the pipeline sends itself on the events topic, keyed by `key`.

    `kind` is `merge`, `absorb`, `forward` or `erase`; `body` is the command's payload
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
    record its version even when the cluster stayed the same). `timers` maps
    each user whose timer moved to its new due time (`None`: no timer), and
    `fired` counts the timers that came due. `erased` are the users forgotten
    on request; their state goes like that of the `expired` ones.
    """

    users: dict[str, UserState]
    changes: list[SegmentChange] = field(default_factory=list)
    touched: dict[str, str] = field(default_factory=dict)
    vectors: list[FeatureVector] = field(default_factory=list)
    placed: list[str] = field(default_factory=list)
    relays: list[Relay] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    timers: dict[str, int | None] = field(default_factory=dict)
    fired: int = 0
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
    marks: Sequence[float] | None = None,
    due: Sequence[tuple[int, str]] = (),
    watermark: float = -math.inf,
) -> PartitionStep:
    """Apply `items` in order to the partition's users, firing their timers on the way.

    `stored` holds the loaded state of the users the items name, of the users
    with timers in `due` (from the timer store, due by `watermark`) and, when an
    :class:`Advance` is among the items, of all `partition_users`. `marks` gives
    the partition's watermark after each item: a timer fires as soon as the
    watermark reaches it, and before any later event of its user, so where
    batches end never changes what a user goes through. A user's own event at
    time `t` first fires their timers due by `t`. When a user has had no events
    for more than `retention` seconds, they expire: they leave their segments
    and their state is dropped. Message ids of events before `dedup_before` are
    forgotten at the end. At the end, every touched user gets a feature vector
    and, when `classification` has a model, a cluster: at most one cluster
    change per user per step.
    """
    rules = classification if isinstance(classification, Classifier) else Classifier(classification)
    step = PartitionStep(users={})
    clock = _Timers(step, stored, rules, retention)
    clock.load(due)

    for position, item in enumerate(items):
        match item:
            case Action():
                state = clock.catch_up(item.user_id, item.timestamp)
                late = item.timestamp < state.as_of
                unsettled = _event(item, state, step, rules, position)
                clock.moved(item.user_id, state, item.timestamp, exact=late or unsettled)
            case Merge():
                _merge(item, clock.user(item.anonymous_id), step, position)
                clock.drop(item.anonymous_id)
            case Absorb():
                state = clock.catch_up(item.into, -math.inf)
                _absorb(item, state, step, rules)
                clock.moved(item.into, state, state.as_of, exact=True)
            case Advance():
                clock.settle(item.until)
                _sweep(item.until, partition_users, step, clock, rules, retention)
            case Erase():
                _erase(item, clock, step, position)
        if marks is not None:
            clock.settle(marks[position])
    clock.settle(watermark)
    clock.finish()
    for state in step.users.values():
        state.forget_before(dedup_before)
        state.profile.prune(state.as_of)
    _vectorise(step, rules)
    return step


class _Timers:
    """The step's users and their timers: loads users, fires what comes due, reschedules.

    A user's due time is recomputed lazily. An on-time event at `t` can only
    add deadlines at least :attr:`~processors.rules.RuleSet.min_delay` later,
    so until the watermark or the user's next event reaches the earlier of that
    and their previous due time, nothing of theirs can be due; otherwise it is
    recomputed then, or at the end of the step. The exceptions, recomputed at
    once, are late events and events that change a feature of
    :attr:`~processors.rules.RuleSet.settleable`: a comparison left untimed
    because time could not flip it may now have a deadline that is close.
    """

    def __init__(
        self,
        step: PartitionStep,
        stored: Mapping[str, UserState],
        rules: Classifier,
        retention: float,
    ) -> None:
        self.step = step
        self.stored = stored
        self.rules = rules
        self.retention = retention
        self.delay = rules.rules.min_delay
        self.queue: list[tuple[int, str]] = []
        self.stale: dict[str, float] = {}
        self.stale_queue: list[tuple[float, str]] = []

    def user(self, user_id: str) -> UserState:
        step = self.step
        found = step.users.get(user_id)
        if found is None:
            found = self.stored.get(user_id)
            if found is None:
                found = UserState()
                step.new_users += 1
            elif found.due is not None:
                heapq.heappush(self.queue, (found.due, user_id))
            step.users[user_id] = found
        return found

    def load(self, due: Sequence[tuple[int, str]]) -> None:
        """Take the timers read from the store; repair any that disagree with the user state."""
        for moment, user_id in due:
            if user_id not in self.step.users and user_id not in self.stored:
                self.step.timers[user_id] = None  # the user is gone: so is the timer
                continue
            state = self.user(user_id)
            if state.due != moment:
                self.step.timers[user_id] = state.due

    def moved(self, user_id: str, state: UserState, moment: float, *, exact: bool) -> None:
        """Something at `moment` changed the user: their due time must be recomputed,
        at once when `exact`, else by the time anything can be due."""
        if state.alias_of is not None:
            return
        if exact:
            self._reschedule(user_id, state)
        elif user_id not in self.stale:
            bound = min(moment + self.delay, math.inf if state.due is None else state.due)
            self.stale[user_id] = bound
            heapq.heappush(self.stale_queue, (bound, user_id))

    def drop(self, user_id: str) -> None:
        """The user needs no timer any more (merged away or expired)."""
        self.stale.pop(user_id, None)
        self._set(user_id, self.step.users[user_id], None)

    def catch_up(self, user_id: str, moment: float) -> UserState:
        """The user, after firing their timers due by `moment` (something happens to them then).

        A user who expired comes back as a new user, whose changes go on from
        the expired one's version.
        """
        state = self.user(user_id)
        if self.stale.get(user_id, math.inf) <= moment:
            self._reschedule(user_id, state)
        while state.due is not None and state.due <= moment and state.alias_of is None:
            self._fire(user_id, state, state.due)
        if user_id in self.step.expired:
            self.step.expired.remove(user_id)
            state = UserState(labels=UserLabels(version=state.labels.version))
            self.step.users[user_id] = state
        elif user_id in self.step.erased:
            self.step.erased.remove(user_id)  # back after a tombstone: a new user
            state = self.step.users[user_id] = UserState()
        return state

    def settle(self, watermark: float) -> None:
        """Fire, in due order, every timer due by `watermark`."""
        while self.stale_queue and self.stale_queue[0][0] <= watermark:
            _, user_id = heapq.heappop(self.stale_queue)
            if user_id in self.stale:
                self._reschedule(user_id, self.step.users[user_id])
        while self.queue and self.queue[0][0] <= watermark:
            moment, user_id = heapq.heappop(self.queue)
            state = self.step.users[user_id]
            if state.due == moment and user_id not in self.step.expired:
                self._fire(user_id, state, moment)

    def finish(self) -> None:
        """Recompute the due time of every user whose state moved."""
        for user_id in list(self.stale):
            self._reschedule(user_id, self.step.users[user_id])

    def _fire(self, user_id: str, state: UserState, moment: int) -> None:
        step = self.step
        step.fired += 1
        if expires(state, moment, self.retention):
            _expire(user_id, state, step, moment)
            self.drop(user_id)
            return
        _record(step, evaluate_one(user_id, state, self.rules, ChangeReason.TIME, moment))
        step.touched.setdefault(user_id, ChangeReason.TIME)
        self._reschedule(user_id, state)

    def _reschedule(self, user_id: str, state: UserState) -> None:
        self.stale.pop(user_id, None)
        if user_id in self.step.expired or state.alias_of is not None:
            return
        self._set(user_id, state, next_due(state, self.rules, retention=self.retention))

    def _set(self, user_id: str, state: UserState, moment: int | None) -> None:
        if moment == state.due:
            return
        state.due = moment
        self.step.timers[user_id] = moment
        if moment is not None:
            heapq.heappush(self.queue, (moment, user_id))


def _sweep(
    until: float,
    partition_users: Sequence[str],
    step: PartitionStep,
    clock: _Timers,
    rules: Classifier,
    retention: float,
) -> None:
    """Evaluate every user of the partition as of `until`; expire those idle too long.

    Their timers due by `until` have fired, so no segment changes here; the sweep
    brings every user's features and labels up to `until`.
    """
    ids = dict.fromkeys([*partition_users, *step.users])
    everyone = [(user_id, clock.user(user_id)) for user_id in ids]
    everyone = [
        (user_id, state)
        for user_id, state in everyone
        if not state.alias_of and user_id not in step.erased
    ]
    for user_id, state in everyone:
        if user_id not in step.expired and expires(state, until, retention):
            _expire(user_id, state, step, until)
            clock.drop(user_id)
    active = [(u, state) for u, state in everyone if u not in step.expired]
    step.changes += evaluate(active, rules, reason=ChangeReason.TIME, as_of=until)
    for user_id, _ in active:
        step.touched.setdefault(user_id, ChangeReason.TIME)


def _vectorise(step: PartitionStep, rules: Classifier) -> None:
    """Feature vectors of the touched users, and their clusters when there is a model."""
    touched = [
        (user_id, step.users[user_id])
        for user_id in step.touched
        if user_id not in step.expired
        and user_id not in step.erased
        and step.users[user_id].alias_of is None
    ]
    by_time = ChangeReason.TIME
    step.vectors = [
        replace(vector, refresh=True) if step.touched[vector.user_id] == by_time else vector
        for vector in vectors(touched)
    ]
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
) -> bool:
    """Apply one event; whether it changed a feature of the rules'
    :attr:`~processors.rules.RuleSet.settleable` (the user's timer must be recomputed now)."""
    if state.alias_of:
        step.relays.append(Relay("forward", state.alias_of, position=position))
        return False
    if not state.first_time(action):
        step.duplicates += 1
        return False
    step.applied += 1
    other = action.anonymous_id if action.kind is EventKind.IDENTIFY else action.previous_id
    if other and other != action.user_id and other not in state.linked:
        state.linked.append(other)
        step.relays.append(Relay("merge", other, action.user_id.encode(), position))
    touched = state.profile.apply(action)
    step.touched[action.user_id] = ChangeReason.EVENT
    if state.profile.events == 1 or _may_move(touched, action, rules):
        _record(step, evaluate_one(action.user_id, state, rules, ChangeReason.EVENT))
    else:  # what the rules read is as it was: their answer too
        state.as_of = max(state.as_of, float(state.profile.last_seen or 0))
    return bool(touched & rules.rules.settleable)


def _may_move(touched: frozenset[str], action: Action, rules: Classifier) -> bool:
    """Whether an event that changed `touched` can change what the rules decide.

    Up to the event's time the user's timers have fired, so only what the event
    itself changed can move the rules.
    """
    read = rules.rules
    return bool(touched & read.reads) or action.kind.name in read.burst_kinds


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


def _erase(erase: Erase, clock: _Timers, step: PartitionStep, position: int) -> None:
    user_id = erase.user_id
    if user_id in step.users or user_id in clock.stored:
        state = clock.user(user_id)
        if state.alias_of is not None and erase.follow:
            step.relays.append(Relay("erase", state.alias_of, b"follow", position))
        for other in dict.fromkeys([*state.linked, *state.absorbed]):
            if other != user_id:
                step.relays.append(Relay("erase", other, b"", position))
        _record(
            step,
            state.labels.clear(user_id=user_id, reason=ChangeReason.ERASED, event_time=state.as_of),
        )
        clock.drop(user_id)
        if user_id in step.expired:
            step.expired.remove(user_id)
        if user_id not in step.erased:
            step.erased.append(user_id)
        step.touched.pop(user_id, None)
        event_time = state.as_of
    else:
        event_time = 0.0
    step.changes.append(SegmentChange.tombstone(user_id, event_time))


def _expire(user_id: str, state: UserState, step: PartitionStep, moment: float) -> None:
    state.as_of = max(state.as_of, moment)
    _record(
        step, state.labels.clear(user_id=user_id, reason=ChangeReason.EXPIRED, event_time=moment)
    )
    step.expired.append(user_id)


def _record(step: PartitionStep, change: SegmentChange | None) -> None:
    if change is not None:
        step.changes.append(change)
