"""Evaluating users against the rules at a moment of event time.

>>> from processors.events import Action, EventKind
>>> from processors.rules import parse_rules
>>> rules = parse_rules("segments:\\n  - {name: Quiet, description: d, "
...                     "condition: {feature: days_since_last_seen, op: '>', value: 1}}\\n")
>>> user = UserState()
>>> _ = user.profile.apply(Action("u", "m", EventKind.PAGE, 0.0))
>>> [c.entered for c in evaluate([("u", user)], rules, reason="time", as_of=2 * 86_400.0)]
[('Quiet',)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from processors.model import ClusterAssigner
from processors.profile import FEATURE_NAMES, LazyFeatures
from processors.rules import RuleSet, percentile_name
from processors.segments import SegmentChange
from processors.user import UserState
from processors.vectors import FeatureVector


@dataclass(frozen=True, slots=True)
class Classifier:
    """What users are labelled with: the rules, and the clustering model once there is one.

    `thresholds` are the rules' percentile thresholds in the model's population.

    >>> from processors.rules import parse_rules
    >>> Classifier.of(parse_rules("segments:\\n  - {name: S, description: d, condition: "
    ...     "{feature: orders_30d, op: '>', value: p50(orders_30d)}}\\n")).thresholds
    {}
    """

    rules: RuleSet
    model: ClusterAssigner | None = None
    thresholds: Mapping[str, float] | None = None

    @classmethod
    def of(cls, rules: RuleSet, model: ClusterAssigner | None = None) -> Classifier:
        """The classifier for `rules` and `model`, with the thresholds they give."""
        thresholds = {}
        if model is not None:
            for feature, q in rules.percentiles:
                value = model.snapshot.percentile(feature, q)
                if value is not None:
                    thresholds[percentile_name(feature, q)] = value
        return cls(rules, model, thresholds)


Classification = Classifier | RuleSet
"""A classifier, or just rules (no model, no thresholds)."""


def _classifier(classification: Classification) -> Classifier:
    return classification if isinstance(classification, Classifier) else Classifier(classification)


def evaluate_one(
    user_id: str,
    user: UserState,
    classification: Classification,
    reason: str,
    as_of: float | None = None,
) -> SegmentChange | None:
    """Evaluate one user's rules; the change, if their segments moved.

    Evaluation never goes back in time: it is as of the later of `as_of`, the
    user's latest event and their previous evaluation.
    """
    classifier = _classifier(classification)
    moment = max(user.as_of, float(user.profile.last_seen or 0), as_of or 0.0)
    user.as_of = moment
    features = LazyFeatures(
        user.profile, moment, classifier.thresholds, classifier.rules.cart_after
    )
    segments = classifier.rules.evaluate(features)
    change = user.labels.move_to(segments, user_id=user_id, reason=reason, event_time=moment)
    if change is not None and user.profile.cart:
        lines, changed_at = user.profile.open_cart()
        if lines:
            change = replace(change, cart=tuple(lines), cart_changed_at=changed_at)
    return change


def evaluate(
    users: Iterable[tuple[str, UserState]],
    classification: Classification,
    *,
    reason: str,
    as_of: float | None = None,
) -> list[SegmentChange]:
    """Evaluate `users` as of `as_of` (default: their latest event) and return the changes."""
    changes = []
    for user_id, user in users:
        change = evaluate_one(user_id, user, classification, reason, as_of)
        user.profile.prune(user.as_of)
        if change is not None:
            changes.append(change)
    return changes


def vectors(users: Sequence[tuple[str, UserState]]) -> list[FeatureVector]:
    """Each user's feature vector as of their latest evaluation."""
    found = []
    for user_id, user in users:
        features = user.profile.features(user.as_of)
        values = tuple(float(features[name]) for name in FEATURE_NAMES)
        found.append(FeatureVector(user_id, user.as_of, values))
    return found


def place(
    users: Sequence[tuple[str, UserState]],
    found: Sequence[FeatureVector],
    model: ClusterAssigner,
    *,
    reason: str,
) -> list[SegmentChange]:
    """Assign each user (with their vector in `found`) to the model's nearest cluster.

    Every user records the model's version; those whose cluster moved give a change.
    """
    if not users:
        return []
    clusters = model.assign(np.array([vector.values for vector in found]))
    changes = []
    for (user_id, user), cluster in zip(users, clusters, strict=True):
        change = user.labels.place(
            cluster, model.version, user_id=user_id, reason=reason, event_time=user.as_of
        )
        if change is not None:
            changes.append(change)
    return changes
