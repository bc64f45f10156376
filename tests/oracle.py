"""A deliberately plain batch computation of every feature, from the raw Segment messages.

It imports nothing from segstream (`processors`, `streams`, the compiled core): it reads
the JSON itself, with the definitions in docs/features.md and docs/sending-events.md,
keeps no buckets and no incremental state, and recomputes every feature from the raw
events, so a bug in the streaming code cannot hide in both.

Its features equal the core's exactly, and the tests compare them with `==`: counts
and days are integers; money is summed in integer cents and divided by 100 once (an
average divides the cents by the count, then by 100); shares, durations and days
since are rounded with Python's `round` to the digits docs/features.md gives, which is
how the core rounds too (ties to even on the exact binary value); the engagement
velocity is `log2` of the same IEEE quotient before rounding. None of these leaves a
last-digit difference to tolerate.

>>> page = b'{"type": "page", "userId": "ann", "messageId": "m1", "timestamp": "2026-11-01T10:00:00Z"}'
>>> event = read(page)
>>> event.kind, event.timestamp
('page', 1793527200.0)
>>> features([event], event.timestamp + 3600)["page_views_1h"]
0.0
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

DAY, HOUR, FIVE_MINUTES, GAP = 86_400, 3_600, 300, 1_800
TRACKED = {
    "Product Viewed": "product_viewed",
    "Products Searched": "search",
    "Product Added": "cart_add",
    "Product Removed": "cart_remove",
    "Cart Viewed": "cart_viewed",
    "Checkout Started": "checkout",
    "Order Completed": "order",
}
COUNTED = {
    "page": "page_views",
    "product_viewed": "product_views",
    "search": "searches",
    "cart_add": "cart_adds",
    "checkout": "checkouts",
    "order": "orders",
}
WINDOWS = {"1h": (FIVE_MINUTES, 12), "24h": (HOUR, 24), "7d": (DAY, 7), "30d": (DAY, 30)}


@dataclass(frozen=True)
class Event:
    """What the oracle reads from one Segment message."""

    user_id: str
    message_id: str
    kind: str  # page, product_viewed, …, order, identify, alias or other
    timestamp: float
    value: float = 0.0
    categories: tuple[str, ...] = ()
    device: str | None = None
    product: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    traits: tuple[tuple[str, Trait], ...] = ()
    """Every trait the message sets, by dotted name (docs/rules.md, "Traits")."""
    name: str | None = None
    """The `track` event's name, or the `page`/`screen` call's."""
    fields: tuple[tuple[str, Trait], ...] = ()
    """Every null, boolean, number or text in the message, by dotted path from its root."""


Trait = bool | float | str | None


class UnreadableError(ValueError):
    """A message the documented schema refuses (the worker dead-letters it)."""


def readable(raw: bytes) -> Event | None:
    """The event in `raw`, or `None` when the schema refuses it."""
    try:
        return read(raw)
    except (UnreadableError, KeyError, TypeError, ValueError):
        return None


def read(raw: bytes) -> Event:
    """The event in one well-formed Segment message (JSON as trackers send it); raises for
    one the schema refuses: not JSON, an unknown call type, no id, a timestamp that is not
    one, a negative amount."""
    body = orjson.loads(raw)
    if body["type"] not in ("track", "page", "screen", "identify", "alias", "group"):
        raise UnreadableError(f"unknown type {body['type']!r}")
    kind = {"page": "page", "screen": "page", "identify": "identify", "alias": "alias"}.get(
        body["type"], "other"
    )
    if body["type"] == "track":
        kind = TRACKED.get(body["event"], "other")
    user_id = body.get("userId") or body["anonymousId"]
    moment = datetime.fromisoformat(body["timestamp"]).astimezone(UTC).timestamp()
    device = ((body.get("context") or {}).get("device") or {}).get("type") or None
    properties = body.get("properties") or {}
    value, categories, product = 0.0, (), None
    amounts = [properties.get(name) for name in ("revenue", "total", "price", "quantity")]
    if any(float(amount) < 0 for amount in amounts if amount is not None):
        raise UnreadableError("a negative amount")
    if kind == "order":
        value = float(properties.get("revenue", properties.get("total", 0.0)))
        found = [p.get("category") for p in properties.get("products") or []]
        categories = tuple(dict.fromkeys(c for c in found if c))
    elif kind in ("product_viewed", "cart_add", "cart_remove"):
        price = properties.get("price")
        if kind != "product_viewed" and price is not None:
            value = float(price) * float(properties.get("quantity", 1.0))
        categories = (properties["category"],) if properties.get("category") else ()
        product = properties.get("product_id") or properties.get("sku") or properties.get("name")
    return Event(
        user_id=user_id,
        message_id=body["messageId"],
        kind=kind,
        timestamp=moment,
        value=value,
        categories=categories,
        device=device.lower() if device else None,
        product=None if product is None else str(product),
        anonymous_id=body.get("anonymousId") if body.get("userId") else None,
        previous_id=body.get("previousId") if kind == "alias" else None,
        traits=read_traits(body),
        name=_name(body),
        fields=tuple(sorted(_leaves(body, "").items())),
    )


def _name(body: dict) -> str | None:
    """The call's name: a `track` event's, or a `page`/`screen` call's (when it has one)."""
    name = body.get("event") if body["type"] == "track" else body.get("name")
    if name is None or body["type"] not in ("track", "page", "screen"):
        return None
    return name if isinstance(name, str) else str(name)


