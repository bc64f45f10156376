"""The compiled core against the plain batch oracle, on random streams.

Random users send every kind of event, in any order, some twice; anonymous ids
are merged into users by `identify` and `alias`; the watermark advances on the
way. Whatever the core does with that (relays looped back as the workers loop
them), every user's features equal the oracle's, computed from that person's
distinct events alone.
"""

import math
import random
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.events import Action, EventKind
from processors.wire import Advance
from tests import oracle
from tests.loopback import settle
from tests.steps import NOBODY

DAY = 86_400
START = 1_790_000_000
USERS = ("u0", "u1", "u2")
ANONYMOUS = ("a0", "a1", "a2")  # a<n> is u<n> before signing in

events = st.lists(
    st.tuples(
        st.integers(0, len(USERS) + len(ANONYMOUS) - 1),
        st.sampled_from(list(EventKind)),
        st.integers(0, 40 * DAY),
        st.sampled_from(["shoes", "books", ""]),
        st.sampled_from([0.0, 9.99, 30.0, 1234.5]),
        st.sampled_from([None, "mobile", "desktop"]),
        st.sampled_from(["p1", "p2"]),
    ),
    min_size=1,
    max_size=50,
)


def close(a: float | str, b: float | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def action(number: int, actor: int, kind, offset, category, value, device, product) -> Action:
    sender = (USERS + ANONYMOUS)[actor]
    person = USERS[actor % len(USERS)]
    fields = {"value": value, "categories": (category,) if category else (), "device": device}
    if kind is EventKind.IDENTIFY:
        return Action(person, f"m{number}", kind, START + offset, anonymous_id=f"a{person[1]}")
    if kind is EventKind.ALIAS:
        return Action(person, f"m{number}", kind, START + offset, previous_id=f"a{person[1]}")
    return Action(sender, f"m{number}", kind, START + offset, product=product, **fields)


@settings(max_examples=150, deadline=None)
@given(events, st.randoms(use_true_random=False), st.integers(0, 10 * DAY))
def test_the_core_computes_what_the_oracle_computes(stream, rng: random.Random, after):
    sent = [action(number, *fields) for number, fields in enumerate(stream)]
    merged = {f"a{a.user_id[1]}" for a in sent if a.kind in (EventKind.IDENTIFY, EventKind.ALIAS)}
    items: list = [*sent, *rng.sample(sent, k=len(sent) // 4)]  # some delivered twice
    rng.shuffle(items)  # in any order
    end = max(a.timestamp for a in sent)
    for _ in range(rng.randrange(3)):  # the watermark advancing on the way
        items.insert(rng.randrange(len(items) + 1), Advance(START + rng.randrange(40 * DAY)))
    users = settle(items, NOBODY, until=end + after)

    by_person: dict[str, list[Action]] = defaultdict(list)
    for a in sent:
        person = USERS[int(a.user_id[1])] if a.user_id in merged else a.user_id
        by_person[person].append(a)
    assert set(users) == set(by_person)
    for user_id, user in users.items():
        expected = oracle.features(by_person[user_id], user.as_of)
        got = user.features()
        wrong = {k: (got[k], v) for k, v in expected.items() if not close(got[k], v)}
        assert not wrong, (user_id, user.as_of, wrong)
