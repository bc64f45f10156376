"""Shopper personas for the simulator: who visits how often, and what they do.

Each persona is plain data. Times are in days before the end of the simulated
history; amounts are in currency units.

>>> sorted(PERSONAS)[:3]
['bargain_hunter', 'cart_abandoner', 'frequent_browser']
>>> PERSONAS["luxury_buyer"].order_value
650.0
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Persona:
    """Behaviour of one kind of shopper.

    `active_days` is the span of history, as (oldest, newest) days before the
    end, in which the user starts and keeps visiting. `sessions_per_week` sets
    the mean gap between visits. A session is a purchase with probability
    `purchase_share`, an abandoned cart with `cart_share`, otherwise browsing.
    `events_per_session` is the mean number of browsing events in a session.
    `order_value` is the mean order revenue (log-normal around it).
    `return_share` is the chance of one browsing visit near the end after the
    active span, as lapsed customers make. `anonymous_share` is the chance the
    user is never identified.
    """

    name: str
    share: float
    active_days: tuple[float, float]
    sessions_per_week: float
    events_per_session: float
    purchase_share: float
    cart_share: float
    search_share: float
    order_value: float
    categories: dict[str, float]
    devices: dict[str, float]
    return_share: float = 0.0
    anonymous_share: float = 0.0


PERSONAS: dict[str, Persona] = {
    persona.name: persona
    for persona in (
        Persona(
            name="bargain_hunter",
            share=0.2,
            active_days=(90, 0),
            sessions_per_week=3.0,
            events_per_session=7,
            purchase_share=0.3,
            cart_share=0.1,
            search_share=0.45,
            order_value=28.0,
            categories={"clearance": 5, "home": 2, "electronics": 2, "toys": 1},
            devices={"mobile": 6, "desktop": 3, "tablet": 1},
        ),
        Persona(
            name="luxury_buyer",
            share=0.1,
            active_days=(90, 0),
            sessions_per_week=1.0,
            events_per_session=5,
            purchase_share=0.45,
            cart_share=0.05,
            search_share=0.05,
            order_value=650.0,
            categories={"jewelry": 4, "watches": 3, "designer": 3},
            devices={"desktop": 6, "mobile": 2, "tablet": 2},
        ),
        Persona(
            name="frequent_browser",
            share=0.2,
            active_days=(60, 0),
            sessions_per_week=6.0,
            events_per_session=12,
            purchase_share=0.0,
            cart_share=0.02,
            search_share=0.2,
            order_value=60.0,
            categories={"electronics": 3, "books": 3, "fashion": 2, "sports": 2},
            devices={"mobile": 7, "desktop": 2, "tablet": 1},
        ),
        Persona(
            name="cart_abandoner",
            share=0.2,
            active_days=(45, 0),
            sessions_per_week=2.0,
            events_per_session=5,
            purchase_share=0.0,
            cart_share=0.7,
            search_share=0.15,
            order_value=90.0,
            categories={"fashion": 4, "home": 3, "beauty": 3},
            devices={"mobile": 5, "desktop": 5},
        ),
        Persona(
            name="lapsed_customer",
            share=0.15,
            active_days=(180, 75),
            sessions_per_week=1.5,
            events_per_session=5,
            purchase_share=0.4,
            cart_share=0.1,
            search_share=0.1,
            order_value=85.0,
            categories={"sports": 4, "outdoor": 3, "fashion": 3},
            devices={"desktop": 5, "mobile": 5},
            return_share=0.7,
        ),
        Persona(
            name="new_visitor",
            share=0.15,
            active_days=(6, 0),
            sessions_per_week=2.0,
            events_per_session=4,
            purchase_share=0.0,
            cart_share=0.1,
            search_share=0.2,
            order_value=50.0,
            categories={"fashion": 2, "electronics": 2, "home": 2, "books": 1},
            devices={"mobile": 6, "desktop": 4},
            anonymous_share=0.7,
        ),
    )
}
"""The built-in personas by name; `share` is each one's part of the population."""
