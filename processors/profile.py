"""Per-user behavioural aggregates over sliding event-time windows.

A :class:`Profile` is folded one action at a time by :meth:`Profile.apply`
and read as named features by :meth:`Profile.features` as of an event time.
Every aggregate is commutative (integer counters, minimums and maximums,
mergeable session windows, revenue in integer cents), so the same events give
the same profile in any arrival order. The README's "Features" section defines
each feature, its unit, window and edge cases.

>>> from processors.events import Action, EventKind
>>> profile = Profile()
>>> _ = profile.apply(Action("u1", "m1", EventKind.PAGE, 1_000.0, device="mobile"))
>>> _ = profile.apply(Action("u1", "m2", EventKind.ORDER, 1_060.0, value=30.0))
>>> features = profile.features(as_of=1_060.0)
>>> features["orders_1h"], features["revenue_lifetime"], features["sessions_7d"]
(1.0, 30.0, 1.0)
>>> Profile.from_row(profile.to_row()) == profile
True
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from processors.events import Action, EventKind
from processors.windows import Sessions, SlidingCounts

MINUTE = 60
HOUR = 3_600
DAY = 86_400
RECENT_SECONDS = HOUR
"""How far back exact event times are kept for time-window conditions, in seconds."""
SESSION_GAP = 30 * MINUTE
"""Inactivity that ends a session, in seconds: events 30 minutes or more apart are two sessions."""
CART_ABANDONMENT_AFTER = 30 * MINUTE
"""Default idle time after which an open cart counts as abandoned, in seconds."""
CART_LIMIT = 200
"""Cart additions and removals kept per user; the oldest go first beyond this."""
NEVER = math.inf
"""What :meth:`Profile.changes_at` returns for a value that no passing of time changes."""

COUNTED_KINDS: dict[EventKind, str] = {
    EventKind.PAGE: "page_views",
    EventKind.PRODUCT_VIEWED: "product_views",
    EventKind.SEARCH: "searches",
    EventKind.CART_ADD: "cart_adds",
    EventKind.CHECKOUT: "checkouts",
    EventKind.ORDER: "orders",
}
"""Event kinds counted per window, with the feature name of each count."""

BEHAVIOUR_KINDS = frozenset(EventKind) - {EventKind.IDENTIFY, EventKind.ALIAS}
"""Kinds that are the user's behaviour (counted in `events`); identity calls are not."""

WINDOWS: dict[str, tuple[str, int]] = {
    "1h": ("minutes", 12),
    "24h": ("hours", 24),
    "7d": ("days", 7),
    "30d": ("days", 30),
}
"""Each count window: the bucket tier it reads and how many buckets it sums."""

_KIND_SLOT = {kind: slot for slot, kind in enumerate(COUNTED_KINDS)}
_EVENTS, _MOBILE, _REVENUE = 6, 7, 8
_SESSION_CART, _SESSION_ORDER = 1, 2

Features = dict[str, float | str]


def _cents(value: float) -> int:
    return round(value * 100)


@dataclass(frozen=True, slots=True)
class CartLine:
    """One product in an open cart: how many times it was added (less removed) and their value."""

    product: str
    category: str
    count: int
    value: float


