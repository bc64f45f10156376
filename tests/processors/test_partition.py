"""One partition's items: identity commands, watermark advances and retention."""

from processors.events import Action, EventKind
from processors.rules import parse_rules
from processors.wire import Absorb, Advance, Erase, Merge
from tests.steps import step as partition_step

DAY = 86_400.0
RULES = parse_rules(
    "segments:\n  - {name: Seen, description: d, condition: {feature: events_lifetime, op: '>', value: 0}}\n"
)


def test_identify_asks_once_to_merge_the_anonymous_id():
    identify = Action("ann", "i", EventKind.IDENTIFY, 5.0, anonymous_id="anon")
    step = partition_step(
        [identify, identify, Action("ann", "j", EventKind.IDENTIFY, 6.0, anonymous_id="anon")],
        {},
        RULES,
        dedup_before=0,
    )
    assert [(r.kind, r.key, r.body) for r in step.relays] == [("merge", "anon", b"ann")]
    assert step.users["ann"].linked == ["anon"]


def test_merge_tombstones_the_id_and_sends_its_history_once():
    anon = partition_step(
        [Action("anon", "a", EventKind.PAGE, 1.0)], {}, RULES, dedup_before=0
    ).users
    step = partition_step([Merge("anon", "ann"), Merge("anon", "bob")], anon, RULES, dedup_before=0)
    assert [(r.kind, r.key) for r in step.relays] == [("absorb", "ann")]
    assert step.users["anon"].alias_of == "ann"
    assert [(c.user_id, c.exited, c.reason) for c in step.changes] == [("anon", ("Seen",), "merge")]
    # the trainer's sample forgets the id: its one vector has no values
    assert [(v.user_id, v.values) for v in step.vectors] == [("anon", ())]


def test_absorb_adds_the_history_once():
    anon = partition_step(
        [Action("anon", "a", EventKind.PAGE, 1.0)], {}, RULES, dedup_before=0
    ).users
    payload = anon["anon"].to_bytes()
    absorb = Absorb("anon", "ann", payload)
    step = partition_step([absorb, absorb], {}, RULES, dedup_before=0)
    ann = step.users["ann"]
    assert (ann.events, ann.absorbed, ann.segments) == (1, ["anon"], ("Seen",))
    assert step.changes[0].reason == "merge"


def test_advance_expires_users_idle_past_retention_and_evaluates_the_rest():
    users = partition_step(
        [Action("old", "o", EventKind.PAGE, 0.0), Action("new", "n", EventKind.PAGE, 50 * DAY)],
        {},
        RULES,
        dedup_before=0,
    ).users
    step = partition_step(
        [Advance(60 * DAY)],
        users,
        RULES,
        dedup_before=0,
        partition_users=["old", "new"],
        retention=30 * DAY,
    )
    assert step.expired == ["old"]
    assert [(c.user_id, c.exited, c.reason) for c in step.changes] == [
        ("old", ("Seen",), "expired")
    ]
    assert step.users["new"].as_of == 60 * DAY


def test_erase_leaves_segments_drops_the_timer_and_ends_with_a_tombstone():
    ann = partition_step(
        [Action("ann", "a", EventKind.CART_ADD, 1.0, value=5.0, product="p1")],
        {},
        RULES,
        dedup_before=0,
    ).users
    assert ann["ann"].due is not None
    step = partition_step([Erase("ann")], ann, RULES, dedup_before=0)
    exit_change, tombstone = step.changes
    assert (exit_change.exited, exit_change.reason) == (("Seen",), "erased")
    assert (tombstone.user_id, tombstone.is_tombstone) == ("ann", True)
    assert step.erased == ["ann"]
    assert step.timers == {"ann": None}
    # the trainer's sample forgets the user: their one vector has no values
    assert [(v.user_id, v.values) for v in step.vectors] == [("ann", ())]


def test_erase_reaches_the_ids_merged_with_the_user():
    users = partition_step(
        [Action("ann", "i", EventKind.IDENTIFY, 5.0, anonymous_id="anon")],
        {},
        RULES,
        dedup_before=0,
    ).users
    step = partition_step([Erase("ann")], users, RULES, dedup_before=0)
    assert [(r.kind, r.key, r.body) for r in step.relays] == [("erase", "anon", b"")]
    alias = partition_step([Merge("anon", "ann")], {}, RULES, dedup_before=0).users
    asked_by_alias = partition_step([Erase("anon")], alias, RULES, dedup_before=0)
    assert [(r.kind, r.key, r.body) for r in asked_by_alias.relays] == [("erase", "ann", b"follow")]
    relayed_back = partition_step([Erase("anon", follow=False)], alias, RULES, dedup_before=0)
    assert relayed_back.relays == []
    assert relayed_back.erased == ["anon"]


def test_a_user_back_after_erasure_starts_afresh_and_an_unknown_user_only_gets_a_tombstone():
    users = partition_step(
        [Action("ann", "a", EventKind.PAGE, 1.0)], {}, RULES, dedup_before=0
    ).users
    step = partition_step(
        [Erase("ann"), Action("ann", "b", EventKind.PAGE, 2.0), Erase("nobody")],
        users,
        RULES,
        dedup_before=0,
    )
    assert step.erased == []
    assert step.users["ann"].events == 1
    assert step.users["ann"].version == 1
    assert [(c.user_id, c.reason, c.is_tombstone) for c in step.changes] == [
        ("ann", "erased", False),
        ("ann", "erased", True),
        ("ann", "event", False),
        ("nobody", "erased", True),
    ]
    assert "nobody" not in step.users