def _leaves(mapping: dict, prefix: str) -> dict[str, Trait]:
    """Every scalar under `mapping` by dotted path: text cut to 1,024 characters, numbers
    as floats, lists left out."""
    found: dict[str, Trait] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            found.update(_leaves(value, f"{prefix}{key}."))
        elif isinstance(value, str):
            found[f"{prefix}{key}"] = value[:1024]
        elif isinstance(value, bool) or value is None:
            found[f"{prefix}{key}"] = value
        elif isinstance(value, int | float):
            found[f"{prefix}{key}"] = float(value)
    return found


def read_traits(body: dict) -> tuple[tuple[str, Trait], ...]:
    """The traits one message sets: its `context.traits`, then (for `identify`) its own
    `traits`, which win; nested ones by dotted name, lists left out, text cut to 1,024
    characters, numbers as floats."""
    found: dict[str, Trait] = {}
    sources = [(body.get("context") or {}).get("traits")]
    if body["type"] == "identify":
        sources.append(body.get("traits"))
    for source in sources:
        if isinstance(source, dict):
            found.update(_leaves(source, ""))
    return tuple(sorted(found.items()))


def _trait_rank(value: Trait) -> tuple:
    """Ties at one second: null < false < true < numbers < text, then by value."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, float):
        return (2, value)
    return (3, value)


def traits(events: list[Event], as_of: float) -> dict[str, Trait]:
    """Each trait's value as of `as_of`: the one set at the latest second, the greatest
    of those set at that second."""
    latest: dict[str, tuple[int, tuple, Trait]] = {}
    for event in events:
        if int(event.timestamp) > as_of:
            continue
        for name, value in event.traits:
            candidate = (int(event.timestamp), _trait_rank(value), value)
            if name not in latest or candidate[:2] > latest[name][:2]:
                latest[name] = candidate
    return {name: value for name, (_, _, value) in sorted(latest.items())}


def iso_seconds(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 date-time (naive: UTC) or date; None if it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def trait_holds(
    value: Trait,
    op: str,
    wanted: Trait | list[Trait],
    insensitive: bool = False,
    as_of: float = 0.0,
) -> bool:
    """`value op wanted` as docs/rules.md defines trait conditions (`value` None when the
    trait was never set) as of `as_of`; `insensitive` lower-cases text on both sides."""
    if value is None:
        return op == "missing"
    if op in ("exists", "missing"):
        return op == "exists"
    if op in ("within_last", "more_than_ago"):
        moment = iso_seconds(value) if isinstance(value, str) else None
        if moment is None:
            return False
        assert isinstance(wanted, float)
        if op == "within_last":
            return as_of - wanted <= moment <= as_of
        return moment < as_of - wanted
    if insensitive:
        value = value.lower() if isinstance(value, str) else value
        if isinstance(wanted, list):
            wanted = [w.lower() if isinstance(w, str) else w for w in wanted]
        elif isinstance(wanted, str) and op != "matches":
            wanted = wanted.lower()
    if op == "between":
        assert isinstance(wanted, list)
        low, high = wanted
        return isinstance(value, float) and not isinstance(value, bool) and low <= value <= high
    if op in ("in", "not_in"):
        assert isinstance(wanted, list)
        found = any(type(value) is type(w) and value == w for w in wanted)
        return found if op == "in" else not found
    same_type = type(value) is type(wanted)
    if op == "==":
        return same_type and value == wanted
    if op == "!=":
        return not (same_type and value == wanted)
    if op in ("contains", "starts_with", "ends_with", "matches"):
        if not (isinstance(value, str) and isinstance(wanted, str)):
            return False
        if op == "matches":
            return re.search(wanted, value, re.IGNORECASE if insensitive else 0) is not None
        if op == "contains":
            return wanted in value
        return value.startswith(wanted) if op == "starts_with" else value.endswith(wanted)
    if isinstance(value, bool) or not isinstance(value, float):
        return False
    if isinstance(wanted, bool) or not isinstance(wanted, float):
        return False
    return OPERATORS[op](value, wanted)


def people(events: Iterable[Event]) -> dict[str, list[Event]]:
    """Each person's distinct events (by `messageId`): an anonymous id that `identify` (with
    both ids) or `alias` links to a user is that user."""
    events = list(events)
    owner: dict[str, str] = {}
    for event in events:
        other = event.anonymous_id if event.kind == "identify" else event.previous_id
        if other and other != event.user_id:
            assert owner.get(other, event.user_id) == event.user_id, f"{other} linked twice"
            owner[other] = event.user_id
    found: dict[str, dict[str, Event]] = defaultdict(dict)
    for event in events:
        found[owner.get(event.user_id, event.user_id)].setdefault(event.message_id, event)
    return {person: list(distinct.values()) for person, distinct in found.items()}


def in_buckets(moment: int, as_of: float, width: int, count: int, skip: int = 0) -> bool:
    last = int(as_of // width) - skip
    return last - count < moment // width <= last


def features(events: list[Event], as_of: float, cart_after: float = GAP) -> dict[str, float | str]:
    """Every feature of one person's `events` (identity calls left out) as of `as_of`, a
    cart counting as abandoned after `cart_after` seconds alone."""
    events = [e for e in events if e.kind not in ("identify", "alias")]
    times = [int(e.timestamp) for e in events]
    out: dict[str, float | str] = {}
    for window, (width, count) in WINDOWS.items():
        for kind, name in COUNTED.items():
            out[f"{name}_{window}"] = float(
                sum(
                    1
                    for e, t in zip(events, times, strict=True)
                    if e.kind == kind and in_buckets(t, as_of, width, count)
                )
            )
    orders = [
        (t, round(e.value * 100)) for e, t in zip(events, times, strict=True) if e.kind == "order"
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
        sessions[-1][3] |= e.kind == "cart_add"
        sessions[-1][4] |= e.kind == "order"
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
        sign = {"cart_add": 1, "cart_remove": -1}.get(e.kind)
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
        out["cart_abandoned"] = 1.0 if idle >= cart_after else 0.0
    else:
        out.update(cart_products=0.0, cart_value=0.0, cart_idle_minutes=-1.0, cart_abandoned=0.0)

    now, before = per_active_day(0), per_active_day(7)
    out["events_per_active_day_7d"] = round(now, 4)
    out["events_per_active_day_prev_7d"] = round(before, 4)
    out["engagement_velocity"] = round(math.log2((now + 1) / (before + 1)), 4)
    return out


DURATION_UNITS = {"s": 1, "m": 60, "h": HOUR, "d": DAY}
OPERATORS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def seconds(duration: str) -> int:
    """`90s`, `10m`, `2h` or `1d` in seconds."""
    return int(duration[:-1]) * DURATION_UNITS[duration[-1]]


def per_category(condition: dict) -> bool:
    """Whether a time-window condition counts per category: one of the four product events,
    no `where`, within 1h or less, unless `per` says otherwise."""
    if "per" in condition:
        return condition["per"] == "category"
    products = ("Product Viewed", "Product Added", "Product Removed", "Order Completed")
    return (
        condition["event"] in products
        and "where" not in condition
        and seconds(condition["within"]) <= HOUR
    )


def window_of(window: str | dict) -> tuple[int, int, int] | None:
    """A computed trait's window as (bucket width, far end, near end) in seconds; None for
    `lifetime`. The far end picks the width: seconds up to 1h, minutes up to 48h, days."""
    if window == "lifetime":
        return None
    far, near = (
        (seconds(window["between"][0]), seconds(window["between"][1]))
        if isinstance(window, dict)
        else (seconds(window), 0)
    )
    width = 1 if far <= HOUR else 60 if far <= 48 * HOUR else DAY
    return width, far, near


def in_window(moment: int, as_of: float, window: str | dict) -> bool:
    """Whether an event at `moment` is in the window as of `as_of`: its bucket is one of
    those from `far` back to `near` back, counted from the bucket holding `as_of`."""
    found = window_of(window)
    if found is None:
        return moment <= as_of
    width, far, near = found
    last = math.floor(as_of / width)
    return last - far // width < moment // width <= last - near // width


def value_text(value: Trait) -> str:
    """A value as `distinct_count` and `most_frequent` tell values apart."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def counts(trait: dict, event: Event) -> bool:
    """Whether a computed trait (its YAML) counts `event`: the call and name it names, and
    its `where`."""
    if event.name is None or event.kind in ("identify", "alias"):
        return False
    if event.kind == "page":
        chosen = event.name == trait.get("page")
    else:
        names = trait.get("events") or ([trait["event"]] if "event" in trait else [])
        chosen = trait.get("any") is True or event.name in names
    return chosen and ("where" not in trait or _where(trait["where"], event))


