"""What a candidate rule file would do to stored users: each user settled under it exactly
as a worker settles them after `rules apply --reevaluate`, and the tally by segment.

:func:`settle` takes a chunk of state rows: every user is re-evaluated at once,
then their timers due by the partition's watermark fire, in order, with the
candidate rules (re-timed by them). :class:`Tally` counts, per segment of
either file, the members now and with the candidate, who enters and who leaves,
with a few example ids of each.

>>> tally = Tally(current=("Buyers",), candidate=("Buyers", "Browsers"), examples=1)
>>> tally.add("ann", before=("Buyers",), after=("Browsers",))
>>> tally.add("bob", before=("Buyers",), after=("Buyers",))
>>> [(s["name"], s["now"], s["candidate"], s["entering"], s["leaving"])
...  for s in tally.segments()]
[('Buyers', 2, 1, 0, 1), ('Browsers', 0, 1, 1, 0)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from processors import _core
from processors.classifier import ChangeReason
from processors.rules import RuleSet

Settled = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
"""Per active user: their segments as stored, and as the candidate leaves them."""


def settle(
    rows: Mapping[str, bytes],
    classifier: _core.Classifier,
    firing: float,
    retention: float,
) -> Settled:
    """Each active user of `rows` (merged ids left out) with their stored segments and the
    segments `classifier` gives them once settled at the firing clock `firing`. Nothing is
    written."""
    before = {}
    for user_id, row in rows.items():
        user = _core.User.from_bytes(row)
        if user.alias_of is None:
            before[user_id] = user.segments
    users, _, _, _ = _core.relabel(rows, classifier, ChangeReason.RULES, retention)
    due = sorted(
        (user.due, user_id)
        for user_id, user in users.items()
        if user.due is not None and user.due <= firing
    )
    if due:
        step = _core.run_partition(
            [],
            users,
            classifier,
            dedup_before=-math.inf,
            retention=retention,
            due=due,
            firing=firing,
        )
        users = {**users, **step.users}
        for gone in [*step.expired, *step.erased]:
            users.pop(gone, None)
    return {
        user_id: (segments, users[user_id].segments if user_id in users else ())
        for user_id, segments in before.items()
    }


class Tally:
    """Members per segment now and with the candidate, entering, leaving, and up to
    `examples` ids of each; a segment absent from one file counts 0 there."""

    def __init__(self, current: Sequence[str], candidate: Sequence[str], examples: int) -> None:
        self.current = frozenset(current)
        self.candidate = frozenset(candidate)
        self.names = list(dict.fromkeys([*current, *candidate]))
        self.examples = examples
        self.users = 0
        self.counts = {name: [0, 0, 0, 0] for name in self.names}
        self.moved: dict[str, dict[str, list[str]]] = {
            name: {"entering": [], "leaving": []} for name in self.names
        }

    def add(self, user_id: str, before: Sequence[str], after: Sequence[str]) -> None:
        """Count one user, in `before` (stored) and `after` (with the candidate)."""
        self.users += 1
        now = self.current.intersection(before)
        then = self.candidate.intersection(after)
        for name in now:
            self.counts[name][0] += 1
        for name in then:
            self.counts[name][1] += 1
        for direction, names, index in (("entering", then - now, 2), ("leaving", now - then, 3)):
            for name in names:
                self.counts[name][index] += 1
                found = self.moved[name][direction]
                if len(found) < self.examples:
                    found.append(user_id)

    def add_all(self, settled: Settled) -> None:
        """Count every user of a settled chunk."""
        for user_id, (before, after) in settled.items():
            self.add(user_id, before, after)

    def segments(self) -> list[dict[str, Any]]:
        """Per segment, in file order (current, then the candidate's new ones)."""
        return [
            {
                "name": name,
                "now": now,
                "candidate": candidate,
                "entering": entering,
                "leaving": leaving,
                "examples": self.moved[name],
            }
            for name, (now, candidate, entering, leaving) in self.counts.items()
        ]


def history_limits(rules: RuleSet) -> dict[str, list[str]]:
    """Per segment of `rules`, what its conditions need that the aggregates keep only in
    part: a burst is seen in each user's last `RECENT_SECONDS` of event times, so a burst
    longer ago than that is not held and counts as absent.

    >>> from processors.rules import parse_rules
    >>> rules = parse_rules('''
    ... segments:
    ...   - name: Shoe Binge
    ...     description: Three shoe views in ten minutes.
    ...     condition: {event: Product Viewed, at_least: 3, within: 10m}
    ... ''')
    >>> history_limits(rules)["Shoe Binge"][0][:61]
    'a burst of Product Viewed (3 within 10m) counts only from the'
    """
    kept = f"{_core.RECENT_SECONDS // 60} minutes"
    return {
        name: [
            f"a burst of {burst.event} ({burst.at_least} within {burst.within}) counts only "
            f"from the last {kept} of each user's events: one longer ago is not held"
            for burst in bursts
        ]
        for name, bursts in rules.bursts.items()
    }
