"""Simulated shoppers: a reproducible stream of Segment events from personas.

Every user draws from its own random generator seeded by `(seed, index)`, so
the events of one user do not depend on how many others there are, and the
same seed always gives the same stream. Events come out in event-time order.

>>> from itertools import islice
>>> simulation = Simulation(users=50, seed=7)
>>> again = Simulation(users=50, seed=7)
>>> list(islice(simulation.events(), 100)) == list(islice(again.events(), 100))
True
>>> sorted({user.persona for user in simulation.users})[:2]
['bargain_hunter', 'cart_abandoner']
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.tools.personas import PERSONAS, Persona

DEFAULT_END = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
"""Default end of the simulated history, fixed so that a seed alone fixes the stream."""

_DAY = 86_400.0
_USER_AGENTS = {
    "mobile": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148",
    "tablet": "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Mobile/15E148",
    "desktop": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
}
_LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES")


@dataclass(frozen=True, slots=True)
class SimulatedUser:
    """A simulated shopper and their ground-truth persona.

    `user_id` is the id segstream will know them by at the end: their
    `userId` when they are identified, otherwise their `anonymousId`.
    """

    index: int
    user_id: str
    anonymous_id: str
    persona: str
    identified: bool


@dataclass(frozen=True, slots=True)
class SimulatedEvent:
    """One event ready to produce: event time, partition key and JSON body."""

    timestamp: float
    key: bytes
    value: bytes


def iso_text(moment: float) -> str:
    """An event time as trackers write it: `2026-11-01T10:00:00.000Z`."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