def _where(condition: dict, event: Event) -> bool:
    if "all" in condition:
        return all(_where(c, event) for c in condition["all"])
    if "any" in condition:
        return any(_where(c, event) for c in condition["any"])
    if "not" in condition:
        return not _where(condition["not"], event)
    value = dict(event.fields).get(condition["property"])
    op, wanted = condition["op"], _wanted(condition)
    return trait_holds(value, op, wanted, condition.get("case") == "insensitive", event.timestamp)


def _wanted(condition: dict) -> Trait | list[Trait]:
    """A condition's value as trait_holds takes it: numbers as floats, durations in seconds."""
    wanted = condition.get("value")
    if condition["op"] in ("within_last", "more_than_ago"):
        return float(seconds(str(wanted)))
    if isinstance(wanted, list):
        return [float(w) if type(w) is int else w for w in wanted]
    return float(wanted) if type(wanted) is int else wanted


def computed_value(trait: dict, events: list[Event], as_of: float) -> Trait:
    """A computed trait's value as of `as_of` (docs/rules.md, "Computed traits")."""
    chosen = [
        e
        for e in events
        if counts(trait, e) and in_window(int(e.timestamp), as_of, trait.get("window", "lifetime"))
    ]
    aggregate = trait["aggregate"]
    if aggregate == "count":
        return float(len(chosen))
    if aggregate in ("first_time", "last_time"):
        if not chosen:
            return None
        moment = (min if aggregate == "first_time" else max)(int(e.timestamp) for e in chosen)
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    values = [(int(e.timestamp), dict(e.fields).get(trait["of"])) for e in chosen]
    values = [(t, v) for t, v in values if v is not None]
    numbers = [v for _, v in values if type(v) is float and math.isfinite(v) and abs(v) <= 1e12]
    if aggregate in ("sum", "avg"):
        total = sum(round(v * 1e6) for v in numbers)
        if aggregate == "sum":
            return total / 1e6
        return total / 1e6 / len(numbers) if numbers else None
    if aggregate in ("min", "max"):
        return (min if aggregate == "min" else max)(numbers) if numbers else None
    if aggregate in ("distinct_count", "most_frequent"):
        tally = Counter(value_text(v) for _, v in values)
        if aggregate == "distinct_count":
            return float(min(len(tally), 1000))
        return min(tally, key=lambda v: (-tally[v], v)) if tally else None
    if not values:
        return None
    ranked = [(t, _trait_rank(v), v) for t, v in values]
    return (min if aggregate == "first" else max)(ranked)[2]


