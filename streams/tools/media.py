"""Simulated viewers of a streaming service: custom events, their properties and identify
traits, for the rules in `processors/rules/media.yaml`.

Viewers sign up (`identify` with `plan`, `country` and `signed_up_at`), start trials,
play videos (`Video Played` with `duration_minutes`, `device`, `genre` and `show`),
look at plans and the pricing page, start checkouts and subscribe or cancel. Each
viewer draws from a random generator seeded by `(seed, index)`, events come out in
event-time order, and the same seed gives the same stream.

>>> from itertools import islice
>>> first = list(islice(MediaSimulation(users=20, seed=3).events(), 50))
>>> first == list(islice(MediaSimulation(users=20, seed=3).events(), 50))
True
>>> sorted({user.persona for user in MediaSimulation(users=40, seed=3).users})
['binge_watcher', 'casual_viewer', 'stalled_subscriber', 'subscriber', 'trial_churner']
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from streams.tools.simulator import DEFAULT_END, SimulatedEvent, SimulatedUser, iso_text

_DAY = 86_400.0
_GENRES = ("drama", "comedy", "documentary", "kids", "thriller", "anime")
_DEVICES = ("tv", "web", "mobile")


@dataclass(frozen=True, slots=True)
class Viewer:
    """How one kind of viewer behaves: sessions a week, plays per session and their length
    in minutes, the devices and genres they favour, and how their subscription goes."""

    share: float
    sessions_per_week: float
    plays_per_session: float
    minutes: float
    devices: tuple[float, float, float]
    genres: int
    journey: str  # subscribe, stall, churn or none


VIEWERS = {
    "binge_watcher": Viewer(0.2, 10, 4, 45, (0.6, 0.3, 0.1), 3, "subscribe"),
    "casual_viewer": Viewer(0.35, 2, 1.5, 20, (0.1, 0.2, 0.7), 5, "none"),
    "trial_churner": Viewer(0.15, 3, 2, 25, (0.3, 0.3, 0.4), 2, "churn"),
    "stalled_subscriber": Viewer(0.1, 2, 1, 30, (0.2, 0.5, 0.3), 2, "stall"),
    "subscriber": Viewer(0.2, 4, 2, 35, (0.4, 0.4, 0.2), 4, "subscribe"),
}
"""The kinds of viewers and their shares of the population."""


class _Watcher:
    """One viewer's events, oldest first, over `days` days ending at `end`."""

    def __init__(
        self, user: SimulatedUser, viewer: Viewer, seed: int, end: float, days: float
    ) -> None:
        self.user, self.viewer = user, viewer
        self.rng = random.Random(f"{seed}:{user.index}")
        self.end, self.start = end, end - days * _DAY
        self.number = 0
        self.genres = self.rng.sample(_GENRES, viewer.genres)

    def _event(self, moment: float, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        self.number += 1
        body |= {
            "messageId": f"media-{self.user.index}-{self.number}",
            "userId": self.user.user_id,
            "timestamp": iso_text(moment),
        }
        return moment, body

    def _track(self, moment: float, event: str, **properties: Any) -> tuple[float, dict[str, Any]]:
        return self._event(moment, {"type": "track", "event": event, "properties": properties})

    def events(self) -> Iterator[tuple[float, dict[str, Any]]]:
        rng, viewer = self.rng, self.viewer
        moment = self.start + rng.random() * 2 * _DAY
        plan = {"subscribe": "pro", "churn": "trial"}.get(viewer.journey, "free")
        traits = {
            "plan": "family" if plan == "pro" and rng.random() < 0.3 else plan,
            "country": rng.choice(("US", "DE", "FR", "BR", "JP")),
            "signed_up_at": iso_text(moment),
        }
        yield self._event(moment, {"type": "identify", "traits": traits})
        journey_at = moment + rng.uniform(0.5, 6) * _DAY
        if viewer.journey == "churn":
            yield self._track(moment + 60, "Trial Started", plan="pro")
        journey_done = False
        while moment < self.end:
            if not journey_done and moment >= journey_at:
                journey_done = True
                yield from self._journey(moment)
            yield from self._session(moment)
            moment += rng.expovariate(viewer.sessions_per_week / (7 * _DAY)) + 3600
        if not journey_done and journey_at < self.end:
            yield from self._journey(journey_at)

    def _session(self, start: float) -> Iterator[tuple[float, dict[str, Any]]]:
        rng, viewer = self.rng, self.viewer
        if start >= self.end:
            return
        moment = start
        device = rng.choices(_DEVICES, weights=viewer.devices)[0]
        yield self._event(moment, {"type": "screen", "name": "Home"})
        for _ in range(1 + int(rng.expovariate(1 / max(viewer.plays_per_session - 1, 0.1)))):
            moment += rng.uniform(20, 120)
            minutes = round(rng.expovariate(1 / viewer.minutes) + 1, 1)
            genre = rng.choice(self.genres)
            show = f"{genre}-{rng.randrange(12):02d}"
            if moment < self.end:
                yield self._track(
                    moment,
                    "Video Played",
                    duration_minutes=minutes,
                    device=device,
                    genre=genre,
                    show=show,
                )
            moment += minutes * 60

    def _journey(self, moment: float) -> Iterator[tuple[float, dict[str, Any]]]:
        """Plans viewed, then subscribing, stalling at checkout or cancelling the trial."""
        rng, journey = self.rng, self.viewer.journey
        if journey == "none":
            return
        yield self._event(moment, {"type": "page", "name": "Pricing"})
        yield self._track(moment + 30, "Plan Viewed", plan=rng.choice(("pro", "family")))
        if journey == "churn":
            yield self._track(moment + rng.uniform(1, 5) * _DAY, "Subscription Cancelled")
            return
        yield self._track(moment + 90, "Checkout Started", plan="pro")
        if journey == "subscribe":
            yield self._track(moment + 150, "Order Completed", revenue=12.99, currency="USD")


class MediaSimulation:
    """A population of viewers drawn from :data:`VIEWERS`, like
    :class:`~streams.tools.simulator.Simulation` (every viewer signs in at once)."""

    def __init__(self, users: int, seed: int, end: float = DEFAULT_END, days: float = 30.0) -> None:
        self.seed, self.end, self.days = seed, end, days
        picker = random.Random(seed)
        names = list(VIEWERS)
        weights = [VIEWERS[name].share for name in names]
        self.users = []
        for index in range(users):
            persona = picker.choices(names, weights=weights)[0]
            user_id = f"viewer-{index:07d}"
            self.users.append(SimulatedUser(index, user_id, user_id, persona, True))

    def events(self) -> Iterator[SimulatedEvent]:
        """Every viewer's events merged in event-time order."""
        streams = [
            (
                (moment, user.index, body)
                for moment, body in sorted(
                    _Watcher(user, VIEWERS[user.persona], self.seed, self.end, self.days).events(),
                    key=lambda item: item[0],
                )
            )
            for user in self.users
        ]
        for moment, _, body in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
            if moment <= self.end:
                yield SimulatedEvent(moment, body["userId"].encode(), orjson.dumps(body))

    def truth(self) -> Iterator[dict[str, str]]:
        """Each viewer's kind, by user id."""
        for user in self.users:
            yield {"user_id": user.user_id, "persona": user.persona}
