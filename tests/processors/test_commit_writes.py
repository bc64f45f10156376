"""The commands the core packs for a commit (labels, activity logs), read back and compared
with what their documentation says, built plainly here from the same changes and users."""

from __future__ import annotations

import orjson

from processors._core import pack_labels
from state.activity import SEGMENT_LOG_LENGTH, activity_writes
from state.keys import KeyLayout
from state.transactions import Packed
from tests.processors.test_batch import mixed_step

KEYS = KeyLayout("seg", "events")


def stepped_changes():
    """A few users' changes over a few weeks (segments and clusters), for tests on a real
    Redis."""
    return _stepped().changes


def _stepped():
    return mixed_step(7, users=6, events=80)


def _text(commands):
    return [(verb, *(part.decode() for part in rest)) for verb, *rest in commands]


def _activity(changes, expired, kept):
    """`activity_writes` as its documentation says, a command at a time."""
    moved: dict[str, list[bytes]] = {}
    logs: dict[str, list[bytes]] = {}
    versions: dict[str, int] = {}
    for change in changes:
        signs = [f"+{name}" for name in change.entered] + [f"-{name}" for name in change.exited]
        if change.cluster != change.previous_cluster:
            signs += [f"-@{change.previous_cluster}"] if change.previous_cluster else []
            signs += [f"+@{change.cluster}"] if change.cluster else []
        for sign in signs:
            entry = orjson.dumps((change.event_time, change.user_id, sign[0], change.reason))
            moved.setdefault(sign, []).append(entry)
        if kept:
            entry = orjson.dumps(
                (
                    change.event_time,
                    change.entered,
                    change.exited,
                    change.cluster,
                    change.previous_cluster,
                    change.reason,
                    change.version,
                )
            )
            logs.setdefault(change.user_id, []).append(entry)
            versions[change.user_id] = change.version
    commands = [("HINCRBY", KEYS.moves(0), sign, str(len(e))) for sign, e in moved.items()]
    lists: dict[str, list[bytes]] = {}
    for sign, entries in moved.items():
        name = sign[1:]
        key = KEYS.cluster_log(0, name[1:]) if name[0] == "@" else KEYS.segment_log(0, name)
        lists.setdefault(key, []).extend(entries)
    for key, entries in lists.items():
        commands += [("LPUSH", key, *(e.decode() for e in entries))]
        commands += [("LTRIM", key, "0", str(SEGMENT_LOG_LENGTH - 1))]
    for user_id, entries in logs.items():
        key = KEYS.user_log(0, user_id)
        commands += [("LPUSH", key, *(e.decode() for e in entries[-kept:]))]
        if versions[user_id] > kept:  # else the log holds at most `kept` changes
            commands += [("LTRIM", key, "0", str(kept - 1))]
    if expired:
        commands.append(("DEL", *(KEYS.user_log(0, user_id) for user_id in expired)))
    return commands


def test_the_activity_logs_are_packed_as_documented():
    changes = _stepped().changes
    assert any(c.cluster != c.previous_cluster for c in changes)
    assert any(c.exited for c in changes)
    versions = [change.version for change in changes]
    assert min(versions) < 2 < max(versions)  # logs trimmed and not, with 2 kept
    for kept, expired in [(50, ["gone", "erased"]), (2, []), (0, ["gone"])]:
        packed = activity_writes(KEYS, 0, changes, expired, kept)
        assert _text(packed.commands()) == _activity(changes, expired, kept)
    assert activity_writes(KEYS, 0, [], [], 50) == Packed(b"", 0)


def test_labels_are_packed_as_documented():
    users = _stepped().users
    assert any(user.segments for user in users.values())
    assert any(user.cluster for user in users.values())
    data, count = pack_labels(KEYS.labels(0, ""), users, "r7")
    expected = [
        (
            "HSET",
            KEYS.labels(0, user_id),
            "segments",
            orjson.dumps(user.segments).decode(),
            "cluster",
            user.cluster or "",
            "version",
            str(user.version),
            "model_version",
            "" if user.model_version is None else str(user.model_version),
            "event_time",
            repr(user.as_of),
            "rules_version",
            "r7",
            "alias_of",
            user.alias_of or "",
        )
        for user_id, user in users.items()
    ]
    assert _text(Packed(data, count).commands()) == expected
