"""The events topic's own messages: relays, control commands, headers."""

from __future__ import annotations

import msgpack
import pytest

from processors._core import Relay
from processors.events import Action, Rejection
from processors.wire import (
    RELAY_HEADER,
    REPLAY_HEADER,
    ROUTE,
    SOURCE_HEADER,
    Absorb,
    Erase,
    Merge,
    RelayMessage,
    advance_body,
    advance_until,
    header_map,
    in_cause_order,
    relayed_item,
    source_of,
)

EVENT = b'{"type": "page", "userId": "anon-1", "timestamp": "2026-11-01T10:00:00Z"}'


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[]", b'{"until": "soon"}', b'{"until": true}', b'{"from": 1}']
)
def test_an_advance_command_without_a_number_is_not_one(body):
    assert advance_until(body) is None


def test_advance_round_trips():
    assert advance_until(advance_body(1_700_000_000)) == 1_700_000_000.0


def test_a_forward_carries_the_original_event_to_the_user_it_belongs_to():
    message = RelayMessage.of(
        Relay("forward", "ann"), source=2, offset=9, cause_key=b"anon-1", cause_value=EVENT
    )
    assert (message.key, message.value, message.partition) == (b"ann", EVENT, -1)
    item = relayed_item(message.kind, "ann", message.value, max_bytes=1024)
    assert isinstance(item, Action)
    assert item.user_id == "ann"


def test_an_absorb_carries_the_source_id_and_its_state():
    message = RelayMessage.of(
        Relay("absorb", "ann", b"state-bytes"), source=0, offset=3, cause_key=b"anon-1"
    )
    assert msgpack.unpackb(message.value) == ["anon-1", b"state-bytes"]
    item = relayed_item(b"absorb", "ann", message.value, max_bytes=1024)
    assert item == Absorb(source_id="anon-1", into="ann", state=b"state-bytes")


def test_erase_and_merge_relays():
    assert relayed_item(b"erase", "ann", b"follow", max_bytes=1) == Erase("ann", follow=True)
    assert relayed_item(b"erase", "ann", b"", max_bytes=1) == Erase("ann", follow=False)
    assert relayed_item(b"merge", "anon-1", b"ann", max_bytes=1) == Merge("anon-1", "ann")


def test_a_forward_that_does_not_decode_is_a_rejection():
    assert isinstance(relayed_item(b"forward", "ann", b"{", max_bytes=1024), Rejection)


def test_a_routed_event_keeps_its_headers_and_names_its_partition():
    message = RelayMessage.route(
        "ann", 3, source=1, offset=40, value=EVENT, headers={REPLAY_HEADER: b"1"}
    )
    headers = header_map(message.headers())
    assert headers == {REPLAY_HEADER: b"1", RELAY_HEADER: ROUTE, SOURCE_HEADER: b"1:40:0"}
    assert (message.key, message.partition) == (b"ann", 3)
    assert source_of(headers) == (1, 40, 0)
    assert source_of({SOURCE_HEADER: b"1:40"}) == (1, 40, 0)  # as sent before indexes


def test_relays_leave_in_the_order_of_their_causes():
    late = RelayMessage.route("ann", 3, source=1, offset=40, value=EVENT, headers={})
    early = RelayMessage.of(Relay("merge", "anon-1", b"ann"), source=1, offset=12)
    other = RelayMessage.of(Relay("merge", "anon-2", b"bo"), source=0, offset=99)
    assert [(m.source, m.offset) for m in in_cause_order([late, early, other])] == [
        (0, 99),
        (1, 12),
        (1, 40),
    ]


def test_relays_of_one_cause_are_numbered_so_each_is_applied():
    erasures = [
        RelayMessage.of(Relay("erase", user, b""), source=2, offset=7)
        for user in ("anon-1", "anon-2", "anon-3")
    ]
    ordered = in_cause_order([*erasures, RelayMessage.of(Relay("erase", "x"), source=2, offset=8)])
    assert [source_of(header_map(m.headers())) for m in ordered] == [
        (2, 7, 0),
        (2, 7, 1),
        (2, 7, 2),
        (2, 8, 0),
    ]


@pytest.mark.parametrize("value", [b"1", b"x:1", b"1:2:3:4", b""])
def test_a_source_that_is_not_partition_and_offset_is_none(value):
    assert source_of({SOURCE_HEADER: value}) is None
    assert source_of({}) is None
