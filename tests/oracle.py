"""A deliberately plain batch computation of every feature, from a user's list of events.

It shares nothing with the compiled core (`processors/core`) but the definitions in the README:
no buckets kept, no incremental state — every feature is recomputed from the
raw events, so a bug in the streaming code cannot hide in both.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from processors.events import Action, EventKind

DAY, HOUR, FIVE_MINUTES, GAP = 86_400, 3_600, 300, 1_800
KINDS = {
    EventKind.PAGE: "page_views",
    EventKind.PRODUCT_VIEWED: "product_views",
    EventKind.SEARCH: "searches",
    EventKind.CART_ADD: "cart_adds",
    EventKind.CHECKOUT: "checkouts",
    EventKind.ORDER: "orders",
}
WINDOWS = {"1h": (FIVE_MINUTES, 12), "24h": (HOUR, 24), "7d": (DAY, 7), "30d": (DAY, 30)}


def in_buckets(moment: int, as_of: float, width: int, count: int, skip: int = 0) -> bool:
    last = int(as_of // width) - skip
    return last - count < moment // width <= last


def features(events: list[Action], as_of: float) -> dict[str, float | str]:
    """Every feature of one user's `events` (identity calls left out) as of `as_of`."""
    events = [e for e in events if e.kind not in (EventKind.IDENTIFY, EventKind.ALIAS)]
    times = [int(e.timestamp) for e in events]
    out: dict[str, float | str] = {}
    for window, (width, count) in WINDOWS.items():
        for kind, name in KINDS.items():
            out[f"{name}_{window}"] = float(
                sum(
                    1
                    for e, t in zip(events, times, strict=True)
                    if e.kind is kind and in_buckets(t, as_of, width, count)
                )
            )
    orders = [
        (t, round(e.value * 100))
        for e, t in zip(events, times, strict=True)
        if e.kind is EventKind.ORDER
    ]
    out["revenue_7d"] = sum(c for t, c in orders if in_buckets(t, as_of, DAY, 7)) / 100
    out["revenue_30d"] = sum(c for t, c in orders if in_buckets(t, as_of, DAY, 30)) / 100
    out["revenue_lifetime"] = sum(c for _, c in orders) / 100
    out["orders_lifetime"] = float(len(orders))
    out["avg_order_value"] = sum(c for _, c in orders) / len(orders) / 100 if orders else 0.0
    per_day: dict[int, int] = defaultdict(int)
    for t, cents in orders:
        per_day[t // DAY] += cents
    if per_day:
        days = sorted(per_day)
        repeat = [per_day[d] for d in days[1:]]
        out["frequency"] = float(len(repeat))
        out["recency"] = float(days[-1] - days[0])
        out["T"] = float(max(int(as_of // DAY) - days[0], 0))
        out["monetary_value"] = sum(repeat) / len(repeat) / 100 if repeat else 0.0
    else:
        out.update(frequency=0.0, recency=0.0, T=0.0, monetary_value=0.0)

    def since(moment: int | None) -> float:
        return -1.0 if moment is None else round(max(0.0, as_of - moment) / DAY, 4)

    out["days_since_last_order"] = since(max((t for t, _ in orders), default=None))
    out["days_since_last_seen"] = since(max(times, default=None))
    out["days_since_first_seen"] = since(min(times, default=None))
    out["events_lifetime"] = float(len(events))
    sessions: list[list] = []  # [start, end, count, has_cart, has_order]
    for e, t in sorted(zip(events, times, strict=True), key=lambda pair: pair[1]):
        if sessions and t - sessions[-1][1] < GAP:
            sessions[-1][1] = t
            sessions[-1][2] += 1
        else:
            sessions.append([t, t, 1, False, False])
        sessions[-1][3] |= e.kind is EventKind.CART_ADD
        sessions[-1][4] |= e.kind is EventKind.ORDER
    recent = [s for s in sessions if as_of - 7 * DAY < s[0] <= as_of]
    out["sessions_7d"] = float(len(recent))
    out["session_duration_7d"] = (
        round(sum(s[1] - s[0] for s in recent) / len(recent), 1) if recent else 0.0
    )
    out["bounce_rate_7d"] = (
        round(sum(1 for s in recent if s[2] == 1) / len(recent), 4) if recent else 0.0
    )
    out["abandoned_carts_7d"] = float(
        sum(1 for s in recent if s[1] + GAP <= as_of and s[3] and not s[4])
    )
    month = [(e, t) for e, t in zip(events, times, strict=True) if in_buckets(t, as_of, DAY, 30)]
    categories = Counter(c for e, _ in month for c in e.categories)
    if categories:
        top = min(categories, key=lambda c: (-categories[c], c))
        out["top_category_30d"] = top
        out["top_category_share_30d"] = round(categories[top] / sum(categories.values()), 4)
    else:
        out["top_category_30d"], out["top_category_share_30d"] = "", 0.0
    mobile = sum(1 for e, _ in month if e.device == "mobile")
    out["mobile_share_30d"] = round(mobile / len(month), 4) if month else 0.0
    devices = [(t, e.device) for e, t in zip(events, times, strict=True) if e.device]
    out["last_device"] = max(devices)[1] if devices else ""

    def per_active_day(skip: int) -> float:
        chosen = [t for t in times if in_buckets(t, as_of, DAY, 7, skip)]
        active = len({t // DAY for t in chosen})
        return len(chosen) / active if active else 0.0

    last_order = max((t for t, _ in orders), default=None)
    lines: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    touched = []
    for e, t in zip(events, times, strict=True):
        sign = {EventKind.CART_ADD: 1, EventKind.CART_REMOVE: -1}.get(e.kind)
        if sign and (last_order is None or t > last_order):
            lines[e.product or ""][0] += sign
            lines[e.product or ""][1] += sign * round(e.value * 100)
            touched.append(t)
    open_lines = [cents for count, cents in lines.values() if count > 0]
    if open_lines:
        idle = as_of - max(touched)
        out["cart_products"] = float(len(open_lines))
        out["cart_value"] = round(sum(max(c, 0) for c in open_lines) / 100, 2)
        out["cart_idle_minutes"] = round(max(0.0, idle) / 60, 2)
        out["cart_abandoned"] = 1.0 if idle >= GAP else 0.0
    else:
        out.update(cart_products=0.0, cart_value=0.0, cart_idle_minutes=-1.0, cart_abandoned=0.0)

    now, before = per_active_day(0), per_active_day(7)
    out["events_per_active_day_7d"] = round(now, 4)
    out["events_per_active_day_prev_7d"] = round(before, 4)
    out["engagement_velocity"] = round(math.log2((now + 1) / (before + 1)), 4)
    return out