class _Shopper:
    """Generates one user's events, oldest first."""

    def __init__(
        self, user: SimulatedUser, persona: Persona, rng: random.Random, end: float, start: float
    ) -> None:
        self.user = user
        self.start = start
        self.persona = persona
        self.rng = rng
        self.end = end
        self.device = _pick(rng, persona.devices)
        self.locale = rng.choice(_LOCALES)
        self.sequence = 0
        self.known = False
        self.last_moment = -math.inf

    def events(self) -> Iterator[tuple[float, dict[str, Any]]]:
        persona, rng = self.persona, self.rng
        oldest, newest = persona.active_days
        start = self.end - oldest * _DAY + rng.random() * (oldest - newest) * _DAY * 0.3
        stop = self.end - newest * _DAY
        mean_gap = 7 * _DAY / persona.sessions_per_week
        sessions = []
        moment = start
        while moment < stop:
            sessions.append(moment)
            moment += rng.expovariate(1 / mean_gap)
        returns = persona.return_share > 0 and rng.random() < persona.return_share
        if returns:
            sessions.append(self.end - rng.random() * 10 * _DAY)
        identify_at = len(sessions) - 1 if self.user.identified and not self._always_known() else -1
        self.known = self._always_known()
        for number, session_start in enumerate(sessions):
            if session_start < self.start and number != identify_at:
                continue  # before the simulated window: not drawn at all
            begin = max(session_start, self.last_moment + 45 * 60)
            browse_only = returns and number == len(sessions) - 1
            yield from self._session(begin, identify=number == identify_at, browse_only=browse_only)

    def _always_known(self) -> bool:
        return self.user.identified and self.persona.anonymous_share == 0

    def _session(
        self, start: float, *, identify: bool, browse_only: bool
    ) -> Iterator[tuple[float, dict[str, Any]]]:
        persona, rng = self.persona, self.rng
        device = self.device if rng.random() < 0.8 else _pick(rng, persona.devices)
        focus = _pick(rng, persona.categories)
        roll = rng.random()
        kind = (
            "browse"
            if browse_only
            else "purchase"
            if roll < persona.purchase_share
            else "cart"
            if roll < persona.purchase_share + persona.cart_share
            else "browse"
        )
        moment = start
        steps = 1 + int(rng.expovariate(1 / max(persona.events_per_session - 1, 0.1)))

        def emit(body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
            nonlocal moment
            stamped = self._stamp(body, moment, device)
            moment += 5 + rng.expovariate(1 / 40)
            return stamped

        yield emit({"type": "page", "name": "Home", "properties": {"path": "/"}})
        if identify:
            self.known = True
            yield emit({"type": "identify", "traits": {"locale": self.locale}})
        for _ in range(steps):
            category = focus if rng.random() < 0.7 else _pick(rng, persona.categories)
            if rng.random() < persona.search_share:
                yield emit(_track("Products Searched", {"query": f"{category} deals"}))
            else:
                yield emit(_track("Product Viewed", self._product(category)))
        if kind == "browse":
            return
        items = [self._product(focus) for _ in range(1 + int(rng.random() * 2.5))]
        for item in items:
            yield emit(_track("Product Added", item))
        yield emit(_track("Cart Viewed", {}))
        if kind == "cart":
            if rng.random() < 0.4:
                yield emit(_track("Checkout Started", {"products": items}))
            return
        sigma = 0.4
        revenue = round(rng.lognormvariate(math.log(persona.order_value) - sigma**2 / 2, sigma), 2)
        yield emit(_track("Checkout Started", {"products": items}))
        self.sequence += 1
        order = {
            "order_id": f"o-{self.user.index}-{self.sequence}",
            "revenue": revenue,
            "currency": "USD",
            "products": items,
        }
        yield emit(_track("Order Completed", order))

    def _product(self, category: str) -> dict[str, Any]:
        rng = self.rng
        price = round(rng.lognormvariate(math.log(self.persona.order_value / 1.8), 0.5), 2)
        return {
            "product_id": f"{category[:3]}-{rng.randrange(500):03d}",
            "category": category,
            "price": price,
            "quantity": 1,
        }

    def _stamp(
        self, body: dict[str, Any], moment: float, device: str
    ) -> tuple[float, dict[str, Any]]:
        self.sequence += 1
        self.last_moment = moment
        user = self.user
        body["messageId"] = f"sim-{user.index}-{self.sequence}"
        body["anonymousId"] = user.anonymous_id
        if self.known:
            body["userId"] = user.user_id
        body["timestamp"] = iso_text(moment)
        body["context"] = {
            "device": {"type": device},
            "userAgent": _USER_AGENTS[device],
            "locale": self.locale,
        }
        return moment, body


def _track(event: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "track", "event": event, "properties": properties}


_MALFORMED: tuple[bytes, ...] = (
    b'{"type": "track", "event": "Order Completed"',
    b'{"type": "page", "timestamp": "2026-10-01T00:00:00Z"}',
    b'{"type": "track", "event": "Order Completed", "userId": "x", '
    b'"timestamp": "2026-10-01T00:00:00Z", "properties": {"revenue": -5}}',
    b'{"type": "page", "userId": "x", "timestamp": "yesterday"}',
    b'{"type": "teleport", "userId": "x", "timestamp": "2026-10-01T00:00:00Z"}',
)


class Simulation:
    """A population of shoppers drawn from :data:`~streams.tools.personas.PERSONAS`.

    `end` is the event time (epoch seconds) the history ends at; with `days`,
    only the sessions of its last `days` days are drawn (and identification).
    `invalid_share` adds that share of malformed events on top of the valid
    ones, leaving the valid stream unchanged.
    """

    def __init__(
        self,
        users: int,
        seed: int,
        end: float = DEFAULT_END,
        invalid_share: float = 0.0,
        days: float | None = None,
    ) -> None:
        self.seed = seed
        self.end = end
        self.start = -math.inf if days is None else end - days * _DAY
        self.invalid_share = invalid_share
        picker = random.Random(seed)
        names = list(PERSONAS)
        weights = [PERSONAS[name].share for name in names]
        self.users = [
            self._user(index, picker.choices(names, weights=weights)[0], picker)
            for index in range(users)
        ]

    @staticmethod
    def _user(index: int, persona: str, picker: random.Random) -> SimulatedUser:
        anonymous_id = f"anon-{picker.getrandbits(48):012x}"
        identified = picker.random() >= PERSONAS[persona].anonymous_share
        user_id = f"user-{index:07d}" if identified else anonymous_id
        return SimulatedUser(index, user_id, anonymous_id, persona, identified)

    def _shopper_events(self, user: SimulatedUser) -> Iterator[tuple[float, int, dict[str, Any]]]:
        rng = random.Random(f"{self.seed}:{user.index}")
        shopper = _Shopper(user, PERSONAS[user.persona], rng, self.end, self.start)
        for moment, body in shopper.events():
            yield moment, user.index, body

    def events(self) -> Iterator[SimulatedEvent]:
        """Every user's events merged in event-time order."""
        streams = [self._shopper_events(user) for user in self.users]
        corrupt = random.Random(f"{self.seed}:invalid")
        share = self.invalid_share
        for moment, _, body in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
            key = (body.get("userId") or body["anonymousId"]).encode()
            yield SimulatedEvent(moment, key, orjson.dumps(body))
            if share and corrupt.random() < share:
                yield SimulatedEvent(moment, key, corrupt.choice(_MALFORMED))

    def truth(self) -> Iterator[dict[str, str]]:
        """Each user's ground-truth persona, keyed by the id segstream knows them by."""
        for user in self.users:
            yield {"user_id": user.user_id, "persona": user.persona}
