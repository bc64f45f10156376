"""Per-user behavioural aggregates, folded one action at a time.

A :class:`Profile` is the state segstream keeps for one user. It is updated by
:meth:`Profile.apply`, turned into named features by :meth:`Profile.features`,
and flattened for storage by :meth:`Profile.to_row`.

>>> from processors.events import Action, EventKind
>>> profile = Profile()
>>> profile.apply(Action("u1", "m1", EventKind.PAGE, 1_000.0, device="mobile"))
>>> profile.apply(Action("u1", "m2", EventKind.ORDER, 1_060.0, value=30.0))
>>> features = profile.features(as_of=1_060.0)
>>> features["orders"], features["revenue"], features["events"]
(1.0, 30.0, 2.0)
>>> Profile.from_row(profile.to_row()) == profile
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from processors.events import Action, EventKind

COUNTED_KINDS: dict[EventKind, str] = {
    EventKind.PAGE: "page_views",
    EventKind.PRODUCT_VIEWED: "product_views",
    EventKind.SEARCH: "searches",
    EventKind.CART_ADD: "cart_adds",
    EventKind.CHECKOUT: "checkouts",
    EventKind.ORDER: "orders",
}
"""Event kinds counted per user, with the feature name of each count."""

_KIND_SLOT = {kind: slot for slot, kind in enumerate(COUNTED_KINDS)}
_DAY = 86_400.0

FEATURE_NAMES: tuple[str, ...] = (
    *COUNTED_KINDS.values(),
    "events",
    "revenue",
    "avg_order_value",
    "days_since_last_seen",
    "days_since_last_order",
    "days_since_first_seen",
)
"""Every numeric feature a profile provides, in a fixed order."""


@dataclass(slots=True)
class Profile:
    """Lifetime aggregates of one user.

    Times are event times in epoch seconds; ``None`` means "never".
    ``counts`` holds one count per entry of :data:`COUNTED_KINDS`.
    """

    counts: list[int] = field(default_factory=lambda: [0] * len(COUNTED_KINDS))
    events: int = 0
    revenue: float = 0.0
    first_seen: float | None = None
    last_seen: float | None = None
    last_order: float | None = None
    last_device: str | None = None

    def apply(self, action: Action) -> None:
        """Fold one action into the aggregates."""
        self.events += 1
        slot = _KIND_SLOT.get(action.kind)
        if slot is not None:
            self.counts[slot] += 1
        moment = action.timestamp
        if self.first_seen is None or moment < self.first_seen:
            self.first_seen = moment
        if self.last_seen is None or moment >= self.last_seen:
            self.last_seen = moment
            if action.device:
                self.last_device = action.device
        if action.kind is EventKind.ORDER:
            self.revenue += action.value
            if self.last_order is None or moment > self.last_order:
                self.last_order = moment

    def features(self, as_of: float) -> dict[str, float]:
        """Named numeric features as of event time ``as_of`` (epoch seconds).

        Day counts are fractional days; "never" is reported as -1.
        """
        values = dict(zip(COUNTED_KINDS.values(), map(float, self.counts), strict=True))
        orders = values["orders"]
        values["events"] = float(self.events)
        values["revenue"] = round(self.revenue, 2)
        values["avg_order_value"] = round(self.revenue / orders, 2) if orders else 0.0
        values["days_since_last_seen"] = _days_since(self.last_seen, as_of)
        values["days_since_last_order"] = _days_since(self.last_order, as_of)
        values["days_since_first_seen"] = _days_since(self.first_seen, as_of)
        return values

    def to_row(self) -> list[Any]:
        """The aggregates as a plain list, for compact serialisation."""
        return [
            self.counts,
            self.events,
            self.revenue,
            self.first_seen,
            self.last_seen,
            self.last_order,
            self.last_device,
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> Profile:
        """Inverse of :meth:`to_row`."""
        counts, events, revenue, first_seen, last_seen, last_order, device = row
        return cls(counts, events, revenue, first_seen, last_seen, last_order, device)


def _days_since(moment: float | None, as_of: float) -> float:
    if moment is None:
        return -1.0
    return round(max(0.0, as_of - moment) / _DAY, 4)
