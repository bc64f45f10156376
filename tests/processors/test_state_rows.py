"""State rows: the current version round-trips, and rows of the previous release are read."""

import json
from pathlib import Path

import msgpack
import pytest

from processors._core import User
from processors.events import Action, EventKind
from tests.steps import user_after

V1_ROWS = json.loads(Path(__file__).with_name("data").joinpath("state_rows_v1.json").read_text())
"""Rows written by the release before the compiled core, with what that release read in them."""


@pytest.mark.parametrize("user_id", sorted(V1_ROWS))
def test_rows_of_the_previous_release_are_read_as_they_were_written(user_id):
    written = V1_ROWS[user_id]
    user = User.from_bytes(bytes.fromhex(written["row"]))
    # neither traits nor computed traits were kept then
    expected = {**written["document"], "traits": {}, "computed": {}, "predictions": None}
    assert user.document(user_id) == expected
    assert (user.due, user.alias_of, user.linked, user.absorbed) == (
        written["due"],
        written["alias_of"],
        written["linked"],
        written["absorbed"],
    )
    again = User.from_bytes(user.to_bytes())
    assert again == user
    assert msgpack.unpackb(user.to_bytes())[0] == 2  # rewritten in the current version


def test_a_row_round_trips_exactly():
    user = user_after(
        Action("u", "m1", EventKind.CART_ADD, 100.0, 20.0, ("shoes",), "mobile", product="s1"),
        Action("u", "m2", EventKind.ORDER, 200.0, 20.0, ("shoes",)),
        Action("u", "m3", EventKind.IDENTIFY, 300.0, anonymous_id="anon"),
    )
    assert User.from_bytes(user.to_bytes()) == user
    assert user.linked == ["anon"]


@pytest.mark.parametrize("row", [b"", b"\x93\x01\x02\x03", msgpack.packb([9, []])])
def test_an_unreadable_row_is_refused_with_a_reason(row):
    with pytest.raises(ValueError, match="unreadable user state"):
        User.from_bytes(row)