def _times(calls: dict, events: list[Event], as_of: float) -> set[int]:
    """The seconds of the events `calls` (a step, `after` or `not`) counts, up to `as_of`."""
    return {int(e.timestamp) for e in events if counts(calls, e) and int(e.timestamp) <= as_of}


def completed(condition: dict, events: list[Event], as_of: float) -> bool:
    """A sequence condition: some completion (the last step's time) within `window` back
    from `as_of`, of steps at strictly increasing seconds spanning at most `within`."""
    within = seconds(condition["within"])
    window = seconds(condition.get("window", "30d"))
    steps = [_times(step, events, as_of) for step in condition["sequence"]]
    for end in steps[-1]:
        if not as_of - window < end <= as_of:
            continue
        reachable = {t for t in steps[0] if end - within <= t <= end}
        for times in steps[1:]:
            reachable = {t for t in times if t <= end and any(r < t for r in reachable)}
        if end in reachable:
            return True
    return False


def absent(condition: dict, events: list[Event], as_of: float) -> bool:
    """An absence condition: the latest `after` event, no `not` event at or after it, and
    `as_of` from `within` after it (for `for`, when given)."""
    after = max(_times(condition["after"], events, as_of), default=None)
    if after is None:
        return False
    missing = max(_times(condition["not"], events, as_of), default=None)
    if missing is not None and missing >= after:
        return False
    due = after + seconds(condition["within"])
    lasting = seconds(condition["for"]) if "for" in condition else math.inf
    return due <= as_of < due + lasting


