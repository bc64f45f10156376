"""Identify traits on a real broker and Redis: kept as the rules name them, merged with
identity, compared by trait conditions, and shown by the read API and the export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import requests
import yaml

from state.read_model import ReadModel
from streams.kafka import reliable_producer
from streams.redis_clients import redis_client
from streams.settings import Settings
from streams.tools.embedded import free_port
from tests import oracle
from tests.integration.conftest import (
    WorkerProcess,
    export,
    isolated_settings,
    read_topic,
    wait_for_events,
    wait_until_serving,
)

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
RULES = """
segments:
  - name: Paying Teams
    description: On a paid plan with at least 10 seats, outside Germany.
    condition:
      all:
        - {trait: plan, op: in, value: [pro, family]}
        - {trait: seats, op: ">=", value: 10}
        - {trait: address.country, op: "!=", value: DE}
  - name: No Email Yet
    description: Never told us an email address.
    condition: {trait: email, op: missing}
"""


def call(kind: str, sender: dict, minutes: int, number: int, **fields: object) -> dict:
    moment = (T0 + timedelta(minutes=minutes)).isoformat()
    return {"type": kind, "timestamp": moment, "messageId": f"m{number}", **sender, **fields}


EVENTS = [
    # before signing in, a mobile SDK sends the plan in the context
    call("screen", {"anonymousId": "anon-1"}, 0, 1, context={"traits": {"plan": "family"}}),
    call(
        "identify",
        {"userId": "ann", "anonymousId": "anon-1"},
        1,
        2,
        traits={
            "seats": 12,
            "address": {"country": "FR", "city": "Lyon"},
            "plan": None,
            "tags": ["beta"],
        },
    ),
    call("page", {"userId": "bob"}, 0, 3),
    call(
        "identify",
        {"userId": "bob"},
        2,
        4,
        traits={"plan": "pro", "seats": 40, "address": {"country": "US"}},
    ),
    call("identify", {"userId": "bob"}, 3, 5, traits={"email": "bob@example.com"}),
    call("identify", {"userId": "cy"}, 1, 6, traits={"plan": "pro", "seats": "10"}),
    # group traits are the group's
    call("group", {"userId": "cy"}, 2, 7, groupId="g1", traits={"seats": 99}),
]


def configured(stack, tmp_path: Path, **settings: object) -> Settings:
    """Settings of this test's own, with the rules above, and `EVENTS` on the events topic."""
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    config = isolated_settings(stack).model_copy(update={"rules_file": rules_file, **settings})
    producer = reliable_producer(config)
    for body in EVENTS:
        key = str(body.get("userId") or body["anonymousId"])
        producer.produce(config.events_topic, key=key.encode(), value=orjson.dumps(body))
    assert producer.flush(30) == 0
    return config


def test_traits_are_kept_merged_compared_and_shown(stack, tmp_path: Path) -> None:
    port = free_port()
    config = configured(stack, tmp_path, api_tokens="tok", api_port=port)
    worker = WorkerProcess(config, tmp_path / "worker.log")
    api = WorkerProcess(config, tmp_path / "api.log", "api")
    try:
        model = ReadModel(redis_client(config), config.key_layout())
        wait_for_events(model, len(EVENTS))
        rows = {row["user_id"]: row for row in map(orjson.loads, export(config))}
        # ann's plan: the anonymous screen set it at minute 0, her identify to null at minute
        # 1, and the later wins (null reads as never set); her city is not kept: only the
        # traits the rules name are
        assert rows["ann"]["traits"] == {"address.country": "FR", "seats": 12.0, "plan": None}
        assert rows["bob"]["traits"] == {
            "address.country": "US",
            "email": "bob@example.com",
            "plan": "pro",
            "seats": 40.0,
        }
        assert rows["cy"]["traits"] == {"plan": "pro", "seats": "10"}
        assert set(rows["ann"]["segments"]) == {"No Email Yet"}
        assert set(rows["bob"]["segments"]) == {"Paying Teams"}
        assert set(rows["cy"]["segments"]) == {"No Email Yet"}  # "10" is text, not a number
        people = oracle.people(oracle.read(orjson.dumps(body)) for body in EVENTS)
        rules = yaml.safe_load(RULES)
        for user_id, row in rows.items():
            until = row["as_of"]
            assert set(row["segments"]) == oracle.segments(rules, people[user_id], until), user_id
        changes = [orjson.loads(m.value()) for m in read_topic(config, config.changes_topic)]
        bob = [c for c in changes if c["user_id"] == "bob"]
        # bob entered Paying Teams with his plan, then left No Email Yet with his email
        assert [c["segments"] for c in bob][-2:] == [
            ["Paying Teams", "No Email Yet"],
            ["Paying Teams"],
        ]
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{url}/readyz", api)
        answer = requests.get(
            f"{url}/v1/users/anon-1",
            params={"features": "true"},
            headers={"Authorization": "Bearer tok"},
            timeout=5,
        )
        assert answer.status_code == 200
        assert answer.json()["user_id"] == "ann"
        assert answer.json()["traits"] == rows["ann"]["traits"]
    finally:
        for process in (api, worker):
            if process.process.poll() is None:
                process.kill()


def test_every_trait_is_kept_when_asked(stack, tmp_path: Path) -> None:
    config = configured(stack, tmp_path, keep_traits="all")
    worker = WorkerProcess(config, tmp_path / "worker.log")
    try:
        wait_for_events(ReadModel(redis_client(config), config.key_layout()), len(EVENTS))
        rows = {row["user_id"]: row for row in map(orjson.loads, export(config))}
        assert rows["ann"]["traits"] == {
            "address.city": "Lyon",
            "address.country": "FR",
            "plan": None,
            "seats": 12.0,
        }  # lists (tags) are not kept
        assert rows["cy"]["traits"] == {"plan": "pro", "seats": "10"}  # not the group's 99
        assert set(rows["bob"]["segments"]) == {"Paying Teams"}
    finally:
        worker.kill()
