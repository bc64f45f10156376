"""The streaming features agree with a plain batch computation on simulated shoppers."""

import math
from collections import defaultdict
from itertools import islice

import pytest

from processors.events import Action, EventKind, decode_event
from streams.tools.simulator import Simulation
from tests import oracle
from tests.loopback import settle
from tests.steps import NOBODY


def close(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-3)


@pytest.fixture(scope="module")
def simulated():
    events = [
        decode_event(e.value) for e in islice(Simulation(users=400, seed=17).events(), 60_000)
    ]
    actions = [a for a in events if isinstance(a, Action)]
    owner = {}
    for a in actions:
        if a.kind is EventKind.IDENTIFY and a.anonymous_id:
            owner.setdefault(a.anonymous_id, a.user_id)
    by_user = defaultdict(list)
    for a in actions:
        by_user[owner.get(a.user_id, a.user_id)].append(a)
    return actions, by_user


@pytest.mark.parametrize("extra_days", [None, 0.5, 3, 20])
def test_streaming_features_equal_the_batch_oracle(simulated, extra_days):
    actions, by_user = simulated
    end = max(a.timestamp for a in actions)
    until = None if extra_days is None else end + extra_days * 86_400
    users = settle(actions, NOBODY, until)
    assert set(users) == set(by_user)
    mismatches = []
    for user_id, user in users.items():
        expected = oracle.features(by_user[user_id], user.as_of)
        got = user.features()
        assert set(got) == set(expected)
        wrong = {k: (got[k], expected[k]) for k in expected if not close(got[k], expected[k])}
        if wrong:
            mismatches.append((user_id, wrong))
    assert not mismatches, f"{len(mismatches)} users differ, e.g. {mismatches[:2]}"
