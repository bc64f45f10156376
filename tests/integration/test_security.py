"""Keys and tokens outside dev mode, personal data scrubbed before it is stored, quiet logs."""

from __future__ import annotations

import hashlib

import orjson
import pytest
import requests
from confluent_kafka import Producer

from streams.tools.embedded import free_port
from tests.integration.conftest import read_topic, segstream, wait_for_events, wait_until_serving

pytestmark = pytest.mark.integration
EMAIL = "Ann.Private@Example.com"
PHONE = "+44 20 7946 0958"


@pytest.mark.parametrize(
    ("command", "variable"), [("collector", "WRITE_KEYS"), ("api", "API_TOKENS")]
)
def test_services_refuse_to_start_without_keys_outside_dev_mode(config, command, variable):
    result = segstream(config.model_copy(update={"collector_port": free_port()}), command)
    assert result.returncode != 0
    assert f"SEGSTREAM_{variable} is empty" in result.stderr


def test_dev_mode_serves_without_keys(config, start_worker):
    ports = {"collector_port": free_port(), "api_port": free_port(), "dev_mode": True}
    settings = config.model_copy(update=ports)
    collector = start_worker(settings, "collector")
    api = start_worker(settings, "api")
    wait_until_serving(f"http://127.0.0.1:{ports['collector_port']}/readyz", collector)
    wait_until_serving(f"http://127.0.0.1:{ports['api_port']}/readyz", api)
    answer = requests.post(
        f"http://127.0.0.1:{ports['collector_port']}/v1/page",
        json={"anonymousId": "a1", "timestamp": "2026-11-01T10:00:00Z"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    answer = requests.get(f"http://127.0.0.1:{ports['api_port']}/v1/segments", timeout=10)
    assert answer.status_code == 200, answer.text


def test_personal_data_is_hashed_before_it_is_stored_and_never_logged(config, start_worker, model):
    port = free_port()
    settings = config.model_copy(update={"write_keys": "wk", "collector_port": port})
    collector = start_worker(settings, "collector")
    worker = start_worker(settings)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/readyz", collector)
    identify = {
        "userId": "ann",
        "traits": {"email": EMAIL, "plan": "gold"},
        "context": {"traits": {"phone": PHONE}},
        "timestamp": "2026-11-01T10:00:00Z",
    }
    answer = requests.post(f"{url}/v1/identify", json=identify, auth=("wk", ""), timeout=10)
    assert answer.status_code == 200, answer.text
    # A tracker producing straight to the topic, with a revenue no order can have.
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    bad = {
        "type": "track",
        "event": "Order Completed",
        "userId": "ann",
        "timestamp": "2026-11-01T10:05:00Z",
        "properties": {"revenue": "lots", "email": EMAIL},
    }
    producer.produce(settings.events_topic, orjson.dumps(bad), key=b"ann")
    producer.flush(10)
    counters = wait_for_events(model, 2)
    assert (counters["events"], counters["dead_letters"]) == (1, 1)

    hashed = "sha256:" + hashlib.sha256(EMAIL.lower().encode()).hexdigest()
    stored = [m.value() for m in read_topic(settings, settings.events_topic) if not m.headers()]
    identify_stored = [orjson.loads(value) for value in stored if b'"identify"' in value]
    assert identify_stored[0]["traits"] == {"email": hashed, "plan": "gold"}
    assert identify_stored[0]["context"]["traits"]["phone"].startswith("sha256:")
    [dead] = read_topic(settings, settings.dead_letter_topic)
    assert dict(dead.headers())["reason"] == b"invalid_revenue"
    assert orjson.loads(dead.value())["properties"] == {"revenue": "lots", "email": hashed}
    for process in (collector, worker):
        logged = process.log.read_text(errors="replace")
        assert "INFO" in logged
        for secret in (EMAIL, EMAIL.lower(), PHONE, "lots", "gold"):
            assert secret not in logged, (process.log, secret)
