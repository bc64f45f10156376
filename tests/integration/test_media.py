"""A streaming service's own events on a real broker and Redis: custom events, their
properties and identify traits, segmented by `processors/rules/media.yaml` (computed
traits, trait conditions, a sequence and an absence), checked against the oracle."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import requests
import yaml

from processors._core import PREDICTIONS
from processors.rules import parse_rules
from streams.redis_clients import read_model
from streams.tools.embedded import free_port
from streams.tools.media import MediaSimulation
from streams.tools.simulate import KafkaSink
from streams.tools.simulator import SimulatedEvent
from tests import oracle
from tests.integration.conftest import (
    WorkerProcess,
    advance,
    export,
    wait_for_events,
    wait_until_serving,
)
from tests.integration.test_timers import changes_of, track

pytestmark = pytest.mark.integration
RULES_FILE = Path(__file__).parents[2] / "processors" / "rules" / "media.yaml"
END = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
HOUR, DAY = 3_600, 86_400


CHECKOUT = END - 5 * HOUR
"""When `stalled` starts a checkout, and sends nothing after it."""
CRAFTED = [
    track("stalled", 1, "Video Played", CHECKOUT - 600, duration_minutes=20, device="tv"),
    track("stalled", 2, "Checkout Started", CHECKOUT, plan="pro"),
    track("churner", 1, "Trial Started", END - 10 * DAY),
    track("churner", 2, "Plan Viewed", END - 9 * DAY, plan="family"),
    track("churner", 3, "Subscription Cancelled", END - 2 * DAY),
    # the steps out of order: a cancellation before the plans were viewed
    track("unordered", 1, "Trial Started", END - 10 * DAY),
    track("unordered", 2, "Subscription Cancelled", END - 9 * DAY),
    track("unordered", 3, "Plan Viewed", END - 8 * DAY),
    track("lapsed", 1, "Video Played", END - 20 * DAY, duration_minutes=5, device="mobile"),
    *(track("watcher", n, "Video Played", END - 600 + 60 * n, device="tv") for n in range(3)),
    SimulatedEvent(
        END - DAY,
        b"newbie",
        orjson.dumps(
            {
                "type": "identify",
                "userId": "newbie",
                "messageId": "newbie-1",
                "timestamp": datetime.fromtimestamp(END - DAY, UTC).isoformat(),
                "traits": {"plan": "free", "signed_up_at": "2026-10-31T00:00:00Z"},
            }
        ),
    ),
]


def test_a_streaming_service_is_segmented_on_its_own_events(config, tmp_path: Path) -> None:
    port = free_port()
    config = config.model_copy(
        update={"rules_file": RULES_FILE, "api_tokens": "tok", "api_port": port}
    )
    simulated = list(MediaSimulation(users=80, seed=5, end=END, days=30).events())
    history = sorted([*simulated, *CRAFTED], key=lambda event: event.timestamp)
    sink = KafkaSink(config)
    for event in history:
        sink.write(event)
    sink.close()
    until = END + DAY  # a day passes with nobody sending anything
    advance(config, until)
    worker = WorkerProcess(config, tmp_path / "worker.log")
    api = WorkerProcess(config, tmp_path / "api.log", "api")
    try:
        model = read_model(config)
        wait_for_events(model, len(history))
        deadline = time.monotonic() + 60
        while any(document["as_of"] < until for document in model.users()):
            assert time.monotonic() < deadline, "the watermarks never reached the day after"
            time.sleep(0.5)
        rows = {row["user_id"]: row for row in map(orjson.loads, export(config))}
        rules = yaml.safe_load(RULES_FILE.read_text())
        people = oracle.people(oracle.read(event.value) for event in history)
        assert set(rows) == set(people)
        members: dict[str, int] = {}
        for user_id, row in rows.items():
            assert row["as_of"] == until, user_id
            expected = oracle.segments(rules, people[user_id], until)
            assert set(row["segments"]) == expected, user_id
            computed = {
                name: oracle.computed_value(trait, people[user_id], until)
                for name, trait in rules["computed"].items()
            }
            assert row["computed"] == computed, user_id
            assert row["predictions"] == dict.fromkeys(PREDICTIONS), user_id
            assert row["traits"] == {
                k: v
                for k, v in oracle.traits(people[user_id], until).items()
                if k in ("plan", "signed_up_at")
            }
            for segment in expected:
                members[segment] = members.get(segment, 0) + 1
        # every segment has members, but the last hour's plays: that hour has passed
        names = set(parse_rules(RULES_FILE.read_text()).names)
        assert names - set(members) == {"Watching Now"}, members
        watcher = [
            (c["reason"], c["event_time"])
            for c in changes_of(config, "watcher")
            if "Watching Now" in c["entered"] + c["exited"]
        ]
        # in at the third play; out an hour after the first, when it left the window
        assert watcher == [("event", END - 480), ("time", END - 600 + HOUR)]

        # the absence came by a timer, exactly 30 minutes after the checkout, with
        # nothing sent by the user after it
        stalled = changes_of(config, "stalled")
        entering = [c for c in stalled if "Stalled Checkouts" in c["entered"]]
        assert [(c["reason"], c["event_time"]) for c in entering] == [("time", CHECKOUT + 1800)]
        # the sequence completed with its last step, in order only
        churner = changes_of(config, "churner")
        entered = [c for c in churner if "Trial Churners" in c["entered"]]
        assert [(c["reason"], c["event_time"]) for c in entered] == [("event", END - 2 * DAY)]
        assert "Trial Churners" not in rows["unordered"]["segments"]

        url = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{url}/readyz", api)
        answer = requests.get(
            f"{url}/v1/users/stalled",
            params={"features": "true"},
            headers={"Authorization": "Bearer tok"},
            timeout=5,
        ).json()
        assert answer["computed"]["watch_minutes_30d"] == 20.0
        assert answer["computed"]["first_device"] == "tv"
        # no model has learned a prediction yet: each is gated
        assert answer["predictions"] == dict.fromkeys(PREDICTIONS)
        assert answer["computed"]["last_played"] == datetime.fromtimestamp(
            CHECKOUT - 600, UTC
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
    finally:
        worker.stop()
        api.stop()
