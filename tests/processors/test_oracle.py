"""The streaming features agree with a plain batch computation on simulated shoppers, at
moments the test chooses: the end of the simulation and days past it."""

from itertools import islice

import pytest

from processors._core import Action, decode_events
from streams.tools.simulator import Simulation
from tests import oracle
from tests.loopback import settle
from tests.steps import NOBODY

DAY = 86_400


@pytest.fixture(scope="module")
def simulated():
    raw = [e.value for e in islice(Simulation(users=400, seed=17).events(), 60_000)]
    actions = decode_events(raw, 32_768)
    assert all(isinstance(action, Action) for action in actions)
    return actions, oracle.people(map(oracle.read, raw))


@pytest.mark.parametrize("extra_days", [0, 0.5, 3, 20])
def test_streaming_features_equal_the_batch_oracle(simulated, extra_days):
    actions, everyone = simulated
    end = max(action.timestamp for action in actions)
    until = end + extra_days * DAY
    users = settle(actions, NOBODY, until)
    assert set(users) == set(everyone)
    mismatches = []
    for user_id, user in users.items():
        assert user.as_of == until
        expected = oracle.features(everyone[user_id], until)
        got = user.features()
        wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
        if wrong:
            mismatches.append((user_id, wrong))
    assert not mismatches, f"{len(mismatches)} users differ, e.g. {mismatches[:2]}"
