"""A candidate's preview settles users as a worker would after `rules apply --reevaluate`:
re-evaluated, then timers due by the watermark fired."""

from __future__ import annotations

from processors.classifier import Classifier
from processors.events import Action, EventKind
from processors.preview import Tally, settle
from processors.rules import parse_rules
from tests.steps import step

HOUR = 3600.0
RULES = """cart_abandonment_after: {after}
segments:
  - name: Abandoners
    description: Left a cart.
    condition: {{feature: cart_abandoned, op: "==", value: 1}}
  - name: Buyers
    description: Ordered.
    condition: {{feature: orders_lifetime, op: ">=", value: 1}}
"""


def stored(rules_after: str) -> dict[str, bytes]:
    """Ann put a product in her cart at 0; Bob ordered at 0; both under `rules_after`."""
    rules = parse_rules(RULES.format(after=rules_after))
    users = step(
        [
            Action("ann", "a1", EventKind.CART_ADD, 0.0, value=20.0, categories=("shoes",)),
            Action("bob", "b1", EventKind.ORDER, 0.0, value=30.0),
        ],
        rules=rules,
    ).users
    return {user_id: user.to_bytes() for user_id, user in users.items()}


def test_timers_the_candidate_sets_fire_up_to_the_firing_clock_only():
    rows = stored("2h")  # under the rules in force Ann's cart is not abandoned yet at 1h
    candidate = Classifier.of(parse_rules(RULES.format(after="30m"))).core
    early = settle(rows, candidate, firing=0.25 * HOUR, retention=1e9)
    late = settle(rows, candidate, firing=1 * HOUR, retention=1e9)
    assert early["ann"] == ((), ())
    assert late["ann"] == ((), ("Abandoners",))
    assert late["bob"] == (("Buyers",), ("Buyers",))


def test_the_rows_are_left_as_they_were():
    rows = stored("2h")
    copy = dict(rows)
    settle(rows, Classifier.of(parse_rules(RULES.format(after="30m"))).core, HOUR, 1e9)
    assert rows == copy


def test_the_tally_counts_either_file_s_segments_and_keeps_a_few_examples():
    tally = Tally(current=("Abandoners", "Buyers"), candidate=("Buyers", "VIP"), examples=1)
    tally.add_all(
        {
            "ann": (("Abandoners",), ()),
            "bob": (("Buyers",), ("Buyers", "VIP")),
            "cy": (("Buyers",), ("VIP",)),
        }
    )
    found = {segment["name"]: segment for segment in tally.segments()}
    assert [name for name in found] == ["Abandoners", "Buyers", "VIP"]
    assert (found["Abandoners"]["now"], found["Abandoners"]["candidate"]) == (1, 0)
    assert found["Abandoners"]["examples"] == {"entering": [], "leaving": ["ann"]}
    assert (found["Buyers"]["now"], found["Buyers"]["candidate"], found["Buyers"]["leaving"]) == (
        2,
        1,
        1,
    )
    assert (found["VIP"]["entering"], len(found["VIP"]["examples"]["entering"])) == (2, 1)
    assert tally.users == 3


def test_a_candidate_compares_the_traits_the_rules_in_force_kept():
    kept = parse_rules(
        "segments:\n  - {name: Pro, description: d, condition: {trait: plan, op: exists}}\n"
    )
    # ann's identify said plan pro and country FR; the rules in force kept only the plan
    identify = Action("ann", "i1", EventKind.IDENTIFY, 60.0, traits={"plan": "pro"})
    rows = {"ann": step([identify], rules=kept).users["ann"].to_bytes()}
    candidate = parse_rules("""
segments:
  - {name: Pro, description: d, condition: {trait: plan, op: "==", value: pro}}
  - {name: French, description: d, condition: {trait: country, op: "==", value: FR}}
""")
    settled = settle(rows, Classifier.of(candidate).core, firing=HOUR, retention=1e9)
    # the country starts from the events applied after the candidate is published
    assert settled["ann"] == (("Pro",), ("Pro",))