PREDICTIONS = ("purchase_30d", "churn_90d", "revenue_90d")
PREDICTION_INPUTS = (
    "orders_lifetime",
    "revenue_lifetime",
    "frequency",
    "recency",
    "T",
    "monetary_value",
    "orders_30d",
    "revenue_30d",
    "events_lifetime",
    "page_views_30d",
    "product_views_30d",
    "cart_adds_30d",
    "idle_days",
    "tenure_days",
    "order_idle_days",
)


def prediction_inputs(events: list[Event], as_of: float) -> list[float]:
    """What every prediction reads, as docs/predictions.md defines it: features, and whole
    UTC days from the evaluation's day back to the day of the latest behavioural event, of
    the first, and of the latest order (the tenure without one); 0 without events."""
    events = [e for e in events if int(e.timestamp) <= as_of]
    values = features(events, as_of)
    behaviour = [int(e.timestamp) for e in events if e.kind not in ("identify", "alias")]
    orders = [int(e.timestamp) for e in events if e.kind == "order"]
    today = int(as_of // DAY)
    tenure = today - min(behaviour) // DAY if behaviour else 0
    idle = today - max(behaviour) // DAY if behaviour else 0
    order_idle = today - max(orders) // DAY if orders else tenure
    named = [float(values[name]) for name in PREDICTION_INPUTS[:12]]  # type: ignore[arg-type]
    return [*named, float(idle), float(tenure), float(order_idle)]


LABEL_EVERY_DAYS = 7


def labelled_on(day: int) -> int:
    """The UTC day (days since the epoch) whose midnight gives the labels of a horizon at
    the start of `day`: the first on or after it that `LABEL_EVERY_DAYS` divides."""
    return day + -day % LABEL_EVERY_DAYS


def label(prediction: str, events: list[Event], day: int) -> float:
    """The outcome of the example taken at the UTC midnight starting `day`: an order on a
    day within 30 days from it (`purchase_30d`, 1 or 0), no behavioural event within 90
    days (`churn_90d`), the revenue of orders on days within 90 days (`revenue_90d`)."""
    behaviour = [e for e in events if e.kind not in ("identify", "alias")]
    orders = [e for e in behaviour if e.kind == "order"]
    if prediction == "purchase_30d":
        return float(any(day <= int(e.timestamp) // DAY < day + 30 for e in orders))
    if prediction == "churn_90d":
        active = any(day * DAY <= int(e.timestamp) < (day + 90) * DAY for e in behaviour)
        return float(not active)
    cents = [round(e.value * 100) for e in orders if day <= int(e.timestamp) // DAY < day + 90]
    return sum(cents) / 100


def score(model: dict, inputs: list[float]) -> float:
    """A prediction from its coefficients: logistic regression on standardised log1p
    inputs, Platt-calibrated, times the estimated spend for an amount."""
    xs = [
        (math.log1p(max(raw, 0.0)) - mean) / std
        for raw, mean, std in zip(inputs, model["mean"], model["std"], strict=True)
    ]
    z = model["intercept"]
    for weight, x in zip(model["weights"], xs, strict=True):
        z += weight * x
    a, b = model["calibration"]
    probability = 1 / (1 + math.exp(-(a * z + b)))
    if model.get("spend") is None:
        return probability
    weights, constant = model["spend"]
    spend = constant
    for weight, x in zip(weights, xs, strict=True):
        spend += weight * x
    return probability * max(spend, 0.0)


def segments(
    rules: dict,
    events: list[Event],
    as_of: float,
    thresholds: dict[str, float] | None = None,
    predictions: dict[str, dict] | None = None,
) -> set[str]:
    """The segments of a rules file (its YAML, loaded) a person is in as of `as_of`, from
    their events up to then, as docs/rules.md defines them; a percentile not in
    `thresholds` is unknown, and its comparison false; a prediction not in `predictions`
    (coefficients by name) is gated, and its comparison false."""
    events = [e for e in events if int(e.timestamp) <= as_of]
    values = features(events, as_of, seconds(rules.get("cart_abandonment_after", "30m")))
    known_traits = traits(events, as_of)
    by_name = {segment["name"]: segment for segment in rules["segments"]}
    decided: dict[str, bool] = {}

    def holds(condition: dict) -> bool:
        if "sequence" in condition:
            return completed(condition, events, as_of)
        if "after" in condition:  # before `not`, which an absence has too
            return absent(condition, events, as_of)
        if "all" in condition:
            return all(holds(c) for c in condition["all"])
        if "any" in condition:
            return any(holds(c) for c in condition["any"])
        if "not" in condition:
            return not holds(condition["not"])
        if "segment" in condition:
            return member(condition["segment"])
        if "prediction" in condition:
            model = (predictions or {}).get(condition["prediction"])
            if model is None:
                return False
            found = score(model, prediction_inputs(events, as_of))
            wanted = condition["value"]
            if condition["op"] == "between":
                return wanted[0] <= found <= wanted[1]
            if isinstance(wanted, str):
                name = f"{wanted.split('(')[0]}(prediction.{condition['prediction']})"
                if name not in (thresholds or {}):
                    return False
                wanted = (thresholds or {})[name]
            return OPERATORS[condition["op"]](found, wanted)
        if "computed" in condition:
            value = computed_value(rules["computed"][condition["computed"]], events, as_of)
            wanted = _wanted(condition)
            percentile = re.fullmatch(r"p([\d.]+)\((\w+)\)", str(wanted))
            if percentile and isinstance(value, float):
                q, name = float(percentile.group(1)), percentile.group(2)
                known = (thresholds or {}).get(f"p{q:g}(computed.{name})")
                return known is not None and OPERATORS[condition["op"]](value, known)
            insensitive = condition.get("case") == "insensitive"
            return trait_holds(value, condition["op"], wanted, insensitive, as_of)
        if "event" in condition and not per_category(condition):
            count = {"event": condition["event"], "aggregate": "count"}
            if "where" in condition:
                count["where"] = condition["where"]
            found = computed_value({**count, "window": condition["within"]}, events, as_of)
            assert isinstance(found, float)
            return found >= condition["at_least"]
        if "event" in condition:
            kind = TRACKED[condition["event"]]
            since = as_of - seconds(condition["within"])
            by_category = Counter(
                c
                for e in events
                if e.kind == kind and since < int(e.timestamp) <= as_of
                for c in e.categories
            )
            return max(by_category.values(), default=0) >= condition["at_least"]
        if "trait" in condition:
            insensitive = condition.get("case") == "insensitive"
            known = known_traits.get(condition["trait"])
            return trait_holds(known, condition["op"], _wanted(condition), insensitive, as_of)
        found = values[condition["feature"]]
        op, wanted = condition["op"], condition["value"]
        if op == "between":
            low, high = wanted
            return low <= found <= high
        if op in ("in", "not_in"):
            return (found in wanted) == (op == "in")
        if isinstance(wanted, str) and wanted.startswith("p") and wanted.endswith(")"):
            if wanted not in (thresholds or {}):
                return False
            wanted = (thresholds or {})[wanted]
        return OPERATORS[op](found, wanted)

    def member(name: str) -> bool:
        if name not in decided:
            segment = by_name[name]
            earlier = []
            if segment.get("group"):
                for other in rules["segments"]:
                    if other["name"] == name:
                        break
                    if other.get("group") == segment["group"]:
                        earlier.append(other["name"])
            decided[name] = not any(member(e) for e in earlier) and holds(segment["condition"])
        return decided[name]

    return {name for name in by_name if member(name)}
