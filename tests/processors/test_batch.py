"""The batch step: coalescing, versions, and independence from batch boundaries."""

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.batch import apply_batch
from processors.events import Action, EventKind
from processors.rules import parse_rules
from processors.user import UserState

RULES = parse_rules("""
segments:
  - name: Buyers
    description: ordered
    condition: {feature: orders, op: ">=", value: 1}
  - name: Browsers
    description: looked, never bought
    condition:
      all:
        - {feature: product_views, op: ">=", value: 2}
        - {feature: orders, op: "==", value: 0}
""")


def test_one_change_per_user_per_batch():
    actions = [
        Action("u", "1", EventKind.PRODUCT_VIEWED, 1.0),
        Action("u", "2", EventKind.PRODUCT_VIEWED, 2.0),  # enters Browsers ...
        Action("u", "3", EventKind.ORDER, 3.0, value=5.0),  # ... and leaves for Buyers
    ]
    outcome = apply_batch(actions, {}, RULES)
    assert len(outcome.changes) == 1
    change = outcome.changes[0]
    assert (change.entered, change.exited, change.version, change.event_time) == (
        ("Buyers",),
        (),
        1,
        3.0,
    )
    assert outcome.new_users == 1


def test_no_change_when_segments_stay():
    first = apply_batch([Action("u", "1", EventKind.ORDER, 1.0)], {}, RULES)
    again = apply_batch([Action("u", "2", EventKind.ORDER, 2.0)], first.users, RULES)
    assert again.changes == []
    assert again.new_users == 0
    assert again.users["u"].profile.counts[-1] == 2


def test_versions_grow_with_each_transition():
    users: dict[str, UserState] = {}
    versions = []
    for number, kind in enumerate(
        [EventKind.PRODUCT_VIEWED, EventKind.PRODUCT_VIEWED, EventKind.ORDER]
    ):
        outcome = apply_batch([Action("u", str(number), kind, float(number))], users, RULES)
        users = outcome.users
        versions += [change.version for change in outcome.changes]
    assert versions == [1, 2]
    assert users["u"].labels.segments == ("Buyers",)


kinds = st.sampled_from(
    [EventKind.PAGE, EventKind.PRODUCT_VIEWED, EventKind.ORDER, EventKind.CART_ADD]
)
streams = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), kinds, st.floats(0, 1e6)), min_size=1, max_size=40
)


@settings(max_examples=200, deadline=None)
@given(streams, st.lists(st.integers(1, 40), max_size=5))
def test_final_state_does_not_depend_on_batch_boundaries(stream, cuts):
    actions = [Action(user, str(i), kind, moment) for i, (user, kind, moment) in enumerate(stream)]
    whole = apply_batch(actions, {}, RULES).users
    users: dict[str, UserState] = {}
    bounds = sorted({0, len(actions), *(cut for cut in cuts if cut < len(actions))})
    for start, end in pairwise(bounds):
        users = {**users, **apply_batch(actions[start:end], users, RULES).users}
    assert {u: s.profile for u, s in users.items()} == {u: s.profile for u, s in whole.items()}
    assert {u: s.labels.segments for u, s in users.items()} == {
        u: s.labels.segments for u, s in whole.items()
    }
