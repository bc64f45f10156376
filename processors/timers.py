"""When a user who sends no new events must be looked at again: their timer.

A user's timer is the earliest event time at which any rule's condition may
change (a window slides past an event, a deadline such as 30 days without an
order passes, a cart is left alone too long), at which a windowed clustering
feature changes, or at which the user expires. It may come early, never late:
a timer that finds nothing changed just sets the next one.

>>> from processors.events import Action, EventKind
>>> from processors.rules import parse_rules
>>> from processors.user import UserState
>>> rules = parse_rules("segments:\\n  - {name: Abandoners, description: d, "
...                     "condition: {feature: cart_abandoned, op: '==', value: 1}}\\n")
>>> user = UserState()
>>> _ = user.profile.apply(Action("u", "m", EventKind.CART_ADD, 1_000.0, 25.0, product="p1"))
>>> user.as_of = 1_000.0
>>> next_due(user, rules, retention=86_400.0 * 400)
2800
"""

from __future__ import annotations

import math

from processors.evaluation import Classification, Classifier
from processors.model import CLUSTER_FEATURES
from processors.profile import CLOCK_FEATURES, DAY, LazyFeatures
from processors.user import UserState

VECTOR_FEATURES = frozenset(name for name in CLUSTER_FEATURES if name not in CLOCK_FEATURES)
"""The clustering features that windows move; a user's feature vector is refreshed after
they do. Clock features (days since ...) grow every second and are refreshed along with
them."""

REFRESH_EVERY = 7 * DAY
"""The grid, in seconds of event time from the Unix epoch, that refreshes of idle users'
feature vectors fall on: a vector whose windows slid is refreshed at the next grid point,
so an idle user costs one timer a week for clustering, not one per slid bucket."""


def next_due(user: UserState, classification: Classification, *, retention: float) -> int | None:
    """The user's next timer as of their latest evaluation (whole epoch seconds), or `None`.

    `retention` is how long a user without events is kept, in seconds.
    """
    classifier = (
        classification if isinstance(classification, Classifier) else Classifier(classification)
    )
    rules = classifier.rules
    as_of = user.as_of
    features = LazyFeatures(user.profile, as_of, classifier.thresholds, rules.cart_after)
    moment = rules.changes_at(features)
    slid = min(features.feature_changes_at(name) for name in VECTOR_FEATURES)
    if not math.isinf(slid):
        moment = min(moment, math.ceil(slid / REFRESH_EVERY) * REFRESH_EVERY)
    last_seen = user.profile.last_seen
    if last_seen is not None:
        moment = min(moment, max(last_seen + retention, as_of) + 1)
    return None if math.isinf(moment) else math.ceil(moment)


def expires(user: UserState, moment: float, retention: float) -> bool:
    """Whether the user has had no events for longer than `retention` at `moment`."""
    last_seen = user.profile.last_seen
    return last_seen is not None and last_seen < moment - retention
