"""Rules published while workers run: switched within seconds, bad ones refused."""

from __future__ import annotations

import time

import orjson
import pytest

from streams.kafka import reliable_producer
from streams.tools.simulate import KafkaSink
from streams.tools.simulator import SimulatedEvent
from tests.integration.conftest import read_topic, segstream, wait_for_events

pytestmark = pytest.mark.integration

EVERYONE = """segments:
  - name: Everyone
    description: Anybody who did anything.
    condition: {feature: events_lifetime, op: ">", value: 0}
"""
PAGERS = """segments:
  - name: Pagers
    description: Viewed a page in the last 30 days.
    condition: {feature: page_views_30d, op: ">=", value: 1}
  - name: Everyone
    description: Anybody who did anything.
    group: tier
    condition: {feature: events_lifetime, op: ">", value: 0}
  - name: Shadow
    description: Would match too, but Everyone comes first in its group.
    group: tier
    condition: {feature: events_lifetime, op: ">", value: 0}
"""


def page(user, number):
    body = {
        "type": "page",
        "userId": user,
        "messageId": f"{user}-{number}",
        "timestamp": f"2026-10-01T12:{number:02d}:00Z",
    }
    return SimulatedEvent(0.0, user.encode(), orjson.dumps(body))


def send(config, *events):
    sink = KafkaSink(config)
    for event in events:
        sink.write(event)
    sink.close()


def changes(config):
    return [orjson.loads(m.value()) for m in read_topic(config, config.changes_topic)]


def test_published_rules_switch_running_workers_and_reevaluate(
    config, start_worker, model, tmp_path
):
    send(config, page("ann", 0), page("bob", 0))
    worker = start_worker()
    wait_for_events(model, 2)

    rules = tmp_path / "everyone.yaml"
    rules.write_text(EVERYONE)
    published = segstream(config, "rules", "apply", str(rules))
    assert published.returncode == 0, published.stderr
    assert "as rules v1" in published.stdout
    started = time.monotonic()
    number = 1
    while not any(c["rules_version"] == "v1" for c in changes(config)):
        assert time.monotonic() - started < 60, "the worker did not switch within 60 s"
        send(config, page("ann", number))
        number += 1
        time.sleep(0.3)
    entered = [c for c in changes(config) if c["rules_version"] == "v1"]
    assert entered[0]["user_id"] == "ann"
    assert entered[0]["entered"] == ["Everyone"]

    rules.write_text(PAGERS)
    published = segstream(config, "rules", "apply", str(rules), "--reevaluate")
    assert published.returncode == 0, published.stderr
    deadline = time.monotonic() + 60
    while {c["user_id"] for c in changes(config) if c["reason"] == "rules"} != {"ann", "bob"}:
        assert time.monotonic() < deadline, "users were not re-evaluated"
        time.sleep(0.3)
    bob = orjson.loads(segstream(config, "profile", "bob").stdout)
    assert bob["segments"] == ["Pagers", "Everyone"]  # Shadow loses to Everyone in group 'tier'

    # a broken publication is refused and the running rules stay in force
    producer = reliable_producer(config)
    producer.produce(
        config.rules_topic,
        key=b"rules",
        value=orjson.dumps(
            {"version": 99, "text": "segments: [", "reevaluate": True, "published_at": 0}
        ),
    )
    producer.flush(10)
    send(config, page("cat", 0))
    wait_for_events(model, number + 2)
    worker.stop()
    cat = orjson.loads(segstream(config, "profile", "cat").stdout)
    assert cat["segments"] == ["Pagers", "Everyone"]
    assert (
        "rules refused, the running rules stay in force" in (tmp_path / "worker-0.log").read_text()
    )


def test_apply_refuses_an_invalid_file_with_line_and_field(config, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "segments:\n  - name: X\n    description: d\n    condition: {feature: nope, op: '>', value: 1}\n"
    )
    refused = segstream(config, "rules", "apply", str(bad))
    assert refused.returncode == 1
    assert "line 4, segments[0].condition.feature: unknown feature 'nope'" in refused.stderr
    assert read_topic(config, config.rules_topic) == []


def test_destinations_validate_warns_of_segments_the_rules_in_force_lack(config, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "segments:\n  - name: Pagers\n    description: viewed a page\n"
        "    condition: {feature: page_views_30d, op: '>=', value: 1}\n"
    )
    assert segstream(config, "rules", "apply", str(rules)).returncode == 0
    hooks = tmp_path / "destinations.yaml"
    hooks.write_text(
        "destinations:\n  - name: crm\n    url: https://hooks.example.com/x\n"
        "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
        "    segments: [Pagers, Pagerz, c2]\n"
    )
    checked = segstream(config, "destinations", "validate", str(hooks))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == f"{hooks}: 1 destinations (crm)"
    [warning] = checked.stderr.strip().splitlines()
    assert warning.startswith(
        "warning: destination 'crm' filters on 'Pagerz', which the rules in force do not have"
    )