@dataclass(slots=True)
class Profile:
    """Everything segstream knows of one user's behaviour; times are epoch seconds."""

    minutes: SlidingCounts = field(default_factory=lambda: SlidingCounts(5 * MINUTE, 12))
    hours: SlidingCounts = field(default_factory=lambda: SlidingCounts(HOUR, 24))
    days: SlidingCounts = field(default_factory=lambda: SlidingCounts(DAY, 30))
    category_days: dict[str, dict[int, int]] = field(default_factory=dict)
    recent: dict[str, list[int]] = field(default_factory=dict)
    """Event times of the last `RECENT_SECONDS`, per `"<kind>/<category>"` (sorted)."""
    sessions: Sessions = field(default_factory=lambda: Sessions(SESSION_GAP))
    purchase_days: dict[int, int] = field(default_factory=dict)
    orders: int = 0
    events: int = 0
    first_seen: int | None = None
    last_seen: int | None = None
    last_order: int | None = None
    last_device: tuple[int, str] | None = None
    cart: list[list[Any]] = field(default_factory=list)
    """Cart additions and removals since the last order: `[time, +1 or -1, product, category,
    cents]`, sorted."""

    def apply(self, action: Action) -> frozenset[str]:
        """Fold one action into the aggregates (in any order); the features it may have
        changed, other than :data:`CLOCK_FEATURES` (see :func:`touched_features`)."""
        moment = int(action.timestamp)
        kind = action.kind
        if kind not in BEHAVIOUR_KINDS:
            return frozenset()
        self.events += 1
        self.first_seen = moment if self.first_seen is None else min(self.first_seen, moment)
        self.last_seen = moment if self.last_seen is None else max(self.last_seen, moment)
        if action.device and (
            self.last_device is None or (moment, action.device) > self.last_device
        ):
            self.last_device = (moment, action.device)
        slot = _KIND_SLOT.get(kind)
        if slot is not None:
            self.minutes.add(moment, slot)
            self.hours.add(moment, slot)
            self.days.add(moment, slot)
        self.days.add(moment, _EVENTS)
        if action.device == "mobile":
            self.days.add(moment, _MOBILE)
        day = moment // DAY
        for category in action.categories:
            per_day = self.category_days.setdefault(category, {})
            per_day[day] = per_day.get(day, 0) + 1
            bisect.insort(self.recent.setdefault(f"{kind.name}/{category}", []), moment)
        flags = 0
        if kind in (EventKind.CART_ADD, EventKind.CART_REMOVE):
            flags = _SESSION_CART if kind is EventKind.CART_ADD else 0
            if self.last_order is None or moment > self.last_order:
                sign = 1 if kind is EventKind.CART_ADD else -1
                category = action.categories[0] if action.categories else ""
                entry = [moment, sign, action.product or "", category, _cents(action.value)]
                bisect.insort(self.cart, entry)
                del self.cart[:-CART_LIMIT]
        elif kind is EventKind.ORDER:
            flags = _SESSION_ORDER
            cents = _cents(action.value)
            self.orders += 1
            self.days.add(moment, _REVENUE, cents)
            self.purchase_days[day] = self.purchase_days.get(day, 0) + cents
            self.last_order = moment if self.last_order is None else max(self.last_order, moment)
            self.cart = [entry for entry in self.cart if entry[0] > self.last_order]
        return touched_features(kind, started=self.sessions.add(moment, flags))

    def burst(self, kind: EventKind, within: float, as_of: float) -> int:
        """The most `kind` events of one category in the `within` seconds up to `as_of`.

        Exact to the second for `within` up to :data:`RECENT_SECONDS`.
        """
        prefix = f"{kind.name}/"
        most = 0
        for key, times in self.recent.items():
            if key.startswith(prefix):
                start = bisect.bisect_right(times, as_of - within)
                most = max(most, bisect.bisect_right(times, as_of) - start)
        return most

    def merge(self, other: Profile) -> None:
        """Add `other`'s aggregates (another id of the same person) into this profile."""
        for key, times in other.recent.items():
            self.recent[key] = sorted(self.recent.get(key, []) + times)
        self.minutes.merge(other.minutes)
        self.hours.merge(other.hours)
        self.days.merge(other.days)
        for category, per_day in other.category_days.items():
            mine = self.category_days.setdefault(category, {})
            for day, count in per_day.items():
                mine[day] = mine.get(day, 0) + count
        self.sessions.merge(other.sessions)
        for day, cents in other.purchase_days.items():
            self.purchase_days[day] = self.purchase_days.get(day, 0) + cents
        self.orders += other.orders
        self.events += other.events
        self.first_seen = _least(self.first_seen, other.first_seen)
        self.last_seen = _most(self.last_seen, other.last_seen)
        self.last_order = _most(self.last_order, other.last_order)
        if other.last_device and (self.last_device is None or other.last_device > self.last_device):
            self.last_device = other.last_device
        ordered = self.last_order if self.last_order is not None else -math.inf
        self.cart = sorted(e for e in self.cart + other.cart if e[0] > ordered)[-CART_LIMIT:]

    def open_cart(self) -> tuple[list[CartLine], int | None]:
        """The products in the cart (added since the last order and not removed) and when
        the cart last changed; `([], None)` when the cart is empty.

        >>> from processors.events import Action, EventKind
        >>> profile = Profile()
        >>> _ = profile.apply(Action("u", "m1", EventKind.CART_ADD, 100.0, 20.0, ("shoes",),
        ...                      product="sku-1"))
        >>> profile.open_cart()
        ([CartLine(product='sku-1', category='shoes', count=1, value=20.0)], 100)
        """
        lines: dict[str, list[Any]] = {}
        last = None
        for moment, sign, product, category, cents in self.cart:
            line = lines.setdefault(product, [category, 0, 0])
            line[0] = line[0] or category
            line[1] += sign
            line[2] += sign * cents
            last = moment
        found = [
            CartLine(product, category, count, max(cents, 0) / 100)
            for product, (category, count, cents) in sorted(lines.items())
            if count > 0
        ]
        return found, last if found else None

    def prune(self, as_of: float) -> None:
        """Drop what no window as of `as_of` or later can see."""
        self.minutes.prune(as_of)
        self.hours.prune(as_of)
        self.days.prune(as_of)
        oldest_day = int(as_of // DAY) - self.days.span
        for category in list(self.category_days):
            per_day = {d: n for d, n in self.category_days[category].items() if d > oldest_day}
            if per_day:
                self.category_days[category] = per_day
            else:
                del self.category_days[category]
        self.sessions.prune(as_of - 7 * DAY)
        horizon = as_of - RECENT_SECONDS
        for key in list(self.recent):
            kept = [moment for moment in self.recent[key] if moment > horizon]
            if kept:
                self.recent[key] = kept
            else:
                del self.recent[key]

    def features(
        self,
        as_of: float,
        groups: Iterable[str] | None = None,
        *,
        cart_after: float = CART_ABANDONMENT_AFTER,
    ) -> Features:
        """Features as of event time `as_of` (epoch seconds): all, or those of `groups`.

        :data:`FEATURE_GROUPS` names the group of each feature; computing only the
        groups a rule set reads keeps per-event evaluation cheap. A cart counts as
        abandoned once it has been left alone for `cart_after` seconds.
        """
        values: Features = {}
        for group in _GROUPS if groups is None else groups:
            if group == "cart":
                values.update(self._cart(as_of, cart_after))
            else:
                values.update(getattr(self, f"_{group}")(as_of))
        return values

    def changes_at(
        self, group: str, as_of: float, *, cart_after: float = CART_ABANDONMENT_AFTER
    ) -> float:
        """The earliest event time after `as_of` at which a feature of `group` other than
        those of :data:`CLOCK_FEATURES` can change with no new events; :data:`NEVER` if none.

        Windows change only when a bucket holding events slides out (or, for the
        previous-week window, in); sessions when one turns a week old or, with a
        cart and no order, closes.

        >>> from processors.events import Action, EventKind
        >>> profile = Profile()
        >>> _ = profile.apply(Action("u", "m", EventKind.ORDER, 10 * DAY + 5.0, value=9.0))
        >>> profile.changes_at("counts_7d", 10 * DAY + 5.0) == 17 * DAY
        True
        >>> profile.changes_at("revenue", 10 * DAY + 5.0) == 17 * DAY
        True
        """
        days = self.days
        match group:
            case "counts_1h":
                return self.minutes.changes_at(as_of, WINDOWS["1h"][1])
            case "counts_24h":
                return self.hours.changes_at(as_of, WINDOWS["24h"][1])
            case "counts_7d":
                return days.changes_at(as_of, 7)
            case "counts_30d":
                return days.changes_at(as_of, 30)
            case "revenue":
                return min(
                    days.changes_at(as_of, 7, slot=_REVENUE),
                    days.changes_at(as_of, 30, slot=_REVENUE),
                )
            case "sessions":
                return _after(
                    as_of,
                    (
                        moment
                        for s in self.sessions.items
                        for moment in (
                            s[0] + 7 * DAY,
                            s[1] + SESSION_GAP if s[3] == _SESSION_CART else NEVER,
                        )
                    ),
                )
            case "affinity":
                return min(
                    days.changes_at(as_of, 30),
                    _after(
                        as_of,
                        (
                            (d + 30) * DAY
                            for per_day in self.category_days.values()
                            for d in per_day
                        ),
                    ),
                )
            case "velocity":
                return min(days.changes_at(as_of, 7), days.changes_at(as_of, 7, skip=7))
            case "cart":
                _, last = self.open_cart()
                return NEVER if last is None else _after(as_of, (last + cart_after,))
            case _:
                return NEVER

    def feature_changes_at(
        self, name: str, as_of: float, *, cart_after: float = CART_ABANDONMENT_AFTER
    ) -> float:
        """Like :meth:`changes_at`, for the one feature `name`: a count moves only when a
        bucket holding its own kind slides, a lifetime total never does.

        >>> from processors.events import Action, EventKind
        >>> profile = Profile()
        >>> _ = profile.apply(Action("u", "m1", EventKind.ORDER, 10 * DAY + 5.0, value=9.0))
        >>> _ = profile.apply(Action("u", "m2", EventKind.PAGE, 12 * DAY + 5.0))
        >>> [profile.feature_changes_at(name, 12 * DAY + 5.0) / DAY
        ...  for name in ("orders_7d", "page_views_7d", "orders_lifetime")]
        [17.0, 19.0, inf]
        """
        window = _COUNT_WINDOWS.get(name)
        if window is not None:
            tier, buckets, slot = window
            counts: SlidingCounts = getattr(self, tier)
            return counts.changes_at(as_of, buckets, slot=slot)
        if name in LIFETIME_FEATURES:
            return NEVER
        if name == "sessions_7d":
            return _after(as_of, (s[0] + 7 * DAY for s in self.sessions.items))
        return self.changes_at(FEATURE_GROUPS[name], as_of, cart_after=cart_after)

    def burst_changes_at(self, kind: EventKind, within: float, as_of: float) -> float:
        """When :meth:`burst` of `kind` within `within` seconds next changes with no new events."""
        prefix = f"{kind.name}/"
        return _after(
            as_of,
            (
                moment + within
                for key, times in self.recent.items()
                if key.startswith(prefix)
                for moment in times
            ),
        )

    def crosses_at(self, feature: str, op: str, threshold: float, as_of: float) -> float:
        """When `feature op threshold` may next change truth, for a feature of
        :data:`CLOCK_FEATURES`; to the second, :data:`NEVER` when it never will.

        >>> from processors.events import Action, EventKind
        >>> profile = Profile()
        >>> _ = profile.apply(Action("u", "m", EventKind.ORDER, 1_000.0, value=9.0))
        >>> moment = profile.crosses_at("days_since_last_order", ">", 30, 1_000.0)
        >>> [profile.features(t)["days_since_last_order"] > 30 for t in (moment - 1, moment)]
        [False, True]
        """
        found = self._clock(feature)
        if found is None:
            return NEVER
        clock, anchor, unit = found
        now = clock(as_of)
        above = op in (">", "<=") or (op in ("==", "!=") and now == threshold)
        if now > threshold or (now == threshold and not above):
            return NEVER
        guess = anchor + threshold * unit
        if above:
            return _first_second(as_of, guess, lambda moment: clock(moment) > threshold)
        return _first_second(as_of, guess, lambda moment: clock(moment) >= threshold)

    def _clock(self, feature: str) -> tuple[Callable[[float], float], float, float] | None:
        """A clock feature's value at any event time, the time it was 0 and the seconds per
        unit; `None` while it stays constant."""
        match feature:
            case "days_since_last_order" | "days_since_last_seen" | "days_since_first_seen":
                anchor = {
                    "days_since_last_order": self.last_order,
                    "days_since_last_seen": self.last_seen,
                    "days_since_first_seen": self.first_seen,
                }[feature]
                if anchor is None:
                    return None
                start = anchor
                return (lambda moment: _days_since(start, moment)), start, DAY
            case "T":
                if not self.purchase_days:
                    return None
                first = min(self.purchase_days)
                return (lambda moment: float(max(int(moment // DAY) - first, 0))), first * DAY, DAY
            case "cart_idle_minutes":
                _, last = self.open_cart()
                if last is None:
                    return None
                changed = last
                return (lambda moment: _minutes_since(changed, moment)), changed, MINUTE
        return None

    def _counts_1h(self, as_of: float) -> Features:
        return self._counts(self.minutes, as_of, "1h")

    def _counts_24h(self, as_of: float) -> Features:
        return self._counts(self.hours, as_of, "24h")

    def _counts_7d(self, as_of: float) -> Features:
        return self._counts(self.days, as_of, "7d")

    def _counts_30d(self, as_of: float) -> Features:
        return self._counts(self.days, as_of, "30d")

    @staticmethod
    def _counts(tier: SlidingCounts, as_of: float, window: str) -> Features:
        counts = tier.window(as_of, WINDOWS[window][1])
        return {
            f"{name}_{window}": float(counts[slot]) if slot < len(counts) else 0.0
            for slot, name in enumerate(COUNTED_KINDS.values())
        }

    def _revenue(self, as_of: float) -> Features:
        revenue = sum(self.purchase_days.values())
        return {
            "revenue_7d": _slot(self.days.window(as_of, 7), _REVENUE) / 100,
            "revenue_30d": _slot(self.days.window(as_of, 30), _REVENUE) / 100,
            "revenue_lifetime": revenue / 100,
            "orders_lifetime": float(self.orders),
            "avg_order_value": revenue / self.orders / 100 if self.orders else 0.0,
        }

    def _recency(self, as_of: float) -> Features:
        return {
            "days_since_last_order": _days_since(self.last_order, as_of),
            "days_since_last_seen": _days_since(self.last_seen, as_of),
            "days_since_first_seen": _days_since(self.first_seen, as_of),
            "events_lifetime": float(self.events),
            "last_device": self.last_device[1] if self.last_device else "",
        }

    def _rfm(self, as_of: float) -> Features:
        """Buy-Till-You-Die RFM with daily periods, as lifetimes' summary computes it."""
        if not self.purchase_days:
            return {"frequency": 0.0, "recency": 0.0, "T": 0.0, "monetary_value": 0.0}
        days = sorted(self.purchase_days)
        first, last = days[0], days[-1]
        repeat = [self.purchase_days[day] for day in days[1:]]
        return {
            "frequency": float(len(repeat)),
            "recency": float(last - first),
            "T": float(max(int(as_of // DAY) - first, 0)),
            "monetary_value": sum(repeat) / len(repeat) / 100 if repeat else 0.0,
        }

    def _sessions(self, as_of: float) -> Features:
        recent = [s for s in self.sessions.items if as_of - 7 * DAY < s[0] <= as_of]
        closed = [s for s in recent if s[1] + SESSION_GAP <= as_of]
        abandoned = sum(1 for s in closed if s[3] & _SESSION_CART and not s[3] & _SESSION_ORDER)
        count = len(recent)
        return {
            "sessions_7d": float(count),
            "session_duration_7d": round(sum(s[1] - s[0] for s in recent) / count, 1)
            if count
            else 0.0,
            "bounce_rate_7d": round(sum(1 for s in recent if s[2] == 1) / count, 4)
            if count
            else 0.0,
            "abandoned_carts_7d": float(abandoned),
        }

    def _cart(self, as_of: float, cart_after: float) -> Features:
        lines, last = self.open_cart() if self.cart else ([], None)
        if last is None:
            return {
                "cart_products": 0.0,
                "cart_value": 0.0,
                "cart_idle_minutes": -1.0,
                "cart_abandoned": 0.0,
            }
        return {
            "cart_products": float(len(lines)),
            "cart_value": round(sum(line.value for line in lines), 2),
            "cart_idle_minutes": _minutes_since(last, as_of),
            "cart_abandoned": 1.0 if as_of - last >= cart_after else 0.0,
        }

    def _affinity(self, as_of: float) -> Features:
        month = self.days.window(as_of, 30)
        last_day = int(as_of // DAY)
        totals = {
            category: sum(n for day, n in per_day.items() if last_day - 30 < day <= last_day)
            for category, per_day in self.category_days.items()
        }
        totals = {category: n for category, n in totals.items() if n}
        events = _slot(month, _EVENTS)
        values: Features = {
            "mobile_share_30d": round(_slot(month, _MOBILE) / events, 4) if events else 0.0
        }
        if not totals:
            values.update(top_category_30d="", top_category_share_30d=0.0)
            return values
        top = min(totals, key=lambda category: (-totals[category], category))
        values["top_category_30d"] = top
        values["top_category_share_30d"] = round(totals[top] / sum(totals.values()), 4)
        return values

    def _velocity(self, as_of: float) -> Features:
        recent = _slot(self.days.window(as_of, 7), _EVENTS)
        before = _slot(self.days.window(as_of, 7, skip=7), _EVENTS)
        recent_days = self.days.active(as_of, 7)
        before_days = self.days.active(as_of, 7, skip=7)
        per_day = recent / recent_days if recent_days else 0.0
        per_day_before = before / before_days if before_days else 0.0
        return {
            "events_per_active_day_7d": round(per_day, 4),
            "events_per_active_day_prev_7d": round(per_day_before, 4),
            "engagement_velocity": round(math.log2((per_day + 1) / (per_day_before + 1)), 4),
        }

    def to_row(self) -> list[Any]:
        """The aggregates as plain, canonical lists (sorted keys) for serialisation."""
        return [
            self.minutes.to_row(),
            self.hours.to_row(),
            self.days.to_row(),
            [
                [name, sorted(per_day.items())]
                for name, per_day in sorted(self.category_days.items())
            ],
            self.sessions.items,
            sorted(self.purchase_days.items()),
            self.orders,
            self.events,
            self.first_seen,
            self.last_seen,
            self.last_order,
            list(self.last_device) if self.last_device else None,
            sorted(self.recent.items()),
            self.cart,
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> Profile:
        """Inverse of :meth:`to_row`."""
        profile = cls()
        minutes, hours, days, categories, sessions, purchases, *scalars = row
        profile.minutes.load_row(minutes)
        profile.hours.load_row(hours)
        profile.days.load_row(days)
        profile.category_days = {name: dict(map(tuple, pairs)) for name, pairs in categories}
        profile.sessions.items = sessions
        profile.purchase_days = dict(map(tuple, purchases))
        orders, events, first_seen, last_seen, last_order, last_device, recent = scalars[:7]
        profile.recent = dict(map(tuple, recent))
        profile.cart = scalars[7] if len(scalars) > 7 else []
        profile.orders, profile.events = orders, events
        profile.first_seen, profile.last_seen, profile.last_order = (
            first_seen,
            last_seen,
            last_order,
        )
        profile.last_device = (last_device[0], last_device[1]) if last_device else None
        return profile


BURST_PREFIX = "burst:"
"""Feature names `burst:<KIND>:<seconds>` read :meth:`Profile.burst`."""


@functools.cache
def touched_features(kind: EventKind, *, started: bool) -> frozenset[str]:
    """The features an event of `kind` may change, besides :data:`CLOCK_FEATURES` and the
    burst features of `kind`; `started`: it changed the sessions' starts (a new session).

    Rules that read none of them need not be evaluated again after such an event: what
    time alone changes is the timers' business.

    >>> "sessions_7d" in touched_features(EventKind.PAGE, started=False)
    False
    >>> sorted(touched_features(EventKind.ORDER, started=False) & {"orders_30d", "frequency"})
    ['frequency', 'orders_30d']
    """
    if kind not in BEHAVIOUR_KINDS:
        return frozenset()
    groups = {"recency", "sessions", "affinity", "velocity"}
    if kind is EventKind.ORDER:
        groups |= {"revenue", "rfm", "cart"}
    elif kind in (EventKind.CART_ADD, EventKind.CART_REMOVE):
        groups.add("cart")
    names = {name for name, group in FEATURE_GROUPS.items() if group in groups}
    if kind in COUNTED_KINDS:
        names |= {f"{COUNTED_KINDS[kind]}_{window}" for window in WINDOWS}
    if not started:
        names.discard("sessions_7d")
    return frozenset(names - CLOCK_FEATURES)


_COUNT_WINDOWS: dict[str, tuple[str, int, int]] = {
    **{
        f"{name}_{window}": (tier, buckets, _KIND_SLOT[kind])
        for kind, name in COUNTED_KINDS.items()
        for window, (tier, buckets) in WINDOWS.items()
    },
    "revenue_7d": ("days", 7, _REVENUE),
    "revenue_30d": ("days", 30, _REVENUE),
}
"""Windowed sums: the bucket tier, the buckets summed and the counter slot of each."""

LIFETIME_FEATURES = frozenset(
    (
        "orders_lifetime",
        "revenue_lifetime",
        "avg_order_value",
        "events_lifetime",
        "last_device",
        "frequency",
        "recency",
        "monetary_value",
    )
)
"""Features that only events change, never the passing of time."""

_OWN_TIMING = frozenset((*_COUNT_WINDOWS, *LIFETIME_FEATURES, "sessions_7d"))
"""Features :meth:`Profile.feature_changes_at` times on their own, not by their group."""

SHRINKING_FEATURES = frozenset((*_COUNT_WINDOWS, "sessions_7d"))
"""Non-negative features that the passing of time alone can only lower: once at 0 they
stay there until an event comes."""

Reader = Callable[[Profile, float], float | str]
"""Computes one feature of a profile as of an event time."""


def _count_reader(tier: str, slot: int, buckets: int) -> Reader:
    return lambda profile, as_of: float(_slot(getattr(profile, tier).window(as_of, buckets), slot))


def _sessions_7d(profile: Profile, as_of: float) -> float:
    start = as_of - 7 * DAY
    return float(sum(1 for s in profile.sessions.items if start < s[0] <= as_of))


FEATURE_READERS: dict[str, Reader] = {
    **{
        name: _count_reader(tier, slot, buckets)
        for name, (tier, buckets, slot) in _COUNT_WINDOWS.items()
        if slot != _REVENUE
    },
    "revenue_7d": lambda p, as_of: _slot(p.days.window(as_of, 7), _REVENUE) / 100,
    "revenue_30d": lambda p, as_of: _slot(p.days.window(as_of, 30), _REVENUE) / 100,
    "orders_lifetime": lambda p, _: float(p.orders),
    "events_lifetime": lambda p, _: float(p.events),
    "days_since_last_order": lambda p, as_of: _days_since(p.last_order, as_of),
    "days_since_last_seen": lambda p, as_of: _days_since(p.last_seen, as_of),
    "days_since_first_seen": lambda p, as_of: _days_since(p.first_seen, as_of),
    "frequency": lambda p, _: float(max(len(p.purchase_days) - 1, 0)),
    "sessions_7d": _sessions_7d,
}
"""Features that are cheaper to compute alone than with their group; each gives the
value :meth:`Profile.features` gives (a property test holds them to it).

>>> profile = Profile()
>>> _ = profile.apply(Action("u", "m", EventKind.ORDER, 1_000.0, value=9.0))
>>> FEATURE_READERS["orders_30d"](profile, 1_000.0), FEATURE_READERS["frequency"](profile, 0)
(1.0, 0.0)
"""


def burst_feature(kind: EventKind, within: float) -> str:
    """The feature name of the most `kind` events of one category within `within` seconds."""
    return f"{BURST_PREFIX}{kind.name}:{within:g}"


class LazyFeatures(Mapping[str, float | str]):
    """A profile's features as of a time, each group computed when first read.

    Rules short-circuit, so a rule set usually reads a few groups, not all.
    `thresholds` holds population percentiles by name (`p75(revenue_30d)`);
    one not among them reads as NaN, which no comparison meets.

    >>> features = LazyFeatures(Profile(), as_of=0.0, thresholds={"p50(orders_30d)": 1.0})
    >>> features["orders_lifetime"], len(features._values) < len(FEATURE_GROUPS)
    (0.0, True)
    >>> features["p50(orders_30d)"], features["p90(orders_30d)"]
    (1.0, nan)
    """

    def __init__(
        self,
        profile: Profile,
        as_of: float,
        thresholds: Mapping[str, float] | None = None,
        cart_after: float = CART_ABANDONMENT_AFTER,
    ) -> None:
        self._profile = profile
        self._as_of = as_of
        self._cart_after = cart_after
        self._values: Features = dict(thresholds) if thresholds else {}
        self._changes: dict[str, float] = {}

    def __getitem__(self, name: str) -> float | str:
        try:
            return self._values[name]
        except KeyError:
            if name not in FEATURE_GROUPS and name[:1] == "p" and name.endswith(")"):
                return math.nan  # a percentile threshold not known yet
            reader = FEATURE_READERS.get(name)
            if reader is not None:
                value = self._values[name] = reader(self._profile, self._as_of)
                return value
            if name.startswith(BURST_PREFIX):
                _, kind, within = name.split(":")
                count = self._profile.burst(EventKind[kind], float(within), self._as_of)
                self._values[name] = float(count)
                return self._values[name]
            group = FEATURE_GROUPS[name]
            self._values.update(
                self._profile.features(self._as_of, (group,), cart_after=self._cart_after)
            )
            return self._values[name]

    def changes_at(self, group: str) -> float:
        """When a feature of `group` other than a clock feature may next change with no new
        events (see :meth:`Profile.changes_at`)."""
        return self._profile.changes_at(group, self._as_of, cart_after=self._cart_after)

    def feature_changes_at(self, name: str) -> float:
        """When the feature `name` may next change with no new events (see
        :meth:`Profile.feature_changes_at`); features of one group share the answer
        where only their group knows it."""
        key = name if name in _OWN_TIMING else FEATURE_GROUPS[name]
        moment = self._changes.get(key)
        if moment is None:
            profile, as_of, after = self._profile, self._as_of, self._cart_after
            moment = self._changes[key] = profile.feature_changes_at(name, as_of, cart_after=after)
        return moment

    def burst_changes_at(self, name: str) -> float:
        """When the burst feature `name` (see :func:`burst_feature`) may next change."""
        _, kind, within = name.split(":")
        return self._profile.burst_changes_at(EventKind[kind], float(within), self._as_of)

    def crosses_at(self, name: str, op: str, threshold: float) -> float:
        """When `name op threshold` may next change, for a clock feature `name` (see
        :meth:`Profile.crosses_at`)."""
        return self._profile.crosses_at(name, op, threshold, self._as_of)

    def __iter__(self) -> Iterator[str]:
        return iter(FEATURE_GROUPS)

    def __len__(self) -> int:
        return len(FEATURE_GROUPS)


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _most(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _slot(counts: list[int], slot: int) -> int:
    return counts[slot] if slot < len(counts) else 0


def _days_since(moment: int | None, as_of: float) -> float:
    if moment is None:
        return -1.0
    return round(max(0.0, as_of - moment) / DAY, 4)


def _minutes_since(moment: int, as_of: float) -> float:
    return round(max(0.0, as_of - moment) / MINUTE, 2)


def _after(as_of: float, moments: Iterable[float]) -> float:
    """The earliest of `moments` later than `as_of`, or :data:`NEVER`."""
    return min((moment for moment in moments if moment > as_of), default=NEVER)


def _first_second(as_of: float, guess: float, reached: Callable[[float], bool]) -> float:
    """The first whole second after `as_of` at which `reached` (monotone in time) holds,
    searched from `guess`, which rounding leaves a few steps from the answer."""
    if not math.isfinite(guess) or guess > as_of + 2**40:
        return NEVER
    earliest = math.floor(as_of) + 1
    moment = max(earliest, math.ceil(guess))
    while moment > earliest and reached(moment - 1):
        moment -= 1
    while not reached(moment):
        moment += 1
    return float(moment)


_GROUPS = (
    "counts_1h",
    "counts_24h",
    "counts_7d",
    "counts_30d",
    "revenue",
    "rfm",
    "recency",
    "sessions",
    "affinity",
    "velocity",
    "cart",
)
_SAMPLE = Profile().features(0.0)

FEATURE_GROUPS: dict[str, str] = {
    name: group for group in _GROUPS for name in Profile().features(0.0, [group])
}
"""The group each feature is computed in."""

FEATURE_NAMES: tuple[str, ...] = tuple(n for n, v in _SAMPLE.items() if isinstance(v, float))
"""Every numeric feature, in the fixed order of feature vectors."""

TEXT_FEATURES: tuple[str, ...] = tuple(n for n, v in _SAMPLE.items() if isinstance(v, str))
"""Features whose value is a name; `""` when unknown."""

CLOCK_FEATURES = frozenset(
    (
        "days_since_last_order",
        "days_since_last_seen",
        "days_since_first_seen",
        "T",
        "cart_idle_minutes",
    )
)
"""Features that grow with event time alone; :meth:`Profile.crosses_at` says when they pass a
threshold, the others change at :meth:`Profile.changes_at`."""
